//! OpenAI's Responses API as a target's wire (`api: responses`): the normalized request as a
//! `POST <baseUrl>/responses` body, and the response object, or its streamed events, read back.
//!
//! Calls are stateless: every call sends the whole conversation with `store: false`, so OpenAI
//! keeps nothing and no `previous_response_id` is needed. Responses are read leniently, as
//! for Chat Completions: every field optional, unknown ones and unknown item types ignored
//! (reasoning items carry no text; their tokens are in the usage).

use std::collections::HashMap;

use bridle_core::manifest::Target;
use bridle_proto::complete_chunk::Chunk;
use bridle_proto::{
    CompleteRequest, FinishReason, Message, ResponseFormatType, Role, ToolCall, ToolCallDelta,
    ToolChoiceMode, Usage,
};
use serde_json::{Value, json};

use super::wire::{Parsed, TOOL_ERROR_PREFIX};

/// `<baseUrl>/responses`.
pub fn url(target: &Target) -> String {
    format!("{}/responses", super::base_url(target))
}

/// The request body for `model`, or why it cannot be sent: the Responses API has no stop
/// sequences, no seed and no thinking budget, and a call that sets them is refused by name
/// rather than made without them. The request must have passed [`crate::request::validate`].
pub fn request_body(
    req: &CompleteRequest,
    model: &str,
    default_max: Option<u32>,
    stream: bool,
) -> Result<Value, String> {
    if !req.stop.is_empty() {
        return Err("stop: OpenAI's Responses API takes no stop sequences; the call is refused rather than answered without them".into());
    }
    if req.seed.is_some() {
        return Err("seed: OpenAI's Responses API takes no seed; the call is refused rather than answered without it".into());
    }
    super::wire::refuse_thinking_budget(req, "Responses")?;
    let mut input = Vec::with_capacity(req.messages.len());
    for m in &req.messages {
        match Role::try_from(m.role).unwrap_or(Role::Unspecified) {
            Role::System => input.push(json!({"role": "system", "content": m.text})),
            Role::User | Role::Unspecified => {
                input.push(json!({"role": "user", "content": m.text}))
            }
            Role::Assistant => {
                if !m.text.is_empty() || m.tool_calls.is_empty() {
                    input.push(json!({"role": "assistant", "content": m.text}));
                }
                for c in &m.tool_calls {
                    input.push(json!({"type": "function_call", "call_id": c.id, "name": c.name, "arguments": c.arguments_json}));
                }
            }
            Role::Tool => {
                // No error flag here either: the model reads that the output is an error.
                let output = if m.is_error && !m.text.starts_with(TOOL_ERROR_PREFIX) {
                    format!("{TOOL_ERROR_PREFIX}{}", m.text)
                } else {
                    m.text.clone()
                };
                input.push(json!({"type": "function_call_output", "call_id": m.tool_call_id, "output": output}));
            }
        }
    }
    let mut body = json!({"model": model, "input": input, "store": false});
    if !req.tools.is_empty() {
        let tools: Vec<Value> = req
            .tools
            .iter()
            .map(|t| {
                // Said either way: the API holds arguments to the schema unless told not to.
                json!({"type": "function", "name": t.name, "description": t.description,
                    "parameters": super::wire::parameters(t), "strict": t.strict})
            })
            .collect();
        body["tools"] = Value::Array(tools);
        if let Some(choice) = &req.tool_choice {
            let c = match ToolChoiceMode::try_from(choice.mode).unwrap_or_default() {
                ToolChoiceMode::Unspecified => Value::Null,
                ToolChoiceMode::Auto => json!("auto"),
                ToolChoiceMode::None => json!("none"),
                ToolChoiceMode::Required => json!("required"),
                ToolChoiceMode::Named => json!({"type": "function", "name": choice.name}),
            };
            if !c.is_null() {
                body["tool_choice"] = c;
            }
        }
    }
    if let Some(t) = req.temperature {
        body["temperature"] = json!(t);
    }
    if let Some(p) = req.top_p {
        body["top_p"] = json!(p);
    }
    if let Some(f) = &req.response_format {
        let format = match ResponseFormatType::try_from(f.r#type).unwrap_or_default() {
            ResponseFormatType::Unspecified => Value::Null,
            ResponseFormatType::Text => json!({"type": "text"}),
            ResponseFormatType::JsonObject => json!({"type": "json_object"}),
            ResponseFormatType::JsonSchema => {
                let schema: Value =
                    serde_json::from_str(&f.schema_json).unwrap_or_else(|_| json!({}));
                let mut s = json!({"type": "json_schema", "name": f.name, "schema": schema,
                    "strict": f.strict});
                if !f.description.is_empty() {
                    s["description"] = json!(f.description);
                }
                s
            }
        };
        if !format.is_null() {
            body["text"] = json!({ "format": format });
        }
    }
    if !req.end_user.is_empty() {
        body["user"] = json!(req.end_user);
    }
    if !req.reasoning_effort.is_empty() {
        body["reasoning"] = json!({"effort": req.reasoning_effort});
    }
    // Breakpoints have no field here: OpenAI caches prompt prefixes on its own.
    if !req.prompt_cache_key.is_empty() {
        body["prompt_cache_key"] = json!(req.prompt_cache_key);
    }
    if let Some(m) = req.max_output_tokens.or(default_max) {
        body["max_output_tokens"] = json!(m);
    }
    if stream {
        body["stream"] = json!(true);
    }
    Ok(body)
}

