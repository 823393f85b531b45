//! The one gRPC server stack every service uses: request tracing, a default deadline, a
//! per-connection concurrency limit, gRPC health and reflection, graceful shutdown.
//!
//! Binding is separate from serving so the process can log (and write to `addr_file`) the
//! address it really bound — port 0 included — before it serves, and so a bind failure is
//! reported before anything else starts.

use std::net::SocketAddr;

use tokio::net::TcpListener;
use tokio_stream_compat::TcpListenerStream;
use tonic::service::Routes;
use tonic_health::ServingStatus;

use crate::auth::Authenticator;
use crate::config::ServerOptions;
use crate::{Error, Shutdown};

/// A bound, not yet serving, gRPC listener.
pub struct GrpcServer {
    name: &'static str,
    opts: ServerOptions,
    listener: TcpListener,
    addr: SocketAddr,
    auth: Authenticator,
    tls: Option<crate::tls::Watched>,
    /// The plaintext health-only listener (`health_listen`), when configured.
    health: Option<TcpListener>,
}

impl GrpcServer {
    pub async fn bind(name: &'static str, opts: &ServerOptions) -> Result<Self, Error> {
        // Unreadable certificates are a configuration error, reported before binding.
        let tls = opts.tls_watch()?;
        let listener = TcpListener::bind(opts.listen)
            .await
            .map_err(|e| Error::Config(format!("{name}: cannot listen on {}: {e}", opts.listen)))?;
        let addr = listener
            .local_addr()
            .map_err(|e| Error::internal(format!("{name}: local_addr: {e}")))?;
        if let Some(path) = &opts.addr_file {
            // Write then rename, so a reader never sees half an address.
            let tmp = path.with_extension("tmp");
            std::fs::write(&tmp, addr.to_string())
                .and_then(|()| std::fs::rename(&tmp, path))
                .map_err(|e| Error::Config(format!("addr_file {}: {e}", path.display())))?;
        }
        tracing::info!(service = name, %addr, tls = tls.is_some(), "listening (gRPC)");
        let health = match opts.health_listen {
            Some(at) => {
                let l = TcpListener::bind(at).await.map_err(|e| {
                    Error::Config(format!("{name}: health_listen: cannot listen on {at}: {e}"))
                })?;
                if let Ok(a) = l.local_addr() {
                    tracing::info!(service = name, addr = %a, "listening (gRPC health only, plaintext)");
                }
                Some(l)
            }
            None => None,
        };
        Ok(Self {
            name,
            opts: opts.clone(),
            listener,
            addr,
            tls,
            health,
            // Without a key store only the internal token is accepted when auth is on.
            auth: Authenticator::new(opts.auth, opts.internal_token.clone(), None),
        })
    }

