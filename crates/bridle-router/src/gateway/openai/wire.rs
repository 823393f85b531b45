//! The Chat Completions wire format on the gateway's side: a request read into Bridle's
//! normalized one (refusing what would not be carried), and a response written back.

use bridle_proto::{
    CompleteRequest, CompleteResponse, FinishReason, Message, ResponseFormat, ResponseFormatType,
    Role, ToolCall, ToolChoice, ToolChoiceMode, ToolSpec,
};
use serde_json::{Value, json};

use crate::gateway::fields::{self, Shape, bool_field, q, str_field};
use crate::gateway::{Failure, new_id, unix_now};

/// Top-level fields of a Chat Completions request (the API reference's request body).
const REQUEST: Shape = Shape {
    carried: &[
        "model",
        "messages",
        "tools",
        "tool_choice",
        "temperature",
        "max_tokens",
        "max_completion_tokens",
        "stream",
        "stream_options",
        "user",
        "stop",
        "top_p",
        "seed",
        "response_format",
        "reasoning_effort",
        "prompt_cache_key",
    ],
    defaults: &[
        ("n", "1"),
        ("logprobs", "false"),
        ("parallel_tool_calls", "true"),
        ("store", "false"),
        ("frequency_penalty", "0"),
        ("presence_penalty", "0"),
    ],
    refused: &[
        "audio",
        "function_call",
        "functions",
        "logit_bias",
        "metadata",
        "modalities",
        "moderation",
        "prediction",
        "prompt_cache_options",
        "prompt_cache_retention",
        "safety_identifier",
        "service_tier",
        "top_logprobs",
        "verbosity",
        "web_search_options",
    ],
};

const RESPONSE_FORMAT: Shape = Shape {
    carried: &["type", "json_schema"],
    defaults: &[],
    refused: &[],
};

const JSON_SCHEMA: Shape = Shape {
    carried: &["name", "description", "schema", "strict"],
    defaults: &[],
    refused: &[],
};

const STREAM_OPTIONS: Shape = Shape {
    carried: &["include_usage"],
    // The gateway never pads its chunks.
    defaults: &[("include_obfuscation", "false")],
    refused: &[],
};

/// A system, developer or user message.
const PLAIN_MESSAGE: Shape = Shape {
    carried: &["role", "content"],
    defaults: &[],
    refused: &["name"],
};

const ASSISTANT_MESSAGE: Shape = Shape {
    carried: &["role", "content", "tool_calls"],
    defaults: &[],
    refused: &["name", "refusal", "audio", "function_call"],
};

const TOOL_MESSAGE: Shape = Shape {
    carried: &["role", "content", "tool_call_id"],
    defaults: &[],
    refused: &[],
};

const TEXT_PART: Shape = Shape {
    carried: &["type", "text"],
    defaults: &[],
    refused: &["prompt_cache_breakpoint"],
};

const TOOL_CALL: Shape = Shape {
    carried: &["id", "type", "function"],
    defaults: &[],
    refused: &[],
};

const CALLED_FUNCTION: Shape = Shape {
    carried: &["name", "arguments"],
    defaults: &[],
    refused: &[],
};

const TOOL: Shape = Shape {
    carried: &["type", "function"],
    defaults: &[],
    refused: &[],
};

const FUNCTION: Shape = Shape {
    carried: &["name", "description", "parameters", "strict"],
    defaults: &[],
    refused: &[],
};

const NAMED_CHOICE: Shape = Shape {
    carried: &["type", "function"],
    defaults: &[],
    refused: &[],
};

const CHOSEN_FUNCTION: Shape = Shape {
    carried: &["name"],
    defaults: &[],
    refused: &[],
};

/// `response_format`: text, json_object, or json_schema with its schema (checked further by
/// the router: the name's characters, the schema an object).
fn response_format(body: &Value) -> Result<Option<ResponseFormat>, Failure> {
    let v = match body.get("response_format") {
        None | Some(Value::Null) => return Ok(None),
        Some(v @ Value::Object(_)) => v,
        Some(_) => return Err(Failure::invalid("response_format: must be an object")),
    };
    let at = "response_format.";
    fields::check(v, at, &RESPONSE_FORMAT)?;
    let mut f = format_of_type(v, at)?;
    let kind = f.r#type();
    let schema = v.get("json_schema").filter(|s| !s.is_null());
    match (kind, schema) {
        (ResponseFormatType::JsonSchema, Some(s @ Value::Object(_))) => {
            let at = "response_format.json_schema.";
            fields::check(s, at, &JSON_SCHEMA)?;
            schema_fields(s, at, &mut f)?;
        }
        (ResponseFormatType::JsonSchema, _) => {
            return Err(Failure::invalid(
                "response_format.json_schema: is required with type json_schema (an object)",
            ));
        }
        (_, Some(_)) => {
            return Err(Failure::invalid(
                "response_format.json_schema: goes only with type json_schema",
            ));
        }
        (_, None) => {}
    }
    Ok(Some(f))
}

