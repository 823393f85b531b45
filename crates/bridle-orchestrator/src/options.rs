use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use bridle_core::config::{self, ServerOptions};

/// See `work_partitions` and ARCHITECTURE.md (work queue) for why this default.
pub const DEFAULT_WORK_PARTITIONS: usize = 1;

/// Each worker reads every partition, so many partitions cost round trips; 64 is far past any
/// Redis Cluster this is meant for.
pub const MAX_WORK_PARTITIONS: usize = 64;

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
    /// How long a finished run (its state and events) stays in Redis after it ended; a run
    /// still held by an open approval stays until that approval is decided or expires.
    #[serde(with = "humantime_serde")]
    #[schemars(with = "String")]
    pub retention: Duration,
    /// Per-tenant overrides of `retention` (`[tenant_retention] acme = "30d"`, or
    /// `BRIDLE_ORCHESTRATOR_TENANT_RETENTION__ACME=30d`).
    #[schemars(with = "BTreeMap<String, String>")]
    pub tenant_retention: BTreeMap<String, humantime_serde::Serde<Duration>>,
    /// How long a StartRun idempotency key keeps pointing at its run (independent of the run's
    /// retention: a key that outlives its run answers with the bare run id).
    #[serde(with = "humantime_serde")]
    #[schemars(with = "String")]
    pub idempotency_ttl: Duration,
    /// Stream partitions of the work queue new steps go to (by a hash of the run id). Every
    /// orchestrator consumes every partition any orchestrator has used, so changing this on a
    /// live system loses nothing.
    pub work_partitions: usize,
    /// An admin API key made outside Bridle (the Helm chart generates one into a Secret):
    /// registered at start for `bootstrap_admin_tenant` unless it is already (revoking it
    /// sticks). `bk_` and 32 to 125 letters and digits.
    #[serde(skip_serializing)]
    #[schemars(with = "Option<String>")]
    pub bootstrap_admin_key: Option<secrecy::SecretString>,
    /// The tenant the bootstrap admin key administers.
    pub bootstrap_admin_tenant: String,
    /// A StartRun that carries the caller's W3C `traceparent`: `child` (the run's root span is
    /// a child of the caller's span, in the caller's trace) or `link` (the run gets a trace of
    /// its own whose root links to the caller's span).
    pub caller_trace: CallerTrace,
    /// The MCP endpoint: a tenant's agents' tools offered to outside MCP clients, every call
    /// governed as the agent's own (see `McpOptions`).
    pub mcp: McpOptions,
}

/// The orchestrator's MCP endpoint (streamable HTTP, `/mcp/<agent>`).
#[derive(Clone, Debug, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(default)]
pub struct McpOptions {
    /// Address to serve it on; unset (the default) = no MCP endpoint.
    pub listen: Option<std::net::SocketAddr>,
    /// Write the bound address here once listening (for `listen` with port 0).
    pub addr_file: Option<std::path::PathBuf>,
    /// `Host` header values accepted (`name` or `name:port`), against DNS rebinding; empty =
    /// any. Set the names clients use to reach the service.
    pub allowed_hosts: Vec<String>,
    /// How long a `tools/call` waits for its call to end (an approval included) before it
    /// answers with a pending result the client polls with the `bridle_result` tool.
    #[serde(with = "humantime_serde")]
    #[schemars(with = "String")]
    pub call_wait: Duration,
    /// A connection must send its request headers within this long.
    #[serde(with = "humantime_serde")]
    #[schemars(with = "String")]
    pub header_read_timeout: Duration,
    /// Largest request body accepted.
    pub max_body_bytes: usize,
}

impl Default for McpOptions {
    fn default() -> Self {
        McpOptions {
            listen: None,
            addr_file: None,
            allowed_hosts: vec!["localhost".into(), "127.0.0.1".into(), "::1".into()],
            call_wait: Duration::from_secs(60),
            header_read_timeout: Duration::from_secs(10),
            max_body_bytes: 4 << 20,
        }
    }
}

