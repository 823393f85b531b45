//! Streamed chat completions: Bridle's deltas as `chat.completion.chunk` server-sent events,
//! ending with `data: [DONE]` (or an `{"error": ...}` event, which the SDK raises).

use std::fmt::Write as _;

use axum::response::Response;
use bridle_proto::CompleteChunk;
use bridle_proto::complete_chunk::Chunk;
use serde_json::{Value, json};
use tokio::sync::mpsc;

use super::wire::{bridle_fields, finish_reason, usage};
use crate::gateway::{Failure, Frames, Kind, new_id, quoted, unix_now};
use crate::provider::StreamItem;

struct Chunks {
    /// Every chunk up to its delta (`{"id":...,"choices":[{"index":0,"delta":`), rendered once.
    head: String,
    /// What follows the delta of a chunk that does not finish the choice.
    tail: &'static str,
    model: String,
    id: String,
    created: u64,
    include_usage: bool,
}

impl Chunks {
    fn new(model: String, include_usage: bool) -> Self {
        let (id, created) = (new_id("chatcmpl-"), unix_now());
        let head = format!(
            r#"{{"id":{},"object":"chat.completion.chunk","created":{created},"model":{},"choices":[{{"index":0,"delta":"#,
            quoted(&id),
            quoted(&model)
        );
        let tail = if include_usage {
            r#","logprobs":null,"finish_reason":null}],"usage":null}"#
        } else {
            r#","logprobs":null,"finish_reason":null}]}"#
        };
        Chunks {
            head,
            tail,
            model,
            id,
            created,
            include_usage,
        }
    }

    fn delta(&self, delta: &str, out: &mut String) {
        let _ = write!(out, "data: {}{delta}{}\n\n", self.head, self.tail);
    }

    fn chunk(&self, delta: Value, finish: Value) -> Value {
        let mut c = json!({
            "id": self.id, "object": "chat.completion.chunk", "created": self.created,
            "model": self.model,
            "choices": [{"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish}],
        });
        if self.include_usage {
            c["usage"] = Value::Null;
        }
        c
    }

    fn value(out: &mut String, v: &Value) {
        let _ = write!(out, "data: {v}\n\n");
    }
}

fn error_event(f: &Failure) -> Value {
    let kind = match f.kind {
        Kind::RateLimit => "requests",
        Kind::Timeout => "timeout",
        _ => "upstream_error",
    };
    json!({"error": {"message": crate::error::bounded(&f.message), "type": kind, "param": null, "code": null}})
}

impl Frames for Chunks {
    fn start(&mut self, out: &mut String) {
        self.delta(r#"{"role":"assistant","content":""}"#, out);
    }

    fn item(&mut self, item: Option<StreamItem>, out: &mut String) -> bool {
        let c = match item {
            Some(Ok(c)) => c,
            Some(Err(s)) => {
                Self::value(out, &error_event(&Failure::from_status(&s)));
                return true;
            }
            None => {
                let f = Failure::new(
                    axum::http::StatusCode::INTERNAL_SERVER_ERROR,
                    Kind::Internal,
                    "the stream ended without an answer",
                );
                Self::value(out, &error_event(&f));
                return true;
            }
        };
        match c.chunk {
            Some(Chunk::TextDelta(t)) => {
                self.delta(&format!(r#"{{"content":{}}}"#, quoted(&t)), out);
                false
            }
            Some(Chunk::ToolCallDelta(d)) => {
                let mut call =
                    json!({"index": d.index, "function": {"arguments": d.arguments_delta}});
                if !d.id.is_empty() {
                    call["id"] = json!(d.id);
                    call["type"] = json!("function");
                }
                if !d.name.is_empty() {
                    call["function"]["name"] = json!(d.name);
                }
                self.delta(&json!({"tool_calls": [call]}).to_string(), out);
                false
            }
            Some(Chunk::Done(r)) => {
                let mut last = self.chunk(json!({}), json!(finish_reason(r.finish_reason)));
                last["bridle"] = bridle_fields(&r);
                Self::value(out, &last);
                if self.include_usage {
                    let mut u = self.chunk(json!({}), Value::Null);
                    u["choices"] = json!([]);
                    u["usage"] = usage(&r);
                    Self::value(out, &u);
                }
                out.push_str("data: [DONE]\n\n");
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
    include_usage: bool,
) -> Response {
    crate::gateway::sse(Chunks::new(model, include_usage), first, rx)
}
