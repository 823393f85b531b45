//! The Messages wire format on the gateway's side: a request read into Bridle's normalized one
//! (refusing what would not be carried), and a response written back.

use bridle_proto::{
    CompleteRequest, CompleteResponse, FinishReason, Message, Role, ToolCall, ToolChoice,
    ToolChoiceMode, ToolSpec,
};
use serde_json::{Value, json};

use crate::gateway::fields::{self, Shape};
use crate::gateway::openai::bridle_fields;
use crate::gateway::{Failure, new_id};

/// Top-level fields of a Messages request (the API reference's request body).
const REQUEST: Shape = Shape {
    carried: &[
        "model",
        "max_tokens",
        "messages",
        "system",
        "tools",
        "tool_choice",
        "temperature",
        "top_p",
        "stop_sequences",
        "stream",
        // Checked field by field: an empty object changes nothing.
        "metadata",
        "thinking",
        "output_config",
    ],
    defaults: &[],
    refused: &[
        "cache_control",
        "container",
        "context_management",
        "diagnostics",
        "inference_geo",
        "mcp_servers",
        "output_format",
        "service_tier",
        "speed",
        "top_k",
        "user_profile_id",
        "workspace_id",
    ],
};

const THINKING: Shape = Shape {
    carried: &["type", "budget_tokens"],
    defaults: &[],
    refused: &["display"],
};

const OUTPUT_CONFIG: Shape = Shape {
    carried: &["effort"],
    defaults: &[],
    refused: &["format"],
};

const METADATA: Shape = Shape {
    carried: &["user_id"],
    defaults: &[],
    refused: &[],
};

const MESSAGE: Shape = Shape {
    carried: &["role", "content"],
    defaults: &[],
    refused: &[],
};

const TEXT_BLOCK: Shape = Shape {
    carried: &["type", "text", "cache_control"],
    defaults: &[],
    refused: &["citations"],
};

const TOOL_USE_BLOCK: Shape = Shape {
    carried: &["type", "id", "name", "input", "cache_control"],
    defaults: &[],
    refused: &["caller", "toolset_name"],
};

const TOOL_RESULT_BLOCK: Shape = Shape {
    carried: &[
        "type",
        "tool_use_id",
        "content",
        "is_error",
        "cache_control",
    ],
    defaults: &[],
    refused: &["toolset_name"],
};

/// A prompt-caching breakpoint: ephemeral, for the API's default five minutes.
const CACHE_CONTROL: Shape = Shape {
    carried: &["type"],
    defaults: &[("ttl", "\"5m\"")],
    refused: &[],
};

const TOOL: Shape = Shape {
    carried: &[
        "type",
        "name",
        "description",
        "input_schema",
        "cache_control",
    ],
    defaults: &[("strict", "false")],
    refused: &[
        "allowed_callers",
        "defer_loading",
        "eager_input_streaming",
        "input_examples",
    ],
};

const TOOL_CHOICE: Shape = Shape {
    carried: &["type", "name"],
    defaults: &[("disable_parallel_tool_use", "false")],
    refused: &[],
};

/// `s` quoted for an error message, cut short when long.
fn q(s: &str) -> String {
    format!("'{}'", crate::error::quote(s))
}

fn str_of(b: &Value, key: &str, at: &str) -> Result<String, Failure> {
    match b.get(key) {
        None | Some(Value::Null) => Ok(String::new()),
        Some(Value::String(s)) => Ok(s.clone()),
        Some(_) => Err(Failure::invalid(format!("{at}{key}: must be a string"))),
    }
}

/// The text of a string or of text blocks (`at` ends with its dot).
/// Whether block `b` holds a prompt-caching breakpoint (`cache_control`), checked.
fn cache_mark(b: &Value, at: &str) -> Result<bool, Failure> {
    let c = match b.get("cache_control") {
        None | Some(Value::Null) => return Ok(false),
        Some(c @ Value::Object(_)) => c,
        Some(_) => {
            return Err(Failure::invalid(format!(
                "{at}cache_control: must be an object"
            )));
        }
    };
    let cat = format!("{at}cache_control.");
    fields::check(c, &cat, &CACHE_CONTROL)?;
    match c.get("type").and_then(Value::as_str) {
        Some("ephemeral") => Ok(true),
        other => Err(Failure::invalid(format!(
            "{cat}type: {} is not ephemeral",
            other.map(q).unwrap_or_else(|| "a missing type".into())
        ))),
    }
}

