use std::time::Duration;

use serde::{Deserialize, Serialize};

use bridle_core::config::{self, ServerOptions};

/// Options of the orchestrator (`BRIDLE_ORCHESTRATOR_*` env or its config file).
#[derive(Clone, Debug, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(default)]
pub struct Options {
    #[serde(flatten)]
    pub server: ServerOptions,
    pub redis_url: String,
    /// Prefix of every Redis key (tests use a fresh one each).
    pub key_prefix: String,
    pub router_url: String,
    pub tools_url: String,
    pub approvals_url: String,
    /// The secrets broker, for SecretBinding manifests only: the orchestrator resolves no
    /// secret.
    pub secrets_url: String,
    /// Steps processed at once by this process.
    pub workers: usize,
    /// Consumer name in the work stream's group; default host-pid-random.
    pub consumer: Option<String>,
    /// A task not heartbeated for this long is taken over by another worker.
    #[serde(with = "humantime_serde")]
    #[schemars(with = "String")]
    pub claim_idle: Duration,
    /// Deliveries of one task before it goes to the dead-letter stream and its run fails.
    pub max_deliveries: u64,
    /// Deadline of one model call (across the router's retries and failover).
    #[serde(with = "humantime_serde")]
    #[schemars(with = "String")]
    pub model_timeout: Duration,
    /// Deadline of one tool call, when the tool sets none lower.
    #[serde(with = "humantime_serde")]
    #[schemars(with = "String")]
    pub tool_timeout: Duration,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            server: ServerOptions::with_port(50051),
            redis_url: "redis://127.0.0.1:6379".into(),
            key_prefix: "bridle".into(),
            router_url: "http://127.0.0.1:50052".into(),
            tools_url: "http://127.0.0.1:50053".into(),
            approvals_url: "http://127.0.0.1:50054".into(),
            secrets_url: "http://127.0.0.1:50055".into(),
            workers: 8,
            consumer: None,
            claim_idle: Duration::from_secs(30),
            max_deliveries: 5,
            model_timeout: Duration::from_secs(180),
            tool_timeout: Duration::from_secs(600),
        }
    }
}

impl config::Options for Options {
    const SERVICE: &'static str = "orchestrator";

    fn validate(&self) -> Vec<String> {
        let mut out = Vec::new();
        self.server.validate(&mut out);
        config::check_redis_url("redis_url", &self.redis_url, &mut out);
        for (k, v) in [
            ("router_url", &self.router_url),
            ("tools_url", &self.tools_url),
            ("approvals_url", &self.approvals_url),
            ("secrets_url", &self.secrets_url),
        ] {
            config::check_peer_url(k, v, &mut out);
        }
        if self.key_prefix.is_empty() || self.key_prefix.contains(['{', '}', ' ']) {
            out.push("key_prefix: must be non-empty, without braces or spaces".into());
        }
        if self.workers == 0 {
            out.push("workers: must be at least 1".into());
        }
        if self.claim_idle < Duration::from_secs(1) {
            out.push("claim_idle: must be at least 1s".into());
        }
        if self.max_deliveries == 0 {
            out.push("max_deliveries: must be at least 1".into());
        }
        out
    }
}
