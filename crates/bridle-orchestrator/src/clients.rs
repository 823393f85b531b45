//! Channels to the services the orchestrator calls. Lazily connected, so the orchestrator
//! starts whatever order the services come up in; a call to a service that is down fails with
//! UNAVAILABLE and the step is retried later.

use std::time::Duration;

use bridle_core::client::{Outgoing, Traced as Channel};
use bridle_proto::approvals_client::ApprovalsClient;
use bridle_proto::manifests_client::ManifestsClient;
use bridle_proto::router_client::RouterClient;
use bridle_proto::secrets_client::SecretsClient;
use bridle_proto::tools_client::ToolsClient;

use crate::Options;

#[derive(Clone)]
pub struct Clients {
    pub router: RouterClient<Channel>,
    pub router_manifests: ManifestsClient<Channel>,
    pub tools: ToolsClient<Channel>,
    pub tools_manifests: ManifestsClient<Channel>,
    pub approvals: ApprovalsClient<Channel>,
    pub approvals_manifests: ManifestsClient<Channel>,
    pub secrets_manifests: ManifestsClient<Channel>,
    /// EndRun only: the orchestrator resolves no secret.
    pub secrets: SecretsClient<Channel>,
}

impl Clients {
    pub fn new(opts: &Options) -> Result<Self, bridle_core::Error> {
        // The channel deadline is the longest any call may take; calls set tighter ones.
        let long = opts.model_timeout.max(opts.tool_timeout) + Duration::from_secs(30);
        // Every call carries the trace context and the orchestrator's identity.
        let out = Outgoing::new("orchestrator", &opts.server);
        let router = bridle_core::client::traced("router", &opts.router_url, long, out.clone())?;
        let tools = bridle_core::client::traced("tools", &opts.tools_url, long, out.clone())?;
        let approvals = bridle_core::client::traced(
            "approvals",
            &opts.approvals_url,
            Duration::from_secs(60),
            out,
        )?;
        let secrets = bridle_core::client::traced(
            "secrets",
            &opts.secrets_url,
            Duration::from_secs(30),
            Outgoing::new("orchestrator", &opts.server),
        )?;
        Ok(Self {
            router: RouterClient::new(router.clone()).max_decoding_message_size(64 << 20),
            router_manifests: ManifestsClient::new(router),
            tools: ToolsClient::new(tools.clone()).max_decoding_message_size(64 << 20),
            tools_manifests: ManifestsClient::new(tools),
            approvals: ApprovalsClient::new(approvals.clone()),
            approvals_manifests: ManifestsClient::new(approvals),
            secrets_manifests: ManifestsClient::new(secrets.clone()),
            secrets: SecretsClient::new(secrets),
        })
    }
}

/// Status codes after which the same call may succeed later: the step is retried rather than
/// failing the run.
pub fn is_transient(code: tonic::Code) -> bool {
    matches!(
        code,
        tonic::Code::Unavailable
            | tonic::Code::DeadlineExceeded
            | tonic::Code::ResourceExhausted
            | tonic::Code::Aborted
            | tonic::Code::Cancelled
            | tonic::Code::Unknown
    )
}
