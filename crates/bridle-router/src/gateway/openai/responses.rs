//! The Responses API front (`POST /v1/responses`): what the OpenAI Agents SDK's default model
//! calls. A request's `instructions` and `input` items (messages, function calls and their
//! outputs) are read into Bridle's normalized request, refusing what would not be carried; the
//! answer is written back as a response object, whole or as the API's streamed events
//! ([`super::responses_stream`]).
//!
//! The front keeps no state: a response is not stored, so it cannot be fetched again or
//! continued with `previous_response_id` (refused by name); a caller sends the whole
//! conversation each time, as the Agents SDK does by default.

use bridle_proto::{
    CompleteRequest, CompleteResponse, FinishReason, Message, ResponseFormat, ResponseFormatType,
    Role, ToolCall, ToolChoice, ToolChoiceMode,
};
use serde_json::{Value, json};

use super::wire::{bridle_fields, choice_mode, format_of_type, schema_fields, tool_spec};
use crate::gateway::fields::{self, Shape, bool_field, q, str_field};
use crate::gateway::{Failure, new_id};

/// Top-level fields of a Responses request (the API reference's request body).
const REQUEST: Shape = Shape {
    carried: &[
        "model",
        "input",
        "instructions",
        "tools",
        "tool_choice",
        "temperature",
        "top_p",
        "max_output_tokens",
        "stream",
        "store",
        "text",
        "user",
        "reasoning",
        "prompt_cache_key",
    ],
    defaults: &[
        ("include", "[]"),
        ("parallel_tool_calls", "true"),
        ("truncation", "\"disabled\""),
        ("background", "false"),
    ],
    refused: &[
        "access_programs",
        "background_options",
        "context_management",
        "conversation",
        "image",
        "max_tool_calls",
        "metadata",
        "moderation",
        "previous_response_id",
        "prompt",
        "prompt_cache_options",
        "prompt_cache_retention",
        "safety_identifier",
        "service_tier",
        "stream_options",
        "top_logprobs",
    ],
};

const TEXT: Shape = Shape {
    carried: &["format"],
    defaults: &[],
    refused: &["verbosity"],
};

/// `reasoning`: the level is carried; the model's reasoning summary is not returned.
const REASONING: Shape = Shape {
    carried: &["effort"],
    defaults: &[],
    refused: &["summary", "generate_summary"],
};

const FORMAT: Shape = Shape {
    carried: &["type", "name", "description", "schema", "strict"],
    defaults: &[],
    refused: &[],
};

/// A message item; `id` and `status` are what an earlier response said of it, and change
/// nothing.
const MESSAGE_ITEM: Shape = Shape {
    carried: &["type", "role", "content", "id", "status"],
    defaults: &[],
    refused: &["phase"],
};

const INPUT_TEXT: Shape = Shape {
    carried: &["type", "text"],
    defaults: &[],
    refused: &[],
};

/// Text an earlier response wrote, sent back as input.
const OUTPUT_TEXT: Shape = Shape {
    carried: &["type", "text"],
    defaults: &[("annotations", "[]"), ("logprobs", "[]")],
    refused: &[],
};

const FUNCTION_CALL_ITEM: Shape = Shape {
    carried: &["type", "call_id", "name", "arguments", "id", "status"],
    defaults: &[],
    refused: &["caller", "namespace"],
};

const FUNCTION_OUTPUT_ITEM: Shape = Shape {
    carried: &["type", "call_id", "output", "id", "status"],
    defaults: &[],
    refused: &["caller", "name", "namespace"],
};

const TOOL: Shape = Shape {
    carried: &["type", "name", "description", "parameters", "strict"],
    defaults: &[],
    refused: &["defer_loading"],
};

const NAMED_CHOICE: Shape = Shape {
    carried: &["type", "name"],
    defaults: &[],
    refused: &[],
};

/// A parsed Responses request: the normalized call, whether to stream, and what the response
/// object repeats of the request.
pub struct Parsed {
    pub req: CompleteRequest,
    pub stream: bool,
    pub echo: Echo,
}

/// The request's settings as the response object repeats them.
#[derive(Clone, Debug)]
pub struct Echo {
    fields: serde_json::Map<String, Value>,
}

