//! Translation between Bridle's normalized chat and OpenAI Chat Completions JSON.
//!
//! Responses are read leniently (every field optional, unknown fields ignored): OpenAI adds
//! fields often, and compatible servers leave some out.

use bridle_proto::{
    CompleteRequest, FinishReason, Message, ResponseFormatType, Role, ToolCall, ToolChoiceMode,
    Usage,
};
use serde::Deserialize;
use serde_json::{Value, json};

/// Text an OpenAI tool message starts with when the tool failed: Chat Completions has no
/// error flag, and the model should know the output is an error, not a result.
pub const TOOL_ERROR_PREFIX: &str = "ERROR: ";

/// The request body for `model`, or why it cannot be sent: Chat Completions takes no thinking
/// budget. The request must have passed [`crate::request::validate`]. `default_max` is the
/// target's output cap for requests that set none.
pub fn request_body(
    req: &CompleteRequest,
    model: &str,
    default_max: Option<u32>,
    stream: bool,
) -> Result<Value, String> {
    refuse_thinking_budget(req, "Chat Completions")?;
    let mut body = json!({
        "model": model,
        "messages": req.messages.iter().map(message_to_openai).collect::<Vec<_>>(),
    });
    if !req.tools.is_empty() {
        let tools: Vec<Value> = req
            .tools
            .iter()
            .map(|t| {
                let mut f = json!({"name": t.name, "description": t.description, "parameters": parameters(t)});
                if t.strict {
                    f["strict"] = json!(true);
                }
                json!({"type": "function", "function": f})
            })
            .collect();
        body["tools"] = Value::Array(tools);
        if let Some(choice) = tool_choice(req) {
            body["tool_choice"] = choice;
        }
    }
    if let Some(t) = req.temperature {
        body["temperature"] = json!(t);
    }
    if let Some(p) = req.top_p {
        body["top_p"] = json!(p);
    }
    if !req.stop.is_empty() {
        body["stop"] = json!(req.stop);
    }
    if let Some(s) = req.seed {
        body["seed"] = json!(s);
    }
    if let Some(f) = response_format(req) {
        body["response_format"] = f;
    }
    if !req.end_user.is_empty() {
        body["user"] = json!(req.end_user);
    }
    if let Some(m) = req.max_output_tokens.or(default_max) {
        body["max_completion_tokens"] = json!(m);
    }
    if !req.reasoning_effort.is_empty() {
        body["reasoning_effort"] = json!(req.reasoning_effort);
    }
    // Breakpoints have no field here: OpenAI caches prompt prefixes on its own.
    if !req.prompt_cache_key.is_empty() {
        body["prompt_cache_key"] = json!(req.prompt_cache_key);
    }
    if stream {
        body["stream"] = json!(true);
        body["stream_options"] = json!({"include_usage": true});
    }
    Ok(body)
}

/// OpenAI's APIs set how much a model reasons by level only (`reasoning_effort`); a budget in
/// tokens has nowhere to go, so the call is refused rather than made without it.
pub fn refuse_thinking_budget(req: &CompleteRequest, api: &str) -> Result<(), String> {
    match req.thinking_budget_tokens {
        Some(_) => Err(format!(
            "thinking_budget_tokens: OpenAI's {api} API takes no thinking budget (only a reasoning_effort level); the call is refused rather than answered without it"
        )),
        None => Ok(()),
    }
}

/// A tool's parameters schema as JSON (checked by [`crate::request::validate`]); a tool
/// without one takes an empty object.
pub fn parameters(t: &bridle_proto::ToolSpec) -> Value {
    if t.parameters_json_schema.trim().is_empty() {
        json!({"type": "object", "properties": {}})
    } else {
        serde_json::from_str(&t.parameters_json_schema)
            .unwrap_or_else(|_| json!({"type": "object"}))
    }
}

/// The request's response format in Chat Completions' shape (a schema has passed
/// [`crate::request::validate`], so it is a JSON object).
fn response_format(req: &CompleteRequest) -> Option<Value> {
    let f = req.response_format.as_ref()?;
    match ResponseFormatType::try_from(f.r#type).ok()? {
        ResponseFormatType::Unspecified => None,
        ResponseFormatType::Text => Some(json!({"type": "text"})),
        ResponseFormatType::JsonObject => Some(json!({"type": "json_object"})),
        ResponseFormatType::JsonSchema => {
            let schema: Value = serde_json::from_str(&f.schema_json).unwrap_or_else(|_| json!({}));
            let mut s = json!({"name": f.name, "schema": schema});
            if !f.description.is_empty() {
                s["description"] = json!(f.description);
            }
            if f.strict {
                s["strict"] = json!(true);
            }
            Some(json!({"type": "json_schema", "json_schema": s}))
        }
    }
}

fn tool_choice(req: &CompleteRequest) -> Option<Value> {
    let choice = req.tool_choice.as_ref()?;
    match ToolChoiceMode::try_from(choice.mode).unwrap_or(ToolChoiceMode::Unspecified) {
        ToolChoiceMode::Unspecified => None,
        ToolChoiceMode::Auto => Some(json!("auto")),
        ToolChoiceMode::None => Some(json!("none")),
        ToolChoiceMode::Required => Some(json!("required")),
        ToolChoiceMode::Named => {
            Some(json!({"type": "function", "function": {"name": choice.name}}))
        }
    }
}

