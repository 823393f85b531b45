use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use bridle_core::config::{self, ServerOptions};

/// Options of the router (`BRIDLE_ROUTER_*` env, or keys in its config file).
#[derive(Clone, Debug, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(default)]
pub struct Options {
    #[serde(flatten)]
    pub server: ServerOptions,
    pub redis_url: String,
    /// First part of every Redis key; tests use a fresh one each.
    pub key_prefix: String,
    /// The secrets broker, which resolves the `secret://` references of targets.
    pub secrets_url: String,
    /// One try's deadline when a target sets none.
    #[serde(with = "humantime_serde")]
    #[schemars(with = "String")]
    pub try_timeout: Duration,
    /// Whole-call deadline across retries and failover when neither the request nor the route
    /// sets one.
    #[serde(with = "humantime_serde")]
    #[schemars(with = "String")]
    pub call_timeout: Duration,
    /// Extra tries of the same target after a 429, a 5xx or a connection failure.
    pub max_retries: u32,
    /// First backoff; it doubles with each retry, with jitter.
    #[serde(with = "humantime_serde")]
    #[schemars(with = "String")]
    pub retry_base_delay: Duration,
    /// Longest wait before a retry. A provider asking (retry-after) for longer is not retried:
    /// the router fails over to the next target instead.
    #[serde(with = "humantime_serde")]
    #[schemars(with = "String")]
    pub retry_max_delay: Duration,
    /// Longest time a resolved provider key is kept; the broker's TTL wins when shorter.
    #[serde(with = "humantime_serde")]
    #[schemars(with = "String")]
    pub key_cache_ttl: Duration,
    /// The HTTP gateway fronts (OpenAI- and Anthropic-compatible), on a listener of their own;
    /// unset = no HTTP front. Port 0 picks a free port.
    pub http_listen: Option<SocketAddr>,
    /// Write the HTTP front's bound address here once listening (for supervisors and tests).
    pub http_addr_file: Option<PathBuf>,
    /// How long the HTTP front waits for a request's headers (also how long an idle
    /// keep-alive connection stays open); a slower client's connection is closed.
    #[serde(with = "humantime_serde")]
    #[schemars(with = "String")]
    pub http_header_read_timeout: Duration,
    /// How long the HTTP front waits for a request's body once its headers are in; a slower
    /// one (or one whose Content-Length is larger than what it sends) gets 408.
    #[serde(with = "humantime_serde")]
    #[schemars(with = "String")]
    pub http_body_read_timeout: Duration,
    /// How long a replica keeps a route it has read before reading it again: an updated or
    /// deleted route reaches every replica within this time (new routes are seen at once);
    /// 0 reads Redis on every call.
    #[serde(with = "humantime_serde")]
    #[schemars(with = "String")]
    pub route_cache_ttl: Duration,
    /// Largest request accepted (protobuf size over gRPC, body size over HTTP); larger ones are
    /// refused before any provider sees them.
    pub max_request_bytes: usize,
    /// Consecutive unhealthy tries of a target that open its circuit breaker; 0 = no breakers.
    pub breaker_failures: u32,
    /// How long an open breaker skips its target before one call probes it.
    #[serde(with = "humantime_serde")]
    #[schemars(with = "String")]
    pub breaker_cooldown: Duration,
    /// Requests per minute of each tenant, across routes and router replicas; 0 = no limit.
    /// (A route can set its own limits too: spec.limits.)
    pub tenant_rpm: u64,
    /// Tokens (input + output) per minute of each tenant; 0 = no limit.
    pub tenant_tpm: u64,
    /// Requests per minute of each agent (of a tenant); 0 = no limit.
    pub agent_rpm: u64,
    /// Tokens per minute of each agent; 0 = no limit.
    pub agent_tpm: u64,
    /// The output a call counted by a spend budget may write when it does not say
    /// (`max_output_tokens`): the call is sent with this cap, and its reservation counts it.
    pub budget_max_output_tokens: u32,
    /// A YAML price table of the operator's (in Kubernetes, a ConfigMap mounted as a file),
    /// in the format of the table shipped with the router (`crates/bridle-router/prices.yaml`):
    /// its entries replace the shipped entry of the same provider and model and add the
    /// others, so prices change without a release. Read once at start; a file that cannot be
    /// read, an unknown field or a bad value stops the router, naming the file, the entry and
    /// the field. Unset = the shipped table alone.
    pub prices_file: Option<PathBuf>,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            server: ServerOptions::with_port(50052),
            redis_url: "redis://127.0.0.1:6379".into(),
            key_prefix: "bridle".into(),
            secrets_url: "http://127.0.0.1:50055".into(),
            try_timeout: Duration::from_secs(60),
            call_timeout: Duration::from_secs(120),
            max_retries: 2,
            retry_base_delay: Duration::from_millis(250),
            retry_max_delay: Duration::from_secs(20),
            key_cache_ttl: Duration::from_secs(300),
            http_listen: None,
            http_addr_file: None,
            http_header_read_timeout: Duration::from_secs(30),
            http_body_read_timeout: Duration::from_secs(30),
            route_cache_ttl: Duration::from_secs(1),
            max_request_bytes: 4 << 20,
            breaker_failures: 5,
            breaker_cooldown: Duration::from_secs(30),
            tenant_rpm: 0,
            tenant_tpm: 0,
            agent_rpm: 0,
            agent_tpm: 0,
            budget_max_output_tokens: 4096,
            prices_file: None,
        }
    }
}