/// The text of a part list or string at `v[key]`: `input_text` parts (and `output_text` ones
/// where an earlier answer is sent back); anything else is refused by type.
fn text_of(v: &Value, key: &str, at: &str, output_text: bool) -> Result<String, Failure> {
    match v.get(key) {
        None | Some(Value::Null) => Ok(String::new()),
        Some(Value::String(s)) => Ok(s.clone()),
        Some(Value::Array(parts)) => {
            let mut out = String::new();
            for (j, p) in parts.iter().enumerate() {
                let pat = format!("{at}{key}[{j}].");
                let shape = match str_field(p, "type", &pat)? {
                    Some("input_text") => &INPUT_TEXT,
                    Some("output_text") if output_text => &OUTPUT_TEXT,
                    Some(other) => {
                        return Err(Failure::invalid(format!(
                            "{pat}type: {} parts are not supported by this gateway (only text)",
                            q(other)
                        )));
                    }
                    None => return Err(Failure::invalid(format!("{pat}type: is required"))),
                };
                fields::check(p, &pat, shape)?;
                out.push_str(str_field(p, "text", &pat)?.unwrap_or(""));
            }
            Ok(out)
        }
        Some(_) => Err(Failure::invalid(format!(
            "{at}{key}: must be a string or an array of parts"
        ))),
    }
}

fn required_str(v: &Value, key: &str, at: &str) -> Result<String, Failure> {
    str_field(v, key, at)?
        .map(str::to_string)
        .ok_or_else(|| Failure::invalid(format!("{at}{key}: is required (a string)")))
}

/// The conversation: `instructions` as the system message, then the `input` items.
fn messages(body: &Value) -> Result<Vec<Message>, Failure> {
    let mut out = Vec::new();
    if let Some(i) = str_field(body, "instructions", "")?.filter(|i| !i.is_empty()) {
        out.push(Message {
            role: Role::System as i32,
            text: i.to_string(),
            ..Default::default()
        });
    }
    let items = match body.get("input") {
        None | Some(Value::Null) => {
            return Err(Failure::invalid(
                "input: is required (a string or an array of items)",
            ));
        }
        Some(Value::String(s)) => {
            out.push(Message {
                role: Role::User as i32,
                text: s.clone(),
                ..Default::default()
            });
            return Ok(out);
        }
        Some(Value::Array(items)) => items,
        Some(_) => {
            return Err(Failure::invalid(
                "input: must be a string or an array of items",
            ));
        }
    };
    for (i, item) in items.iter().enumerate() {
        let at = format!("input[{i}].");
        if !item.is_object() {
            return Err(Failure::invalid(format!("input[{i}]: must be an object")));
        }
        // A message may leave its type out (the API's "easy" input message).
        let kind = match str_field(item, "type", &at)? {
            Some(k) => k,
            None if item.get("role").is_some() => "message",
            None => return Err(Failure::invalid(format!("{at}type: is required"))),
        };
        match kind {
            "message" => {
                fields::check(item, &at, &MESSAGE_ITEM)?;
                let role = match str_field(item, "role", &at)? {
                    Some("system") | Some("developer") => Role::System,
                    Some("user") => Role::User,
                    Some("assistant") => Role::Assistant,
                    Some(other) => {
                        return Err(Failure::invalid(format!(
                            "{at}role: {} is not system, developer, user or assistant",
                            q(other)
                        )));
                    }
                    None => return Err(Failure::invalid(format!("{at}role: is required"))),
                };
                out.push(Message {
                    role: role as i32,
                    text: text_of(item, "content", &at, role == Role::Assistant)?,
                    ..Default::default()
                });
            }
            "function_call" => {
                fields::check(item, &at, &FUNCTION_CALL_ITEM)?;
                let call = ToolCall {
                    id: required_str(item, "call_id", &at)?,
                    name: required_str(item, "name", &at)?,
                    arguments_json: str_field(item, "arguments", &at)?
                        .unwrap_or_default()
                        .to_string(),
                };
                // Calls that follow an answer (or each other) belong to the same turn.
                match out.last_mut() {
                    Some(m) if m.role == Role::Assistant as i32 => m.tool_calls.push(call),
                    _ => out.push(Message {
                        role: Role::Assistant as i32,
                        tool_calls: vec![call],
                        ..Default::default()
                    }),
                }
            }
            "function_call_output" => {
                fields::check(item, &at, &FUNCTION_OUTPUT_ITEM)?;
                out.push(Message {
                    role: Role::Tool as i32,
                    tool_call_id: required_str(item, "call_id", &at)?,
                    text: text_of(item, "output", &at, false)?,
                    ..Default::default()
                });
            }
            other => {
                return Err(Failure::unsupported(
                    &format!("input[{i}]"),
                    "unsupported_value",
                    format!(
                        "{at}type: {} items are not supported by this gateway (only message, function_call and function_call_output)",
                        q(other)
                    ),
                ));
            }
        }
    }
    Ok(out)
}

