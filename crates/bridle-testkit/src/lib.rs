//! Test support for Bridle: real Redis and OpenBao servers started on demand (each test gets
//! its own process on a free loopback port, or its own key prefix), the locally built sandbox
//! image, the path of the workspace's binaries, and a mock LLM server that speaks the real
//! OpenAI Chat Completions and Anthropic Messages wire formats.
//!
//! Nothing here is a stand-in for a system Bridle integrates with, except the model provider:
//! Redis, OpenBao and Docker are the real programs.

pub mod bao;
pub mod docker;
pub mod http;
pub mod https_api;
pub mod mcp;
pub mod mock_anthropic;
pub mod mock_openai;
pub mod oidc;
pub mod otlp;
pub mod paths;
pub mod pod_engine;
pub mod ports;
pub mod redis;
pub mod redis_ha;
pub mod rootless;

pub use bao::OpenBao;
pub use redis::RedisServer;
pub use redis_ha::{RedisCluster, SentinelGroup};

/// A fresh key prefix / label / path component for one test, so tests can share servers and
/// run in parallel without seeing each other's data.
pub fn unique(prefix: &str) -> String {
    format!("{prefix}-{}", ulid::Ulid::new().to_string().to_lowercase())
}

/// Polls `check` every 50ms until it returns Some or `timeout` passes.
pub async fn wait_for<T, F, Fut>(
    what: &str,
    timeout: std::time::Duration,
    mut check: F,
) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(v) = check().await {
            return Ok(v);
        }
        if tokio::time::Instant::now() >= deadline {
            anyhow::bail!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}