impl Options {
    /// The limits these options put on every call of a tenant or an agent.
    pub fn limit_defaults(&self) -> crate::limits::Defaults {
        let rate = |rpm: u64, tpm: u64| bridle_core::manifest::Rate {
            rpm: (rpm > 0).then_some(rpm),
            tpm: (tpm > 0).then_some(tpm),
        };
        crate::limits::Defaults {
            per_tenant: rate(self.tenant_rpm, self.tenant_tpm),
            per_agent: rate(self.agent_rpm, self.agent_tpm),
        }
    }
}

impl config::Options for Options {
    const SERVICE: &'static str = "router";

    fn server(&self) -> &bridle_core::config::ServerOptions {
        &self.server
    }

    fn validate(&self) -> Vec<String> {
        let mut out = Vec::new();
        self.server.validate(&mut out);
        config::check_redis_url("redis_url", &self.redis_url, &mut out);
        config::check_peer_url("secrets_url", &self.secrets_url, &mut out);
        if self.key_prefix.is_empty() {
            out.push("key_prefix: must not be empty".into());
        }
        if self.budget_max_output_tokens == 0 {
            out.push("budget_max_output_tokens: must be at least 1".into());
        }
        if self.max_request_bytes < 1024 {
            out.push("max_request_bytes: must be at least 1024".into());
        }
        if self.http_listen.is_some()
            && self.http_listen == Some(self.server.listen)
            && self.server.listen.port() != 0
        {
            out.push("http_listen: must differ from listen (the gRPC address)".into());
        }
        for (k, v) in [
            ("try_timeout", self.try_timeout),
            ("call_timeout", self.call_timeout),
            ("retry_base_delay", self.retry_base_delay),
            ("breaker_cooldown", self.breaker_cooldown),
            ("http_header_read_timeout", self.http_header_read_timeout),
            ("http_body_read_timeout", self.http_body_read_timeout),
        ] {
            if v.is_zero() {
                out.push(format!("{k}: must be more than zero"));
            }
        }
        if self.retry_max_delay < self.retry_base_delay {
            out.push("retry_max_delay: must be at least retry_base_delay".into());
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The defaults, plus the internal token every keys-mode service needs (without it the
    /// only complaint is that one: see `the_defaults_need_a_service_identity`).
    fn known() -> Options {
        let mut o = Options::default();
        o.server.internal_token = Some("a-token-of-enough-length".to_string().into());
        o
    }

    #[test]
    fn the_defaults_need_a_service_identity() {
        let problems = Options::default().validate();
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(
            problems[0].starts_with("auth: 'keys' (the default) needs"),
            "{problems:?}"
        );
    }
    use bridle_core::config::Options as _;

    #[test]
    fn defaults_are_valid_and_bad_values_are_named() {
        assert_eq!(known().validate(), Vec::<String>::new());
        assert_eq!(known().server.listen.port(), 50052);
        let o = Options {
            secrets_url: "ftp://x".into(),
            try_timeout: Duration::ZERO,
            ..known()
        };
        let problems = o.validate().join("; ");
        assert!(problems.contains("secrets_url: scheme 'ftp'"), "{problems}");
        assert!(
            problems.contains("try_timeout: must be more than zero"),
            "{problems}"
        );
    }
}
