//! A mock Anthropic server that speaks the real Messages wire format (plain JSON and
//! `stream: true` server-sent events), for tests of anything that calls a model.
//!
//! It works like [`crate::mock_openai`]: tests queue replies; each `POST /v1/messages` takes
//! the next one (with nothing queued: a 500 in Anthropic's error shape); every request is
//! recorded. It checks what the real API checks first: `x-api-key` (with
//! [`MockAnthropic::require_key`]), `anthropic-version`, `model`, `max_tokens`, and messages
//! that alternate between user and assistant starting with user. Bodies come from Anthropic's
//! published examples (see `fixtures/anthropic/README.md`).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, Uri};
use axum::response::Response;
use serde_json::{Value, json};

use crate::mock_openai::{
    Inner, RecordedRequest, json_response, lock, raw_response, record, sse_response,
};

/// What the mock answers to one messages request.
#[derive(Clone, Debug)]
pub enum Reply {
    /// 200 with this `message` body; streamed as events when the request asks for it.
    Message(Value),
    /// A streaming answer given as raw SSE text (a fixture such as `stream_tool_use.txt`).
    Events(String),
    /// An error status with this body, and a `retry-after` header when given.
    Error {
        status: u16,
        body: Value,
        retry_after: Option<String>,
    },
    /// Waits, then answers with the inner reply.
    Delay(Duration, Box<Reply>),
    /// Never answers.
    Hang,
    /// Streaming requests only: the first `n` events of the message, then a broken connection.
    CutAfter(usize, Value),
    /// This status, content type and body exactly as given.
    Raw {
        status: u16,
        content_type: String,
        body: String,
    },
    /// A redirect (`status`, a 3xx) to `location`.
    Redirect { status: u16, location: String },
}

impl Reply {
    /// A text answer shaped like the published example.
    pub fn text(model: &str, text: &str) -> Reply {
        Reply::Message(text_message(model, text))
    }

    /// Anthropic's error body for a status.
    pub fn error(status: u16, message: &str) -> Reply {
        Reply::Error {
            status,
            body: error_body(status, message),
            retry_after: None,
        }
    }
}

/// Anthropic's error body: `{"type": "error", "error": {"type", "message"}}`.
pub fn error_body(status: u16, message: &str) -> Value {
    let kind = match status {
        400 => "invalid_request_error",
        401 => "authentication_error",
        403 => "permission_error",
        404 => "not_found_error",
        413 => "request_too_large",
        429 => "rate_limit_error",
        529 => "overloaded_error",
        _ => "api_error",
    };
    json!({"type": "error", "error": {"type": kind, "message": message}})
}

type AppState = (Arc<Inner<Reply>>, tokio::sync::watch::Receiver<()>);

pub struct MockAnthropic {
    addr: SocketAddr,
    inner: Arc<Inner<Reply>>,
    task: tokio::task::JoinHandle<()>,
    _stop: tokio::sync::watch::Sender<()>,
}

impl MockAnthropic {
    /// Serves on 127.0.0.1 on a free port.
    pub async fn start() -> anyhow::Result<Self> {
        let inner = Arc::new(Inner::new());
        let (stop, stopped) = tokio::sync::watch::channel(());
        let app = Router::new()
            .route("/v1/messages", axum::routing::post(messages))
            .fallback(unknown)
            .with_state((inner.clone(), stopped));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .context("binding the mock")?;
        let addr = listener.local_addr()?;
        let listener = axum::serve::ListenerExt::tap_io(listener, |tcp| {
            let _ = tcp.set_nodelay(true);
        });
        // The test owns the mock; Drop aborts this task.
        #[allow(clippy::disallowed_methods)]
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(Self {
            addr,
            inner,
            task,
            _stop: stop,
        })
    }

    /// "http://127.0.0.1:PORT/v1", what a client takes as its base URL.
    pub fn base_url(&self) -> String {
        format!("http://{}/v1", self.addr)
    }

    pub fn enqueue(&self, reply: Reply) {
        lock(&self.inner.queue).push_back(reply);
    }

    /// Answers every request this way once the queue is empty.
    pub fn set_default(&self, reply: Option<Reply>) {
        *lock(&self.inner.default) = reply;
    }