/// A response format of the type `v` names (text, json_object or json_schema), its other
/// fields unset.
pub(super) fn format_of_type(v: &Value, at: &str) -> Result<ResponseFormat, Failure> {
    let kind = match str_field(v, "type", at)? {
        Some("text") => ResponseFormatType::Text,
        Some("json_object") => ResponseFormatType::JsonObject,
        Some("json_schema") => ResponseFormatType::JsonSchema,
        Some(other) => {
            return Err(Failure::invalid(format!(
                "{at}type: {} is not text, json_object or json_schema",
                q(other)
            )));
        }
        None => return Err(Failure::invalid(format!("{at}type: is required"))),
    };
    Ok(ResponseFormat {
        r#type: kind as i32,
        ..Default::default()
    })
}

/// A JSON Schema response format's name, description, schema and strict flag, read from `s`
/// (Chat Completions' `response_format.json_schema`, the Responses API's `text.format`).
pub(super) fn schema_fields(s: &Value, at: &str, f: &mut ResponseFormat) -> Result<(), Failure> {
    f.name = str_field(s, "name", at)?.unwrap_or_default().to_string();
    f.description = str_field(s, "description", at)?
        .unwrap_or_default()
        .to_string();
    f.schema_json = match s.get("schema") {
        None | Some(Value::Null) => String::new(),
        Some(o @ Value::Object(_)) => o.to_string(),
        Some(_) => return Err(Failure::invalid(format!("{at}schema: must be an object"))),
    };
    f.strict = bool_field(s, "strict", at)?.unwrap_or(false);
    Ok(())
}

/// A function tool's name, description, parameters and strict flag, read from `f` (Chat
/// Completions' `tools[i].function`, a Responses API tool). `strict` is the API's default.
pub(super) fn tool_spec(f: &Value, at: &str, strict: bool) -> Result<ToolSpec, Failure> {
    let params = f
        .get("parameters")
        .filter(|p| !p.is_null())
        .cloned()
        .unwrap_or_else(|| json!({"type": "object", "properties": {}}));
    Ok(ToolSpec {
        name: str_field(f, "name", at)?.unwrap_or_default().to_string(),
        description: str_field(f, "description", at)?
            .unwrap_or_default()
            .to_string(),
        parameters_json_schema: params.to_string(),
        strict: bool_field(f, "strict", at)?.unwrap_or(strict),
        ..Default::default()
    })
}

/// A tool choice given as a word: auto, none or required.
pub(super) fn choice_mode(s: &str) -> Result<ToolChoice, Failure> {
    let mode = match s {
        "auto" => ToolChoiceMode::Auto,
        "none" => ToolChoiceMode::None,
        "required" => ToolChoiceMode::Required,
        other => {
            return Err(Failure::invalid(format!(
                "tool_choice: {} is not auto, none or required",
                q(other)
            )));
        }
    };
    Ok(ToolChoice {
        mode: mode as i32,
        name: String::new(),
    })
}

/// The text of a message's `content`: a string, or text parts.
fn content_text(v: &Value, at: &str) -> Result<String, Failure> {
    match v.get("content") {
        None | Some(Value::Null) => Ok(String::new()),
        Some(Value::String(s)) => Ok(s.clone()),
        Some(Value::Array(parts)) => {
            let mut out = String::new();
            for (j, p) in parts.iter().enumerate() {
                let pat = format!("{at}content[{j}].");
                match p.get("type").and_then(Value::as_str) {
                    Some("text") => {
                        fields::check(p, &pat, &TEXT_PART)?;
                        out.push_str(str_field(p, "text", &pat)?.unwrap_or(""))
                    }
                    Some(other) => {
                        return Err(Failure::invalid(format!(
                            "{pat}type: {} parts are not supported by this gateway (only text)",
                            q(other)
                        )));
                    }
                    None => {
                        return Err(Failure::invalid(format!("{pat}type: is required")));
                    }
                }
            }
            Ok(out)
        }
        Some(_) => Err(Failure::invalid(format!(
            "{at}content: must be a string or an array of parts"
        ))),
    }
}

