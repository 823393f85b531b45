//! The gateway's listener: every connection served by hyper's HTTP/1 server with the fronts'
//! routes.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bridle_core::Shutdown;

use super::{Gateway, anthropic, openai};

/// Binds `listen` and serves the fronts on a task owned by `shutdown`. Returns the bound
/// address (written to `addr_file` when given).
///
/// Each connection is served by hyper's HTTP/1 server with a timer, so that a client that
/// sends its headers slower than `header_timeout` (or keeps an idle connection open that long)
/// is dropped instead of holding a task forever; axum's own `serve` sets no timer, and hyper
/// enforces no header timeout without one. Bodies have their own deadline in [`super::read_json`].
pub async fn spawn(
    listen: SocketAddr,
    addr_file: Option<PathBuf>,
    header_timeout: Duration,
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
    let s = shutdown.clone();
    shutdown.spawn(async move {
        loop {
            let tcp = tokio::select! {
                () = s.triggered() => return,
                accepted = listener.accept() => match accepted {
                    Ok((tcp, _)) => tcp,
                    Err(e) => {
                        // Out of file descriptors, or a connection reset before it was
                        // accepted: the listener itself is fine, so wait a moment and go on.
                        tracing::warn!("HTTP gateway cannot accept a connection: {e}");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
            };
            // Streamed answers are many small writes: without TCP_NODELAY, Nagle's algorithm
            // holds each one back until the client acknowledges the last (tens of ms).
            let _ = tcp.set_nodelay(true);
            let service = hyper_util::service::TowerToHyperService::new(app.clone());
            let stop = s.clone();
            s.spawn(async move {
                let mut builder = hyper::server::conn::http1::Builder::new();
                builder
                    .timer(hyper_util::rt::TokioTimer::new())
                    .header_read_timeout(header_timeout);
                let conn = builder.serve_connection(hyper_util::rt::TokioIo::new(tcp), service);
                let mut conn = std::pin::pin!(conn);
                let served = tokio::select! {
                    r = conn.as_mut() => r,
                    () = stop.triggered() => {
                        // Finish the request in flight, take no other.
                        conn.as_mut().graceful_shutdown();
                        conn.await
                    }
                };
                if let Err(e) = served {
                    tracing::debug!("HTTP gateway connection ended: {e}");
                }
            });
        }
    });
    tracing::info!(%addr, "router HTTP gateway listening");
    Ok(addr)
}
