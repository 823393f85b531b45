//! What the HTTP providers share: credentials for one try, headers, how a failed transfer or
//! an error status is classified, and the loop that reads a streamed answer.

use std::time::Duration;

use bridle_core::manifest::Target;
use bridle_core::redact::Redactor;
use bridle_proto::complete_chunk::Chunk;
use futures::StreamExt as _;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use secrecy::{ExposeSecret, SecretString};

use super::sse::SseParser;
use super::{DeltaSink, FailureKind, TryError};
use crate::error::FailureCode;
use crate::retry;

/// A target's resolved credentials for one try. Not `Debug`: it holds secret values.
pub struct Creds {
    pub api_key: Option<SecretString>,
    /// Extra headers, values resolved.
    pub headers: Vec<(String, SecretString)>,
    /// Scrubs the resolved values out of anything the provider sends back.
    pub redactor: Redactor,
}

fn bad_target(target: &Target, what: String) -> TryError {
    TryError::rejected(
        FailureCode::FailedPrecondition,
        format!("target '{}': {what}", target.name),
    )
}

/// The target's own headers (values resolved), then the key under `key_header` as
/// `key_prefix + key`. Every value is marked sensitive, so no HTTP layer logs it.
pub fn headers(
    target: &Target,
    creds: &Creds,
    key_header: HeaderName,
    key_prefix: &str,
) -> Result<HeaderMap, TryError> {
    let mut map = HeaderMap::new();
    for (name, value) in &creds.headers {
        let n = HeaderName::from_bytes(name.as_bytes())
            .map_err(|_| bad_target(target, format!("'{name}' is not a valid header name")))?;
        let mut v = HeaderValue::from_str(value.expose_secret()).map_err(|_| {
            bad_target(
                target,
                format!("the value of header '{name}' is not a valid header value"),
            )
        })?;
        v.set_sensitive(true);
        map.insert(n, v);
    }
    if let Some(key) = &creds.api_key {
        let mut v = HeaderValue::from_str(&format!("{key_prefix}{}", key.expose_secret()))
            .map_err(|_| {
                bad_target(
                    target,
                    "the API key holds characters that cannot go in a header".into(),
                )
            })?;
        v.set_sensitive(true);
        map.insert(key_header, v);
    }
    Ok(map)
}

/// "host:port" of a base URL, for messages.
pub fn host_of(base: &str) -> String {
    reqwest::Url::parse(base)
        .ok()
        .map(|u| {
            format!(
                "{}{}",
                u.host_str().unwrap_or(""),
                u.port().map(|p| format!(":{p}")).unwrap_or_default()
            )
        })
        .unwrap_or_else(|| "the provider".into())
}

/// A failed connection or a broken transfer: retryable; a timeout is reported by the caller.
pub fn transport(e: &reqwest::Error, base: &str, creds: &Creds) -> TryError {
    let what = if e.is_connect() {
        "cannot connect to"
    } else {
        "lost the connection to"
    };
    let msg = format!(
        "{what} {}: {}",
        host_of(base),
        creds.redactor.redact(&root_cause(e))
    );
    if e.is_decode() || e.is_builder() {
        TryError::faulty(FailureCode::Unavailable, msg)
    } else {
        TryError::retryable(FailureCode::Unavailable, msg)
    }
}

fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut cur = e;
    while let Some(next) = cur.source() {
        cur = next;
    }
    cur.to_string()
}

/// The failure a non-success answer `resp` means: its status, `retry-after`, and the
/// provider's message from the body. A redirect says where it pointed: the provider client
/// follows none, since the key would go along.
pub async fn error_response(provider: &str, resp: reqwest::Response, creds: &Creds) -> TryError {
    let status = resp.status().as_u16();
    let retry_after = retry::retry_after(resp.headers());
    let location = resp
        .headers()
        .get(reqwest::header::LOCATION)
        .map(|l| String::from_utf8_lossy(l.as_bytes()).into_owned());
    let body = resp.bytes().await.unwrap_or_default();
    let mut err = status_error(provider, status, retry_after, &error_message(&body), creds);
    if (300..400).contains(&status) {
        err.message.push_str(&format!(
            " (a redirect to {}: Bridle follows none, which would carry the key along; point \
             the target's baseUrl at the final address)",
            creds
                .redactor
                .redact(location.as_deref().unwrap_or("no location"))
        ));
    }
    err
}