/// The text of a string or of text blocks, and whether a block holds a caching breakpoint.
fn text_of(v: &Value, at: &str) -> Result<(String, bool), Failure> {
    let field = at.trim_end_matches('.');
    match v {
        Value::Null => Ok((String::new(), false)),
        Value::String(s) => Ok((s.clone(), false)),
        Value::Array(blocks) => {
            let mut out = Vec::new();
            let mut cached = false;
            for (j, b) in blocks.iter().enumerate() {
                let bat = format!("{field}[{j}].");
                match b.get("type").and_then(Value::as_str) {
                    Some("text") => {
                        fields::check(b, &bat, &TEXT_BLOCK)?;
                        cached |= cache_mark(b, &bat)?;
                        out.push(str_of(b, "text", &bat)?);
                    }
                    other => {
                        return Err(Failure::invalid(format!(
                            "{bat}type: {} blocks are not supported here (only text)",
                            other.map(q).unwrap_or_else(|| "untyped".into())
                        )));
                    }
                }
            }
            Ok((out.join("\n"), cached))
        }
        _ => Err(Failure::invalid(format!(
            "{field}: must be a string or an array of blocks"
        ))),
    }
}

/// A Messages request as a Bridle request, and whether to stream. Carried: model, max_tokens,
/// system, messages (text, tool_use, tool_result and thinking blocks), tools, tool_choice,
/// temperature, top_p, stop_sequences, stream, metadata.user_id (the end user), thinking
/// (enabled with its budget_tokens, or disabled), output_config.effort, and prompt-caching
/// breakpoints (`cache_control` on system, message and tool blocks and on tools, each applied
/// at the end of the normalized message or tool that holds it). Accepted at
/// their defaults only: a tool's strict false, tool_choice.disable_parallel_tool_use false. Any other
/// field is refused by name ([`REQUEST`] lists the API's), and so are image and document blocks
/// and server tools.
pub fn parse(body: &Value) -> Result<(CompleteRequest, bool), Failure> {
    if !body.is_object() {
        return Err(Failure::invalid("the request body must be a JSON object"));
    }
    fields::check(body, "", &REQUEST)?;
    match body.get("metadata") {
        None | Some(Value::Null) => {}
        Some(m @ Value::Object(_)) => fields::check(m, "metadata.", &METADATA)?,
        Some(_) => return Err(Failure::invalid("metadata: must be an object")),
    }
    let route = body
        .get("model")
        .and_then(Value::as_str)
        .filter(|m| !m.is_empty())
        .ok_or_else(|| Failure::invalid("model: is required (the name of a ModelRoute)"))?;
    let max_output_tokens = match body.get("max_tokens") {
        None | Some(Value::Null) => None,
        Some(v) => Some(
            v.as_u64()
                .and_then(|n| u32::try_from(n).ok())
                .filter(|n| *n > 0)
                .ok_or_else(|| Failure::invalid("max_tokens: must be a positive integer"))?,
        ),
    };
    let mut messages = Vec::new();
    let (system, system_cached) = text_of(body.get("system").unwrap_or(&Value::Null), "system.")?;
    if !system.is_empty() {
        messages.push(Message {
            role: Role::System as i32,
            text: system,
            cache_breakpoint: system_cached,
            ..Default::default()
        });
    }
    let raw = body
        .get("messages")
        .and_then(Value::as_array)
        .ok_or_else(|| Failure::invalid("messages: is required (an array)"))?;
    for (i, m) in raw.iter().enumerate() {
        let at = format!("messages[{i}]");
        fields::check(m, &format!("{at}."), &MESSAGE)?;
        let role = match m.get("role").and_then(Value::as_str) {
            Some("user") => Role::User,
            Some("assistant") => Role::Assistant,
            other => {
                return Err(Failure::invalid(format!(
                    "{at}.role: {} is not user or assistant",
                    other.map(q).unwrap_or_else(|| "a missing role".into())
                )));
            }
        };
        let blocks = match m.get("content") {
            Some(Value::String(s)) => vec![json!({"type": "text", "text": s})],
            Some(Value::Array(b)) => b.clone(),
            _ => {
                return Err(Failure::invalid(format!(
                    "{at}.content: must be a string or an array of blocks"
                )));
            }
        };
        let mut turn = Message {
            role: role as i32,
            ..Default::default()
        };
        let mut texts = Vec::new();
        let mut kept = Vec::new();
        for (j, b) in blocks.into_iter().enumerate() {
            let bat = format!("{at}.content[{j}].");
            match (role, b.get("type").and_then(Value::as_str).unwrap_or("")) {
                (_, "text") => {
                    fields::check(&b, &bat, &TEXT_BLOCK)?;
                    turn.cache_breakpoint |= cache_mark(&b, &bat)?;
                    texts.push(str_of(&b, "text", &bat)?);
                }
                (Role::Assistant, "tool_use") => {
                    fields::check(&b, &bat, &TOOL_USE_BLOCK)?;
                    turn.cache_breakpoint |= cache_mark(&b, &bat)?;
                    turn.tool_calls.push(ToolCall {
                        id: str_of(&b, "id", &bat)?,
                        name: str_of(&b, "name", &bat)?,
                        arguments_json: b
                            .get("input")
                            .cloned()
                            .unwrap_or_else(|| json!({}))
                            .to_string(),
                    })
                }
                // Carried whole: they go back to the provider verbatim.
                (Role::Assistant, "thinking" | "redacted_thinking") => kept.push(b),
                (Role::User, "tool_result") => {
                    fields::check(&b, &bat, &TOOL_RESULT_BLOCK)?;
                    let (text, inner_cached) = text_of(
                        b.get("content").unwrap_or(&Value::Null),
                        &format!("{bat}content."),
                    )?;
                    messages.push(Message {
                        role: Role::Tool as i32,
                        tool_call_id: str_of(&b, "tool_use_id", &bat)?,
                        text,
                        is_error: b.get("is_error").and_then(Value::as_bool).unwrap_or(false),
                        cache_breakpoint: inner_cached || cache_mark(&b, &bat)?,
                        ..Default::default()
                    })
                }
                (_, other) => {
                    return Err(Failure::invalid(format!(
                        "{bat}type: {} blocks are not supported in a {} message",
                        q(other),
                        if role == Role::User {
                            "user"
                        } else {
                            "assistant"
                        }
                    )));
                }
            }
        }
        turn.text = texts.join("\n");
        if !kept.is_empty() {
            turn.provider_state = Value::Array(kept).to_string();
        }
        if !turn.text.is_empty() || !turn.tool_calls.is_empty() || role == Role::Assistant {
            messages.push(turn);
        }
    }
    let mut tools = Vec::new();
    let raw_tools = match body.get("tools") {
        None | Some(Value::Null) => &[][..],
        Some(Value::Array(t)) => t.as_slice(),
        Some(_) => return Err(Failure::invalid("tools: must be an array")),
    };
    for (i, t) in raw_tools.iter().enumerate() {
        let at = format!("tools[{i}].");
        if t.get("type")
            .and_then(Value::as_str)
            .is_some_and(|k| k != "custom")
        {
            return Err(Failure::invalid(format!(
                "{at}type: server tools are not supported by this gateway (only custom tools)"
            )));
        }
        fields::check(t, &at, &TOOL)?;
        let schema = t
            .get("input_schema")
            .cloned()
            .unwrap_or_else(|| json!({"type": "object"}));
        tools.push(ToolSpec {
            name: str_of(t, "name", &at)?,
            description: str_of(t, "description", &at)?,
            parameters_json_schema: schema.to_string(),
            cache_breakpoint: cache_mark(t, &at)?,
            ..Default::default()
        });
    }
    let tool_choice = match body.get("tool_choice") {
        None | Some(Value::Null) => None,
        Some(c) => {
            fields::check(c, "tool_choice.", &TOOL_CHOICE)?;
            let mode = match c.get("type").and_then(Value::as_str) {
                Some("auto") => ToolChoiceMode::Auto,
                Some("any") => ToolChoiceMode::Required,
                Some("none") => ToolChoiceMode::None,
                Some("tool") => ToolChoiceMode::Named,
                other => {
                    return Err(Failure::invalid(format!(
                        "tool_choice.type: {} is not auto, any, tool or none",
                        other.map(q).unwrap_or_else(|| "a missing type".into())
                    )));
                }
            };
            Some(ToolChoice {
                mode: mode as i32,
                name: str_of(c, "name", "tool_choice.")?,
            })
        }
    };
    let temperature = fields::temperature(body)?;
    let top_p = fields::top_p(body)?;
    let stop = fields::stop_sequences(body, "stop_sequences", false)?;
    let stream = match body.get("stream") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(_) => return Err(Failure::invalid("stream: must be true or false")),
    };
    let end_user = match body.get("metadata").and_then(|m| m.get("user_id")) {
        None | Some(Value::Null) => String::new(),
        Some(Value::String(u)) => u.clone(),
        Some(_) => return Err(Failure::invalid("metadata.user_id: must be a string")),
    };
    let thinking_budget_tokens = match body.get("thinking") {
        None | Some(Value::Null) => None,
        Some(t @ Value::Object(_)) => {
            fields::check(t, "thinking.", &THINKING)?;
            match t.get("type").and_then(Value::as_str) {
                Some("disabled") => None,
                Some("enabled") => Some(
                    t.get("budget_tokens")
                        .and_then(Value::as_u64)
                        .and_then(|n| u32::try_from(n).ok())
                        .ok_or_else(|| {
                            Failure::invalid(
                                "thinking.budget_tokens: is required with type enabled (a positive integer)",
                            )
                        })?,
                ),
                Some(other) => {
                    return Err(Failure::unsupported(
                        "thinking.type",
                        "unsupported_value",
                        format!(
                            "thinking.type: {} is not supported by this gateway (enabled with a budget_tokens, or disabled)",
                            q(other)
                        ),
                    ));
                }
                None => return Err(Failure::invalid("thinking.type: is required")),
            }
        }
        Some(_) => return Err(Failure::invalid("thinking: must be an object")),
    };
    let reasoning_effort = match body.get("output_config") {
        None | Some(Value::Null) => String::new(),
        Some(o @ Value::Object(_)) => {
            fields::check(o, "output_config.", &OUTPUT_CONFIG)?;
            fields::str_field(o, "effort", "output_config.")?
                .unwrap_or_default()
                .to_string()
        }
        Some(_) => return Err(Failure::invalid("output_config: must be an object")),
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
            reasoning_effort,
            thinking_budget_tokens,
            ..Default::default()
        },
        stream,
    ))
}

