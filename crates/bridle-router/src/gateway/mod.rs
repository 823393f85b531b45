//! The HTTP gateway fronts, so applications written for OpenAI or Anthropic can use Bridle as
//! their model gateway: `POST /v1/chat/completions` and `GET /v1/models` in OpenAI's shapes,
//! `POST /v1/messages` in Anthropic's. The request's `model` names a ModelRoute of the
//! caller's tenant. Errors come back in each API's own error shape, so the official SDKs
//! raise their usual exceptions.
//!
//! Callers authenticate with a Bridle API key, as `authorization: Bearer <key>` (what the
//! OpenAI SDK sends) or `x-api-key: <key>` (what the Anthropic SDK sends), and need the
//! operator role. The call is made for the key's tenant; per-agent limits count the agent
//! named in `x-bridle-agent`, else the key's name.

mod anthropic;
mod anthropic_stream;
#[doc(hidden)]
pub mod fuzzing;
mod openai;
mod openai_stream;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{HeaderMap, StatusCode};
use bridle_core::Shutdown;
use bridle_core::auth::{Authenticator, Role};
use bridle_proto::{CompleteChunk, Scope};
use tokio::sync::mpsc;

use crate::Error;
use crate::dispatch::Dispatcher;
use crate::provider::StreamItem;

/// Header naming the agent a gateway call is made for (per-agent limits).
pub const AGENT_HEADER: &str = "x-bridle-agent";

pub struct Gateway {
    pub dispatch: Arc<Dispatcher>,
    pub auth: Authenticator,
    pub max_body: usize,
}

/// Binds `listen` and serves the fronts on a task owned by `shutdown`. Returns the bound
/// address (written to `addr_file` when given).
pub async fn spawn(
    listen: SocketAddr,
    addr_file: Option<PathBuf>,
    gateway: Gateway,
    shutdown: &Shutdown,
) -> Result<SocketAddr, bridle_core::Error> {
    let listener = tokio::net::TcpListener::bind(listen).await.map_err(|e| {
        bridle_core::Error::Config(format!("http_listen: cannot bind {listen}: {e}"))
    })?;
    let addr = listener
        .local_addr()
        .map_err(|e| bridle_core::Error::internal(format!("http front address: {e}")))?;
    if let Some(f) = &addr_file {
        std::fs::write(f, addr.to_string()).map_err(|e| {
            bridle_core::Error::Config(format!("http_addr_file: cannot write {}: {e}", f.display()))
        })?;
    }
    let state = Arc::new(gateway);
    let app = axum::Router::new()
        .route("/v1/chat/completions", axum::routing::post(openai::chat))
        .route("/v1/models", axum::routing::get(openai::models))
        .route("/v1/messages", axum::routing::post(anthropic::messages))
        .fallback(openai::unknown)
        .with_state(state);
    // Streamed answers are many small writes: without TCP_NODELAY, Nagle's algorithm holds
    // each one back until the client acknowledges the last (tens of milliseconds).
    let listener = axum::serve::ListenerExt::tap_io(listener, |tcp| {
        let _ = tcp.set_nodelay(true);
    });
    let s = shutdown.clone();
    shutdown.spawn(async move {
        let stop = s.clone();
        let served = axum::serve(listener, app)
            .with_graceful_shutdown(async move { stop.triggered().await })
            .await;
        if let Err(e) = served {
            tracing::error!("HTTP gateway failed: {e}");
            s.trigger();
        }
    });
    tracing::info!(%addr, "router HTTP gateway listening");
    Ok(addr)
}

/// What went wrong, in terms both APIs can render.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    InvalidRequest,
    Authentication,
    Permission,
    NotFound,
    TooLarge,
    RateLimit,
    /// The providers behind the route failed.
    Upstream,
    Timeout,
    Internal,
}

#[derive(Clone, Debug)]
pub struct Failure {
    pub status: StatusCode,
    pub kind: Kind,
    pub message: String,
    pub retry_after: Option<Duration>,
}

impl Failure {
    pub fn invalid(message: impl Into<String>) -> Self {
        Failure {
            status: StatusCode::BAD_REQUEST,
            kind: Kind::InvalidRequest,
            message: message.into(),
            retry_after: None,
        }
    }

    /// From a gRPC status (how streams report their end), keeping its sanitized message.
    pub fn from_status(s: &tonic::Status) -> Self {
        use tonic::Code;
        let (status, kind) = match s.code() {
            Code::InvalidArgument | Code::OutOfRange => {
                (StatusCode::BAD_REQUEST, Kind::InvalidRequest)
            }
            Code::AlreadyExists | Code::Aborted => (StatusCode::CONFLICT, Kind::InvalidRequest),
            Code::NotFound => (StatusCode::NOT_FOUND, Kind::NotFound),
            Code::Unauthenticated => (StatusCode::UNAUTHORIZED, Kind::Authentication),
            Code::PermissionDenied => (StatusCode::FORBIDDEN, Kind::Permission),
            Code::ResourceExhausted => (StatusCode::TOO_MANY_REQUESTS, Kind::RateLimit),
            Code::DeadlineExceeded => (StatusCode::GATEWAY_TIMEOUT, Kind::Timeout),
            // A target that cannot work as configured, or none that answers: the gateway's
            // upstream failed.
            Code::FailedPrecondition | Code::Unavailable => {
                (StatusCode::BAD_GATEWAY, Kind::Upstream)
            }
            Code::Unimplemented => (StatusCode::NOT_IMPLEMENTED, Kind::InvalidRequest),
            Code::Ok | Code::Cancelled | Code::Unknown | Code::Internal | Code::DataLoss => {
                (StatusCode::INTERNAL_SERVER_ERROR, Kind::Internal)
            }
        };
        let retry_after = s
            .metadata()
            .get(crate::error::RETRY_AFTER_MS)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok())
            .map(Duration::from_millis);
        Failure {
            status,
            kind,
            message: s.message().to_string(),
            retry_after,
        }
    }
}

