//! Which fields of a request the fronts act on. A field the gateway would not carry to the
//! provider is refused by name (400, in the API's own shape), never dropped: a caller that sets
//! `stop` or `response_format` must learn that it would have had no effect before it relies on
//! it. A field set to `null` counts as absent, as both APIs treat it.

use serde_json::Value;

use super::Failure;
use crate::error::quote;

/// The fields of one JSON object of a request.
pub struct Shape {
    /// Read by the parser: carried to the provider (or an object checked field by field).
    pub carried: &'static [&'static str],
    /// Accepted with one value only (JSON text): the API's default, which changes nothing.
    pub defaults: &'static [(&'static str, &'static str)],
    /// The API's other fields: known, not carried, so refused.
    pub refused: &'static [&'static str],
}

/// Checks the fields of `v` (an object; anything else is left to the caller's own checks).
/// `at` is the object's path with its trailing dot ("", "messages[0].").
pub fn check(v: &Value, at: &str, shape: &Shape) -> Result<(), Failure> {
    let Some(obj) = v.as_object() else {
        return Ok(());
    };
    for (k, v) in obj {
        if v.is_null() || shape.carried.contains(&k.as_str()) {
            continue;
        }
        let param = format!("{at}{}", quote(k));
        if let Some((_, default)) = shape.defaults.iter().find(|(n, _)| n == k) {
            if is_default(v, default) {
                continue;
            }
            return Err(Failure::unsupported(
                &param,
                "unsupported_value",
                format!(
                    "{param}: only {default} (the default) is supported by this gateway; another value would not reach the provider"
                ),
            ));
        }
        let known = shape.refused.contains(&k.as_str());
        let message = if known {
            format!(
                "{param}: is not supported by this gateway; it would not reach the provider, so the request is refused rather than answered without it"
            )
        } else {
            format!(
                "{param}: unknown parameter (this gateway reads {})",
                accepted(shape)
            )
        };
        let code = if known {
            "unsupported_parameter"
        } else {
            "unknown_parameter"
        };
        return Err(Failure::unsupported(&param, code, message));
    }
    Ok(())
}

/// Stop sequences: a list of strings, or with `one_allowed` one string alone (OpenAI's `stop`
/// takes either); absent or `null` is none. Their count and lengths are the router's to check.
pub fn stop_sequences(body: &Value, name: &str, one_allowed: bool) -> Result<Vec<String>, Failure> {
    let what = if one_allowed {
        "a string or an array of strings"
    } else {
        "an array of strings"
    };
    match body.get(name) {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::String(s)) if one_allowed => Ok(vec![s.clone()]),
        Some(Value::Array(items)) => items
            .iter()
            .enumerate()
            .map(|(i, v)| {
                v.as_str()
                    .map(str::to_string)
                    .ok_or_else(|| Failure::invalid(format!("{name}[{i}]: must be a string")))
            })
            .collect(),
        Some(_) => Err(Failure::invalid(format!("{name}: must be {what}"))),
    }
}

/// `temperature`: a number, or None when absent or `null` (its range is the router's to check).
pub fn temperature(body: &Value) -> Result<Option<f32>, Failure> {
    match body.get("temperature") {
        None | Some(Value::Null) => Ok(None),
        Some(v) => v
            .as_f64()
            .map(|t| Some(t as f32))
            .ok_or_else(|| Failure::invalid("temperature: must be a number")),
    }
}

/// An output cap at `key` (`max_tokens`, `max_output_tokens`...): an integer that fits 32
/// bits, or None when absent or `null`.
pub fn token_cap(body: &Value, key: &str) -> Result<Option<u32>, Failure> {
    match body.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => v
            .as_u64()
            .and_then(|n| u32::try_from(n).ok())
            .map(Some)
            .ok_or_else(|| Failure::invalid(format!("{key}: must be a positive integer"))),
    }
}

/// `top_p`: a number, or None when absent or `null` (its range is the router's to check).
pub fn top_p(body: &Value) -> Result<Option<f32>, Failure> {
    match body.get("top_p") {
        None | Some(Value::Null) => Ok(None),
        Some(v) => v
            .as_f64()
            .map(|p| Some(p as f32))
            .ok_or_else(|| Failure::invalid("top_p: must be a number")),
    }
}

pub fn str_field<'a>(v: &'a Value, key: &str, at: &str) -> Result<Option<&'a str>, Failure> {
    match v.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(Failure::invalid(format!("{at}{key}: must be a string"))),
    }
}

pub fn bool_field(v: &Value, key: &str, at: &str) -> Result<Option<bool>, Failure> {
    match v.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(*b)),
        Some(_) => Err(Failure::invalid(format!(
            "{at}{key}: must be true or false"
        ))),
    }
}

/// `s` quoted for an error message, cut short when long.
pub fn q(s: &str) -> String {
    format!("'{}'", quote(s))
}

/// The names a shape accepts, for the message about an unknown one.
fn accepted(shape: &Shape) -> String {
    let mut names: Vec<&str> = shape.carried.to_vec();
    names.extend(shape.defaults.iter().map(|(n, _)| *n));
    names.join(", ")
}

/// Whether `v` is the default written as JSON text `default` (numbers compare by value, so
/// `1` and `1.0` are the same).
fn is_default(v: &Value, default: &str) -> bool {
    let Ok(d) = serde_json::from_str::<Value>(default) else {
        return false;
    };
    match (v.as_f64(), d.as_f64()) {
        (Some(a), Some(b)) => a == b,
        _ => *v == d,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const SHAPE: Shape = Shape {
        carried: &["model"],
        defaults: &[("n", "1"), ("stop_sequences", "[]")],
        refused: &["stop"],
    };

    fn err(v: Value) -> Failure {
        check(&v, "", &SHAPE).unwrap_err()
    }

    #[test]
    fn carried_nulls_and_defaults_pass() {
        let ok = json!({"model": "m", "stop": null, "n": 1.0, "stop_sequences": []});
        assert!(check(&ok, "", &SHAPE).is_ok());
        assert!(check(&json!("not an object"), "", &SHAPE).is_ok());
    }

    #[test]
    fn the_rest_is_refused_by_name() {
        let f = err(json!({"model": "m", "stop": ["\n"]}));
        assert_eq!(f.param.as_deref(), Some("stop"));
        assert_eq!(f.code, Some("unsupported_parameter"));
        assert!(
            f.message.starts_with("stop: is not supported"),
            "{}",
            f.message
        );
        let f = err(json!({"n": 2}));
        assert_eq!(f.code, Some("unsupported_value"));
        assert!(
            f.message.starts_with("n: only 1 (the default)"),
            "{}",
            f.message
        );
        let f = check(&json!({"colour": "red"}), "messages[0].", &SHAPE).unwrap_err();
        assert_eq!(f.param.as_deref(), Some("messages[0].colour"));
        assert_eq!(f.code, Some("unknown_parameter"));
        assert!(
            f.message
                .contains("unknown parameter (this gateway reads model, n, stop_sequences)"),
            "{}",
            f.message
        );
    }

    #[test]
    fn a_long_name_is_quoted_short() {
        let long = "x".repeat(100_000);
        let f = err(json!({ long: 1 }));
        assert!(f.message.len() < 400, "{}", f.message.len());
    }
}
