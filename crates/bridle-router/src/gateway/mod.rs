//! The HTTP gateway fronts, so applications written for OpenAI or Anthropic can use Bridle as
//! their model gateway: `POST /v1/chat/completions`, `POST /v1/responses`, `GET /v1/models` and
//! `GET /v1/models/{id}` in OpenAI's shapes,
//! `POST /v1/messages` in Anthropic's. The request's `model` names a ModelRoute of the
//! caller's tenant. Errors come back in each API's own error shape, so the official SDKs
//! raise their usual exceptions.
//!
//! Callers authenticate with a Bridle API key, as `authorization: Bearer <key>` (what the
//! OpenAI SDK sends) or `x-api-key: <key>` (what the Anthropic SDK sends), and need the
//! operator role. The call is made for the key's tenant; per-agent limits count the agent
//! named in `x-bridle-agent`, else the key's name.

mod anthropic;
mod fields;
#[doc(hidden)]
pub mod fuzzing;
mod openai;
mod serve;
mod telemetry;

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{HeaderMap, StatusCode};
use bridle_core::auth::{Authenticator, Role};
use bridle_proto::{CompleteChunk, Scope};
use tokio::sync::mpsc;

use crate::Error;
use crate::dispatch::Dispatcher;

use crate::provider::StreamItem;
pub use serve::spawn;

/// Header naming the agent a gateway call is made for (per-agent limits).
pub const AGENT_HEADER: &str = "x-bridle-agent";
/// The end user a gateway call acts for, when the body does not say (OpenAI's `user`,
/// Anthropic's `metadata.user_id`).
pub const END_USER_HEADER: &str = "x-bridle-end-user";

pub struct Gateway {
    pub dispatch: Arc<Dispatcher>,
    pub auth: Authenticator,
    pub max_body: usize,
    /// How long a request's body may take to arrive, from the end of its headers.
    pub body_timeout: Duration,
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
    /// The request field at fault, when there is one (OpenAI's `param`).
    pub param: Option<String>,
    /// A machine-readable reason (OpenAI's `code`), when the kind's own is not precise enough.
    pub code: Option<&'static str>,
}

impl Failure {
    pub fn new(status: StatusCode, kind: Kind, message: impl Into<String>) -> Self {
        Failure {
            status,
            kind,
            message: message.into(),
            retry_after: None,
            param: None,
            code: None,
        }
    }

    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, Kind::InvalidRequest, message)
    }

    /// A request field the gateway does not carry to the provider.
    pub fn unsupported(param: &str, code: &'static str, message: impl Into<String>) -> Self {
        Failure {
            param: Some(param.to_string()),
            code: Some(code),
            ..Self::invalid(message)
        }
    }

    /// From a gRPC status (how streams report their end), keeping its sanitized message.
    pub fn from_status(s: &tonic::Status) -> Self {
        use tonic::Code;
        let (status, kind) = match s.code() {
            Code::InvalidArgument | Code::OutOfRange => {
                (StatusCode::BAD_REQUEST, Kind::InvalidRequest)
            }
            // The call cannot be made as it stands (a conversation past the end of a scripted
            // route's script, a target's key or model refused): a 4xx over gRPC, so a 4xx
            // here too, and the message says which.
            Code::FailedPrecondition => (StatusCode::BAD_REQUEST, Kind::InvalidRequest),
            Code::AlreadyExists | Code::Aborted => (StatusCode::CONFLICT, Kind::InvalidRequest),
            Code::NotFound => (StatusCode::NOT_FOUND, Kind::NotFound),
            Code::Unauthenticated => (StatusCode::UNAUTHORIZED, Kind::Authentication),
            Code::PermissionDenied => (StatusCode::FORBIDDEN, Kind::Permission),
            Code::ResourceExhausted => (StatusCode::TOO_MANY_REQUESTS, Kind::RateLimit),
            Code::DeadlineExceeded => (StatusCode::GATEWAY_TIMEOUT, Kind::Timeout),
            // No target answered: the gateway's upstream failed.
            Code::Unavailable => (StatusCode::BAD_GATEWAY, Kind::Upstream),
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
            retry_after,
            ..Self::new(status, kind, s.message())
        }
    }
}

impl From<Error> for Failure {
    fn from(e: Error) -> Self {
        Failure::from_status(&tonic::Status::from(e))
    }
}

/// Who is calling: for which tenant and agent, as whom, and for which end user when the
/// `x-bridle-end-user` header names one.
pub(crate) struct Caller {
    pub scope: Scope,
    actor: bridle_proto::Actor,
    end_user: Option<String>,
}

impl Caller {
    /// Puts the caller on a parsed call. An end user named by both the header and the body
    /// (OpenAI's `user`, Anthropic's `metadata.user_id`) must be the same one.
    pub(crate) fn apply(self, req: &mut bridle_proto::CompleteRequest) -> Result<(), Failure> {
        if let Some(h) = self.end_user {
            if req.end_user.is_empty() {
                req.end_user = h;
            } else if req.end_user != h {
                return Err(Failure::invalid(format!(
                    "{END_USER_HEADER} and the body name different end users; send one, or the same in both"
                )));
            }
        }
        req.scope = Some(self.scope);
        req.caller = Some(self.actor);
        Ok(())
    }
}