    pub fn set_recording(&self, on: bool) {
        self.inner
            .recording
            .store(on, std::sync::atomic::Ordering::Relaxed);
    }

    pub fn requests(&self) -> Vec<RecordedRequest> {
        lock(&self.inner.requests).clone()
    }

    /// Answer 401 to any request whose `x-api-key` is not `key`. `None` accepts any key.
    pub fn require_key(&self, key: Option<&str>) {
        *lock(&self.inner.required_key) = key.map(str::to_string);
    }
}

impl Drop for MockAnthropic {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// What the real API refuses before looking at the request's content.
fn check(headers: &HeaderMap, req: &Value, required_key: Option<String>) -> Option<Response> {
    let header = |n: &str| headers.get(n).and_then(|v| v.to_str().ok()).unwrap_or("");
    if let Some(key) = required_key
        && header("x-api-key") != key
    {
        return Some(json_response(
            401,
            &error_body(401, "invalid x-api-key"),
            None,
        ));
    }
    let bad = |m: &str| Some(json_response(400, &error_body(400, m), None));
    if header("anthropic-version").is_empty() {
        return bad("anthropic-version: header is required");
    }
    if !req.get("model").is_some_and(Value::is_string) {
        return bad("model: Field required");
    }
    if !req.get("max_tokens").is_some_and(Value::is_u64) {
        return bad("max_tokens: Field required");
    }
    let Some(msgs) = req.get("messages").and_then(Value::as_array) else {
        return bad("messages: Field required");
    };
    for (i, m) in msgs.iter().enumerate() {
        let want = if i % 2 == 0 { "user" } else { "assistant" };
        if m.get("role").and_then(Value::as_str) != Some(want) {
            return bad(&format!(
                "messages.{i}.role: roles must alternate between \"user\" and \"assistant\", starting with \"user\""
            ));
        }
    }
    None
}

async fn messages(
    State((inner, stopped)): State<AppState>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let req = record(&inner, &method, &uri, &headers, &body);
    let required = lock(&inner.required_key).clone();
    if let Some(refused) = check(&headers, &req, required) {
        return refused;
    }
    let stream = req.get("stream").and_then(Value::as_bool).unwrap_or(false);
    let Some(mut reply) = inner.next(&req) else {
        return json_response(
            500,
            &error_body(500, "mock: no reply was queued for this request"),
            None,
        );
    };
    loop {
        reply = match reply {
            Reply::Delay(d, then) => {
                let mut s = stopped.clone();
                tokio::select! {
                    _ = tokio::time::sleep(d) => {}
                    _ = s.changed() => {}
                }
                *then
            }
            Reply::Hang => {
                let mut s = stopped.clone();
                let _ = s.changed().await;
                return json_response(529, &error_body(529, "mock stopped"), None);
            }
            Reply::Error {
                status,
                body,
                retry_after,
            } => return json_response(status, &body, retry_after.as_deref()),
            Reply::Message(m) if stream => {
                return sse_response(framed(&message_to_events(&m)), None);
            }
            Reply::Message(m) => return json_response(200, &m, None),
            // The published files leave out the blank line that ends the last event.
            Reply::Events(text) => {
                let body = format!("{}\n\n", text.trim_end());
                return raw_response(200, "text/event-stream", body);
            }
            Reply::CutAfter(n, m) => {
                return sse_response(framed(&message_to_events(&m)), Some(n));
            }
            Reply::Raw {
                status,
                content_type,
                body,
            } => return raw_response(status, &content_type, body),
            Reply::Redirect { status, location } => {
                return Response::builder()
                    .status(status)
                    .header("location", location)
                    .body(axum::body::Body::empty())
                    .unwrap_or_default();
            }
        };
    }
}

async fn unknown(
    State((inner, _)): State<AppState>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    record(&inner, &method, &uri, &headers, &body);
    json_response(
        404,
        &error_body(404, "The requested resource could not be found."),
        None,
    )
}

/// `event: <type>` / `data: <json>` frames.
fn framed(events: &[Value]) -> Vec<String> {
    events
        .iter()
        .map(|e| {
            format!(
                "event: {}\ndata: {e}\n\n",
                e["type"].as_str().unwrap_or("message")
            )
        })
        .collect()
}

fn fixture_path(name: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures/anthropic")
        .join(name)
}

/// A JSON fixture from `fixtures/anthropic/` (Anthropic's published examples), parsed.
pub fn fixture(name: &str) -> anyhow::Result<Value> {
    let text = fixture_text(name)?;
    serde_json::from_str(&text).with_context(|| format!("parsing {name}"))
}

/// A fixture's text (the SSE streams).
pub fn fixture_text(name: &str) -> anyhow::Result<String> {
    let path = fixture_path(name);
    std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))
}

