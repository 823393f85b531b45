//! A mock OpenAI server that speaks the real Chat Completions wire format (plain JSON and
//! `stream: true` server-sent events), for tests of anything that calls a model.
//!
//! Tests queue replies ([`MockOpenAi::enqueue`]); each `POST /v1/chat/completions` takes the
//! next one. With nothing queued it answers 500 with an OpenAI-shaped error, so a test that
//! makes an unexpected call notices. Every request is recorded ([`MockOpenAi::requests`]).
//! Bodies come from OpenAI's published examples (see `fixtures/openai/README.md`).

mod server;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

pub(crate) use server::{Inner, json_response, lock, raw_response, record, sse_response};
pub use server::{RecordedRequest, Responder};

use anyhow::Context as _;
use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, Uri};
use axum::response::Response;
use serde_json::{Value, json};

/// What the mock answers to one chat completion request.
#[derive(Clone, Debug)]
pub enum Reply {
    /// 200 with this `chat.completion` body; streamed as chunks when the request asks for it.
    Completion(Value),
    /// An error status with this body, and a `retry-after` header when given.
    Error {
        status: u16,
        body: Value,
        retry_after: Option<String>,
    },
    /// Waits, then answers with the inner reply.
    Delay(Duration, Box<Reply>),
    /// Never answers; the client has to give up.
    Hang,
    /// Streaming requests only: sends the first `n` SSE chunks of the completion, then breaks
    /// the connection (no `[DONE]`).
    CutAfter(usize, Value),
    /// This status, content type and body exactly as given: for answers that break the API's
    /// promises (a body that is not JSON, a stream with a malformed event).
    Raw {
        status: u16,
        content_type: String,
        body: String,
    },
}

impl Reply {
    /// A plain text answer from `gpt-4o-mini`, shaped like the published example.
    pub fn text(text: &str) -> Reply {
        Reply::Completion(text_completion("gpt-4o-mini", text))
    }

    /// An answer with tool calls, each `(id, name, arguments JSON)`.
    pub fn tool_calls(calls: &[(&str, &str, &str)]) -> Reply {
        Reply::Completion(tool_call_completion("gpt-4o-mini", calls))
    }

    /// An error with OpenAI's error body (`{"error": {"message", "type", "param", "code"}}`).
    pub fn error(status: u16, message: &str) -> Reply {
        Reply::Error {
            status,
            body: error_body(status, message),
            retry_after: None,
        }
    }

    /// 429 with `retry-after: <seconds>`.
    pub fn rate_limited(retry_after_secs: u64) -> Reply {
        Reply::Error {
            status: 429,
            body: error_body(429, "Rate limit reached for requests"),
            retry_after: Some(retry_after_secs.to_string()),
        }
    }

    /// A 200 server-sent-event body made of these raw lines (each sent as given, then a blank
    /// line), and nothing else: no `[DONE]` unless listed.
    pub fn raw_sse(events: &[&str]) -> Reply {
        Reply::Raw {
            status: 200,
            content_type: "text/event-stream".into(),
            body: events.iter().map(|e| format!("{e}\n\n")).collect(),
        }
    }
}

pub struct MockOpenAi {
    addr: SocketAddr,
    inner: Arc<Inner<Reply>>,
    task: tokio::task::JoinHandle<()>,
    // Dropping the sender wakes every hanging handler, so nothing outlives the mock.
    _stop: tokio::sync::watch::Sender<()>,
}

impl MockOpenAi {
    /// Serves on 127.0.0.1 on a free port.
    pub async fn start() -> anyhow::Result<Self> {
        Self::start_on(std::net::Ipv4Addr::LOCALHOST.into()).await
    }

