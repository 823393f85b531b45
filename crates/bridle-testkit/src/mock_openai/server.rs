//! What the mock servers share: recorded requests, the reply queue, and response builders.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::Response;
use serde_json::Value;

/// One request the mock received.
#[derive(Clone, Debug)]
pub struct RecordedRequest {
    pub method: String,
    pub path: String,
    /// The query string, without '?' (empty when there is none).
    pub query: String,
    /// Lowercase names; values that are not UTF-8 are dropped.
    pub headers: BTreeMap<String, String>,
    /// The parsed JSON body (Null when empty or not JSON).
    pub body: Value,
    pub received_at: Instant,
}

impl RecordedRequest {
    pub fn authorization(&self) -> Option<&str> {
        self.headers.get("authorization").map(String::as_str)
    }
}

/// Chooses the reply to a request from its JSON body (see `MockOpenAi::set_responder`).
pub type Responder<R> = Arc<dyn Fn(&Value) -> R + Send + Sync>;

/// State a mock server shares with its handlers (the Anthropic mock uses it too).
pub(crate) struct Inner<R> {
    pub(crate) queue: Mutex<VecDeque<R>>,
    /// Answers when the queue is empty, from the request (benchmarks whose many concurrent
    /// conversations each need the reply their own turn calls for), before `default`.
    pub(crate) responder: Mutex<Option<Responder<R>>>,
    /// Answered when the queue is empty (benchmarks), instead of a 500.
    pub(crate) default: Mutex<Option<R>>,
    pub(crate) requests: Mutex<Vec<RecordedRequest>>,
    pub(crate) recording: std::sync::atomic::AtomicBool,
    pub(crate) required_key: Mutex<Option<String>>,
}

impl<R: Clone> Inner<R> {
    pub(crate) fn new() -> Self {
        Self {
            queue: Mutex::new(VecDeque::new()),
            responder: Mutex::new(None),
            default: Mutex::new(None),
            requests: Mutex::new(Vec::new()),
            recording: std::sync::atomic::AtomicBool::new(true),
            required_key: Mutex::new(None),
        }
    }

    /// The next queued reply, else the responder's answer to `request`, else the default one.
    pub(crate) fn next(&self, request: &Value) -> Option<R> {
        if let Some(r) = lock(&self.queue).pop_front() {
            return Some(r);
        }
        // Called outside the lock: a responder may take its time.
        let responder = lock(&self.responder).clone();
        if let Some(f) = responder {
            return Some(f(request));
        }
        lock(&self.default).clone()
    }
}

pub(crate) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

pub(crate) fn record<R>(
    inner: &Inner<R>,
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    body: &[u8],
) -> Value {
    let parsed: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    if !inner.recording.load(std::sync::atomic::Ordering::Relaxed) {
        return parsed;
    }
    let headers = headers
        .iter()
        .filter_map(|(k, v)| Some((k.as_str().to_string(), v.to_str().ok()?.to_string())))
        .collect();
    lock(&inner.requests).push(RecordedRequest {
        method: method.to_string(),
        path: uri.path().to_string(),
        query: uri.query().unwrap_or("").to_string(),
        headers,
        body: parsed.clone(),
        received_at: Instant::now(),
    });
    parsed
}

pub(crate) fn raw_response(status: u16, content_type: &str, body: String) -> Response {
    Response::builder()
        .status(StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR))
        .header("content-type", content_type)
        .body(Body::from(body))
        .unwrap_or_default()
}

pub(crate) fn json_response(status: u16, body: &Value, retry_after: Option<&str>) -> Response {
    let mut b = Response::builder()
        .status(StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR))
        .header("content-type", "application/json");
    if let Some(r) = retry_after {
        b = b.header("retry-after", r);
    }
    b.body(Body::from(body.to_string())).unwrap_or_default()
}

/// SSE body of the events (each already framed, ending in a blank line); with `cut_after`,
/// only that many events and then a broken connection.
pub(crate) fn sse_response(events: Vec<String>, cut_after: Option<usize>) -> Response {
    use futures::StreamExt as _;
    let events: Vec<Result<Bytes, std::io::Error>> = events
        .into_iter()
        .take(cut_after.unwrap_or(usize::MAX))
        .map(|e| Ok(Bytes::from(e)))
        .collect();
    let cut = cut_after.map(|_| async {
        // Let the chunks reach the client before the connection breaks.
        tokio::time::sleep(Duration::from_millis(200)).await;
        Err(std::io::Error::new(
            std::io::ErrorKind::ConnectionReset,
            "mock cut the stream",
        ))
    });
    let body = futures::stream::iter(events).chain(futures::stream::iter(cut).then(|f| f));
    Response::builder()
        .status(StatusCode::OK)
        .header("content-type", "text/event-stream")
        .header("cache-control", "no-cache")
        .body(Body::from_stream(body))
        .unwrap_or_default()
}