/// A chat completion request as a Bridle request, whether to stream, and whether the stream
/// ends with a usage chunk. Carried: model, messages (text content, tool calls and results),
/// tools (a function's strict too), tool_choice, temperature, top_p, stop, seed, response_format
/// (text, json_object, json_schema), reasoning_effort, max_tokens / max_completion_tokens,
/// stream, stream_options.include_usage, user (the end user). Accepted at their defaults only:
/// n 1, logprobs false, parallel_tool_calls true, store false, frequency_penalty and
/// presence_penalty 0, stream_options.include_obfuscation false. Any other field is
/// refused by name ([`REQUEST`] lists the API's), and so are non-text content parts.
pub fn parse(body: &Value) -> Result<(CompleteRequest, bool, bool), Failure> {
    if !body.is_object() {
        return Err(Failure::invalid("the request body must be a JSON object"));
    }
    fields::check(body, "", &REQUEST)?;
    let route = str_field(body, "model", "")?
        .filter(|m| !m.is_empty())
        .ok_or_else(|| Failure::invalid("model: is required (the name of a ModelRoute)"))?;
    let raw = body
        .get("messages")
        .and_then(Value::as_array)
        .ok_or_else(|| Failure::invalid("messages: is required (an array)"))?;
    let mut messages = Vec::with_capacity(raw.len());
    for (i, m) in raw.iter().enumerate() {
        let at = format!("messages[{i}].");
        if !m.is_object() {
            return Err(Failure::invalid(format!(
                "messages[{i}]: must be an object"
            )));
        }
        let (role, shape) = match str_field(m, "role", &at)? {
            Some("system") | Some("developer") => (Role::System, &PLAIN_MESSAGE),
            Some("user") => (Role::User, &PLAIN_MESSAGE),
            Some("assistant") => (Role::Assistant, &ASSISTANT_MESSAGE),
            Some("tool") => (Role::Tool, &TOOL_MESSAGE),
            Some(other) => {
                return Err(Failure::invalid(format!(
                    "{at}role: {} is not system, developer, user, assistant or tool",
                    q(other)
                )));
            }
            None => return Err(Failure::invalid(format!("{at}role: is required"))),
        };
        fields::check(m, &at, shape)?;
        let mut msg = Message {
            role: role as i32,
            text: content_text(m, &at)?,
            ..Default::default()
        };
        if role == Role::Tool {
            msg.tool_call_id = str_field(m, "tool_call_id", &at)?
                .unwrap_or_default()
                .to_string();
        }
        let calls = match m.get("tool_calls") {
            None | Some(Value::Null) => &[][..],
            Some(Value::Array(calls)) => calls.as_slice(),
            Some(_) => {
                return Err(Failure::invalid(format!(
                    "{at}tool_calls: must be an array"
                )));
            }
        };
        for (j, c) in calls.iter().enumerate() {
            let at = format!("{at}tool_calls[{j}].");
            fields::check(c, &at, &TOOL_CALL)?;
            if let Some(k) = str_field(c, "type", &at)?.filter(|k| *k != "function") {
                return Err(Failure::invalid(format!(
                    "{at}type: {} calls are not supported by this gateway (only function)",
                    q(k)
                )));
            }
            let f = c.get("function").cloned().unwrap_or_default();
            let fat = format!("{at}function.");
            fields::check(&f, &fat, &CALLED_FUNCTION)?;
            msg.tool_calls.push(ToolCall {
                id: str_field(c, "id", &at)?.unwrap_or_default().to_string(),
                name: str_field(&f, "name", &fat)?.unwrap_or_default().to_string(),
                arguments_json: str_field(&f, "arguments", &fat)?
                    .unwrap_or_default()
                    .to_string(),
            });
        }
        messages.push(msg);
    }
    let mut tools = Vec::new();
    let raw_tools = match body.get("tools") {
        None | Some(Value::Null) => &[][..],
        Some(Value::Array(t)) => t.as_slice(),
        Some(_) => return Err(Failure::invalid("tools: must be an array")),
    };
    for (i, t) in raw_tools.iter().enumerate() {
        let at = format!("tools[{i}].");
        fields::check(t, &at, &TOOL)?;
        if let Some(k) = str_field(t, "type", &at)?.filter(|k| *k != "function") {
            return Err(Failure::invalid(format!(
                "{at}type: {} tools are not supported by this gateway (only function)",
                q(k)
            )));
        }
        let f = t.get("function").cloned().unwrap_or_default();
        let fat = format!("{at}function.");
        fields::check(&f, &fat, &FUNCTION)?;
        tools.push(tool_spec(&f, &fat, false)?);
    }
    let tool_choice = match body.get("tool_choice") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(choice_mode(s)?),
        Some(v) => {
            fields::check(v, "tool_choice.", &NAMED_CHOICE)?;
            if let Some(k) = str_field(v, "type", "tool_choice.")?.filter(|k| *k != "function") {
                return Err(Failure::invalid(format!(
                    "tool_choice.type: {} is not supported by this gateway (only function)",
                    q(k)
                )));
            }
            let f = v.get("function").cloned().unwrap_or_default();
            fields::check(&f, "tool_choice.function.", &CHOSEN_FUNCTION)?;
            Some(ToolChoice {
                mode: ToolChoiceMode::Named as i32,
                name: str_field(&f, "name", "tool_choice.function.")?
                    .ok_or_else(|| Failure::invalid("tool_choice.function.name: is required"))?
                    .to_string(),
            })
        }
    };
    let temperature = fields::temperature(body)?;
    // max_completion_tokens replaced max_tokens; a request may send either.
    let max_output_tokens = match fields::token_cap(body, "max_completion_tokens")? {
        Some(n) => Some(n),
        None => fields::token_cap(body, "max_tokens")?,
    };
    let number = |k: &str| body.get(k).filter(|v| !v.is_null());
    let top_p = fields::top_p(body)?;
    let stop = fields::stop_sequences(body, "stop", true)?;
    let response_format = response_format(body)?;
    let seed = match number("seed") {
        None => None,
        Some(v) => Some(
            v.as_i64()
                .ok_or_else(|| Failure::invalid("seed: must be an integer"))?,
        ),
    };
    let stream = bool_field(body, "stream", "")?.unwrap_or(false);
    let include_usage = match body.get("stream_options") {
        None | Some(Value::Null) => false,
        Some(o @ Value::Object(_)) => {
            fields::check(o, "stream_options.", &STREAM_OPTIONS)?;
            bool_field(o, "include_usage", "stream_options.")?.unwrap_or(false)
        }
        Some(_) => return Err(Failure::invalid("stream_options: must be an object")),
    };
    let reasoning_effort = str_field(body, "reasoning_effort", "")?
        .unwrap_or_default()
        .to_string();
    let end_user = match body.get("user") {
        None | Some(Value::Null) => String::new(),
        Some(Value::String(u)) => u.clone(),
        Some(_) => return Err(Failure::invalid("user: must be a string")),
    };
    Ok((
        CompleteRequest {
            route: route.to_string(),
            messages,
            tools,
            tool_choice,
            temperature,
            max_output_tokens,
            end_user,
            stop,
            top_p,
            seed,
            response_format,
            reasoning_effort,
            prompt_cache_key: str_field(body, "prompt_cache_key", "")?
                .unwrap_or_default()
                .to_string(),
            ..Default::default()
        },
        stream,
        include_usage,
    ))
}

