//! Translation between Bridle's normalized chat and Anthropic Messages JSON.
//!
//! System messages become the top-level `system`; assistant tool calls become `tool_use`
//! blocks; tool results become `tool_result` blocks in a user turn (consecutive turns of one
//! role are merged, as the API wants them alternating). Responses are read leniently: unknown
//! blocks and fields are ignored. Thinking blocks are kept in `provider_state` and sent back
//! verbatim on the next turn, as the API requires.

use bridle_proto::{
    CompleteRequest, FinishReason, Message, ResponseFormatType, Role, ToolCall, ToolChoiceMode,
    Usage,
};
use serde::Deserialize;
use serde_json::{Value, json};

/// Output cap when neither the request nor the target sets one: the API requires one.
pub const DEFAULT_MAX_TOKENS: u32 = 4096;

/// The request body for `model`, or why it cannot be sent (the request must have passed
/// [`crate::request::validate`]).
pub fn request_body(
    req: &CompleteRequest,
    model: &str,
    default_max: Option<u32>,
    stream: bool,
) -> Result<Value, String> {
    if req.seed.is_some() {
        return Err(
            "seed: Anthropic's Messages API takes no seed; the call is refused rather than answered without it"
                .into(),
        );
    }
    let json_form = req.response_format.as_ref().is_some_and(|f| {
        matches!(
            ResponseFormatType::try_from(f.r#type),
            Ok(ResponseFormatType::JsonObject | ResponseFormatType::JsonSchema)
        )
    });
    if json_form {
        return Err(
            "response_format: Anthropic's Messages API takes no response format; the call is refused rather than answered in free text"
                .into(),
        );
    }
    if let Some(t) = req.tools.iter().find(|t| t.strict) {
        return Err(format!(
            "tools: '{}' asks for strict arguments, which Anthropic's Messages API does not promise; the call is refused rather than answered without it (set strict false)",
            crate::error::quote(&t.name)
        ));
    }
    if !req.prompt_cache_key.is_empty() {
        return Err(
            "prompt_cache_key: Anthropic's Messages API takes no cache key (it caches by breakpoint); the call is refused rather than made without it"
                .into(),
        );
    }
    let breakpoints = req.messages.iter().filter(|m| m.cache_breakpoint).count()
        + req.tools.iter().filter(|t| t.cache_breakpoint).count();
    if breakpoints > CACHE_BREAKPOINTS_MAX {
        return Err(format!(
            "cache_breakpoint: {breakpoints} prompt-caching breakpoints, more than the {CACHE_BREAKPOINTS_MAX} Anthropic's Messages API takes"
        ));
    }
    let mut system: Vec<&str> = Vec::new();
    let mut system_cached = false;
    let mut turns: Vec<(&'static str, Vec<Value>)> = Vec::new();
    for (i, m) in req.messages.iter().enumerate() {
        let (role, mut blocks) = match Role::try_from(m.role).unwrap_or(Role::Unspecified) {
            Role::System => {
                if !m.text.is_empty() {
                    system.push(&m.text);
                }
                system_cached |= m.cache_breakpoint;
                continue;
            }
            Role::User | Role::Unspecified => ("user", text_block(&m.text)),
            Role::Tool => {
                let mut b = json!({"type": "tool_result", "tool_use_id": m.tool_call_id});
                // The API refuses an empty error result; an empty success may leave content out.
                match (m.text.is_empty(), m.is_error) {
                    (false, _) => b["content"] = json!(m.text),
                    (true, true) => b["content"] = json!("(the tool failed without output)"),
                    (true, false) => {}
                }
                if m.is_error {
                    b["is_error"] = json!(true);
                }
                ("user", vec![b])
            }
            Role::Assistant => ("assistant", assistant_blocks(i, m)?),
        };
        if blocks.is_empty() {
            continue;
        }
        if m.cache_breakpoint {
            mark_cached(&mut blocks);
        }
        match turns.last_mut() {
            Some((r, b)) if *r == role => b.extend(blocks),
            _ => turns.push((role, blocks)),
        }
    }
    let messages: Vec<Value> = turns
        .into_iter()
        .map(|(role, blocks)| json!({"role": role, "content": blocks}))
        .collect();
    let mut body = json!({
        "model": model,
        "max_tokens": req.max_output_tokens.or(default_max).unwrap_or(DEFAULT_MAX_TOKENS),
        "messages": messages,
    });
    if !system.is_empty() {
        body["system"] = if system_cached {
            json!([{"type": "text", "text": system.join("\n\n"), "cache_control": {"type": "ephemeral"}}])
        } else {
            json!(system.join("\n\n"))
        };
    }
    if !req.tools.is_empty() {
        let tools: Vec<Value> = req
            .tools
            .iter()
            .map(|t| {
                let schema: Value = serde_json::from_str(&t.parameters_json_schema)
                    .unwrap_or_else(|_| json!({"type": "object", "properties": {}}));
                let mut v = json!({"name": t.name, "input_schema": schema});
                if !t.description.is_empty() {
                    v["description"] = json!(t.description);
                }
                if t.cache_breakpoint {
                    v["cache_control"] = json!({"type": "ephemeral"});
                }
                v
            })
            .collect();
        body["tools"] = Value::Array(tools);
        let choice = req.tool_choice.as_ref().and_then(|c| {
            match ToolChoiceMode::try_from(c.mode).unwrap_or(ToolChoiceMode::Unspecified) {
                ToolChoiceMode::Unspecified => None,
                ToolChoiceMode::Auto => Some(json!({"type": "auto"})),
                ToolChoiceMode::None => Some(json!({"type": "none"})),
                ToolChoiceMode::Required => Some(json!({"type": "any"})),
                ToolChoiceMode::Named => Some(json!({"type": "tool", "name": c.name})),
            }
        });
        if let Some(c) = choice {
            body["tool_choice"] = c;
        }
    }
    if let Some(t) = req.temperature {
        body["temperature"] = json!(t);
    }
    if let Some(p) = req.top_p {
        body["top_p"] = json!(p);
    }
    if !req.stop.is_empty() {
        body["stop_sequences"] = json!(req.stop);
    }
    match req.reasoning_effort.as_str() {
        "" => {}
        e @ ("none" | "minimal") => {
            return Err(format!(
                "reasoning_effort: Anthropic's Messages API takes low, medium, high, xhigh or max, not '{e}'; the call is refused rather than answered at another level"
            ));
        }
        e => body["output_config"] = json!({"effort": e}),
    }
    if let Some(budget) = req.thinking_budget_tokens {
        let cap = body["max_tokens"].as_u64().unwrap_or(0);
        if u64::from(budget) >= cap {
            return Err(format!(
                "thinking_budget_tokens: {budget} must be below the call's output cap max_tokens ({cap}: the request's max_output_tokens, else the target's maxOutputTokens, else {DEFAULT_MAX_TOKENS})"
            ));
        }
        body["thinking"] = json!({"type": "enabled", "budget_tokens": budget});
    }
    if !req.end_user.is_empty() {
        body["metadata"] = json!({"user_id": req.end_user});
    }
    if stream {
        body["stream"] = json!(true);
    }
    Ok(body)
}

/// Most prompt-caching breakpoints (`cache_control`) one Messages request may hold.
pub const CACHE_BREAKPOINTS_MAX: usize = 4;

/// Puts a breakpoint on the last of a message's blocks that may hold one (thinking blocks may
/// not).
fn mark_cached(blocks: &mut [Value]) {
    if let Some(b) = blocks
        .iter_mut()
        .rev()
        .find(|b| !matches!(b["type"].as_str(), Some("thinking" | "redacted_thinking")))
    {
        b["cache_control"] = json!({"type": "ephemeral"});
    }
}

/// The API refuses empty text blocks.
fn text_block(text: &str) -> Vec<Value> {
    if text.is_empty() {
        Vec::new()
    } else {
        vec![json!({"type": "text", "text": text})]
    }
}

fn assistant_blocks(i: usize, m: &Message) -> Result<Vec<Value>, String> {
    let mut blocks: Vec<Value> = Vec::new();
    if !m.provider_state.is_empty()
        && let Ok(Value::Array(kept)) = serde_json::from_str::<Value>(&m.provider_state)
    {
        blocks.extend(kept);
    }
    blocks.extend(text_block(&m.text));
    for (j, c) in m.tool_calls.iter().enumerate() {
        // Anthropic takes the input as an object; arguments a model left empty are `{}`.
        let input: Value = if c.arguments_json.trim().is_empty() {
            json!({})
        } else {
            serde_json::from_str(&c.arguments_json).map_err(|e| {
                format!("messages[{i}].tool_calls[{j}].arguments_json is not JSON ({e}); Anthropic needs an object")
            })?
        };
        if !input.is_object() {
            return Err(format!(
                "messages[{i}].tool_calls[{j}].arguments_json is not a JSON object; Anthropic needs one"
            ));
        }
        blocks.push(json!({"type": "tool_use", "id": c.id, "name": c.name, "input": input}));
    }
    Ok(blocks)
}

// ---------------------------------------------------------------- responses

#[derive(Debug, Default, Deserialize)]
pub struct WireMessage {
    pub id: Option<String>,
    pub model: Option<String>,
    pub content: Option<Vec<Value>>,
    pub stop_reason: Option<String>,
    pub usage: Option<WireUsage>,
}

#[derive(Clone, Copy, Debug, Default, Deserialize)]
pub struct WireUsage {
    pub input_tokens: Option<u64>,
    pub output_tokens: Option<u64>,
    pub cache_creation_input_tokens: Option<u64>,
    pub cache_read_input_tokens: Option<u64>,
}

impl WireUsage {
    /// Later counts win; a field the update leaves out keeps its value (a streamed
    /// `message_delta` may carry only `output_tokens`).
    pub fn merge(&mut self, newer: &WireUsage) {
        let pick = |old: &mut Option<u64>, new: Option<u64>| {
            if new.is_some() {
                *old = new;
            }
        };
        pick(&mut self.input_tokens, newer.input_tokens);
        pick(&mut self.output_tokens, newer.output_tokens);
        pick(
            &mut self.cache_creation_input_tokens,
            newer.cache_creation_input_tokens,
        );
        pick(
            &mut self.cache_read_input_tokens,
            newer.cache_read_input_tokens,
        );
    }

    /// Anthropic's `input_tokens` leaves out the cached ones; Bridle's input count holds every
    /// input token, with the cached parts as subsets (see `crate::prices`).
    pub fn to_usage(self) -> Usage {
        let write = self.cache_creation_input_tokens.unwrap_or(0);
        let read = self.cache_read_input_tokens.unwrap_or(0);
        Usage {
            input_tokens: self
                .input_tokens
                .unwrap_or(0)
                .saturating_add(write)
                .saturating_add(read),
            output_tokens: self.output_tokens.unwrap_or(0),
            cache_read_tokens: read,
            cache_write_tokens: write,
            reasoning_tokens: 0,
        }
    }
}

pub fn finish_reason(s: Option<&str>) -> FinishReason {
    match s {
        Some("end_turn") | Some("stop_sequence") | Some("pause_turn") => FinishReason::Stop,
        Some("tool_use") => FinishReason::ToolCalls,
        Some("max_tokens") | Some("model_context_window_exceeded") => FinishReason::Length,
        Some("refusal") => FinishReason::ContentFilter,
        _ => FinishReason::Unspecified,
    }
}

/// The normalized parts of a message: the same shape the OpenAI translation produces.
pub use crate::provider::openai::wire::Parsed;

/// Thinking blocks travel back verbatim (their signatures are checked by the API).
pub fn is_kept_block(kind: &str) -> bool {
    matches!(kind, "thinking" | "redacted_thinking")
}

pub fn parse_message(body: &[u8]) -> Result<Parsed, String> {
    let m: WireMessage =
        serde_json::from_slice(body).map_err(|e| format!("the response is not a message: {e}"))?;
    let blocks = m
        .content
        .ok_or_else(|| "the response has no content".to_string())?;
    let mut text = String::new();
    let mut tool_calls = Vec::new();
    let mut kept = Vec::new();
    for b in blocks {
        match b.get("type").and_then(Value::as_str).unwrap_or("") {
            "text" => text.push_str(b.get("text").and_then(Value::as_str).unwrap_or("")),
            "tool_use" => {
                let s = |k: &str| b.get(k).and_then(Value::as_str).unwrap_or("").to_string();
                let input = b.get("input").cloned().unwrap_or_else(|| json!({}));
                tool_calls.push(ToolCall {
                    id: s("id"),
                    name: s("name"),
                    arguments_json: input.to_string(),
                });
            }
            k if is_kept_block(k) => kept.push(b),
            _ => {}
        }
    }
    Ok(Parsed {
        message: Message {
            role: Role::Assistant as i32,
            text,
            tool_calls,
            provider_state: if kept.is_empty() {
                String::new()
            } else {
                Value::Array(kept).to_string()
            },
            ..Default::default()
        },
        finish_reason: finish_reason(m.stop_reason.as_deref()),
        model: m.model.unwrap_or_default(),
        id: m.id.unwrap_or_default(),
        usage: m.usage.unwrap_or_default().to_usage(),
    })
}