/// `text.format`: text, json_object, or json_schema with its name and schema at the same level.
fn response_format(body: &Value) -> Result<Option<ResponseFormat>, Failure> {
    let text = match body.get("text") {
        None | Some(Value::Null) => return Ok(None),
        Some(t @ Value::Object(_)) => t,
        Some(_) => return Err(Failure::invalid("text: must be an object")),
    };
    fields::check(text, "text.", &TEXT)?;
    let v = match text.get("format") {
        None | Some(Value::Null) => return Ok(None),
        Some(v @ Value::Object(_)) => v,
        Some(_) => return Err(Failure::invalid("text.format: must be an object")),
    };
    let at = "text.format.";
    fields::check(v, at, &FORMAT)?;
    let mut f = format_of_type(v, at)?;
    if f.r#type() == ResponseFormatType::JsonSchema {
        schema_fields(v, at, &mut f)?;
    } else if let Some(k) = ["name", "description", "schema", "strict"]
        .into_iter()
        .find(|k| v.get(*k).is_some_and(|x| !x.is_null()))
    {
        return Err(Failure::invalid(format!(
            "{at}{k}: goes only with type json_schema"
        )));
    }
    Ok(Some(f))
}

fn tools(body: &Value) -> Result<Vec<bridle_proto::ToolSpec>, Failure> {
    let raw = match body.get("tools") {
        None | Some(Value::Null) => return Ok(Vec::new()),
        Some(Value::Array(t)) => t,
        Some(_) => return Err(Failure::invalid("tools: must be an array")),
    };
    let mut out = Vec::with_capacity(raw.len());
    for (i, t) in raw.iter().enumerate() {
        let at = format!("tools[{i}].");
        match str_field(t, "type", &at)? {
            Some("function") => {}
            Some(k) => {
                return Err(Failure::unsupported(
                    &format!("tools[{i}].type"),
                    "unsupported_value",
                    format!(
                        "{at}type: {} tools are not supported by this gateway (only function)",
                        q(k)
                    ),
                ));
            }
            None => return Err(Failure::invalid(format!("{at}type: is required"))),
        }
        fields::check(t, &at, &TOOL)?;
        // The Responses API holds a function's arguments to its schema unless told not to.
        out.push(tool_spec(t, &at, true)?);
    }
    Ok(out)
}

fn tool_choice(body: &Value) -> Result<Option<ToolChoice>, Failure> {
    match body.get("tool_choice") {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(choice_mode(s)?)),
        Some(v) => {
            match str_field(v, "type", "tool_choice.")? {
                Some("function") => {}
                Some(k) => {
                    return Err(Failure::unsupported(
                        "tool_choice.type",
                        "unsupported_value",
                        format!(
                            "tool_choice.type: {} is not supported by this gateway (only function)",
                            q(k)
                        ),
                    ));
                }
                None => return Err(Failure::invalid("tool_choice.type: is required")),
            }
            fields::check(v, "tool_choice.", &NAMED_CHOICE)?;
            Ok(Some(ToolChoice {
                mode: ToolChoiceMode::Named as i32,
                name: required_str(v, "name", "tool_choice.")?,
            }))
        }
    }
}