pub fn finish_reason(f: i32) -> &'static str {
    match FinishReason::try_from(f).unwrap_or(FinishReason::Unspecified) {
        FinishReason::ToolCalls => "tool_calls",
        FinishReason::Length => "length",
        FinishReason::ContentFilter => "content_filter",
        FinishReason::Stop | FinishReason::Unspecified | FinishReason::Error => "stop",
    }
}

pub fn usage(r: &CompleteResponse) -> Value {
    let u = r.usage.unwrap_or_default();
    json!({
        "prompt_tokens": u.input_tokens,
        "completion_tokens": u.output_tokens,
        "total_tokens": u.input_tokens.saturating_add(u.output_tokens),
        "prompt_tokens_details": {"cached_tokens": u.cache_read_tokens},
        "completion_tokens_details": {"reasoning_tokens": u.reasoning_tokens},
    })
}

/// What Bridle adds to a response: who answered and what it cost (cost is null when unknown).
pub fn bridle_fields(r: &CompleteResponse) -> Value {
    let cost = r.cost.unwrap_or_default();
    json!({
        "target": r.target,
        "provider": r.provider,
        "model": r.model,
        "scripted": r.scripted,
        "response_id": r.response_id,
        "cost_nano_usd": if cost.known { json!(cost.nano_usd) } else { Value::Null },
    })
}

pub fn completion(model: &str, r: &CompleteResponse) -> Value {
    let m = r.message.clone().unwrap_or_default();
    let calls: Vec<Value> = m
        .tool_calls
        .iter()
        .map(|c| json!({"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments_json}}))
        .collect();
    let mut message = json!({
        "role": "assistant",
        "content": if m.text.is_empty() && !calls.is_empty() { Value::Null } else { json!(m.text) },
        "refusal": null,
    });
    if !calls.is_empty() {
        message["tool_calls"] = Value::Array(calls);
    }
    json!({
        "id": new_id("chatcmpl-"),
        "object": "chat.completion",
        "created": unix_now(),
        "model": model,
        "choices": [{"index": 0, "message": message, "logprobs": null, "finish_reason": finish_reason(r.finish_reason)}],
        "usage": usage(r),
        "bridle": bridle_fields(r),
    })
}
