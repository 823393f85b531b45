//! Identifiers. Generated ids are ULIDs with a type prefix (`run_01J...`), so they sort by
//! creation time and say what they are; names users choose are validated here.

use crate::Error;

fn new_id(prefix: &str) -> String {
    format!("{prefix}_{}", ulid::Ulid::new().to_string().to_lowercase())
}

pub fn new_run_id() -> String {
    new_id("run")
}

pub fn new_approval_id() -> String {
    new_id("apr")
}

/// Validates an id received from a caller before it is used in a Redis key.
pub fn check_id(what: &str, prefix: &str, id: &str) -> Result<(), Error> {
    let ok = id.len() <= 64
        && id
            .strip_prefix(prefix)
            .and_then(|r| r.strip_prefix('_'))
            .is_some_and(|rest| {
                !rest.is_empty() && rest.bytes().all(|b| b.is_ascii_alphanumeric())
            });
    if ok {
        Ok(())
    } else if id.is_empty() {
        Err(Error::InvalidArgument(format!("{what} is required")))
    } else {
        Err(Error::InvalidArgument(format!(
            "{what} '{}' is not a valid id (expected {prefix}_ followed by letters and digits)",
            crate::redact::quote(id)
        )))
    }
}

/// A name users choose (agents, tools, routes, tenants): 1-63 characters of lowercase
/// letters, digits, '-', '_' and '.', starting and ending with a letter or digit. Tool names
/// must also be valid function names for every provider, which this subset guarantees.
pub fn check_name(name: &str) -> Result<(), String> {
    let shown = crate::redact::quote(name);
    if name.is_empty() {
        return Err("must not be empty".into());
    }
    if name.len() > 63 {
        return Err(format!("'{shown}' is longer than 63 characters"));
    }
    let bytes = name.as_bytes();
    let edge_ok = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    if !edge_ok(bytes[0]) || !edge_ok(bytes[bytes.len() - 1]) {
        return Err(format!(
            "'{shown}' must start and end with a lowercase letter or a digit"
        ));
    }
    if let Some(bad) = name
        .chars()
        .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '-' | '_' | '.')))
    {
        return Err(format!(
            "'{shown}' contains '{bad}'; use lowercase letters, digits, '-', '_' or '.'"
        ));
    }
    Ok(())
}

/// An OCI runtime name as engines accept it (`runsc`, `kata-qemu`, `io.containerd.runc.v2`):
/// a Tool's `runtime:` and the tools service's runtime options.
pub fn check_runtime_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 128
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "'{}' is not a runtime name (letters, digits, '.', '-', '_'; at most 128)",
            crate::redact::quote(name)
        ))
    }
}

/// Tool names are sent to providers as function names, which do not allow '.'.
pub fn check_tool_name(name: &str) -> Result<(), String> {
    check_name(name)?;
    if name.contains('.') {
        return Err(format!(
            "'{name}' contains '.'; tool names may use lowercase letters, digits, '-' and '_'"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_ids_check() {
        let id = new_run_id();
        assert!(check_id("run id", "run", &id).is_ok(), "{id}");
        assert!(check_id("run id", "run", "run_").is_err());
        assert!(check_id("run id", "run", "apr_abc").is_err());
        assert!(check_id("run id", "run", "run_a:b").is_err());
        assert!(check_id("run id", "run", "").is_err());
    }

    #[test]
    fn names() {
        assert!(check_name("data-analyst").is_ok());
        assert!(check_name("a").is_ok());
        assert!(check_name("Data").is_err());
        assert!(check_name("-x").is_err());
        assert!(check_name("a b").is_err());
        assert!(check_name(&"a".repeat(64)).is_err());
        assert!(check_tool_name("run.python").is_err());
        let huge = "x".repeat(1 << 20);
        assert!(check_name(&huge).unwrap_err().len() < 300);
    }

    #[test]
    fn runtime_names() {
        assert!(check_runtime_name("runsc").is_ok());
        assert!(check_runtime_name("io.containerd.runc.v2").is_ok());
        assert!(check_runtime_name("").is_err());
        assert!(check_runtime_name("run sc").is_err());
        assert!(check_runtime_name("../runsc").is_err());
        assert!(check_runtime_name(&"r".repeat(129)).is_err());
        let huge = "x ".repeat(1 << 19);
        assert!(check_runtime_name(&huge).unwrap_err().len() < 300);
    }
}
