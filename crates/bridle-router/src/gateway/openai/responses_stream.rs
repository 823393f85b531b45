//! A streamed Responses answer: Bridle's deltas as the API's events. `response.created` and
//! `response.in_progress` first; an output item (`response.output_item.added`) for the message
//! and for each function call as it begins, with `response.output_text.delta` and
//! `response.function_call_arguments.delta` as their pieces arrive; at the end each item's
//! `.done` events and `response.completed` (or `response.incomplete`) with the whole response,
//! or `response.failed` when the call fails after the stream began. Every event carries its
//! `sequence_number`.

use std::fmt::Write as _;

use axum::response::Response;
use bridle_proto::complete_chunk::Chunk;
use bridle_proto::{CompleteChunk, ToolCall};
use serde_json::{Value, json};
use tokio::sync::mpsc;

use super::responses::{Echo, ItemIds, call_item, finished, message_item, text_part};
use crate::gateway::{Failure, Frames, Kind, new_id, quoted, unix_now};
use crate::provider::StreamItem;

/// An event's type and body.
type Event = (&'static str, Value);

/// The message item, once text has begun.
struct Text {
    output_index: usize,
    id: String,
    text: String,
}

/// A function call item, once its first delta has come.
struct Call {
    /// The call's position in the provider's message.
    index: u32,
    output_index: usize,
    id: String,
    call: ToolCall,
}

struct Events {
    echo: Echo,
    id: String,
    created: u64,
    seq: u64,
    items: usize,
    text: Option<Text>,
    calls: Vec<Call>,
}

impl Events {
    fn new(echo: Echo) -> Self {
        Events {
            echo,
            id: new_id("resp_"),
            created: unix_now(),
            seq: 0,
            items: 0,
            text: None,
            calls: Vec::new(),
        }
    }

    /// Writes one event: `v` (an object) with its type and the next sequence number.
    fn event(&mut self, kind: &str, mut v: Value, out: &mut String) {
        v["type"] = json!(kind);
        v["sequence_number"] = json!(self.seq);
        self.seq += 1;
        let _ = write!(out, "event: {kind}\ndata: {v}\n\n");
    }

    fn response_event(&mut self, kind: &str, response: Value, out: &mut String) {
        self.event(kind, json!({ "response": response }), out);
    }

    fn text_delta(&mut self, delta: &str, out: &mut String) {
        if self.text.is_none() {
            let t = Text {
                output_index: self.items,
                id: new_id("msg_"),
                text: String::new(),
            };
            self.items += 1;
            let item = message_item(&t.id, "", "in_progress");
            let (oi, id) = (t.output_index, t.id.clone());
            self.text = Some(t);
            self.event(
                "response.output_item.added",
                json!({"output_index": oi, "item": item}),
                out,
            );
            self.event(
                "response.content_part.added",
                json!({"item_id": id, "output_index": oi, "content_index": 0, "part": text_part("")}),
                out,
            );
        }
        let Some(t) = self.text.as_mut() else { return };
        t.text.push_str(delta);
        let (oi, id) = (t.output_index, quoted(&t.id));
        // The hot path: written directly rather than built as a JSON value.
        let seq = self.seq;
        self.seq += 1;
        let _ = write!(
            out,
            "event: response.output_text.delta\ndata: {{\"type\":\"response.output_text.delta\",\"sequence_number\":{seq},\"item_id\":{id},\"output_index\":{oi},\"content_index\":0,\"delta\":{},\"logprobs\":[]}}\n\n",
            quoted(delta)
        );
    }

    fn call_delta(&mut self, d: bridle_proto::ToolCallDelta, out: &mut String) {
        let pos = match self.calls.iter().position(|c| c.index == d.index) {
            Some(p) => p,
            None => {
                let c = Call {
                    index: d.index,
                    output_index: self.items,
                    id: new_id("fc_"),
                    call: ToolCall {
                        id: d.id.clone(),
                        name: d.name.clone(),
                        arguments_json: String::new(),
                    },
                };
                self.items += 1;
                let v = json!({"output_index": c.output_index, "item": call_item(&c.id, &c.call, "in_progress")});
                self.calls.push(c);
                self.event("response.output_item.added", v, out);
                self.calls.len() - 1
            }
        };
        if d.arguments_delta.is_empty() {
            return;
        }
        let c = &mut self.calls[pos];
        c.call.arguments_json.push_str(&d.arguments_delta);
        let v =
            json!({"item_id": c.id, "output_index": c.output_index, "delta": d.arguments_delta});
        self.event("response.function_call_arguments.delta", v, out);
    }

    /// Streams what the final answer holds and no delta did (a provider that sent it whole),
    /// then closes every item in order.
    fn close(&mut self, r: &bridle_proto::CompleteResponse, out: &mut String) {
        let m = r.message.clone().unwrap_or_default();
        if self.text.is_none() && !m.text.is_empty() {
            self.text_delta(&m.text, out);
        }
        for (i, c) in m.tool_calls.iter().enumerate().skip(self.calls.len()) {
            self.call_delta(
                bridle_proto::ToolCallDelta {
                    index: u32::MAX - i as u32,
                    id: c.id.clone(),
                    name: c.name.clone(),
                    arguments_delta: c.arguments_json.clone(),
                },
                out,
            );
        }
        let mut done: Vec<(usize, Value, Vec<Event>)> = Vec::new();
        if let Some(t) = &self.text {
            done.push((
                t.output_index,
                message_item(&t.id, &t.text, "completed"),
                vec![
                    (
                        "response.output_text.done",
                        json!({"item_id": t.id, "output_index": t.output_index, "content_index": 0, "text": t.text, "logprobs": []}),
                    ),
                    (
                        "response.content_part.done",
                        json!({"item_id": t.id, "output_index": t.output_index, "content_index": 0, "part": text_part(&t.text)}),
                    ),
                ],
            ));
        }
        for c in &self.calls {
            done.push((
                c.output_index,
                call_item(&c.id, &c.call, "completed"),
                vec![(
                    "response.function_call_arguments.done",
                    json!({"item_id": c.id, "output_index": c.output_index, "name": c.call.name, "arguments": c.call.arguments_json}),
                )],
            ));
        }
        done.sort_by_key(|(i, _, _)| *i);
        for (oi, item, events) in done {
            for (kind, v) in events {
                self.event(kind, v, out);
            }
            self.event(
                "response.output_item.done",
                json!({"output_index": oi, "item": item}),
                out,
            );
        }
    }

    fn failed(&mut self, f: &Failure, out: &mut String) {
        let code = match f.kind {
            Kind::RateLimit => "rate_limit_exceeded",
            _ => "server_error",
        };
        let mut r = self
            .echo
            .response(&self.id, self.created, "failed", Vec::new());
        r["error"] = json!({"code": code, "message": crate::error::bounded(&f.message)});
        self.response_event("response.failed", r, out);
    }
}

impl Frames for Events {
    fn start(&mut self, out: &mut String) {
        let r = self
            .echo
            .response(&self.id, self.created, "in_progress", Vec::new());
        self.response_event("response.created", r.clone(), out);
        self.response_event("response.in_progress", r, out);
    }

    fn item(&mut self, item: Option<StreamItem>, out: &mut String) -> bool {
        let c = match item {
            Some(Ok(c)) => c,
            Some(Err(s)) => {
                self.failed(&Failure::from_status(&s), out);
                return true;
            }
            None => {
                let f = Failure::new(
                    axum::http::StatusCode::INTERNAL_SERVER_ERROR,
                    Kind::Internal,
                    "the stream ended without an answer",
                );
                self.failed(&f, out);
                return true;
            }
        };
        match c.chunk {
            Some(Chunk::TextDelta(t)) => self.text_delta(&t, out),
            Some(Chunk::ToolCallDelta(d)) => self.call_delta(d, out),
            Some(Chunk::Done(r)) => {
                self.close(&r, out);
                let ids = ItemIds {
                    message: self.text.as_ref().map(|t| t.id.clone()),
                    calls: self.calls.iter().map(|c| c.id.clone()).collect(),
                };
                let v = finished(&self.echo, &self.id, self.created, &r, &ids);
                let kind = if v["status"] == "incomplete" {
                    "response.incomplete"
                } else {
                    "response.completed"
                };
                self.response_event(kind, v, out);
                return true;
            }
            None => {}
        }
        false
    }
}

pub fn respond(
    echo: Echo,
    first: Option<CompleteChunk>,
    rx: mpsc::Receiver<StreamItem>,
) -> Response {
    crate::gateway::sse(Events::new(echo), first, rx)
}