/// Where a run's trace goes when StartRun carries the caller's trace context.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum CallerTrace {
    #[default]
    Child,
    Link,
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
            retention: Duration::from_secs(7 * 24 * 3600),
            tenant_retention: BTreeMap::new(),
            idempotency_ttl: Duration::from_secs(7 * 24 * 3600),
            work_partitions: DEFAULT_WORK_PARTITIONS,
            bootstrap_admin_key: None,
            bootstrap_admin_tenant: "default".into(),
            caller_trace: CallerTrace::Child,
            mcp: McpOptions::default(),
        }
    }
}

impl config::Options for Options {
    const SERVICE: &'static str = "orchestrator";

    fn server(&self) -> &bridle_core::config::ServerOptions {
        &self.server
    }

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
        if self.retention < Duration::from_secs(1) {
            out.push("retention: must be at least 1s".into());
        }
        for (tenant, d) in &self.tenant_retention {
            if let Err(e) = bridle_core::ids::check_name(tenant) {
                out.push(format!(
                    "tenant_retention: '{}' is not a tenant name: {e}",
                    bridle_core::redact::quote(tenant)
                ));
            } else if **d < Duration::from_secs(1) {
                out.push(format!("tenant_retention.{tenant}: must be at least 1s"));
            }
        }
        if let Some(k) = &self.bootstrap_admin_key {
            use secrecy::ExposeSecret as _;
            if let Err(e) = bridle_core::auth::check_plaintext(k.expose_secret()) {
                out.push(format!(
                    "bootstrap_admin_key: {}",
                    e.to_string().trim_start_matches("invalid argument: ")
                ));
            }
        }
        if let Err(e) = bridle_core::ids::check_name(&self.bootstrap_admin_tenant) {
            out.push(format!("bootstrap_admin_tenant: {e}"));
        }
        if self.idempotency_ttl < Duration::from_secs(1) {
            out.push("idempotency_ttl: must be at least 1s".into());
        }
        if self.mcp.call_wait.is_zero() || self.mcp.call_wait > Duration::from_secs(3600) {
            out.push("mcp.call_wait: must be more than zero and at most 1h".into());
        }
        if self.mcp.header_read_timeout.is_zero() {
            out.push("mcp.header_read_timeout: must be more than zero".into());
        }
        if self.mcp.max_body_bytes < 1024 {
            out.push("mcp.max_body_bytes: must be at least 1024".into());
        }
        if !(1..=MAX_WORK_PARTITIONS).contains(&self.work_partitions) {
            out.push(format!(
                "work_partitions: must be 1 to {MAX_WORK_PARTITIONS}, not {}",
                self.work_partitions
            ));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn the_defaults_need_a_service_identity() {
        let problems = config::Options::validate(&Options::default());
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(
            problems[0].starts_with("auth: 'keys' (the default) needs"),
            "{problems:?}"
        );
    }

    #[test]
    fn tenant_retention_is_read_per_tenant_and_a_bad_tenant_is_refused_by_name() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("orchestrator.toml");
        std::fs::write(
            &file,
            "auth = \"off\"\nretention = \"2d\"\n[tenant_retention]\nacme = \"30d\"\n",
        )
        .unwrap();
        let o: Options = config::load(Some(&file), &serde_json::json!({})).unwrap();
        assert_eq!(o.retention, Duration::from_secs(2 * 86_400));
        let acme = o.tenant_retention.get("acme").map(|d| **d);
        assert_eq!(acme, Some(Duration::from_secs(30 * 86_400)));
        assert_eq!(o.tenant_retention.len(), 1);

        std::fs::write(
            &file,
            "work_partitions = 0\n[tenant_retention]\n\"Acme Corp\" = \"30d\"\nglobex = \"0s\"\n",
        )
        .unwrap();
        let e = config::load::<Options>(Some(&file), &serde_json::json!({}))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("tenant_retention: 'Acme Corp' is not a tenant name"),
            "{e}"
        );
        assert!(
            e.contains("tenant_retention.globex: must be at least 1s"),
            "{e}"
        );
        assert!(e.contains("work_partitions: must be 1 to 64, not 0"), "{e}");
    }
}