    /// Serves on `ip` (an address of this machine, e.g. a Docker network's gateway, for
    /// services in containers) on a free port.
    pub async fn start_on(ip: std::net::IpAddr) -> anyhow::Result<Self> {
        let inner = Arc::new(Inner::new());
        let (stop, stopped) = tokio::sync::watch::channel(());
        let app = Router::new()
            .route("/v1/chat/completions", axum::routing::post(chat))
            // Azure OpenAI's deployment URLs (the base URL is the resource endpoint).
            .route(
                "/openai/deployments/{deployment}/chat/completions",
                axum::routing::post(chat),
            )
            .route("/v1/responses", axum::routing::post(responses))
            .route("/v1/models", axum::routing::get(models))
            .fallback(unknown)
            .with_state((inner.clone(), stopped));
        let listener = tokio::net::TcpListener::bind((ip, 0))
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

    /// Answers every request this way once the queue is empty (None: a 500, the default).
    pub fn set_default(&self, reply: Option<Reply>) {
        *lock(&self.inner.default) = reply;
    }

    /// Answers every request with what `f` returns for its JSON body once the queue is empty
    /// (before the default reply), e.g. a tool call to a conversation that has no tool result
    /// yet and a final answer to one that has; wrap the reply in [`Reply::Delay`] for a model
    /// that takes its time. `None` removes it.
    pub fn set_responder(&self, f: Option<Responder<Reply>>) {
        *lock(&self.inner.responder) = f;
    }

    /// Whether requests are recorded (on by default; benchmarks turn it off).
    pub fn set_recording(&self, on: bool) {
        self.inner
            .recording
            .store(on, std::sync::atomic::Ordering::Relaxed);
    }

    /// Replies still queued.
    pub fn pending(&self) -> usize {
        lock(&self.inner.queue).len()
    }

    /// Requests received so far, in order.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        lock(&self.inner.requests).clone()
    }

    /// Answer 401, as OpenAI does, to any request not carrying `Bearer <key>` (or, as Azure
    /// OpenAI takes it, `api-key: <key>`), without taking a queued reply. `None` accepts any
    /// key.
    pub fn require_key(&self, key: Option<&str>) {
        *lock(&self.inner.required_key) = key.map(str::to_string);
    }
}

impl Drop for MockOpenAi {
    fn drop(&mut self) {
        self.task.abort();
    }
}

type AppState = (Arc<Inner<Reply>>, tokio::sync::watch::Receiver<()>);

/// Which API a request came to: the queued replies (chat completions) are rendered in its
/// shapes.
#[derive(Clone, Copy, PartialEq)]
enum Api {
    Chat,
    Responses,
}

async fn chat(
    State(state): State<AppState>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    serve(state, Api::Chat, method, uri, headers, body).await
}

/// `POST /v1/responses`: the same queued replies, as response objects or their events (a
/// queued value whose `object` is `response` is served as it is).
async fn responses(
    State(state): State<AppState>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    serve(state, Api::Responses, method, uri, headers, body).await
}

async fn serve(
    (inner, stopped): AppState,
    api: Api,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let req = record(&inner, &method, &uri, &headers, &body);
    let required = lock(&inner.required_key).clone();
    if let Some(key) = required {
        let got = headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        let azure = headers.get("api-key").and_then(|v| v.to_str().ok());
        if got != format!("Bearer {key}") && azure != Some(key.as_str()) {
            let shown: String = got.trim_start_matches("Bearer ").chars().take(3).collect();
            let msg = format!(
                "Incorrect API key provided: {shown}***. You can find your API key at https://platform.openai.com/account/api-keys."
            );
            let mut b = error_body(401, &msg);
            b["error"]["code"] = json!("invalid_api_key");
            return json_response(401, &b, None);
        }
    }
    let valid = req.get("model").is_some_and(Value::is_string)
        && match api {
            Api::Chat => req.get("messages").is_some_and(Value::is_array),
            Api::Responses => req
                .get("input")
                .is_some_and(|i| i.is_array() || i.is_string()),
        };
    if !valid {
        let what = match api {
            Api::Chat => "you must provide a model parameter and a messages array",
            Api::Responses => "you must provide a model parameter and an input",
        };
        return json_response(400, &error_body(400, what), None);
    }
    let stream = req.get("stream").and_then(Value::as_bool).unwrap_or(false);
    let usage = req
        .pointer("/stream_options/include_usage")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    let next = inner.next(&req);
    let Some(mut reply) = next else {
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
                return json_response(503, &error_body(503, "mock stopped"), None);
            }
            Reply::Error {
                status,
                body,
                retry_after,
            } => return json_response(status, &body, retry_after.as_deref()),
            Reply::Completion(c) if api == Api::Responses => {
                let r = as_response(&c);
                if stream {
                    return sse_response(typed_events(&response_to_events(&r)), None);
                }
                return json_response(200, &r, None);
            }
            Reply::CutAfter(n, c) if api == Api::Responses => {
                return sse_response(typed_events(&response_to_events(&as_response(&c))), Some(n));
            }
            Reply::Completion(c) if stream => {
                return sse_response(data_events(&completion_to_chunks(&c, usage), true), None);
            }
            Reply::Completion(c) => return json_response(200, &c, None),
            Reply::CutAfter(n, c) => {
                return sse_response(
                    data_events(&completion_to_chunks(&c, usage), false),
                    Some(n),
                );
            }
            Reply::Raw {
                status,
                content_type,
                body,
            } => return raw_response(status, &content_type, body),
        };
    }
}

