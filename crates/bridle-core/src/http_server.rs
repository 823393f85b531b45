//! Serving an axum app over HTTP/1 on hyper directly: `axum::serve` sets no timer, so hyper
//! would enforce no header read timeout and a client that sent its headers slowly, or never,
//! held a connection (and a task) as long as it liked. The web inbox, the model gateway and
//! the MCP endpoint are served by [`serve`].

use std::pin::pin;
use std::time::Duration;

use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;

use crate::Shutdown;

/// Serves `app` on `listener` until `shutdown`, each connection on a task `shutdown` owns.
/// A connection's request headers must arrive within `header_read_timeout` (then it is closed;
/// hyper answers nothing). At shutdown a connection finishes the request in flight and takes
/// no other. `what` names the server in logs.
pub fn serve(
    listener: TcpListener,
    app: axum::Router,
    header_read_timeout: Duration,
    what: &'static str,
    shutdown: &Shutdown,
) {
    let stop = shutdown.token();
    let tasks = shutdown.clone();
    shutdown.spawn(async move {
        loop {
            let accepted = tokio::select! {
                () = stop.cancelled() => break,
                a = listener.accept() => a,
            };
            let (tcp, peer) = match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of descriptors, or a connection reset before it was accepted: the
                    // listener itself is fine, so wait a little rather than spin.
                    tracing::warn!("{what}: cannot accept a connection: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            // Streamed answers are many small writes: without TCP_NODELAY, Nagle's algorithm
            // holds each one back until the client acknowledges the last (tens of ms).
            let _ = tcp.set_nodelay(true);
            let service = TowerToHyperService::new(app.clone());
            let stop = stop.clone();
            tasks.spawn(async move {
                let mut builder = hyper::server::conn::http1::Builder::new();
                builder
                    .timer(TokioTimer::new())
                    .header_read_timeout(header_read_timeout);
                let mut conn = pin!(builder.serve_connection(TokioIo::new(tcp), service));
                let served = tokio::select! {
                    r = conn.as_mut() => r,
                    () = stop.cancelled() => {
                        conn.as_mut().graceful_shutdown();
                        conn.await
                    }
                };
                if let Err(e) = served {
                    tracing::debug!(%peer, "{what} connection ended: {}", chain(&e));
                }
            });
        }
    });
}

/// Binds `listen` for `option` (its name in errors), and writes the bound address to
/// `addr_file` when one is given.
pub async fn bind(
    option: &str,
    listen: std::net::SocketAddr,
    addr_file: Option<&std::path::Path>,
) -> Result<(TcpListener, std::net::SocketAddr), crate::Error> {
    let listener = TcpListener::bind(listen)
        .await
        .map_err(|e| crate::Error::Config(format!("{option}: cannot bind {listen}: {e}")))?;
    let addr = listener
        .local_addr()
        .map_err(|e| crate::Error::internal(format!("{option}: bound address: {e}")))?;
    if let Some(f) = addr_file {
        std::fs::write(f, addr.to_string()).map_err(|e| {
            crate::Error::Config(format!("{option}: cannot write {}: {e}", f.display()))
        })?;
    }
    Ok((listener, addr))
}

/// The error and its causes, as one line ("error reading a body from connection: invalid
/// chunk size line"): the outermost alone rarely says what was wrong.
pub fn chain(e: &(dyn std::error::Error + 'static)) -> String {
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
