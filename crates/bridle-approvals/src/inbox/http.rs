//! The inbox's request limits. It is served by `bridle_core::http_server` (the headers must
//! arrive within `inbox.header_read_timeout`, then the connection is closed); here the body
//! must arrive within `inbox.body_read_timeout` (then 408). Bodies are read whole before any
//! handler runs (the inbox's forms are small), so a malformed body is a 400 that says what was
//! wrong and an oversized one a 413.

use std::time::Duration;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use bridle_core::http_server::chain;
use bridle_core::redact::preview;
use http_body_util::{BodyExt, LengthLimitError, Limited};

use super::pages;

/// How long and how large a request may be.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    pub header_read_timeout: Duration,
    pub body_read_timeout: Duration,
    pub max_body_bytes: usize,
}

fn refuse(status: StatusCode, title: &str, text: &str) -> Response {
    let mut r = (
        status,
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        pages::message(None, title, text),
    )
        .into_response();
    // The rest of the request may still be on its way; the connection cannot be reused.
    r.headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
    r
}

/// Middleware: reads the whole body within the limits before the handler runs.
pub async fn read_body(State(limits): State<Limits>, req: Request, next: Next) -> Response {
    let max = limits.max_body_bytes;
    let too_large = || {
        refuse(
            StatusCode::PAYLOAD_TOO_LARGE,
            "Request too large",
            &format!("The request body is more than {max} bytes; the inbox's forms need far less."),
        )
    };
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > max as u64) {
        return too_large();
    }
    let (parts, body) = req.into_parts();
    let read =
        tokio::time::timeout(limits.body_read_timeout, Limited::new(body, max).collect()).await;
    match read {
        Ok(Ok(collected)) => {
            next.run(Request::from_parts(parts, Body::from(collected.to_bytes())))
                .await
        }
        Ok(Err(e)) if e.downcast_ref::<LengthLimitError>().is_some() => too_large(),
        Ok(Err(e)) => refuse(
            StatusCode::BAD_REQUEST,
            "Bad request",
            &format!(
                "malformed request body: {}",
                preview(&chain(e.as_ref()), 200)
            ),
        ),
        Err(_) => refuse(
            StatusCode::REQUEST_TIMEOUT,
            "Request timeout",
            &format!(
                "The request body did not arrive within {}; send the request again.",
                humantime::format_duration(limits.body_read_timeout)
            ),
        ),
    }
}