/// A Responses request as a Bridle request. Carried: model, instructions, input (text
/// messages, function calls, function call outputs), tools (function, strict by default as in
/// the API), tool_choice, temperature, top_p, max_output_tokens, text.format (text,
/// json_object, json_schema), reasoning.effort, stream, user (the end user). Accepted at one value only: store
/// false (nothing is stored), include [], parallel_tool_calls true, truncation disabled,
/// background false. Any other field is refused by name ([`REQUEST`] lists the API's), and so
/// are non-text parts and other item types.
pub fn parse(body: &Value) -> Result<Parsed, Failure> {
    if !body.is_object() {
        return Err(Failure::invalid("the request body must be a JSON object"));
    }
    fields::check(body, "", &REQUEST)?;
    let route = str_field(body, "model", "")?
        .filter(|m| !m.is_empty())
        .ok_or_else(|| Failure::invalid("model: is required (the name of a ModelRoute)"))?;
    if bool_field(body, "store", "")? == Some(true) {
        return Err(Failure::unsupported(
            "store",
            "unsupported_value",
            "store: only false is supported by this gateway: it keeps no responses, so one stored could never be fetched or continued",
        ));
    }
    let temperature = fields::temperature(body)?;
    let max_output_tokens = fields::token_cap(body, "max_output_tokens")?;
    let end_user = str_field(body, "user", "")?.unwrap_or_default().to_string();
    let reasoning_effort = match body.get("reasoning") {
        None | Some(Value::Null) => String::new(),
        Some(r @ Value::Object(_)) => {
            fields::check(r, "reasoning.", &REASONING)?;
            str_field(r, "effort", "reasoning.")?
                .unwrap_or_default()
                .to_string()
        }
        Some(_) => return Err(Failure::invalid("reasoning: must be an object")),
    };
    let req = CompleteRequest {
        route: route.to_string(),
        messages: messages(body)?,
        tools: tools(body)?,
        tool_choice: tool_choice(body)?,
        temperature,
        top_p: fields::top_p(body)?,
        max_output_tokens,
        response_format: response_format(body)?,
        end_user,
        reasoning_effort,
        prompt_cache_key: str_field(body, "prompt_cache_key", "")?
            .unwrap_or_default()
            .to_string(),
        ..Default::default()
    };
    let stream = bool_field(body, "stream", "")?.unwrap_or(false);
    let echo = Echo::of(body, &req);
    Ok(Parsed { req, stream, echo })
}

impl Echo {
    fn of(body: &Value, req: &CompleteRequest) -> Self {
        let get = |k: &str| body.get(k).cloned().unwrap_or(Value::Null);
        let or = |k: &str, d: Value| body.get(k).filter(|v| !v.is_null()).cloned().unwrap_or(d);
        let format = body
            .pointer("/text/format")
            .filter(|v| !v.is_null())
            .cloned()
            .unwrap_or_else(|| json!({"type": "text"}));
        let fields = json!({
            "model": req.route,
            "instructions": get("instructions"),
            "max_output_tokens": get("max_output_tokens"),
            "parallel_tool_calls": true,
            "previous_response_id": null,
            "reasoning": {"effort": if req.reasoning_effort.is_empty() { Value::Null } else { json!(req.reasoning_effort) }, "summary": null},
            "store": false,
            "temperature": get("temperature"),
            "text": {"format": format},
            "tool_choice": or("tool_choice", json!("auto")),
            "tools": or("tools", json!([])),
            "top_p": get("top_p"),
            "truncation": "disabled",
            "user": get("user"),
            "metadata": {},
        });
        Echo {
            fields: match fields {
                Value::Object(m) => m,
                _ => serde_json::Map::new(),
            },
        }
    }

    /// A response object in `status` with `output` and the request's echo; usage, error and
    /// incomplete details are null for the caller to set.
    pub fn response(&self, id: &str, created: u64, status: &str, output: Vec<Value>) -> Value {
        let mut r = serde_json::Map::with_capacity(self.fields.len() + 8);
        r.insert("id".into(), json!(id));
        r.insert("object".into(), json!("response"));
        r.insert("created_at".into(), json!(created));
        r.insert("status".into(), json!(status));
        r.insert("error".into(), Value::Null);
        r.insert("incomplete_details".into(), Value::Null);
        r.insert("output".into(), Value::Array(output));
        r.insert("usage".into(), Value::Null);
        for (k, v) in &self.fields {
            r.insert(k.clone(), v.clone());
        }
        Value::Object(r)
    }
}

