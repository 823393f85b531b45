//! Checks a request before any provider sees it, so a malformed request fails once, clearly,
//! instead of on every target.

use bridle_proto::{CompleteRequest, ResponseFormat, ResponseFormatType, Role, ToolChoiceMode};
use prost::Message as _;

use bridle_core::manifest::{
    REASONING_EFFORTS, STOP_SEQUENCE_BYTES_MAX as STOP_BYTES_MAX, STOP_SEQUENCES_MAX as STOP_MAX,
    THINKING_BUDGET_MIN, stop_sequence_fits, top_p_in_range,
};

use crate::Error;
use crate::error::quote;

/// How deep JSON from a caller may nest: serde_json's own recursion limit, which every parse in
/// the router keeps (none disables it, and nothing walks a caller's JSON recursively), so deep
/// input is an error and never a stack overflow.
pub const JSON_DEPTH_MAX: usize = 128;

/// What is wrong with JSON that did not parse, naming the depth limit when that was it (serde
/// says only "recursion limit exceeded").
pub fn json_problem(e: &serde_json::Error) -> String {
    if e.to_string().starts_with("recursion limit exceeded") {
        format!(
            "it nests deeper than {JSON_DEPTH_MAX} levels, the most this router reads (at line {}, column {})",
            e.line(),
            e.column()
        )
    } else {
        e.to_string()
    }
}

/// Checks `req`, which may be at most `max_bytes` long (protobuf-encoded).
pub fn validate(req: &CompleteRequest, max_bytes: usize) -> Result<(), Error> {
    let bad = |m: String| Err(Error::InvalidRequest(m));
    let size = req.encoded_len();
    if size > max_bytes {
        return bad(format!(
            "the request is {size} bytes, more than the {max_bytes} this router accepts (option max_request_bytes)"
        ));
    }
    if req.route.is_empty() {
        return bad("route: the name of a ModelRoute is required".into());
    }
    if req.messages.is_empty() {
        return bad("messages: at least one message is required".into());
    }
    for (i, m) in req.messages.iter().enumerate() {
        match Role::try_from(m.role) {
            Ok(Role::Unspecified) | Err(_) => {
                return bad(format!(
                    "messages[{i}].role: must be system, user, assistant or tool"
                ));
            }
            Ok(Role::Tool) if m.tool_call_id.is_empty() => {
                return bad(format!(
                    "messages[{i}].tool_call_id: a tool message must name the call it answers"
                ));
            }
            Ok(_) => {}
        }
        for (j, c) in m.tool_calls.iter().enumerate() {
            if c.id.is_empty() || c.name.is_empty() {
                return bad(format!(
                    "messages[{i}].tool_calls[{j}]: id and name are required"
                ));
            }
        }
    }
    for (i, t) in req.tools.iter().enumerate() {
        if t.name.is_empty() {
            return bad(format!("tools[{i}].name: is required"));
        }
        if !t.parameters_json_schema.trim().is_empty() {
            match serde_json::from_str::<serde_json::Value>(&t.parameters_json_schema) {
                Ok(v) if v.is_object() => {}
                Ok(_) => {
                    return bad(format!(
                        "tools[{i}] '{}': parameters_json_schema must be a JSON object",
                        quote(&t.name)
                    ));
                }
                Err(e) => {
                    return bad(format!(
                        "tools[{i}] '{}': parameters_json_schema is not JSON: {}",
                        quote(&t.name),
                        json_problem(&e)
                    ));
                }
            }
        }
    }
    let named = req
        .tool_choice
        .as_ref()
        .filter(|c| ToolChoiceMode::try_from(c.mode) == Ok(ToolChoiceMode::Named));
    if let Some(choice) = named.filter(|c| !req.tools.iter().any(|t| t.name == c.name)) {
        return bad(format!(
            "tool_choice.name: '{}' is not one of the request's tools",
            quote(&choice.name)
        ));
    }
    if let Some(t) = req.temperature.filter(|t| !t.is_finite() || *t < 0.0) {
        return bad(format!("temperature: {t} is not a non-negative number"));
    }
    if let Some(p) = req.top_p.filter(|p| !top_p_in_range(*p)) {
        return bad(format!("top_p: {p} is not above 0 and at most 1"));
    }
    if req.stop.len() > STOP_MAX {
        return bad(format!(
            "stop: {} sequences, more than the {STOP_MAX} this router sends",
            req.stop.len()
        ));
    }
    if let Some(i) = req.stop.iter().position(|s| !stop_sequence_fits(s)) {
        return bad(format!(
            "stop[{i}]: a stop sequence is 1 to {STOP_BYTES_MAX} bytes"
        ));
    }
    if let Some(f) = &req.response_format {
        check_response_format(f)?;
    }
    if !req.reasoning_effort.is_empty()
        && !REASONING_EFFORTS.contains(&req.reasoning_effort.as_str())
    {
        return bad(format!(
            "reasoning_effort: '{}' is not one of {}",
            quote(&req.reasoning_effort),
            REASONING_EFFORTS.join(", ")
        ));
    }
    if req.prompt_cache_key.len() > 256 || req.prompt_cache_key.chars().any(char::is_control) {
        return bad("prompt_cache_key: at most 256 bytes, without control characters".to_string());
    }
    if let Some(b) = req.thinking_budget_tokens {
        if b < THINKING_BUDGET_MIN {
            return bad(format!(
                "thinking_budget_tokens: {b} is below the {THINKING_BUDGET_MIN} the providers take"
            ));
        }
        if let Some(m) = req.max_output_tokens.filter(|m| b >= *m) {
            return bad(format!(
                "thinking_budget_tokens: {b} must be below max_output_tokens ({m}), which counts the thinking too"
            ));
        }
    }
    if req.end_user.len() > 256 || req.end_user.chars().any(char::is_control) {
        return bad("end_user: at most 256 bytes, without control characters".to_string());
    }
    Ok(())
}