pub fn message_to_openai(m: &Message) -> Value {
    match Role::try_from(m.role).unwrap_or(Role::Unspecified) {
        Role::System => json!({"role": "system", "content": m.text}),
        Role::User | Role::Unspecified => json!({"role": "user", "content": m.text}),
        Role::Assistant => {
            if m.tool_calls.is_empty() {
                return json!({"role": "assistant", "content": m.text});
            }
            let calls: Vec<Value> = m
                .tool_calls
                .iter()
                .map(|c| json!({"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments_json}}))
                .collect();
            let content = if m.text.is_empty() {
                Value::Null
            } else {
                json!(m.text)
            };
            json!({"role": "assistant", "content": content, "tool_calls": calls})
        }
        Role::Tool => {
            let content = if m.is_error && !m.text.starts_with(TOOL_ERROR_PREFIX) {
                format!("{TOOL_ERROR_PREFIX}{}", m.text)
            } else {
                m.text.clone()
            };
            json!({"role": "tool", "tool_call_id": m.tool_call_id, "content": content})
        }
    }
}

// ---------------------------------------------------------------- responses

#[derive(Debug, Default, Deserialize)]
pub struct ChatCompletion {
    pub id: Option<String>,
    pub model: Option<String>,
    pub choices: Option<Vec<Choice>>,
    pub usage: Option<WireUsage>,
}

#[derive(Debug, Default, Deserialize)]
pub struct Choice {
    pub message: Option<WireMessage>,
    pub finish_reason: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
pub struct WireMessage {
    pub content: Option<String>,
    pub refusal: Option<String>,
    pub tool_calls: Option<Vec<WireToolCall>>,
}

#[derive(Debug, Default, Deserialize)]
pub struct WireToolCall {
    pub id: Option<String>,
    pub function: Option<WireFunction>,
}

#[derive(Debug, Default, Deserialize)]
pub struct WireFunction {
    pub name: Option<String>,
    pub arguments: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
pub struct WireUsage {
    pub prompt_tokens: Option<u64>,
    pub completion_tokens: Option<u64>,
    pub prompt_tokens_details: Option<PromptDetails>,
    pub completion_tokens_details: Option<CompletionDetails>,
}

#[derive(Debug, Default, Deserialize)]
pub struct PromptDetails {
    pub cached_tokens: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
pub struct CompletionDetails {
    pub reasoning_tokens: Option<u64>,
}

impl WireUsage {
    pub fn to_usage(&self) -> Usage {
        Usage {
            input_tokens: self.prompt_tokens.unwrap_or(0),
            output_tokens: self.completion_tokens.unwrap_or(0),
            cache_read_tokens: self
                .prompt_tokens_details
                .as_ref()
                .and_then(|d| d.cached_tokens)
                .unwrap_or(0),
            cache_write_tokens: 0,
            reasoning_tokens: self
                .completion_tokens_details
                .as_ref()
                .and_then(|d| d.reasoning_tokens)
                .unwrap_or(0),
        }
    }
}

pub fn finish_reason(s: Option<&str>) -> FinishReason {
    match s {
        Some("stop") => FinishReason::Stop,
        Some("tool_calls") | Some("function_call") => FinishReason::ToolCalls,
        Some("length") => FinishReason::Length,
        Some("content_filter") => FinishReason::ContentFilter,
        _ => FinishReason::Unspecified,
    }
}

/// The normalized parts of a `chat.completion`: message, finish reason, model, id, usage.
#[derive(Debug, PartialEq)]
pub struct Parsed {
    pub message: Message,
    pub finish_reason: FinishReason,
    pub model: String,
    pub id: String,
    pub usage: Usage,
}

pub fn parse_completion(body: &[u8]) -> Result<Parsed, String> {
    let c: ChatCompletion = serde_json::from_slice(body)
        .map_err(|e| format!("the response is not a chat completion: {e}"))?;
    let choice = c
        .choices
        .and_then(|cs| cs.into_iter().next())
        .ok_or_else(|| "the response has no choices".to_string())?;
    let m = choice.message.unwrap_or_default();
    // A refusal is what the model said; an empty message would hide it.
    let text = match (m.content, m.refusal) {
        (Some(c), _) if !c.is_empty() => c,
        (_, Some(r)) => r,
        (c, None) => c.unwrap_or_default(),
    };
    let tool_calls = m
        .tool_calls
        .unwrap_or_default()
        .into_iter()
        .map(|t| {
            let f = t.function.unwrap_or_default();
            ToolCall {
                id: t.id.unwrap_or_default(),
                name: f.name.unwrap_or_default(),
                arguments_json: f.arguments.unwrap_or_default(),
            }
        })
        .collect();
    Ok(Parsed {
        message: Message {
            role: Role::Assistant as i32,
            text,
            tool_calls,
            ..Default::default()
        },
        finish_reason: finish_reason(choice.finish_reason.as_deref()),
        model: c.model.unwrap_or_default(),
        id: c.id.unwrap_or_default(),
        usage: c.usage.map(|u| u.to_usage()).unwrap_or_default(),
    })
}