/// An error status: 401 refetches the key, 408/429/5xx (Anthropic's 529 included) are
/// retried, content problems fail over without retry. `detail` is the provider's message.
fn status_error(
    provider: &str,
    status: u16,
    retry_after: Option<Duration>,
    detail: &str,
    creds: &Creds,
) -> TryError {
    let message = format!(
        "{provider} returned HTTP {status}: {}",
        creds.redactor.redact(detail)
    );
    let (kind, code) = match status {
        401 => (FailureKind::Unauthorized, FailureCode::FailedPrecondition),
        429 => (FailureKind::Retryable, FailureCode::ResourceExhausted),
        408 | 500..=599 => (FailureKind::Retryable, FailureCode::Unavailable),
        400 | 413 | 422 => (FailureKind::Rejected, FailureCode::InvalidArgument),
        _ => (FailureKind::Rejected, FailureCode::FailedPrecondition),
    };
    TryError {
        kind,
        code,
        http_status: Some(status),
        retry_after,
        unhealthy: kind == FailureKind::Retryable,
        message,
    }
}

/// No complete answer within the try's deadline.
pub fn timed_out(timeout: Duration) -> TryError {
    TryError::faulty(
        FailureCode::DeadlineExceeded,
        format!(
            "no complete answer within {}",
            bridle_core::timeutil::short_duration(timeout)
        ),
    )
}

/// Turns a provider's stream events into deltas while building the whole reply.
pub trait Assembler {
    /// Applies one event's data; returns the deltas it carried, or why the stream is broken
    /// (not JSON, an error event).
    fn apply(&mut self, data: &str) -> Result<Vec<Chunk>, String>;
    /// The provider said the stream is over: stop reading.
    fn done(&self) -> bool;
    /// Ending here loses nothing (some compatible servers close after the last event without
    /// their end marker).
    fn complete(&self) -> bool;
}

/// Reads a streamed answer into `asm`, forwarding deltas to `sink`. A stream that breaks, is
/// malformed, or ends before it is complete is a retryable failure (the engine fails over only
/// if no delta was sent yet).
pub async fn read_stream(
    provider: &str,
    resp: reqwest::Response,
    asm: &mut impl Assembler,
    sink: &DeltaSink,
    base: &str,
    creds: &Creds,
) -> Result<(), TryError> {
    let mut parser = SseParser::default();
    let mut body = resp.bytes_stream();
    let broken = |m: String| {
        TryError::retryable(
            FailureCode::Unavailable,
            format!("{provider} stream: {}", creds.redactor.redact(&m)),
        )
    };
    while let Some(item) = body.next().await {
        let bytes = item.map_err(|e| transport(&e, base, creds))?;
        for data in parser.push(&bytes).map_err(broken)? {
            for delta in asm.apply(&data).map_err(broken)? {
                sink.delta(delta).await?;
            }
            if asm.done() {
                return Ok(());
            }
        }
    }
    if asm.complete() {
        Ok(())
    } else {
        Err(broken(
            "the stream ended before the answer was complete".into(),
        ))
    }
}

/// The provider's error message from a JSON error body (`{"error": {"message": ...}}`, the
/// shape of both OpenAI and Anthropic), else the body's start.
pub fn error_message(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let msg = serde_json::from_str::<serde_json::Value>(&text)
        .ok()
        .and_then(|v| {
            v.pointer("/error/message")
                .and_then(serde_json::Value::as_str)
                .map(str::to_string)
        })
        .unwrap_or_else(|| text.trim().to_string());
    bridle_core::redact::preview(&msg, 300)
}