fn u64_at(v: &Value, pointer: &str) -> u64 {
    v.pointer(pointer).and_then(Value::as_u64).unwrap_or(0)
}

fn usage(v: &Value) -> Usage {
    Usage {
        input_tokens: u64_at(v, "/input_tokens"),
        output_tokens: u64_at(v, "/output_tokens"),
        cache_read_tokens: u64_at(v, "/input_tokens_details/cached_tokens"),
        cache_write_tokens: 0,
        reasoning_tokens: u64_at(v, "/output_tokens_details/reasoning_tokens"),
    }
}

fn str_at<'a>(v: &'a Value, key: &str) -> &'a str {
    v.get(key).and_then(Value::as_str).unwrap_or_default()
}

/// A response object's message, finish reason, model, id and usage; an error when it says it
/// failed.
pub fn parse_response(v: &Value) -> Result<Parsed, String> {
    if !v.is_object() {
        return Err("the response is not a response object".into());
    }
    let status = str_at(v, "status");
    if status == "failed" || status == "cancelled" {
        let why = v
            .pointer("/error/message")
            .and_then(Value::as_str)
            .unwrap_or("no reason given");
        return Err(format!(
            "the response {status}: {}",
            bridle_core::redact::preview(why, 300)
        ));
    }
    let (mut text, mut refusal, mut calls) = (String::new(), String::new(), Vec::new());
    for item in v
        .get("output")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default()
    {
        match str_at(item, "type") {
            "message" => {
                for part in item
                    .get("content")
                    .and_then(Value::as_array)
                    .map(Vec::as_slice)
                    .unwrap_or_default()
                {
                    match str_at(part, "type") {
                        "output_text" => text.push_str(str_at(part, "text")),
                        "refusal" => refusal.push_str(str_at(part, "refusal")),
                        _ => {}
                    }
                }
            }
            "function_call" => calls.push(ToolCall {
                id: str_at(item, "call_id").to_string(),
                name: str_at(item, "name").to_string(),
                arguments_json: str_at(item, "arguments").to_string(),
            }),
            _ => {}
        }
    }
    let finish_reason = match (
        status,
        v.pointer("/incomplete_details/reason")
            .and_then(Value::as_str),
    ) {
        ("incomplete", Some("content_filter")) => FinishReason::ContentFilter,
        ("incomplete", _) => FinishReason::Length,
        _ if !calls.is_empty() => FinishReason::ToolCalls,
        _ => FinishReason::Stop,
    };
    Ok(Parsed {
        message: Message {
            role: Role::Assistant as i32,
            // A refusal is what the model said; an empty message would hide it.
            text: if text.is_empty() { refusal } else { text },
            tool_calls: calls,
            ..Default::default()
        },
        finish_reason,
        model: str_at(v, "model").to_string(),
        id: str_at(v, "id").to_string(),
        usage: v.get("usage").map(usage).unwrap_or_default(),
    })
}

/// Builds the reply from the streamed events: deltas forwarded as they come, and the answer
/// read from the final `response.completed` (or `response.incomplete`) event's response, which
/// holds it whole.
#[derive(Debug, Default)]
pub struct Assembler {
    /// Each function call item's id, with its position among the calls.
    calls: HashMap<String, u32>,
    done: Option<Parsed>,
}