pub fn usage(r: &CompleteResponse) -> Value {
    let u = r.usage.unwrap_or_default();
    json!({
        "input_tokens": u.input_tokens,
        "input_tokens_details": {"cached_tokens": u.cache_read_tokens},
        "output_tokens": u.output_tokens,
        "output_tokens_details": {"reasoning_tokens": u.reasoning_tokens},
        "total_tokens": u.input_tokens.saturating_add(u.output_tokens),
    })
}

/// A message item holding `text`.
pub fn message_item(id: &str, text: &str, status: &str) -> Value {
    json!({
        "type": "message", "id": id, "status": status, "role": "assistant",
        "content": if status == "in_progress" { json!([]) } else { json!([text_part(text)]) },
    })
}

pub fn text_part(text: &str) -> Value {
    json!({"type": "output_text", "text": text, "annotations": [], "logprobs": []})
}

/// A function call item.
pub fn call_item(id: &str, call: &ToolCall, status: &str) -> Value {
    json!({
        "type": "function_call", "id": id, "call_id": call.id, "name": call.name,
        "arguments": call.arguments_json, "status": status,
    })
}

/// The ids of a response's output items: its message's, and each call's in order. A stream
/// names them as it goes; the whole response names them when it is written.
#[derive(Default)]
pub struct ItemIds {
    pub message: Option<String>,
    pub calls: Vec<String>,
}

