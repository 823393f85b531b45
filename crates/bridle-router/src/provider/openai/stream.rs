//! Streaming Chat Completions: `chat.completion.chunk` events in, deltas out, and the whole
//! reply assembled from them.

use std::collections::BTreeMap;

use bridle_proto::complete_chunk::Chunk;
use bridle_proto::{Message, Role, ToolCall, ToolCallDelta, Usage};
use serde::Deserialize;

use super::wire::{self, Parsed, WireUsage};

#[derive(Debug, Default, Deserialize)]
pub struct ChunkBody {
    pub id: Option<String>,
    pub model: Option<String>,
    pub choices: Option<Vec<ChunkChoice>>,
    pub usage: Option<WireUsage>,
    pub error: Option<serde_json::Value>,
}

#[derive(Debug, Default, Deserialize)]
pub struct ChunkChoice {
    pub delta: Option<Delta>,
    pub finish_reason: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
pub struct Delta {
    pub content: Option<String>,
    pub refusal: Option<String>,
    pub tool_calls: Option<Vec<DeltaToolCall>>,
}

#[derive(Debug, Default, Deserialize)]
pub struct DeltaToolCall {
    pub index: Option<u32>,
    pub id: Option<String>,
    pub function: Option<DeltaFunction>,
}

#[derive(Debug, Default, Deserialize)]
pub struct DeltaFunction {
    pub name: Option<String>,
    pub arguments: Option<String>,
}

/// Builds the reply from chunks, and yields the deltas to forward.
#[derive(Debug, Default)]
pub struct Assembler {
    id: String,
    model: String,
    text: String,
    refusal: String,
    calls: BTreeMap<u32, ToolCall>,
    finish: Option<String>,
    usage: Option<Usage>,
    done: bool,
}

impl crate::provider::http::Assembler for Assembler {
    fn apply(&mut self, data: &str) -> Result<Vec<Chunk>, String> {
        if data.trim() == "[DONE]" {
            self.done = true;
            return Ok(Vec::new());
        }
        self.apply_chunk(data)
    }

    fn done(&self) -> bool {
        self.done
    }

    /// Some compatible servers close after the finish chunk without `[DONE]`; a stream cut
    /// before any finish_reason is broken.
    fn complete(&self) -> bool {
        self.done || self.finish.is_some()
    }
}

impl Assembler {
    /// Applies one `chat.completion.chunk`. Returns the deltas it carried, or the provider's
    /// error when the payload is an error event.
    pub fn apply_chunk(&mut self, data: &str) -> Result<Vec<Chunk>, String> {
        let c: ChunkBody =
            serde_json::from_str(data).map_err(|e| format!("a stream chunk is malformed: {e}"))?;
        if let Some(err) = c.error {
            let msg = err
                .get("message")
                .and_then(|m| m.as_str())
                .unwrap_or("error event in the stream");
            return Err(format!(
                "the provider reported an error mid-stream: {}",
                bridle_core::redact::preview(msg, 300)
            ));
        }
        if let Some(id) = c.id.filter(|s| !s.is_empty()) {
            self.id = id;
        }
        if let Some(m) = c.model.filter(|s| !s.is_empty()) {
            self.model = m;
        }
        if let Some(u) = c.usage {
            self.usage = Some(u.to_usage());
        }
        let mut out = Vec::new();
        for choice in c.choices.unwrap_or_default() {
            if let Some(f) = choice.finish_reason {
                self.finish = Some(f);
            }
            let Some(d) = choice.delta else { continue };
            if let Some(t) = d.content.filter(|t| !t.is_empty()) {
                self.text.push_str(&t);
                out.push(Chunk::TextDelta(t));
            }
            if let Some(r) = d.refusal.filter(|r| !r.is_empty()) {
                self.refusal.push_str(&r);
                out.push(Chunk::TextDelta(r));
            }
            for tc in d.tool_calls.unwrap_or_default() {
                let index = tc.index.unwrap_or(0);
                let call = self.calls.entry(index).or_default();
                let f = tc.function.unwrap_or_default();
                let id = tc.id.unwrap_or_default();
                let name = f.name.unwrap_or_default();
                let args = f.arguments.unwrap_or_default();
                if !id.is_empty() {
                    call.id = id.clone();
                }
                if !name.is_empty() {
                    call.name.push_str(&name);
                }
                call.arguments_json.push_str(&args);
                if !(id.is_empty() && name.is_empty() && args.is_empty()) {
                    out.push(Chunk::ToolCallDelta(ToolCallDelta {
                        index,
                        id,
                        name,
                        arguments_delta: args,
                    }));
                }
            }
        }
        Ok(out)
    }

    pub fn finish(self) -> Parsed {
        let text = if self.text.is_empty() {
            self.refusal
        } else {
            self.text
        };
        Parsed {
            message: Message {
                role: Role::Assistant as i32,
                text,
                tool_calls: self.calls.into_values().collect(),
                ..Default::default()
            },
            finish_reason: wire::finish_reason(self.finish.as_deref()),
            model: self.model,
            id: self.id,
            usage: self.usage.unwrap_or_default(),
        }
    }
}