/// The published text example with `model` and the text replaced.
pub fn text_message(model: &str, text: &str) -> Value {
    let mut m = fixture("message.json").unwrap_or_else(|_| {
        json!({"id": "msg_mock", "type": "message", "role": "assistant", "content": [{"type": "text", "text": ""}],
               "model": "", "stop_reason": "end_turn", "stop_sequence": null, "usage": {"input_tokens": 0, "output_tokens": 0}})
    });
    m["model"] = json!(model);
    m["content"] = json!([{"type": "text", "text": text}]);
    m
}

/// A message with optional text then tool calls, each `(id, name, input JSON)`.
pub fn tool_use_message(model: &str, text: &str, calls: &[(&str, &str, Value)]) -> Value {
    let mut m = text_message(model, text);
    let mut content: Vec<Value> = if text.is_empty() {
        Vec::new()
    } else {
        vec![json!({"type": "text", "text": text})]
    };
    for (id, name, input) in calls {
        content.push(json!({"type": "tool_use", "id": id, "name": name, "input": input}));
    }
    m["content"] = Value::Array(content);
    m["stop_reason"] = json!("tool_use");
    m
}

/// A message as the events Anthropic streams for it: `message_start` (empty content, the
/// input usage), for each block `content_block_start`, its deltas (text in pieces of 5
/// characters, tool input as `input_json_delta`s of 8), `content_block_stop`, a `ping` after
/// the first block starts, then `message_delta` (stop reason, usage) and `message_stop`.
pub fn message_to_events(m: &Value) -> Vec<Value> {
    let usage = m.get("usage").cloned().unwrap_or_else(|| json!({}));
    let mut start_usage = usage.clone();
    start_usage["output_tokens"] = json!(1);
    let mut head = m.clone();
    head["content"] = json!([]);
    head["stop_reason"] = Value::Null;
    head["stop_sequence"] = Value::Null;
    head["usage"] = start_usage;
    let mut out = vec![json!({"type": "message_start", "message": head})];
    let blocks = m["content"].as_array().cloned().unwrap_or_default();
    for (i, b) in blocks.iter().enumerate() {
        let mut start = b.clone();
        let deltas: Vec<Value> = match b["type"].as_str() {
            Some("text") => {
                start["text"] = json!("");
                pieces(b["text"].as_str().unwrap_or(""), 5)
                    .into_iter()
                    .map(|p| json!({"type": "text_delta", "text": p}))
                    .collect()
            }
            Some("tool_use") => {
                start["input"] = json!({});
                let input = b["input"].to_string();
                std::iter::once(String::new())
                    .chain(pieces(&input, 8))
                    .map(|p| json!({"type": "input_json_delta", "partial_json": p}))
                    .collect()
            }
            _ => Vec::new(),
        };
        out.push(json!({"type": "content_block_start", "index": i, "content_block": start}));
        if i == 0 {
            out.push(json!({"type": "ping"}));
        }
        for d in deltas {
            out.push(json!({"type": "content_block_delta", "index": i, "delta": d}));
        }
        out.push(json!({"type": "content_block_stop", "index": i}));
    }
    out.push(json!({"type": "message_delta",
        "delta": {"stop_reason": m["stop_reason"], "stop_sequence": m.get("stop_sequence").cloned().unwrap_or(Value::Null)},
        "usage": {"output_tokens": usage.get("output_tokens").cloned().unwrap_or(json!(0))}}));
    out.push(json!({"type": "message_stop"}));
    out
}

fn pieces(s: &str, n: usize) -> Vec<String> {
    let chars: Vec<char> = s.chars().collect();
    chars.chunks(n.max(1)).map(|c| c.iter().collect()).collect()
}
