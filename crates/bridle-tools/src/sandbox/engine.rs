//! The connection to the Docker engine, made on first use.
//!
//! The service must start while Docker is down (HTTP and MCP tools need no Docker), so the
//! client is built and its API version negotiated lazily, and retried on the next call while
//! the engine cannot be reached.

use std::time::Duration;

use bollard::Docker;
use tokio::sync::Mutex;

use crate::Error;

/// Bound on one engine operation that should answer quickly (create, inspect, kill, remove).
pub const OP_TIMEOUT: Duration = Duration::from_secs(30);

/// bollard's default on Unix (not exported by it).
const DEFAULT_HOST: &str = "unix:///var/run/docker.sock";

pub struct Engine {
    host: Option<String>,
    shown: String,
    client: Mutex<Option<Docker>>,
}

impl Engine {
    /// `host` = the configured engine address; None = DOCKER_HOST, else the local socket.
    pub fn new(host: Option<String>) -> Self {
        let shown = host
            .clone()
            .or_else(|| std::env::var("DOCKER_HOST").ok().filter(|h| !h.is_empty()))
            .unwrap_or_else(|| DEFAULT_HOST.to_string());
        Self {
            host,
            shown,
            client: Mutex::new(None),
        }
    }

    /// Where the engine is, for messages ("unix:///var/run/docker.sock").
    pub fn shown(&self) -> &str {
        &self.shown
    }

    /// The connected, version-negotiated client.
    pub async fn client(&self) -> Result<Docker, Error> {
        let mut slot = self.client.lock().await;
        if let Some(d) = slot.as_ref() {
            return Ok(d.clone());
        }
        let unreachable = |reason: String| Error::DockerUnavailable {
            at: self.shown.clone(),
            reason,
        };
        let docker = match &self.host {
            Some(h) => Docker::connect_with_host(h),
            None => Docker::connect_with_defaults(),
        }
        .map_err(|e| unreachable(e.to_string()))?
        // Engine calls are bounded by our own timeouts; the client's must not cut a long
        // tool run's wait short.
        .with_timeout(Duration::from_secs(24 * 3600));
        let docker = tokio::time::timeout(Duration::from_secs(10), docker.negotiate_version())
            .await
            .map_err(|_| unreachable("no answer within 10s".into()))?
            .map_err(|e| unreachable(root_cause(&e)))?;
        *slot = Some(docker.clone());
        Ok(docker)
    }

    /// Classifies an engine error of operation `op` ("create the container for tool 'x'").
    pub fn error(&self, op: &str, e: bollard::errors::Error) -> Error {
        use bollard::errors::Error as B;
        match e {
            B::DockerResponseServerError {
                status_code,
                message,
            } => Error::DockerRefused {
                op: op.to_string(),
                message: format!("{message} (HTTP {status_code})"),
            },
            B::RequestTimeoutError
            | B::IOError { .. }
            | B::HyperResponseError { .. }
            | B::HyperLegacyError { .. }
            | B::SocketNotFoundError(_) => Error::DockerUnavailable {
                at: self.shown.clone(),
                reason: root_cause(&e),
            },
            other => Error::Core(bridle_core::Error::internal(format!(
                "docker: {op}: {other}"
            ))),
        }
    }

    pub fn timed_out(&self, op: &str) -> Error {
        Error::DockerUnavailable {
            at: self.shown.clone(),
            reason: format!("no answer within {}s to {op}", OP_TIMEOUT.as_secs()),
        }
    }
}

/// The innermost error message ("Connection refused"), not "error trying to connect".
pub fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut cur: &(dyn std::error::Error + 'static) = e;
    let mut text = cur.to_string();
    while let Some(next) = cur.source() {
        cur = next;
        text = cur.to_string();
    }
    text
}

/// True for the engine's answer to a container or image that does not exist.
pub fn is_not_found(e: &bollard::errors::Error) -> bool {
    matches!(
        e,
        bollard::errors::Error::DockerResponseServerError {
            status_code: 404,
            ..
        }
    )
}
