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

/// Cuts an error's message to [`MAX_STATUS_MESSAGE`] (with an ellipsis and its full length).
/// A backstop: errors quote input through `redact::quote` already; this holds for every
/// handler, whoever wrote its message. Errors end calls without a body (trailers-only), so
/// their message is in the response headers.
fn cap_message<B>(mut resp: http::Response<B>) -> http::Response<B> {
    let Some(v) = resp.headers().get("grpc-message") else {
        return resp;
    };
    if v.len() <= MAX_STATUS_MESSAGE {
        return resp;
    }
    let decoded = percent_encoding::percent_decode(v.as_bytes()).decode_utf8_lossy();
    // gRPC's encoding: printable ASCII but '%' as it is, everything else percent-encoded.
    const GRPC_MESSAGE: &percent_encoding::AsciiSet = &percent_encoding::CONTROLS.add(b'%');
    let suffix = format!("… ({} bytes in all)", decoded.len());
    let room = MAX_STATUS_MESSAGE.saturating_sub(3 * suffix.len());
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
    if let Ok(h) = http::HeaderValue::from_str(&encoded) {
        resp.headers_mut().insert("grpc-message", h);
    }
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

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