    /// Authenticates requests with `auth` (which may know API keys) instead of the default.
    pub fn with_auth(mut self, auth: Authenticator) -> Self {
        self.auth = auth;
        self
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// The health-only listener's address, when `health_listen` is set.
    pub fn health_addr(&self) -> Option<SocketAddr> {
        self.health.as_ref().and_then(|l| l.local_addr().ok())
    }

    /// Serves `routes` plus health and reflection until shutdown, then stops accepting,
    /// reports NOT_SERVING and lets in-flight calls finish.
    pub async fn serve(
        self,
        routes: Routes,
        service_names: &[&str],
        shutdown: Shutdown,
    ) -> Result<(), Error> {
        let (health, health_service) = tonic_health::server::health_reporter();
        for n in service_names {
            health.set_service_status(*n, ServingStatus::Serving).await;
        }
        health.set_service_status("", ServingStatus::Serving).await;

        let reflection_v1 = reflection(service_names)
            .build_v1()
            .map_err(|e| Error::internal(format!("reflection v1: {e}")))?;
        let reflection_v1alpha = reflection(service_names)
            .build_v1alpha()
            .map_err(|e| Error::internal(format!("reflection v1alpha: {e}")))?;

        let name = self.name;
        let names: Vec<String> = service_names.iter().map(|s| s.to_string()).collect();
        let stop = {
            let shutdown = shutdown.clone();
            let health = health.clone();
            async move {
                shutdown.triggered().await;
                for n in &names {
                    health
                        .set_service_status(n.as_str(), ServingStatus::NotServing)
                        .await;
                }
                health
                    .set_service_status("", ServingStatus::NotServing)
                    .await;
                tracing::info!(
                    service = name,
                    "stopped accepting; draining in-flight calls"
                );
            }
        };

        if let Some(l) = self.health {
            // Health only, plaintext: what a probe that cannot speak TLS may ask, and nothing
            // else. It stops with the main listener.
            let only_health = health_service.clone();
            let stopped = shutdown.clone();
            shutdown.spawn(async move {
                let r = tonic::transport::Server::builder()
                    .timeout(std::time::Duration::from_secs(10))
                    .add_service(only_health)
                    .serve_with_incoming_shutdown(TcpListenerStream::new(l), async move {
                        stopped.triggered().await
                    })
                    .await;
                if let Err(e) = r {
                    tracing::warn!(service = name, error = %e, "the health listener stopped");
                }
            });
        }
        let routes = routes
            .add_service(health_service)
            .add_service(reflection_v1)
            .add_service(reflection_v1alpha);
        let router = tonic::transport::Server::builder()
            // Outermost: calls refused by auth or capped are measured too.
            .layer(crate::rpc_telemetry::RpcTelemetryLayer)
            .layer(tower::util::MapResponseLayer::new(
                cap_message::<tonic::body::Body>,
            ))
            .layer(self.auth.layer())
            .timeout(self.opts.request_timeout)
            .concurrency_limit_per_connection(self.opts.concurrency_limit)
            .tcp_nodelay(true)
            .http2_keepalive_interval(Some(std::time::Duration::from_secs(30)))
            .trace_fn(move |req| {
                use tracing_opentelemetry::OpenTelemetrySpanExt as _;
                let path = req.uri().path();
                // Which replica took which call (BRIDLE_LOG=bridle_core::server=debug): how
                // calls spread over replicas is seen from outside.
                tracing::debug!(service = name, method = %path, "call received");
                // The RPC conventions: named for the method, `rpc.method` the full method
                // name, the status recorded when the call ends (`rpc_telemetry`).
                let method = path.trim_start_matches('/');
                let span = tracing::info_span!(
                    "grpc",
                    "otel.name" = %method,
                    "otel.kind" = "server",
                    "otel.status_code" = tracing::field::Empty,
                    "rpc.system.name" = "grpc",
                    "rpc.method" = %method,
                    "rpc.response.status_code" = tracing::field::Empty,
                    "bridle.service" = name,
                );
                // Join the caller's trace (W3C traceparent in the gRPC metadata).
                let _ = span.set_parent(crate::telemetry::extract(req.headers()));
                span
            })
            .add_routes(routes);
        let served = match self.tls {
            // Each accepted connection gets the material current when it arrives, so rotated
            // certificates reach new connections without a restart (see `crate::tls`).
            Some(tls) => {
                router
                    .serve_with_incoming_shutdown(tls_incoming(name, self.listener, tls), stop)
                    .await
            }
            None => {
                router
                    .serve_with_incoming_shutdown(TcpListenerStream::new(self.listener), stop)
                    .await
            }
        };
        served.map_err(|e| Error::internal(format!("{name}: server error: {e}")))
    }
}

/// The services every port serves beside its own: health and both versions of reflection.
pub const COMMON_SERVICES: [&str; 3] = [
    "grpc.health.v1.Health",
    "grpc.reflection.v1.ServerReflection",
    "grpc.reflection.v1alpha.ServerReflection",
];

/// Reflection (v1 or v1alpha, whichever the caller builds) that lists what this port serves:
/// `service_names` and [`COMMON_SERVICES`], not every service of the descriptor set (the other
/// services' methods would answer UNIMPLEMENTED here). Both versions are served because
/// clients still speak either: grpcurl v1, grpcio-reflection and older tools v1alpha. Every
/// file stays registered, so any symbol of `bridle.v1` still resolves.
fn reflection(service_names: &[&str]) -> tonic_reflection::server::Builder<'static> {
    service_names.iter().copied().chain(COMMON_SERVICES).fold(
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(bridle_proto::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_reflection::pb::v1::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(
                tonic_reflection::pb::v1alpha::FILE_DESCRIPTOR_SET,
            ),
        |b, name| b.with_service_name(name),
    )
}

/// How long a client may take to finish its TLS handshake.
const HANDSHAKE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// Accepted connections after their TLS handshake, each with the material current when it
/// was accepted. Handshakes run side by side, so a slow or silent client holds up only its
/// own; one that fails is logged (at debug: scanners and probes are common) and dropped.
fn tls_incoming(
    name: &'static str,
    listener: TcpListener,
    tls: crate::tls::Watched,
) -> impl futures::Stream<Item = std::io::Result<tokio_rustls::server::TlsStream<tokio::net::TcpStream>>>
{
    let (tx, mut rx) = tokio::sync::mpsc::channel(64);
    // Not through Shutdown::spawn: nothing to drain; the loop ends when the server drops the
    // stream (it stopped accepting), and a handshake is bounded by HANDSHAKE_TIMEOUT.
    #[allow(clippy::disallowed_methods)]
    tokio::spawn(async move {
        loop {
            let accepted = tokio::select! {
                // The server stopped taking connections.
                _ = tx.closed() => return,
                a = listener.accept() => a,
            };
            let (tcp, peer) = match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors and the like: pause rather than spin.
                    tracing::warn!(service = name, error = %e, "cannot accept a connection");
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                    continue;
                }
            };
            let _ = tcp.set_nodelay(true);
            let acceptor = tokio_rustls::TlsAcceptor::from(tls.current().server.clone());
            let tx = tx.clone();
            #[allow(clippy::disallowed_methods)]
            tokio::spawn(async move {
                match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                    Ok(Ok(stream)) => {
                        let _ = tx.send(Ok(stream)).await;
                    }
                    Ok(Err(e)) => {
                        tracing::debug!(service = name, %peer, error = %e, "TLS handshake failed");
                    }
                    Err(_) => {
                        tracing::debug!(service = name, %peer, "TLS handshake timed out");
                    }
                }
            });
        }
    });
    futures::stream::poll_fn(move |cx| rx.poll_recv(cx))
}