async fn models(
    State((inner, _)): State<AppState>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    record(&inner, &method, &uri, &headers, b"");
    let data: Vec<Value> = [
        "gpt-4o",
        "gpt-4o-mini",
        "gpt-4.1",
        "gpt-4.1-mini",
        "o3-mini",
    ]
    .iter()
    .map(|id| json!({"id": id, "object": "model", "created": 1686935002, "owned_by": "openai"}))
    .collect();
    json_response(200, &json!({"object": "list", "data": data}), None)
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
        &error_body(404, &format!("Invalid URL ({method} {})", uri.path())),
        None,
    )
}

/// `data: <chunk>` events, then `data: [DONE]` when `done`.
fn data_events(chunks: &[Value], done: bool) -> Vec<String> {
    let mut out: Vec<String> = chunks.iter().map(|c| format!("data: {c}\n\n")).collect();
    if done {
        out.push("data: [DONE]\n\n".into());
    }
    out
}

/// OpenAI's error body for a status.
pub fn error_body(status: u16, message: &str) -> Value {
    let (kind, code) = match status {
        401 => (
            "invalid_request_error",
            Value::String("invalid_api_key".into()),
        ),
        404 => ("invalid_request_error", Value::Null),
        429 => ("requests", Value::String("rate_limit_exceeded".into())),
        400..=499 => ("invalid_request_error", Value::Null),
        _ => ("server_error", Value::Null),
    };
    json!({"error": {"message": message, "type": kind, "param": null, "code": code}})
}

/// A fixture from `fixtures/openai/` (OpenAI's published examples), parsed.
pub fn fixture(name: &str) -> anyhow::Result<Value> {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures/openai")
        .join(name);
    let text =
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))
}

/// The published "Default" example with `model` and the text replaced.
pub fn text_completion(model: &str, text: &str) -> Value {
    let mut c = fixture("chat_completion.json").unwrap_or_else(|_| base_completion());
    c["model"] = json!(model);
    c["choices"][0]["message"]["content"] = json!(text);
    c
}

/// The published function-calling example with `model` and the calls replaced.
pub fn tool_call_completion(model: &str, calls: &[(&str, &str, &str)]) -> Value {
    let mut c = fixture("chat_completion_tool_calls.json").unwrap_or_else(|_| base_completion());
    c["model"] = json!(model);
    let calls: Vec<Value> = calls
        .iter()
        .map(|(id, name, args)| json!({"id": id, "type": "function", "function": {"name": name, "arguments": args}}))
        .collect();
    c["choices"][0]["message"] = json!({"role": "assistant", "content": null, "tool_calls": calls});
    c["choices"][0]["finish_reason"] = json!("tool_calls");
    c
}

fn base_completion() -> Value {
    json!({"id": "chatcmpl-mock", "object": "chat.completion", "created": 1700000000, "model": "",
           "choices": [{"index": 0, "message": {"role": "assistant", "content": ""}, "logprobs": null, "finish_reason": "stop"}],
           "usage": {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0}})
}

