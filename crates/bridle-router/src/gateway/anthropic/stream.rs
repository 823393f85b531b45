//! Streamed messages: Bridle's deltas as Anthropic's events — `message_start`, content blocks
//! (`text_delta`, `tool_use` with `input_json_delta`), `message_delta` with the stop reason and
//! usage, `message_stop` — or an `error` event, which the SDK raises.

use std::collections::HashMap;
use std::fmt::Write as _;

use axum::response::Response;
use bridle_proto::CompleteChunk;
use bridle_proto::complete_chunk::Chunk;
use serde_json::{Value, json};
use tokio::sync::mpsc;

use super::error_type;
use super::wire::{stop_reason, usage};
use crate::gateway::openai::bridle_fields;
use crate::gateway::{Failure, Frames, Kind, new_id, quoted};
use crate::provider::StreamItem;

/// The message being streamed: which content block is open, and where each tool call's
/// block is.
struct Blocks {
    model: String,
    next: u32,
    open: Option<u32>,
    text: Option<u32>,
    tools: HashMap<u32, u32>,
}

fn event(out: &mut String, kind: &str, data: &str) {
    let _ = write!(out, "event: {kind}\ndata: {data}\n\n");
}

fn error_event(out: &mut String, f: &Failure) {
    let v = json!({"type": "error", "error": {"type": error_type(f.kind), "message": crate::error::bounded(&f.message)}});
    event(out, "error", &v.to_string());
}

impl Blocks {
    fn close(&mut self, out: &mut String) {
        if let Some(i) = self.open.take() {
            event(
                out,
                "content_block_stop",
                &format!(r#"{{"type":"content_block_stop","index":{i}}}"#),
            );
        }
    }

    fn start_block(&mut self, block: &Value, out: &mut String) -> u32 {
        self.close(out);
        let i = self.next;
        self.next += 1;
        self.open = Some(i);
        event(
            out,
            "content_block_start",
            &format!(r#"{{"type":"content_block_start","index":{i},"content_block":{block}}}"#),
        );
        i
    }

    fn delta(out: &mut String, i: u32, delta: &str) {
        event(
            out,
            "content_block_delta",
            &format!(r#"{{"type":"content_block_delta","index":{i},"delta":{delta}}}"#),
        );
    }
}

impl Frames for Blocks {
    fn start(&mut self, out: &mut String) {
        let start = json!({"type": "message_start", "message": {
            "id": new_id("msg_"), "type": "message", "role": "assistant", "model": self.model,
            "content": [], "stop_reason": null, "stop_sequence": null,
            "usage": {"input_tokens": 0, "output_tokens": 0}}});
        event(out, "message_start", &start.to_string());
    }

    fn item(&mut self, item: Option<StreamItem>, out: &mut String) -> bool {
        let c = match item {
            Some(Ok(c)) => c,
            Some(Err(s)) => {
                error_event(out, &Failure::from_status(&s));
                return true;
            }
            None => {
                error_event(
                    out,
                    &Failure::new(
                        axum::http::StatusCode::INTERNAL_SERVER_ERROR,
                        Kind::Internal,
                        "the stream ended without an answer",
                    ),
                );
                return true;
            }
        };
        match c.chunk {
            Some(Chunk::TextDelta(t)) => {
                let i = match self.text.filter(|i| self.open == Some(*i)) {
                    Some(i) => i,
                    None => {
                        let i = self.start_block(&json!({"type": "text", "text": ""}), out);
                        self.text = Some(i);
                        i
                    }
                };
                Self::delta(
                    out,
                    i,
                    &format!(r#"{{"type":"text_delta","text":{}}}"#, quoted(&t)),
                );
                false
            }
            Some(Chunk::ToolCallDelta(d)) => {
                let i = match self.tools.get(&d.index) {
                    Some(i) => *i,
                    None => {
                        let block =
                            json!({"type": "tool_use", "id": d.id, "name": d.name, "input": {}});
                        let i = self.start_block(&block, out);
                        self.tools.insert(d.index, i);
                        i
                    }
                };
                if !d.arguments_delta.is_empty() {
                    let delta = format!(
                        r#"{{"type":"input_json_delta","partial_json":{}}}"#,
                        quoted(&d.arguments_delta)
                    );
                    Self::delta(out, i, &delta);
                }
                false
            }
            Some(Chunk::Done(r)) => {
                self.close(out);
                let v = json!({"type": "message_delta",
                    "delta": {"stop_reason": stop_reason(r.finish_reason), "stop_sequence": null},
                    "usage": usage(&r), "bridle": bridle_fields(&r)});
                event(out, "message_delta", &v.to_string());
                event(out, "message_stop", r#"{"type":"message_stop"}"#);
                true
            }
            None => false,
        }
    }
}

pub fn respond(
    model: String,
    first: Option<CompleteChunk>,
    rx: mpsc::Receiver<StreamItem>,
) -> Response {
    let blocks = Blocks {
        model,
        next: 0,
        open: None,
        text: None,
        tools: HashMap::new(),
    };
    crate::gateway::sse(blocks, first, rx)
}