/// The longest `grpc-message` header a response carries, in bytes as sent (percent-encoded:
/// a non-ASCII character takes 6 or more). Standard gRPC clients refuse response metadata
/// beyond 8 KiB (grpc-python's soft limit) to 16 KiB and report RESOURCE_EXHAUSTED instead of
/// the real error, so a message that quotes too much of a request would hide itself.
pub const MAX_STATUS_MESSAGE: usize = 4096;

/// The longest `grpc-message` of an error that also carries `google.rpc` details: the details
/// (`grpc-status-details-bin`, base64) repeat the message, and both must fit under the 8 KiB
/// that grpc-python accepts without refusing (its soft limit), beside the other headers.
pub const MAX_STATUS_MESSAGE_WITH_DETAILS: usize = 2048;

/// The most bytes of `google.rpc` details (the encoded `Any`s, the message aside) an error
/// carries; details past it are left out, last first (the `ErrorInfo` comes first and stays,
/// its metadata dropped if it alone is too big).
pub const MAX_STATUS_DETAILS: usize = 1536;

const DETAILS_HEADER: &str = "grpc-status-details-bin";

/// Cuts an error's message to [`MAX_STATUS_MESSAGE`] (with an ellipsis and its full length), or
/// to [`MAX_STATUS_MESSAGE_WITH_DETAILS`] when it carries `google.rpc` details, whose own copy
/// of the message is cut the same way (a client such as grpcio-status checks that the two are
/// equal) and whose details are bounded by [`MAX_STATUS_DETAILS`].
/// A backstop: errors quote input through `redact::quote` already; this holds for every
/// handler, whoever wrote its message. Errors end calls without a body (trailers-only), so
/// their message is in the response headers.
fn cap_message<B>(mut resp: http::Response<B>) -> http::Response<B> {
    let details = resp.headers().get(DETAILS_HEADER).cloned();
    let limit = if details.is_some() {
        MAX_STATUS_MESSAGE_WITH_DETAILS
    } else {
        MAX_STATUS_MESSAGE
    };
    let cut = resp
        .headers()
        .get("grpc-message")
        .filter(|v| v.len() > limit)
        .map(|v| cut_message(v, limit));
    if let Some((encoded, _)) = &cut
        && let Ok(h) = http::HeaderValue::from_str(encoded)
    {
        resp.headers_mut().insert("grpc-message", h);
    }
    if let Some(d) = details {
        match bound_details(d.as_bytes(), cut.as_ref().map(|(_, text)| text.as_str())) {
            Some(v) => {
                if let Ok(h) = http::HeaderValue::from_str(&v) {
                    resp.headers_mut().insert(DETAILS_HEADER, h);
                }
            }
            // Details that cannot be read cannot be checked: better none than a refused answer.
            None => {
                resp.headers_mut().remove(DETAILS_HEADER);
            }
        }
    }
    resp
}

