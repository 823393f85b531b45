//! The tool kinds. `container` and `code` run a command in the run's sandbox
//! ([`sandboxed`]); `http` makes one request from this service; `mcp` calls a tool of an MCP
//! server (see [`crate::mcp`]).
//!
//! A kind gets a validated [`Call`] and a [`Context`]: the parts of the service it uses, and
//! nothing of the executor that calls it (lookup, validation, idempotency), so that the kinds
//! stay below it.

pub mod code;
pub mod container;
pub mod http;
pub mod mcp;
pub mod sandboxed;

use std::sync::Arc;
use std::time::Duration;

use bridle_core::Shutdown;
use bridle_core::client::Traced as Channel;
use bridle_proto::secrets_client::SecretsClient;
use bridle_proto::{Scope, TimeoutLimit};
use serde_json::{Map, Value};

use crate::egress::Platform;
use crate::mcp::Mcp;
use crate::mcp::oauth::OAuth;
use crate::sandbox::Runtimes;
use crate::sandbox::runs::Sandboxes;
use crate::secrets::RunSecrets;

/// What the tool kinds use of the service, borrowed from the executor for one call.
pub struct Context<'a> {
    /// The sandboxes of each run, their warm pools and workspace quotas.
    pub sandboxes: &'a Sandboxes,
    /// Sessions with MCP servers, and the tool lists they gave.
    pub mcp: &'a Mcp,
    /// OAuth flows and grants of remote MCP servers (`spec.mcp.oauth`).
    pub oauth: &'a OAuth,
    /// The secrets broker that resolves `secret://` references.
    pub secrets: &'a SecretsClient<Channel>,
    /// Each live run's redaction set.
    pub run_secrets: &'a RunSecrets,
    /// What the platform lets tools reach beyond their tenants' rules, and what never.
    pub egress: &'a Arc<Platform>,
    /// Which OCI runtime each tenant's sandboxes run under.
    pub runtimes: &'a Runtimes,
    /// The service's shutdown, which the cleanup of a call's sandbox waits for.
    pub cleanup: &'a Shutdown,
}

/// One validated call, as the tool kinds see it.
#[derive(Debug)]
pub struct Call {
    /// The caller's scope, tenant filled in and tool set.
    pub scope: Scope,
    pub tool: bridle_core::ids::ToolName,
    pub args: Map<String, Value>,
    pub call_id: String,
    /// The call's wall-clock limit: the smaller of the tool's own and the caller's.
    pub timeout: Duration,
    /// Which limit `timeout` is, for the message of a call it cuts.
    pub timeout_limit: TimeoutLimit,
    /// The Agent's workspace quota (`spec.workspace.quota`), when it sets one.
    pub agent_quota: Option<u64>,
    /// The caller's idempotency key (empty when it sent none): the same for every attempt of
    /// one call, so an http tool passes it on for the API to deduplicate retries.
    pub idempotency_key: String,
}

impl Call {
    /// "8s, the tool's timeout": how long the call had and which limit that was.
    pub fn timeout_text(&self) -> String {
        let which = match self.timeout_limit {
            TimeoutLimit::Tool | TimeoutLimit::Unspecified => "the tool's timeout",
            TimeoutLimit::RunWallTime => "what was left of the run's wall-time budget",
            TimeoutLimit::Caller => "the caller's limit on any tool call",
        };
        format!(
            "{}, {which}",
            bridle_core::timeutil::short_duration(self.timeout)
        )
    }
}