/// A completion as the stream of `chat.completion.chunk`s OpenAI sends for it: a role chunk,
/// content in small pieces, each tool call's id and name then its arguments in pieces, a
/// finish_reason chunk, and (with `include_usage`) a final chunk with no choices and the usage.
pub fn completion_to_chunks(completion: &Value, include_usage: bool) -> Vec<Value> {
    let choice = &completion["choices"][0];
    let message = &choice["message"];
    let chunk = |delta: Value, finish: Value| {
        let mut c = json!({
            "id": completion["id"], "object": "chat.completion.chunk", "created": completion["created"],
            "model": completion["model"],
            "choices": [{"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish}],
        });
        if let Some(fp) = completion.get("system_fingerprint") {
            c["system_fingerprint"] = fp.clone();
        }
        if include_usage {
            c["usage"] = Value::Null;
        }
        c
    };
    let text = message["content"].as_str().unwrap_or("");
    let calls = message["tool_calls"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let first_content = if calls.is_empty() {
        json!("")
    } else {
        Value::Null
    };
    let mut out = vec![chunk(
        json!({"role": "assistant", "content": first_content, "refusal": null}),
        Value::Null,
    )];
    for piece in pieces(text, 5) {
        out.push(chunk(json!({"content": piece}), Value::Null));
    }
    for (i, call) in calls.iter().enumerate() {
        let name = &call["function"]["name"];
        let head = json!({"index": i, "id": call["id"], "type": "function", "function": {"name": name, "arguments": ""}});
        out.push(chunk(json!({"tool_calls": [head]}), Value::Null));
        for piece in pieces(call["function"]["arguments"].as_str().unwrap_or(""), 8) {
            out.push(chunk(
                json!({"tool_calls": [{"index": i, "function": {"arguments": piece}}]}),
                Value::Null,
            ));
        }
    }
    out.push(chunk(json!({}), choice["finish_reason"].clone()));
    if include_usage {
        let mut last = chunk(json!({}), Value::Null);
        last["choices"] = json!([]);
        last["usage"] = completion["usage"].clone();
        out.push(last);
    }
    out
}

/// `event: <type>` / `data: <event>` pairs, as the Responses API streams.
fn typed_events(events: &[Value]) -> Vec<String> {
    events
        .iter()
        .map(|e| format!("event: {}\ndata: {e}\n\n", e["type"].as_str().unwrap_or("")))
        .collect()
}

/// A queued reply as a Responses object: served as it is when it is one, else the published
/// "Text input" example (`fixtures/openai/response.json`) carrying the chat completion's
/// model, text, tool calls, finish and usage.
pub fn as_response(c: &Value) -> Value {
    if c["object"] == "response" {
        return c.clone();
    }
    let mut r = fixture("response.json").unwrap_or_else(
        |_| json!({"id": "resp_mock", "object": "response", "status": "completed"}),
    );
    let choice = &c["choices"][0];
    let message = &choice["message"];
    let mut output = Vec::new();
    if let Some(text) = message["content"].as_str().filter(|t| !t.is_empty()) {
        let mut m = r["output"][0].clone();
        m["content"][0]["text"] = json!(text);
        output.push(m);
    }
    for (i, call) in message["tool_calls"]
        .as_array()
        .into_iter()
        .flatten()
        .enumerate()
    {
        output.push(json!({"type": "function_call", "id": format!("fc_mock{i}"), "call_id": call["id"],
            "name": call["function"]["name"], "arguments": call["function"]["arguments"], "status": "completed"}));
    }
    r["output"] = Value::Array(output);
    r["model"] = c["model"].clone();
    if choice["finish_reason"] == "length" {
        r["status"] = json!("incomplete");
        r["incomplete_details"] = json!({"reason": "max_output_tokens"});
    }
    let u = &c["usage"];
    r["usage"] = json!({
        "input_tokens": u["prompt_tokens"], "output_tokens": u["completion_tokens"],
        "total_tokens": u["total_tokens"],
        "input_tokens_details": {"cached_tokens": u.pointer("/prompt_tokens_details/cached_tokens").cloned().unwrap_or(json!(0))},
        "output_tokens_details": {"reasoning_tokens": u.pointer("/completion_tokens_details/reasoning_tokens").cloned().unwrap_or(json!(0))},
    });
    r
}

/// A response object as the events the Responses API streams for it, in the order its API
/// reference gives: `response.created` and `response.in_progress`, then per output item
/// `response.output_item.added`, its content part, its text (or arguments) in small deltas,
/// their `.done` events and `response.output_item.done`, and last `response.completed` (or
/// `response.incomplete`). Each carries its `sequence_number`.
pub fn response_to_events(r: &Value) -> Vec<Value> {
    let mut out: Vec<Value> = Vec::new();
    let mut push = |mut e: Value| {
        e["sequence_number"] = json!(out.len());
        out.push(e);
    };
    let mut start = r.clone();
    start["status"] = json!("in_progress");
    start["output"] = json!([]);
    start["usage"] = Value::Null;
    push(json!({"type": "response.created", "response": start}));
    push(json!({"type": "response.in_progress", "response": start}));
    for (oi, item) in r["output"].as_array().into_iter().flatten().enumerate() {
        let id = item["id"].clone();
        let mut added = item.clone();
        added["status"] = json!("in_progress");
        match item["type"].as_str() {
            Some("message") => {
                added["content"] = json!([]);
                push(
                    json!({"type": "response.output_item.added", "output_index": oi, "item": added}),
                );
                let part = &item["content"][0];
                let text = part["text"].as_str().unwrap_or("");
                push(
                    json!({"type": "response.content_part.added", "item_id": id, "output_index": oi,
                    "content_index": 0, "part": {"type": "output_text", "text": "", "annotations": []}}),
                );
                for piece in pieces(text, 5) {
                    push(
                        json!({"type": "response.output_text.delta", "item_id": id, "output_index": oi,
                        "content_index": 0, "delta": piece, "logprobs": []}),
                    );
                }
                push(
                    json!({"type": "response.output_text.done", "item_id": id, "output_index": oi,
                    "content_index": 0, "text": text, "logprobs": []}),
                );
                push(
                    json!({"type": "response.content_part.done", "item_id": id, "output_index": oi,
                    "content_index": 0, "part": part}),
                );
            }
            _ => {
                added["arguments"] = json!("");
                push(
                    json!({"type": "response.output_item.added", "output_index": oi, "item": added}),
                );
                let args = item["arguments"].as_str().unwrap_or("");
                for piece in pieces(args, 8) {
                    push(
                        json!({"type": "response.function_call_arguments.delta", "item_id": id,
                        "output_index": oi, "delta": piece}),
                    );
                }
                push(
                    json!({"type": "response.function_call_arguments.done", "item_id": id,
                    "output_index": oi, "arguments": args}),
                );
            }
        }
        push(json!({"type": "response.output_item.done", "output_index": oi, "item": item}));
    }
    let last = if r["status"] == "incomplete" {
        "response.incomplete"
    } else {
        "response.completed"
    };
    push(json!({"type": last, "response": r}));
    out
}

/// Splits on character boundaries into pieces of at most `n` characters.
fn pieces(s: &str, n: usize) -> Vec<String> {
    let chars: Vec<char> = s.chars().collect();
    chars.chunks(n.max(1)).map(|c| c.iter().collect()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What the benchmarks' responder does: the reply depends on the conversation, and a
    /// queued reply still comes first.
    #[tokio::test]
    async fn a_responder_answers_each_request_from_its_body_after_the_queue() {
        let mock = MockOpenAi::start().await.unwrap();
        mock.set_default(Some(Reply::text("default")));
        mock.set_responder(Some(Arc::new(|req: &Value| {
            let last = req
                .pointer("/messages")
                .and_then(Value::as_array)
                .and_then(|m| m.last())
                .and_then(|m| m.get("role"))
                .and_then(Value::as_str)
                .unwrap_or("");
            if last == "tool" {
                Reply::Delay(Duration::from_millis(50), Box::new(Reply::text("final")))
            } else {
                Reply::tool_calls(&[("call_1", "echo", "{}")])
            }
        })));
        mock.enqueue(Reply::text("queued"));
        let http = crate::http::client();
        let ask = |role: &'static str| {
            let http = http.clone();
            let url = format!("{}/chat/completions", mock.base_url());
            async move {
                let body =
                    json!({"model": "gpt-4o-mini", "messages": [{"role": role, "content": "x"}]});
                let started = std::time::Instant::now();
                let r: Value = http
                    .post(url)
                    .json(&body)
                    .send()
                    .await
                    .unwrap()
                    .json()
                    .await
                    .unwrap();
                (r, started.elapsed())
            }
        };
        let text = |r: &Value| r.pointer("/choices/0/message/content").cloned();
        let (r, _) = ask("user").await;
        assert_eq!(text(&r), Some(json!("queued")));
        let (r, _) = ask("user").await;
        assert_eq!(
            r.pointer("/choices/0/message/tool_calls/0/function/name"),
            Some(&json!("echo")),
            "{r}"
        );
        let (r, took) = ask("tool").await;
        assert_eq!(text(&r), Some(json!("final")));
        assert!(
            took >= Duration::from_millis(50),
            "the delay was skipped: {took:?}"
        );
        mock.set_responder(None);
        let (r, _) = ask("tool").await;
        assert_eq!(text(&r), Some(json!("default")));
    }
}