/// A `grpc-message` value cut to `limit` bytes as sent: (the header value, its decoded text).
fn cut_message(v: &http::HeaderValue, limit: usize) -> (String, String) {
    let decoded = percent_encoding::percent_decode(v.as_bytes()).decode_utf8_lossy();
    // gRPC's encoding: printable ASCII but '%' as it is, everything else percent-encoded.
    const GRPC_MESSAGE: &percent_encoding::AsciiSet = &percent_encoding::CONTROLS.add(b'%');
    let suffix = format!("… ({} bytes in all)", decoded.len());
    let room = limit.saturating_sub(3 * suffix.len());
    let (mut sent, mut cut) = (0usize, 0usize);
    for (i, c) in decoded.char_indices() {
        let cost = if (c.is_ascii_graphic() && c != '%') || c == ' ' {
            1
        } else {
            3 * c.len_utf8()
        };
        if sent + cost > room {
            break;
        }
        sent += cost;
        cut = i + c.len_utf8();
    }
    let text = format!("{}{suffix}", &decoded[..cut]);
    let encoded = percent_encoding::utf8_percent_encode(&text, GRPC_MESSAGE).to_string();
    (encoded, text)
}

/// The details header with its message replaced by `message` (when the message was cut) and
/// its details bounded by [`MAX_STATUS_DETAILS`]; `None` when it cannot be read.
fn bound_details(b64: &[u8], message: Option<&str>) -> Option<String> {
    use base64::Engine as _;
    use prost::Message as _;
    let raw = base64::engine::general_purpose::STANDARD_NO_PAD
        .decode(b64)
        .or_else(|_| base64::engine::general_purpose::STANDARD.decode(b64))
        .ok()?;
    let mut status = tonic_types::pb::Status::decode(raw.as_slice()).ok()?;
    let size = |d: &[prost_types::Any]| d.iter().map(|a| a.encoded_len() + 3).sum::<usize>();
    if message.is_none() && size(&status.details) <= MAX_STATUS_DETAILS {
        return Some(String::from_utf8_lossy(b64).into_owned());
    }
    if let Some(m) = message {
        status.message = m.to_string();
    }
    while size(&status.details) > MAX_STATUS_DETAILS && status.details.len() > 1 {
        status.details.pop();
    }
    if size(&status.details) > MAX_STATUS_DETAILS
        && let Some(first) = status.details.first_mut()
    {
        // The ErrorInfo alone is too big: its reason and domain stay, its metadata goes.
        match tonic_types::pb::ErrorInfo::decode(first.value.as_slice()) {
            Ok(mut info) if info.reason.len() + info.domain.len() < MAX_STATUS_DETAILS => {
                info.metadata.clear();
                first.value = info.encode_to_vec();
            }
            _ => status.details.clear(),
        }
    }
    Some(base64::engine::general_purpose::STANDARD_NO_PAD.encode(status.encode_to_vec()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_error_with_details_fits_what_clients_accept_and_its_two_messages_agree() {
        use base64::Engine as _;
        use prost::Message as _;
        let problems = (0..1000)
            .map(|i| crate::manifest::ManifestError {
                source: format!("{}.yaml#{i}", "f".repeat(100_000)),
                line: Some(i),
                subject: Some("x".repeat(10_000)),
                field: "spec.".repeat(10_000),
                message: "é".repeat(100_000),
            })
            .collect();
        let e = crate::Error::from(crate::manifest::ValidationErrors(problems));
        let resp = cap_message(tonic::Status::from(e).into_http::<()>());
        let total: usize = resp
            .headers()
            .iter()
            .map(|(k, v)| k.as_str().len() + v.len())
            .sum();
        assert!(total < 8192, "{total} bytes of headers");
        let message = percent_encoding::percent_decode(
            resp.headers().get("grpc-message").unwrap().as_bytes(),
        )
        .decode_utf8()
        .unwrap()
        .into_owned();
        let raw = base64::engine::general_purpose::STANDARD_NO_PAD
            .decode(resp.headers().get(DETAILS_HEADER).unwrap().as_bytes())
            .unwrap();
        let status = tonic_types::pb::Status::decode(raw.as_slice()).unwrap();
        assert_eq!(status.message, message);
        assert!(message.ends_with("bytes in all)"), "{message}");
        assert!(!status.details.is_empty(), "the ErrorInfo stays");
    }

    #[test]
    fn a_short_error_keeps_its_details_as_they_were() {
        let e = crate::Error::NotFound("agent 'x' not found".into());
        let before = tonic::Status::from(e).into_http::<()>();
        let want = before.headers().get(DETAILS_HEADER).unwrap().clone();
        let after = cap_message(before);
        assert_eq!(after.headers().get(DETAILS_HEADER).unwrap(), &want);
    }

    #[test]
    fn a_long_status_message_is_cut_and_says_how_long_it_was() {
        // ASCII and not: 'é' is sent as six bytes (%C3%A9), which is what overflowed clients.
        for filler in ["x", "é"] {
            let message = format!("agent 'é{}'", filler.repeat(1 << 19));
            let status = tonic::Status::invalid_argument(message.clone());
            let resp = cap_message(status.into_http::<()>());
            let header = resp.headers().get("grpc-message").unwrap().len();
            assert!(header <= MAX_STATUS_MESSAGE, "{header}");
            let back = tonic::Status::from_header_map(resp.headers()).unwrap();
            assert_eq!(back.code(), tonic::Code::InvalidArgument);
            assert!(back.message().starts_with("agent 'é"), "{filler}");
            let tail = format!("… ({} bytes in all)", message.len());
            assert!(back.message().ends_with(&tail), "{filler}");
        }
    }

    #[test]
    fn a_short_status_message_is_left_alone() {
        let resp = cap_message(tonic::Status::not_found("run 'r' not found").into_http::<()>());
        let back = tonic::Status::from_header_map(resp.headers()).unwrap();
        assert_eq!(back.message(), "run 'r' not found");
    }
}

/// Accepting connections as a stream, with TCP_NODELAY; kept here so the server does not
/// depend on tokio-stream's feature flags.
mod tokio_stream_compat {
    use std::pin::Pin;
    use std::task::{Context, Poll};

    use tokio::net::{TcpListener, TcpStream};

    pub struct TcpListenerStream {
        inner: TcpListener,
    }

    impl TcpListenerStream {
        pub fn new(inner: TcpListener) -> Self {
            Self { inner }
        }
    }

    impl futures::Stream for TcpListenerStream {
        type Item = std::io::Result<TcpStream>;

        fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
            match self.inner.poll_accept(cx) {
                Poll::Ready(Ok((stream, _))) => {
                    let _ = stream.set_nodelay(true);
                    Poll::Ready(Some(Ok(stream)))
                }
                Poll::Ready(Err(e)) => Poll::Ready(Some(Err(e))),
                Poll::Pending => Poll::Pending,
            }
        }
    }
}