pub fn stop_reason(f: i32) -> &'static str {
    match FinishReason::try_from(f).unwrap_or(FinishReason::Unspecified) {
        FinishReason::ToolCalls => "tool_use",
        FinishReason::Length => "max_tokens",
        FinishReason::ContentFilter => "refusal",
        FinishReason::Stop | FinishReason::Unspecified | FinishReason::Error => "end_turn",
    }
}

/// Anthropic's usage: `input_tokens` without the cached ones.
pub fn usage(r: &CompleteResponse) -> Value {
    let u = r.usage.unwrap_or_default();
    json!({
        "input_tokens": u.input_tokens.saturating_sub(u.cache_read_tokens).saturating_sub(u.cache_write_tokens),
        "cache_creation_input_tokens": u.cache_write_tokens,
        "cache_read_input_tokens": u.cache_read_tokens,
        "output_tokens": u.output_tokens,
    })
}

/// A tool call's input object (a model's malformed arguments become `{}`: the API has no way
/// to carry them).
pub fn input_of(c: &ToolCall) -> Value {
    serde_json::from_str::<Value>(&c.arguments_json)
        .ok()
        .filter(Value::is_object)
        .unwrap_or_else(|| json!({}))
}

pub fn message(model: &str, r: &CompleteResponse) -> Value {
    let m = r.message.clone().unwrap_or_default();
    let mut content: Vec<Value> = match serde_json::from_str::<Value>(&m.provider_state) {
        Ok(Value::Array(kept)) => kept,
        _ => Vec::new(),
    };
    if !m.text.is_empty() {
        content.push(json!({"type": "text", "text": m.text}));
    }
    for c in &m.tool_calls {
        content.push(json!({"type": "tool_use", "id": c.id, "name": c.name, "input": input_of(c)}));
    }
    json!({
        "id": new_id("msg_"),
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": content,
        "stop_reason": stop_reason(r.finish_reason),
        "stop_sequence": null,
        "usage": usage(r),
        "bridle": bridle_fields(r),
    })
}