/// The finished response: completed, or incomplete when the output was cut short.
pub fn finished(echo: &Echo, id: &str, created: u64, r: &CompleteResponse, ids: &ItemIds) -> Value {
    let m = r.message.clone().unwrap_or_default();
    let mut output = Vec::with_capacity(1 + m.tool_calls.len());
    if !m.text.is_empty() || m.tool_calls.is_empty() {
        let id = ids.message.clone().unwrap_or_else(|| new_id("msg_"));
        output.push(message_item(&id, &m.text, "completed"));
    }
    for (i, c) in m.tool_calls.iter().enumerate() {
        let id = ids.calls.get(i).cloned().unwrap_or_else(|| new_id("fc_"));
        output.push(call_item(&id, c, "completed"));
    }
    let incomplete = match FinishReason::try_from(r.finish_reason).unwrap_or_default() {
        FinishReason::Length => Some("max_output_tokens"),
        FinishReason::ContentFilter => Some("content_filter"),
        _ => None,
    };
    let status = if incomplete.is_some() {
        "incomplete"
    } else {
        "completed"
    };
    let mut v = echo.response(id, created, status, output);
    if let Some(reason) = incomplete {
        v["incomplete_details"] = json!({ "reason": reason });
    }
    v["usage"] = usage(r);
    v["bridle"] = bridle_fields(r);
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(body: Value) -> Failure {
        match parse(&body) {
            Ok(_) => panic!("accepted: {body}"),
            Err(f) => f,
        }
    }

    #[test]
    fn an_agents_conversation_reads_as_turns() {
        let p = parse(&json!({
            "model": "gpt", "instructions": "Be brief.", "include": [],
            "input": [
                {"role": "user", "content": "Weather in Paris?"},
                {"type": "message", "id": "msg_1", "status": "completed", "role": "assistant",
                 "content": [{"type": "output_text", "text": "Checking.", "annotations": [], "logprobs": []}]},
                {"type": "function_call", "id": "fc_1", "call_id": "call_1", "name": "get_weather",
                 "arguments": "{\"city\":\"Paris\"}", "status": "completed"},
                {"type": "function_call_output", "call_id": "call_1", "output": "sunny"},
                {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "Thanks"}]}
            ],
            "tools": [{"type": "function", "name": "get_weather", "description": "d",
                       "parameters": {"type": "object", "properties": {}}}],
            "tool_choice": {"type": "function", "name": "get_weather"},
            "text": {"format": {"type": "json_schema", "name": "w", "schema": {"type": "object"}}},
            "max_output_tokens": 50, "user": "u-1", "stream": true
        }))
        .unwrap();
        let m = &p.req.messages;
        let roles: Vec<i32> = m.iter().map(|m| m.role).collect();
        assert_eq!(
            roles,
            [
                Role::System,
                Role::User,
                Role::Assistant,
                Role::Tool,
                Role::User
            ]
            .map(|r| r as i32)
        );
        assert_eq!(m[2].text, "Checking.");
        assert_eq!(m[2].tool_calls[0].id, "call_1");
        assert_eq!(m[3].tool_call_id, "call_1");
        assert_eq!(m[4].text, "Thanks");
        assert!(p.req.tools[0].strict, "strict by default, as in the API");
        assert_eq!(p.req.tool_choice.unwrap().name, "get_weather");
        let f = p.req.response_format.unwrap();
        assert_eq!(
            (f.name.as_str(), f.r#type),
            ("w", ResponseFormatType::JsonSchema as i32)
        );
        assert_eq!(
            (p.req.max_output_tokens, p.req.end_user.as_str()),
            (Some(50), "u-1")
        );
        assert!(p.stream);
    }

    #[test]
    fn what_would_not_be_carried_is_refused_by_name() {
        let base = |extra: Value| {
            let mut b = json!({"model": "gpt", "input": "hi"});
            b.as_object_mut()
                .unwrap()
                .extend(extra.as_object().unwrap().clone());
            b
        };
        for (body, param) in [
            (
                json!({"previous_response_id": "resp_1"}),
                "previous_response_id",
            ),
            (
                json!({"reasoning": {"effort": "low", "summary": "auto"}}),
                "reasoning.summary",
            ),
            (json!({"store": true}), "store"),
            (json!({"parallel_tool_calls": false}), "parallel_tool_calls"),
            (json!({"text": {"verbosity": "low"}}), "text.verbosity"),
            (json!({"tools": [{"type": "web_search"}]}), "tools[0].type"),
            (
                json!({"input": [{"type": "reasoning", "summary": []}]}),
                "input[0]",
            ),
            (json!({"colour": "red"}), "colour"),
        ] {
            let f = err(base(body));
            assert_eq!(f.param.as_deref(), Some(param), "{}", f.message);
        }
        let f = err(base(
            json!({"input": [{"role": "user", "content": [{"type": "input_image", "image_url": "x"}]}]}),
        ));
        assert!(
            f.message
                .starts_with("input[0].content[0].type: 'input_image' parts are not supported"),
            "{}",
            f.message
        );
        let f = err(json!({"model": "gpt"}));
        assert!(f.message.starts_with("input: is required"), "{}", f.message);
        let f = err(base(
            json!({"input": [{"type": "function_call_output", "output": "x"}]}),
        ));
        assert_eq!(f.message, "input[0].call_id: is required (a string)");
    }

    #[test]
    fn the_finished_response_reuses_the_streamed_ids() {
        let p = parse(&json!({"model": "gpt", "input": "hi", "temperature": 0.2})).unwrap();
        let r = CompleteResponse {
            message: Some(Message {
                role: Role::Assistant as i32,
                text: "Hi".into(),
                tool_calls: vec![ToolCall {
                    id: "call_1".into(),
                    name: "f".into(),
                    arguments_json: "{}".into(),
                }],
                ..Default::default()
            }),
            finish_reason: FinishReason::Length as i32,
            ..Default::default()
        };
        let ids = ItemIds {
            message: Some("msg_a".into()),
            calls: vec!["fc_b".into()],
        };
        let v = finished(&p.echo, "resp_1", 7, &r, &ids);
        assert_eq!(v["status"], "incomplete");
        assert_eq!(v["incomplete_details"]["reason"], "max_output_tokens");
        assert_eq!(v["output"][0]["id"], "msg_a");
        assert_eq!(v["output"][0]["content"][0]["text"], "Hi");
        assert_eq!(v["output"][1]["id"], "fc_b");
        assert_eq!(v["output"][1]["call_id"], "call_1");
        assert_eq!(
            (v["model"].as_str(), v["temperature"].as_f64()),
            (Some("gpt"), Some(0.2))
        );
        assert_eq!(v["tool_choice"], "auto");
    }
}