/// Who is calling, for which tenant and agent.
async fn scope(g: &Gateway, headers: &HeaderMap) -> Result<Caller, Failure> {
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
                // check_name quotes the whole name: quote it bounded instead.
                .map_err(|e| {
                    let e = e.replace(a, &crate::error::quote(a));
                    Failure::invalid(format!("{AGENT_HEADER}: {e}"))
                })?;
            a.to_string()
        }
        None => principal.name.clone(),
    };
    let end_user = header(END_USER_HEADER).map(str::to_string);
    if headers.contains_key(END_USER_HEADER) && end_user.is_none() {
        return Err(Failure::invalid(format!(
            "{END_USER_HEADER}: must be visible ASCII text"
        )));
    }
    Ok(Caller {
        scope: Scope {
            tenant: tenant.into(),
            agent,
            ..Default::default()
        },
        actor: principal.actor(),
        end_user,
    })
}

/// The request body as JSON: refused past `g.max_body` bytes (413), when it does not arrive
/// within `g.body_timeout` (408, so a client that announces more than it sends gets an answer),
/// and when its framing is broken (400 with hyper's reason: a bad chunked encoding, which is also
/// what a Content-Length sent with Transfer-Encoding comes to, hyper dropping the length).
async fn read_json(
    g: &Gateway,
    headers: &HeaderMap,
    body: Body,
) -> Result<serde_json::Value, Failure> {
    let limit = g.max_body;
    let chunked = headers.contains_key(axum::http::header::TRANSFER_ENCODING);
    let too_large = || {
        Failure::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            Kind::TooLarge,
            format!(
                "the request body is larger than the {limit} bytes this gateway accepts (option max_request_bytes)"
            ),
        )
    };
    // A Content-Length over the limit is refused before anything is read.
    if axum::body::HttpBody::size_hint(&body).lower() > limit as u64 {
        return Err(too_large());
    }
    let read = async {
        use futures::StreamExt as _;
        let mut data = body.into_data_stream();
        let mut buf = bytes::BytesMut::new();
        while let Some(chunk) = data.next().await {
            let chunk = chunk.map_err(|e| {
                Failure::invalid(format!(
                    "the request body is malformed: {}{}",
                    bridle_core::redact::preview(&bridle_core::http_server::chain(&e), 300),
                    if chunked {
                        " (with Transfer-Encoding the body must be sent in chunks; a Content-Length beside it is ignored)"
                    } else {
                        ""
                    }
                ))
            })?;
            if buf.len().saturating_add(chunk.len()) > limit {
                return Err(too_large());
            }
            buf.extend_from_slice(&chunk);
        }
        Ok(buf.freeze())
    };
    let bytes = tokio::time::timeout(g.body_timeout, read)
        .await
        .map_err(|_| {
            Failure::new(
                StatusCode::REQUEST_TIMEOUT,
                Kind::Timeout,
                format!(
                    "the request body did not arrive within {} (option http_body_read_timeout): is its Content-Length larger than the body sent?",
                    bridle_core::timeutil::short_duration(g.body_timeout)
                ),
            )
        })??;
    serde_json::from_slice(&bytes).map_err(|e| {
        Failure::invalid(format!(
            "the request body is not JSON: {}",
            crate::request::json_problem(&e)
        ))
    })
}

/// Waits for a stream's first item, so a call that fails before any delta gets a real error
/// status instead of a 200 that breaks.
/// A parsed call's answer: the stream (its first item awaited, so that a call failing before
/// any output still gets an error status) or the whole response.
enum Answer {
    Stream(Option<CompleteChunk>, mpsc::Receiver<StreamItem>),
    Whole(bridle_proto::CompleteResponse),
}

/// Runs a parsed call for either front, traced and metered (see [`telemetry`]).
async fn answer(
    g: &Gateway,
    headers: &HeaderMap,
    req: bridle_proto::CompleteRequest,
    stream: bool,
) -> Result<Answer, Failure> {
    let call = telemetry::Call::start(headers, &req);
    if stream {
        let admitted = call.check(g.dispatch.admit(req).await.map_err(Failure::from))?;
        let mut rx = call.watch(g.dispatch.stream(admitted), g.dispatch.shutdown());
        let first = first_item(&mut rx).await?;
        return Ok(Answer::Stream(first, rx));
    }
    let span = call.span.clone();
    let resp = call.check(
        tracing::Instrument::instrument(g.dispatch.complete(req), span)
            .await
            .map_err(Failure::from),
    )?;
    call.done(&resp);
    Ok(Answer::Whole(resp))
}

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_redis_is_429_at_the_gateway_with_the_grpc_message() {
        let f = Failure::from(Error::Core(bridle_core::Error::RedisOutOfMemory {
            doing: "the model was not called".into(),
        }));
        assert_eq!(
            (f.status.as_u16(), f.message.as_str()),
            (
                429,
                "Redis is out of memory (maxmemory reached): the model was not called; retry when memory is freed"
            )
        );
    }
}
