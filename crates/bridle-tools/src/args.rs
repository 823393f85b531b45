//! The model's arguments: parsed, checked against the tool's JSON Schema, and substituted into
//! a command line.
//!
//! A failed check is not a gRPC error: it is a tool result the model reads and can act on, so
//! the message lists every violation with its JSON pointer and shows the schema.

use serde_json::{Map, Value};

use bridle_core::redact::preview;

/// Violations listed before "... and N more".
const MAX_LISTED: usize = 20;
/// Characters of the schema quoted in the message.
const MAX_SCHEMA_CHARS: usize = 2000;

/// Parses the arguments JSON; an empty string is an empty object (models send "" for tools
/// without parameters). The error is the message for the model.
pub fn parse(tool: &str, json: &str) -> Result<Map<String, Value>, String> {
    if json.trim().is_empty() {
        return Ok(Map::new());
    }
    match serde_json::from_str::<Value>(json) {
        Ok(Value::Object(m)) => Ok(m),
        Ok(other) => Err(format!(
            "Invalid arguments for tool '{tool}'; nothing was run. The arguments must be a JSON object, \
             not {} ({}). Call the tool again with an object.",
            kind_of(&other),
            preview(&other.to_string(), 200)
        )),
        Err(e) => Err(format!(
            "Invalid arguments for tool '{tool}'; nothing was run. The arguments are not valid JSON: {e}. \
             Call the tool again with a JSON object."
        )),
    }
}

fn kind_of(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// Checks `args` against the compiled schema; the error is the message for the model.
pub fn check(
    tool: &str,
    validator: &jsonschema::Validator,
    schema: &Value,
    args: &Value,
) -> Result<(), String> {
    let errors: Vec<String> = validator
        .iter_errors(args)
        .map(|e| {
            let pointer = e.instance_path().to_string();
            let at = if pointer.is_empty() {
                "(root)".to_string()
            } else {
                pointer
            };
            format!("- {at}: {}", preview(&e.to_string(), 300))
        })
        .collect();
    if errors.is_empty() {
        return Ok(());
    }
    let n = errors.len();
    let mut msg = format!(
        "Invalid arguments for tool '{tool}'; nothing was run. {n} problem{} (each at its JSON pointer in the arguments):\n",
        if n == 1 { "" } else { "s" }
    );
    for line in errors.iter().take(MAX_LISTED) {
        msg.push_str(line);
        msg.push('\n');
    }
    if n > MAX_LISTED {
        msg.push_str(&format!("- ... and {} more\n", n - MAX_LISTED));
    }
    msg.push_str(&format!(
        "Fix the arguments to match the tool's parameters schema and call it again. Schema: {}",
        preview(&schema.to_string(), MAX_SCHEMA_CHARS)
    ));
    Err(msg)
}

/// Replaces each `{{name}}` in `arg` with the argument's value: strings as they are, other
/// values as JSON, absent arguments as nothing. One pass, so a value that itself contains
/// `{{...}}` is not expanded again.
pub fn render(arg: &str, args: &Map<String, Value>) -> String {
    let mut out = String::with_capacity(arg.len());
    let mut rest = arg;
    while let Some(i) = rest.find("{{") {
        let after = &rest[i + 2..];
        let Some(j) = after.find("}}") else {
            break;
        };
        out.push_str(&rest[..i]);
        match args.get(after[..j].trim()) {
            Some(Value::String(s)) => out.push_str(s),
            Some(Value::Null) | None => {}
            Some(other) => out.push_str(&other.to_string()),
        }
        rest = &after[j + 2..];
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn obj(v: Value) -> Map<String, Value> {
        v.as_object().cloned().unwrap()
    }

    #[test]
    fn parse_accepts_objects_and_empty() {
        assert!(parse("t", "").unwrap().is_empty());
        assert_eq!(parse("t", r#"{"a":1}"#).unwrap()["a"], 1);
        let e = parse("t", "[1]").unwrap_err();
        assert!(e.contains("must be a JSON object, not an array"), "{e}");
        let e = parse("t", "{bad").unwrap_err();
        assert!(e.contains("not valid JSON"), "{e}");
    }

    #[test]
    fn check_lists_each_violation_with_its_pointer() {
        let schema = json!({
            "type": "object",
            "properties": {"code": {"type": "string"}, "n": {"type": "integer", "maximum": 3}},
            "required": ["code"],
            "additionalProperties": false
        });
        let v = jsonschema::validator_for(&schema).unwrap();
        assert!(check("py", &v, &schema, &json!({"code": "x"})).is_ok());
        let e = check("py", &v, &schema, &json!({"n": 9, "extra": true})).unwrap_err();
        assert!(
            e.starts_with("Invalid arguments for tool 'py'; nothing was run. 3 problems"),
            "{e}"
        );
        assert!(
            e.contains("- /n: 9 is greater than the maximum of 3"),
            "{e}"
        );
        assert!(
            e.contains("- (root): \"code\" is a required property"),
            "{e}"
        );
        assert!(e.contains("extra"), "{e}");
        assert!(e.contains("Schema: {"), "{e}");
    }

    #[test]
    fn render_substitutes_once() {
        let a = obj(json!({"code": "print({{n}})", "n": 5, "flag": true, "none": null}));
        assert_eq!(render("{{code}}", &a), "print({{n}})");
        assert_eq!(render("--n={{ n }} {{flag}}", &a), "--n=5 true");
        assert_eq!(render("x{{missing}}y{{none}}", &a), "xy");
        assert_eq!(render("{{unclosed", &a), "{{unclosed");
        assert_eq!(render("plain", &a), "plain");
    }
}
