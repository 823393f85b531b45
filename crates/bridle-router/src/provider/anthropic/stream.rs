//! Streaming Messages: `message_start`, `content_block_start` / `_delta` / `_stop` (text,
//! `tool_use` with `input_json_delta`, thinking), `message_delta` (stop reason, cumulative
//! usage), `message_stop`, `ping` and `error` events in; deltas out, and the whole reply
//! assembled from them.

use std::collections::BTreeMap;

use bridle_proto::complete_chunk::Chunk;
use bridle_proto::{Message, Role, ToolCall, ToolCallDelta};
use serde::Deserialize;
use serde_json::{Value, json};

use super::wire::{self, Parsed, WireUsage};

#[derive(Debug, Deserialize)]
struct Event {
    #[serde(rename = "type")]
    kind: String,
    index: Option<u32>,
    message: Option<wire::WireMessage>,
    content_block: Option<Value>,
    delta: Option<Value>,
    usage: Option<WireUsage>,
    error: Option<Value>,
}

/// One content block being received.
#[derive(Debug)]
enum Block {
    Text,
    /// The n-th tool call of the message, and whether any input arrived.
    Tool(u32, bool),
    /// A block sent back verbatim (thinking), built up from its deltas.
    Kept(Value),
    Other,
}

#[derive(Debug, Default)]
pub struct Assembler {
    id: String,
    model: String,
    text: String,
    blocks: BTreeMap<u32, Block>,
    calls: Vec<ToolCall>,
    stop_reason: Option<String>,
    usage: WireUsage,
    stopped: bool,
}

impl crate::provider::http::Assembler for Assembler {
    fn apply(&mut self, data: &str) -> Result<Vec<Chunk>, String> {
        let e: Event =
            serde_json::from_str(data).map_err(|e| format!("an event is not JSON: {e}"))?;
        let mut out = Vec::new();
        match e.kind.as_str() {
            "message_start" => {
                let m = e.message.unwrap_or_default();
                self.id = m.id.unwrap_or_default();
                self.model = m.model.unwrap_or_default();
                if let Some(u) = m.usage {
                    self.usage.merge(&u);
                }
            }
            "content_block_start" => {
                let index = e.index.ok_or("content_block_start without an index")?;
                let b = e.content_block.unwrap_or_default();
                let kind = b.get("type").and_then(Value::as_str).unwrap_or("");
                let block = match kind {
                    "text" => {
                        let t = b.get("text").and_then(Value::as_str).unwrap_or("");
                        self.push_text(t, &mut out);
                        Block::Text
                    }
                    "tool_use" => {
                        let s =
                            |k: &str| b.get(k).and_then(Value::as_str).unwrap_or("").to_string();
                        let n = self.calls.len() as u32;
                        self.calls.push(ToolCall {
                            id: s("id"),
                            name: s("name"),
                            arguments_json: String::new(),
                        });
                        out.push(Chunk::ToolCallDelta(ToolCallDelta {
                            index: n,
                            id: s("id"),
                            name: s("name"),
                            arguments_delta: String::new(),
                        }));
                        Block::Tool(n, false)
                    }
                    k if wire::is_kept_block(k) => Block::Kept(b),
                    _ => Block::Other,
                };
                self.blocks.insert(index, block);
            }
            "content_block_delta" => {
                let index = e.index.ok_or("content_block_delta without an index")?;
                let d = e.delta.unwrap_or_default();
                let s = |k: &str| d.get(k).and_then(Value::as_str).unwrap_or("");
                match (self.blocks.get_mut(&index), s("type")) {
                    (Some(Block::Text), "text_delta") => {
                        let t = s("text").to_string();
                        self.push_text(&t, &mut out);
                    }
                    (Some(Block::Tool(n, got)), "input_json_delta") => {
                        let part = s("partial_json");
                        if !part.is_empty() {
                            *got = true;
                            let n = *n;
                            if let Some(c) = self.calls.get_mut(n as usize) {
                                c.arguments_json.push_str(part);
                            }
                            out.push(Chunk::ToolCallDelta(ToolCallDelta {
                                index: n,
                                arguments_delta: part.to_string(),
                                ..Default::default()
                            }));
                        }
                    }
                    (Some(Block::Kept(b)), "thinking_delta") => {
                        append(b, "thinking", s("thinking"))
                    }
                    (Some(Block::Kept(b)), "signature_delta") => {
                        append(b, "signature", s("signature"))
                    }
                    (None, _) => {
                        return Err(format!("a delta for block {index}, which never started"));
                    }
                    _ => {}
                }
            }
            "content_block_stop" => {
                // A tool called without input streams none; its input is the empty object.
                if let Some(Block::Tool(n, false)) = e.index.and_then(|i| self.blocks.get(&i)) {
                    let n = *n;
                    if let Some(c) = self.calls.get_mut(n as usize) {
                        c.arguments_json = "{}".into();
                    }
                    out.push(Chunk::ToolCallDelta(ToolCallDelta {
                        index: n,
                        arguments_delta: "{}".into(),
                        ..Default::default()
                    }));
                }
            }
            "message_delta" => {
                if let Some(r) = e
                    .delta
                    .as_ref()
                    .and_then(|d| d.get("stop_reason"))
                    .and_then(Value::as_str)
                {
                    self.stop_reason = Some(r.to_string());
                }
                if let Some(u) = e.usage {
                    self.usage.merge(&u);
                }
            }
            "message_stop" => self.stopped = true,
            "error" => {
                let err = e.error.unwrap_or_default();
                let s = |k: &str| err.get(k).and_then(Value::as_str).unwrap_or("").to_string();
                return Err(format!(
                    "the provider reported an error mid-stream: {}: {}",
                    s("type"),
                    bridle_core::redact::preview(&s("message"), 300)
                ));
            }
            // ping, and event types added after this was written.
            _ => {}
        }
        Ok(out)
    }

    fn done(&self) -> bool {
        self.stopped
    }

    fn complete(&self) -> bool {
        self.stopped || self.stop_reason.is_some()
    }
}

fn append(block: &mut Value, field: &str, part: &str) {
    let old = block.get(field).and_then(Value::as_str).unwrap_or("");
    block[field] = json!(format!("{old}{part}"));
}

impl Assembler {
    fn push_text(&mut self, t: &str, out: &mut Vec<Chunk>) {
        if !t.is_empty() {
            self.text.push_str(t);
            out.push(Chunk::TextDelta(t.to_string()));
        }
    }

    pub fn finish(mut self) -> Parsed {
        // The plain API returns input as an object; serialize the streamed text the same way
        // so both forms of one answer are equal. Input cut short (max_tokens) stays as sent.
        for c in &mut self.calls {
            if let Ok(v) = serde_json::from_str::<Value>(&c.arguments_json) {
                c.arguments_json = v.to_string();
            }
        }
        let kept: Vec<Value> = self
            .blocks
            .into_values()
            .filter_map(|b| match b {
                Block::Kept(v) => Some(v),
                _ => None,
            })
            .collect();
        Parsed {
            message: Message {
                role: Role::Assistant as i32,
                text: self.text,
                tool_calls: self.calls,
                provider_state: if kept.is_empty() {
                    String::new()
                } else {
                    Value::Array(kept).to_string()
                },
                ..Default::default()
            },
            finish_reason: wire::finish_reason(self.stop_reason.as_deref()),
            model: self.model,
            id: self.id,
            usage: self.usage.to_usage(),
        }
    }
}