impl crate::provider::http::Assembler for Assembler {
    fn apply(&mut self, data: &str) -> Result<Vec<Chunk>, String> {
        let v: Value =
            serde_json::from_str(data).map_err(|e| format!("a stream event is malformed: {e}"))?;
        let mut out = Vec::new();
        match str_at(&v, "type") {
            "response.output_text.delta" | "response.refusal.delta" => {
                let d = str_at(&v, "delta");
                if !d.is_empty() {
                    out.push(Chunk::TextDelta(d.to_string()));
                }
            }
            "response.output_item.added" => {
                let item = v.get("item").unwrap_or(&Value::Null);
                if str_at(item, "type") == "function_call" {
                    let index = self.calls.len() as u32;
                    self.calls.insert(str_at(item, "id").to_string(), index);
                    out.push(Chunk::ToolCallDelta(ToolCallDelta {
                        index,
                        id: str_at(item, "call_id").to_string(),
                        name: str_at(item, "name").to_string(),
                        arguments_delta: str_at(item, "arguments").to_string(),
                    }));
                }
            }
            "response.function_call_arguments.delta" => {
                let index = self
                    .calls
                    .get(str_at(&v, "item_id"))
                    .copied()
                    .ok_or("an arguments delta names a function call the stream never began")?;
                let d = str_at(&v, "delta");
                if !d.is_empty() {
                    out.push(Chunk::ToolCallDelta(ToolCallDelta {
                        index,
                        arguments_delta: d.to_string(),
                        ..Default::default()
                    }));
                }
            }
            "response.completed" | "response.incomplete" | "response.failed" => {
                let r = v.get("response").unwrap_or(&Value::Null);
                self.done = Some(parse_response(r)?);
            }
            "error" => {
                let msg = v
                    .get("message")
                    .and_then(Value::as_str)
                    .unwrap_or("error event in the stream");
                return Err(format!(
                    "the provider reported an error mid-stream: {}",
                    bridle_core::redact::preview(msg, 300)
                ));
            }
            _ => {}
        }
        Ok(out)
    }

    fn done(&self) -> bool {
        self.done.is_some()
    }

    fn complete(&self) -> bool {
        self.done.is_some()
    }
}

impl Assembler {
    /// The answer; call once [`crate::provider::http::Assembler::done`].
    pub fn finish(self) -> Parsed {
        self.done.unwrap_or_else(|| Parsed {
            message: Message {
                role: Role::Assistant as i32,
                ..Default::default()
            },
            finish_reason: FinishReason::Unspecified,
            model: String::new(),
            id: String::new(),
            usage: Usage::default(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::provider::http::Assembler as _;
    use bridle_testkit::mock_openai::{fixture, response_to_events};

    #[test]
    fn the_published_example_reads_as_an_answer() {
        let r = fixture("response.json").unwrap();
        let p = parse_response(&r).unwrap();
        assert!(p.message.text.starts_with("In a peaceful grove"));
        assert_eq!(p.finish_reason, FinishReason::Stop);
        assert_eq!(
            (
                p.model.as_str(),
                p.usage.input_tokens,
                p.usage.output_tokens
            ),
            ("gpt-4.1-2025-04-14", 36, 87)
        );
        // Streamed, the same answer comes from the events.
        let mut asm = Assembler::default();
        let mut text = String::new();
        for e in response_to_events(&r) {
            for c in asm.apply(&e.to_string()).unwrap() {
                if let Chunk::TextDelta(t) = c {
                    text.push_str(&t);
                }
            }
        }
        assert!(asm.done());
        assert_eq!(text, p.message.text);
        assert_eq!(asm.finish(), p);
    }

    #[test]
    fn cut_short_refused_and_failed_answers_say_so() {
        let mut r = fixture("response.json").unwrap();
        r["status"] = json!("incomplete");
        r["incomplete_details"] = json!({"reason": "max_output_tokens"});
        assert_eq!(
            parse_response(&r).unwrap().finish_reason,
            FinishReason::Length
        );
        r["incomplete_details"] = json!({"reason": "content_filter"});
        assert_eq!(
            parse_response(&r).unwrap().finish_reason,
            FinishReason::ContentFilter
        );
        r["status"] = json!("completed");
        r["output"][0]["content"] =
            json!([{"type": "refusal", "refusal": "I can't help with that."}]);
        assert_eq!(
            parse_response(&r).unwrap().message.text,
            "I can't help with that."
        );
        r["status"] = json!("failed");
        r["error"] = json!({"code": "server_error", "message": "The model failed."});
        assert_eq!(
            parse_response(&r).unwrap_err(),
            "the response failed: The model failed."
        );
        let mut asm = Assembler::default();
        let e = asm
            .apply(r#"{"type":"error","code":"rate_limit_exceeded","message":"Slow down","sequence_number":3}"#)
            .unwrap_err();
        assert_eq!(e, "the provider reported an error mid-stream: Slow down");
        let e = asm
            .apply(
                r#"{"type":"response.function_call_arguments.delta","item_id":"fc_9","delta":"{"}"#,
            )
            .unwrap_err();
        assert!(e.contains("never began"), "{e}");
        assert!(!asm.done());
    }
}
