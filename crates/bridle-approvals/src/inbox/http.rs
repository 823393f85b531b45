//! The inbox's HTTP/1 server, on hyper directly: `axum::serve` sets no read timeouts, so a
//! client that sent its headers or body slowly, or never, held a connection (and a task) for as
//! long as it liked. Here the headers must arrive within `inbox.header_read_timeout` (then the
//! connection is closed; hyper answers nothing) and the body within `inbox.body_read_timeout`
//! (then 408). Bodies are read whole before any handler runs (the inbox's forms are small), so
//! a malformed body is a 400 that says what was wrong and an oversized one a 413.

use std::pin::pin;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use bridle_core::Shutdown;
use bridle_core::redact::preview;
use http_body_util::{BodyExt, LengthLimitError, Limited};
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;

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

/// The error and its causes, as one line ("error reading a body from connection: invalid
/// chunk size line"): the outermost alone rarely says what was wrong.
fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        let s = c.to_string();
        if !out.ends_with(&s) {
            out.push_str(": ");
            out.push_str(&s);
        }
        cause = c.source();
    }
    out
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

/// Serves `app` on `listener` until `shutdown`, each connection on a task `shutdown` owns.
pub fn serve(listener: TcpListener, app: Router, limits: Limits, shutdown: &Shutdown) {
    let stop = shutdown.token();
    let tasks = shutdown.clone();
    shutdown.spawn(async move {
        loop {
            let accepted = tokio::select! {
                () = stop.cancelled() => break,
                a = listener.accept() => a,
            };
            let (stream, peer) = match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of descriptors, or a connection reset before it was accepted: wait
                    // a little rather than spin.
                    tracing::warn!("inbox: accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            let service = TowerToHyperService::new(app.clone());
            let stop = stop.clone();
            tasks.spawn(async move {
                let mut builder = hyper::server::conn::http1::Builder::new();
                builder
                    .timer(TokioTimer::new())
                    .header_read_timeout(limits.header_read_timeout);
                let mut conn = pin!(builder.serve_connection(TokioIo::new(stream), service));
                let served = tokio::select! {
                    r = conn.as_mut() => r,
                    () = stop.cancelled() => {
                        // Finish the request in flight, then close.
                        conn.as_mut().graceful_shutdown();
                        conn.await
                    }
                };
                if let Err(e) = served {
                    tracing::debug!(%peer, "inbox connection ended: {}", chain(&e));
                }
            });
        }
    });
}
