//! What every gRPC call served or made leaves behind, per the OpenTelemetry RPC conventions:
//! its duration in `rpc.server.call.duration` or `rpc.client.call.duration` (seconds) by
//! `rpc.system.name` (`grpc`), `rpc.method` (`bridle.v1.Orchestrator/StartRun`) and
//! `rpc.response.status_code` (`OK`, `NOT_FOUND`, ...), with `error.type` for the codes that
//! mean the call failed (on a server, the server's failures only); and, on the server, the same
//! status on the call's span.
//!
//! A call ends when its status is known: at once for an error (gRPC sends it in the response
//! headers), else in the trailers after the last message — for a stream, when the stream
//! ends. A call whose response the client dropped before the status is counted `CANCELLED`.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;

use opentelemetry::KeyValue;

/// The layer: wraps a server's service (see `server.rs`).
#[derive(Clone, Copy, Default)]
pub struct RpcTelemetryLayer;

impl<S> tower::Layer<S> for RpcTelemetryLayer {
    type Service = RpcTelemetry<S>;
    fn layer(&self, inner: S) -> Self::Service {
        RpcTelemetry { inner }
    }
}

#[derive(Clone)]
pub struct RpcTelemetry<S> {
    inner: S,
}

type Resp = http::Response<tonic::body::Body>;

impl<S, B> tower::Service<http::Request<B>> for RpcTelemetry<S>
where
    S: tower::Service<http::Request<B>, Response = Resp>,
    S::Future: Send + 'static,
{
    type Response = Resp;
    type Error = S::Error;
    type Future = Pin<Box<dyn std::future::Future<Output = Result<Resp, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let method = req.uri().path().trim_start_matches('/').to_string();
        let start = Instant::now();
        let fut = self.inner.call(req);
        Box::pin(async move {
            // Polled inside the call's span (the server's trace_fn enters it).
            let call = Call {
                method,
                start,
                span: tracing::Span::current(),
                side: Side::Server,
            };
            Ok(call.ends_with(fut.await?))
        })
    }
}

/// A call this process makes through `peer` (a [`crate::peers::Peer`]): measured like a call
/// served, in `rpc.client.call.duration`. A call that fails before any status (no replica, a
/// broken connection) counts with the status the caller sees (UNAVAILABLE, CANCELLED, ...).
pub fn client_call<F, E>(
    method: String,
    fut: F,
) -> Pin<Box<dyn std::future::Future<Output = Result<Resp, E>> + Send>>
where
    F: std::future::Future<Output = Result<Resp, E>> + Send + 'static,
    E: AsRef<dyn std::error::Error + Send + Sync> + Send + 'static,
{
    let call = Call {
        method,
        start: Instant::now(),
        span: tracing::Span::none(),
        side: Side::Client,
    };
    Box::pin(async move {
        match fut.await {
            Ok(resp) => Ok(call.ends_with(resp)),
            Err(e) => {
                let code = e
                    .as_ref()
                    .downcast_ref::<tonic::Status>()
                    .map_or(tonic::Code::Unavailable, |s| s.code());
                call.end(code);
                Err(e)
            }
        }
    })
}

#[derive(Clone, Copy)]
enum Side {
    Server,
    Client,
}

struct Call {
    method: String,
    start: Instant,
    span: tracing::Span,
    side: Side,
}

impl Call {
    /// Ends the call with `resp`'s status when its headers carry one (an error), else when
    /// its body's trailers (or end) go by.
    fn ends_with(self, resp: Resp) -> Resp {
        if let Some(code) = status_of(resp.headers()) {
            self.end(code);
            return resp;
        }
        resp.map(|body| {
            tonic::body::Body::new(Ending {
                inner: body,
                call: Some(self),
            })
        })
    }

    fn end(self, code: tonic::Code) {
        let name = code_name(code);
        let mut attrs = vec![
            KeyValue::new("rpc.system.name", "grpc"),
            KeyValue::new("rpc.method", self.method),
            KeyValue::new("rpc.response.status_code", name),
        ];
        let failed = match self.side {
            Side::Server => server_error(code),
            Side::Client => code != tonic::Code::Ok,
        };
        if failed {
            attrs.push(KeyValue::new("error.type", name));
            self.span.record("otel.status_code", "ERROR");
        }
        self.span.record("rpc.response.status_code", name);
        let m = crate::metrics::metrics();
        let histogram = match self.side {
            Side::Server => &m.rpc_server_duration,
            Side::Client => &m.rpc_client_duration,
        };
        histogram.record(self.start.elapsed().as_secs_f64(), &attrs);
    }
}

/// A response body that ends the call when its trailers (or its end) go by.
struct Ending {
    inner: tonic::body::Body,
    call: Option<Call>,
}

impl http_body::Body for Ending {
    type Data = bytes::Bytes;
    type Error = tonic::Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(code) = frame.trailers_ref().and_then(status_of)
                    && let Some(call) = self.call.take()
                {
                    call.end(code);
                }
            }
            Poll::Ready(Some(Err(_))) => {
                if let Some(call) = self.call.take() {
                    call.end(tonic::Code::Internal);
                }
            }
            // Ended without a status: gRPC says that is UNKNOWN.
            Poll::Ready(None) => {
                if let Some(call) = self.call.take() {
                    call.end(tonic::Code::Unknown);
                }
            }
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for Ending {
    fn drop(&mut self) {
        // The client went away (or the connection did) before the status was sent.
        if let Some(call) = self.call.take() {
            call.end(tonic::Code::Cancelled);
        }
    }
}

fn status_of(headers: &http::HeaderMap) -> Option<tonic::Code> {
    headers
        .get("grpc-status")
        .map(|v| tonic::Code::from_bytes(v.as_bytes()))
}

/// The codes that mean the server failed, not the caller (the RPC conventions' list for gRPC
/// servers).
fn server_error(code: tonic::Code) -> bool {
    use tonic::Code::*;
    matches!(
        code,
        Unknown | DeadlineExceeded | Unimplemented | Internal | Unavailable | DataLoss
    )
}

/// The status code's name as gRPC spells it.
pub fn code_name(code: tonic::Code) -> &'static str {
    use tonic::Code::*;
    match code {
        Ok => "OK",
        Cancelled => "CANCELLED",
        Unknown => "UNKNOWN",
        InvalidArgument => "INVALID_ARGUMENT",
        DeadlineExceeded => "DEADLINE_EXCEEDED",
        NotFound => "NOT_FOUND",
        AlreadyExists => "ALREADY_EXISTS",
        PermissionDenied => "PERMISSION_DENIED",
        ResourceExhausted => "RESOURCE_EXHAUSTED",
        FailedPrecondition => "FAILED_PRECONDITION",
        Aborted => "ABORTED",
        OutOfRange => "OUT_OF_RANGE",
        Unimplemented => "UNIMPLEMENTED",
        Internal => "INTERNAL",
        Unavailable => "UNAVAILABLE",
        DataLoss => "DATA_LOSS",
        Unauthenticated => "UNAUTHENTICATED",
    }
}