/// A response format's fields agree with its type.
fn check_response_format(f: &ResponseFormat) -> Result<(), Error> {
    let bad = |m: String| Err(Error::InvalidRequest(m));
    let kind = ResponseFormatType::try_from(f.r#type).map_err(|_| {
        Error::InvalidRequest(format!(
            "response_format.type: {} is not a response format type",
            f.r#type
        ))
    })?;
    if kind != ResponseFormatType::JsonSchema {
        if !f.name.is_empty() || !f.description.is_empty() || !f.schema_json.is_empty() || f.strict
        {
            return bad(format!(
                "response_format: name, description, schema_json and strict go only with RESPONSE_FORMAT_TYPE_JSON_SCHEMA, not {}",
                kind.as_str_name()
            ));
        }
        return Ok(());
    }
    let name_ok = (1..=64).contains(&f.name.len())
        && f.name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if !name_ok {
        return bad(format!(
            "response_format.name: '{}' is not 1 to 64 of a-z, A-Z, 0-9, '_' and '-'",
            quote(&f.name)
        ));
    }
    match serde_json::from_str::<serde_json::Value>(&f.schema_json) {
        Ok(v) if v.is_object() => Ok(()),
        Ok(_) => bad("response_format.schema_json: must be a JSON object".into()),
        Err(_) if f.schema_json.trim().is_empty() => bad(
            "response_format.schema_json: is required with RESPONSE_FORMAT_TYPE_JSON_SCHEMA".into(),
        ),
        Err(e) => bad(format!(
            "response_format.schema_json: is not JSON: {}",
            json_problem(&e)
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bridle_proto::{Message, ToolChoice, ToolSpec};

    fn req() -> CompleteRequest {
        CompleteRequest {
            route: "r".into(),
            messages: vec![Message {
                role: Role::User as i32,
                text: "hi".into(),
                ..Default::default()
            }],
            ..Default::default()
        }
    }

    fn err(r: &CompleteRequest) -> String {
        validate(r, 1 << 20).unwrap_err().to_string()
    }

    #[test]
    fn oversized_requests_are_refused() {
        let mut r = req();
        r.messages[0].text = "x".repeat(2000);
        assert!(validate(&r, 4096).is_ok());
        let e = validate(&r, 1000).unwrap_err().to_string();
        assert!(e.starts_with("the request is 20"), "{e}");
        assert!(e.contains("more than the 1000 this router accepts"), "{e}");
    }

    #[test]
    fn problems_name_the_field() {
        assert!(validate(&req(), 1 << 20).is_ok());
        let mut r = req();
        r.messages[0].role = 0;
        assert!(err(&r).starts_with("messages[0].role"));
        let mut r = req();
        r.tools = vec![ToolSpec {
            name: "f".into(),
            parameters_json_schema: "{nope".into(),
            ..Default::default()
        }];
        assert!(err(&r).starts_with("tools[0] 'f': parameters_json_schema is not JSON"));
        r.tools[0].parameters_json_schema = "[".repeat(100_000);
        assert!(
            err(&r).contains("is not JSON: it nests deeper than 128 levels, the most this router reads (at line 1, column 128)"),
            "{}",
            err(&r)
        );
        let mut r = req();
        r.tool_choice = Some(ToolChoice {
            mode: ToolChoiceMode::Named as i32,
            name: "g".into(),
        });
        assert!(err(&r).contains("'g' is not one of the request's tools"));
        let mut r = req();
        r.route.clear();
        assert!(err(&r).starts_with("route:"));
    }

    #[test]
    fn sampling_controls_are_checked() {
        let mut r = req();
        r.top_p = Some(1.0);
        r.stop = vec!["\n".into(); STOP_MAX];
        r.seed = Some(-3);
        assert!(validate(&r, 1 << 20).is_ok());
        for p in [0.0, 1.5, f32::NAN] {
            r.top_p = Some(p);
            assert!(err(&r).starts_with("top_p: "), "{}", err(&r));
        }
        r.top_p = None;
        r.stop.push("x".into());
        assert!(
            err(&r).starts_with("stop: 17 sequences, more than the 16"),
            "{}",
            err(&r)
        );
        r.stop = vec!["a".into(), String::new()];
        assert_eq!(err(&r), "stop[1]: a stop sequence is 1 to 1000 bytes");
        r.stop = vec!["x".repeat(STOP_BYTES_MAX + 1)];
        assert!(err(&r).starts_with("stop[0]: "), "{}", err(&r));
        r.stop.clear();
        r.reasoning_effort = "extreme".into();
        assert!(
            err(&r).starts_with("reasoning_effort: 'extreme' is not one of none, minimal"),
            "{}",
            err(&r)
        );
        r.reasoning_effort = "high".into();
        r.thinking_budget_tokens = Some(512);
        assert!(
            err(&r).starts_with("thinking_budget_tokens: 512 is below the 1024"),
            "{}",
            err(&r)
        );
        r.thinking_budget_tokens = Some(2048);
        r.max_output_tokens = Some(2048);
        assert!(
            err(&r).contains("must be below max_output_tokens (2048)"),
            "{}",
            err(&r)
        );
    }

    #[test]
    fn a_response_format_agrees_with_its_type() {
        let schema = |name: &str, schema_json: &str| ResponseFormat {
            r#type: ResponseFormatType::JsonSchema as i32,
            name: name.into(),
            schema_json: schema_json.into(),
            ..Default::default()
        };
        let mut r = req();
        for ok in [
            schema("answer_1-x", r#"{"type":"object"}"#),
            ResponseFormat {
                r#type: ResponseFormatType::JsonObject as i32,
                ..Default::default()
            },
            ResponseFormat::default(),
        ] {
            r.response_format = Some(ok);
            assert!(validate(&r, 1 << 20).is_ok(), "{:?}", r.response_format);
        }
        for (bad, want) in [
            (schema("", "{}"), "response_format.name: '' is not 1 to 64"),
            (schema("a b", "{}"), "response_format.name: 'a b' is not"),
            (
                schema("a", ""),
                "response_format.schema_json: is required with RESPONSE_FORMAT_TYPE_JSON_SCHEMA",
            ),
            (
                schema("a", "[]"),
                "response_format.schema_json: must be a JSON object",
            ),
            (
                schema("a", "{nope"),
                "response_format.schema_json: is not JSON: ",
            ),
            (
                ResponseFormat {
                    r#type: ResponseFormatType::JsonObject as i32,
                    name: "a".into(),
                    ..Default::default()
                },
                "response_format: name, description, schema_json and strict go only with RESPONSE_FORMAT_TYPE_JSON_SCHEMA, not RESPONSE_FORMAT_TYPE_JSON_OBJECT",
            ),
            (
                ResponseFormat {
                    r#type: 9,
                    ..Default::default()
                },
                "response_format.type: 9 is not a response format type",
            ),
        ] {
            r.response_format = Some(bad);
            assert!(err(&r).starts_with(want), "{}", err(&r));
        }
    }
}
