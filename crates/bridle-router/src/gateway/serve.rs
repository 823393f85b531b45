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
    let (listener, addr) =
        bridle_core::http_server::bind("http_listen", listen, addr_file.as_deref()).await?;
    let state = Arc::new(gateway);
    let app = axum::Router::new()
        .route("/v1/chat/completions", axum::routing::post(openai::chat))
        .route("/v1/responses", axum::routing::post(openai::responses))
        .route("/v1/models", axum::routing::get(openai::models))
        .route("/v1/models/{id}", axum::routing::get(openai::model))
        .route("/v1/messages", axum::routing::post(anthropic::messages))
        .fallback(openai::unknown)
        .with_state(state);
    bridle_core::http_server::serve(listener, app, header_timeout, "HTTP gateway", shutdown);
    tracing::info!(%addr, "router HTTP gateway listening");
    Ok(addr)
}