impl From<Error> for Failure {
    fn from(e: Error) -> Self {
        Failure::from_status(&tonic::Status::from(e))
    }
}

/// Who is calling, for which tenant and agent.
async fn scope(g: &Gateway, headers: &HeaderMap) -> Result<Scope, Failure> {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let token = header("authorization")
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
        .or_else(|| header("x-api-key"))
        .map(str::trim)
        .unwrap_or("");
    let principal =
        if token.is_empty() && g.auth.mode() == bridle_core::auth::AuthMode::Keys {
            return Err(Failure::from(Error::Core(bridle_core::Error::Unauthenticated(
            "an API key is required: send 'authorization: Bearer <key>' or 'x-api-key: <key>'"
                .into(),
        ))));
        } else {
            g.auth
                .authenticate_bearer(token)
                .await
                .map_err(|e| Failure::from(Error::Core(e)))?
        };
    principal
        .require(Role::Operator)
        .map_err(|e| Failure::from(Error::Core(e)))?;
    let tenant = principal
        .tenant_for("")
        .map_err(|e| Failure::from(Error::Core(e)))?;
    let agent = match header(AGENT_HEADER) {
        Some(a) => {
            bridle_core::ids::check_name(a)
                .map_err(|e| Failure::invalid(format!("{AGENT_HEADER}: {e}")))?;
            a.to_string()
        }
        None => principal.name.clone(),
    };
    Ok(Scope {
        tenant,
        agent,
        ..Default::default()
    })
}

/// The request body as JSON, refused past `limit` bytes.
async fn read_json(body: Body, limit: usize) -> Result<serde_json::Value, Failure> {
    let bytes = axum::body::to_bytes(body, limit).await.map_err(|_| Failure {
        status: StatusCode::PAYLOAD_TOO_LARGE,
        kind: Kind::TooLarge,
        message: format!(
            "the request body is larger than the {limit} bytes this gateway accepts (option max_request_bytes)"
        ),
        retry_after: None,
    })?;
    serde_json::from_slice(&bytes)
        .map_err(|e| Failure::invalid(format!("the request body is not JSON: {e}")))
}

/// Waits for a stream's first item, so a call that fails before any delta gets a real error
/// status instead of a 200 that breaks.
async fn first_item(rx: &mut mpsc::Receiver<StreamItem>) -> Result<Option<CompleteChunk>, Failure> {
    match rx.recv().await {
        None => Ok(None),
        Some(Ok(c)) => Ok(Some(c)),
        Some(Err(s)) => Err(Failure::from_status(&s)),
    }
}

/// Turns a stream's items into server-sent-event frames.
trait Frames: Send + 'static {
    /// Frames sent before the first item.
    fn start(&mut self, out: &mut String);
    /// Appends the frames of one item (`None`: the stream ended without its final chunk).
    /// Returns true when the stream is over.
    fn item(&mut self, item: Option<StreamItem>, out: &mut String) -> bool;
}

/// A streamed response. Whatever items are ready are written together: a provider that sends a
/// burst of deltas costs one write, not one per delta.
fn sse(
    mut f: impl Frames,
    first: Option<CompleteChunk>,
    mut rx: mpsc::Receiver<StreamItem>,
) -> axum::response::Response {
    use tokio::sync::mpsc::error::TryRecvError;
    let body = async_stream::stream! {
        let mut out = String::with_capacity(1024);
        f.start(&mut out);
        let mut done = f.item(first.map(Ok), &mut out);
        loop {
            while !done {
                match rx.try_recv() {
                    Ok(item) => done = f.item(Some(item), &mut out),
                    Err(TryRecvError::Empty) => break,
                    Err(TryRecvError::Disconnected) => done = f.item(None, &mut out),
                }
            }
            if !out.is_empty() {
                yield Ok::<_, std::convert::Infallible>(bytes::Bytes::from(std::mem::take(&mut out)));
            }
            if done {
                return;
            }
            done = f.item(rx.recv().await, &mut out);
        }
    };
    axum::response::Response::builder()
        .header(axum::http::header::CONTENT_TYPE, "text/event-stream")
        .header(axum::http::header::CACHE_CONTROL, "no-cache")
        .body(Body::from_stream(body))
        .unwrap_or_default()
}

/// A JSON string literal of `s`.
fn quoted(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_else(|_| "\"\"".into())
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn new_id(prefix: &str) -> String {
    format!("{prefix}{}", ulid::Ulid::new().to_string().to_lowercase())
}
