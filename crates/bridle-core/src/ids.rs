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

/// What is wrong with `id` as an id of the `prefix` kind, said so that it reads after the
/// field's name ("run_id is required"); None when it is one.
fn id_problem(prefix: &str, id: &str) -> Option<String> {
    let ok = id.len() <= 64
        && id
            .strip_prefix(prefix)
            .and_then(|r| r.strip_prefix('_'))
            .is_some_and(|rest| {
                !rest.is_empty() && rest.bytes().all(|b| b.is_ascii_alphanumeric())
            });
    if ok {
        None
    } else if id.is_empty() {
        Some("is required".into())
    } else {
        Some(format!(
            "'{}' is not a valid id (expected {prefix}_ followed by letters and digits)",
            crate::redact::quote(id)
        ))
    }
}

/// Validates an id received from a caller before it is used in a Redis key.
pub fn check_id(what: &str, prefix: &str, id: &str) -> Result<(), Error> {
    match id_problem(prefix, id) {
        None => Ok(()),
        Some(p) => Err(Error::InvalidArgument(format!("{what} {p}"))),
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

/// The traits every checked identifier shares: it reads as the string it wraps, compares with
/// strings, and is checked again when it is deserialized (stored data only ever held checked
/// values, so a failure there means the data is damaged).
macro_rules! checked_string {
    ($ty:ident) => {
        impl $ty {
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl std::ops::Deref for $ty {
            type Target = str;
            fn deref(&self) -> &str {
                &self.0
            }
        }

        impl AsRef<str> for $ty {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        impl std::borrow::Borrow<str> for $ty {
            fn borrow(&self) -> &str {
                &self.0
            }
        }

        impl std::fmt::Display for $ty {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl From<$ty> for String {
            fn from(v: $ty) -> String {
                v.0
            }
        }

        impl PartialEq<str> for $ty {
            fn eq(&self, o: &str) -> bool {
                self.0 == o
            }
        }

        impl PartialEq<&str> for $ty {
            fn eq(&self, o: &&str) -> bool {
                self.0 == *o
            }
        }

        impl PartialEq<String> for $ty {
            fn eq(&self, o: &String) -> bool {
                &self.0 == o
            }
        }

        /// Written to Redis as the string it is.
        impl redis::ToRedisArgs for $ty {
            fn write_redis_args<W: ?Sized + redis::RedisWrite>(&self, out: &mut W) {
                self.0.write_redis_args(out)
            }
        }

        impl<'de> serde::Deserialize<'de> for $ty {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = String::deserialize(d)?;
                $ty::parse(&s).map_err(serde::de::Error::custom)
            }
        }
    };
}

/// A tenant's name, checked: a value of this type is a valid name ([`check_name`]), so code
/// that takes one never checks it again. Made by [`TenantId::parse`] where a name comes in
/// (a request, an option), by `Principal::tenant_in`, and by reading stored data.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
#[serde(transparent)]
pub struct TenantId(String);

impl TenantId {
    /// `name` as a tenant, or why it cannot be one.
    pub fn parse(name: &str) -> Result<Self, String> {
        check_name(name)?;
        Ok(TenantId(name.to_string()))
    }

    /// The tenant every caller bound to no tenant acts for when it names none.
    pub fn default_tenant() -> Self {
        TenantId(crate::manifest::DEFAULT_TENANT.to_string())
    }
}

checked_string!(TenantId);

/// A run's id, checked (`run_` and letters and digits, at most 64 bytes): safe in a Redis key
/// as it is. Made by [`RunId::new`] for a new run, by [`RunId::parse`] where an id comes in (a
/// request, a queued step, an approval's scope), and by reading stored data.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
#[serde(transparent)]
pub struct RunId(String);

impl RunId {
    /// A new run's id, a ULID (sorts by creation time).
    #[allow(clippy::new_without_default)]
    pub fn new() -> Self {
        RunId(new_run_id())
    }

    /// `id` as a run's id, or what is wrong with it, worded to follow the field's name
    /// (`format!("run_id {e}")`: "run_id is required").
    pub fn parse(id: &str) -> Result<Self, String> {
        match id_problem("run", id) {
            None => Ok(RunId(id.to_string())),
            Some(p) => Err(p),
        }
    }
}

checked_string!(RunId);

/// An Agent's name, checked ([`check_name`]).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
#[serde(transparent)]
pub struct AgentName(String);

impl AgentName {
    /// `name` as an Agent's name, or why it cannot be one.
    pub fn parse(name: &str) -> Result<Self, String> {
        check_name(name)?;
        Ok(AgentName(name.to_string()))
    }
}

checked_string!(AgentName);

/// A Tool's name, checked ([`check_tool_name`]: also a function name every provider takes).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
#[serde(transparent)]
pub struct ToolName(String);

impl ToolName {
    /// `name` as a Tool's name, or why it cannot be one.
    pub fn parse(name: &str) -> Result<Self, String> {
        check_tool_name(name)?;
        Ok(ToolName(name.to_string()))
    }
}

checked_string!(ToolName);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tenant_ids_are_checked_when_made_and_when_read() {
        assert_eq!(TenantId::parse("acme").unwrap(), "acme");
        assert!(TenantId::parse("Not A Name").is_err());
        let t: TenantId = serde_json::from_str("\"acme\"").unwrap();
        assert_eq!(serde_json::to_string(&t).unwrap(), "\"acme\"");
        assert!(serde_json::from_str::<TenantId>("\"a b\"").is_err());
    }

    #[test]
    fn each_id_type_is_checked_when_made_and_when_read() {
        let run = RunId::new();
        assert_eq!(RunId::parse(&run).unwrap(), run);
        assert_eq!(RunId::parse("").unwrap_err(), "is required");
        assert!(
            RunId::parse("apr_abc")
                .unwrap_err()
                .contains("expected run_")
        );
        assert!(serde_json::from_str::<RunId>("\"run_a:b\"").is_err());
        let json = serde_json::to_string(&run).unwrap();
        assert_eq!(serde_json::from_str::<RunId>(&json).unwrap(), run);
        assert_eq!(AgentName::parse("analyst").unwrap(), "analyst");
        assert!(AgentName::parse("Analyst").is_err());
        assert_eq!(
            ToolName::parse("run_python").unwrap().as_str(),
            "run_python"
        );
        assert!(ToolName::parse("run.python").is_err());
        assert!(serde_json::from_str::<ToolName>("\"a.b\"").is_err());
    }

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
