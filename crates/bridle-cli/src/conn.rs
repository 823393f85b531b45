//! Where the harness is, and the clients to it.

use std::time::Duration;

use anyhow::Context as _;
use bridle_proto::admin_client::AdminClient;
use bridle_proto::approvals_client::ApprovalsClient;
use bridle_proto::manifests_client::ManifestsClient;
use bridle_proto::orchestrator_client::OrchestratorClient;
use tonic::transport::Channel;

#[derive(clap::Args, Clone, Debug)]
pub struct ConnArgs {
    /// The orchestrator's gRPC address.
    #[arg(
        long,
        global = true,
        env = "BRIDLE_SERVER",
        default_value = "http://127.0.0.1:50051"
    )]
    pub server: String,
    /// The approvals service's gRPC address.
    #[arg(
        long,
        global = true,
        env = "BRIDLE_APPROVALS_SERVER",
        default_value = "http://127.0.0.1:50054"
    )]
    pub approvals_server: String,
    /// Tenant to act for (an API key bound to a tenant acts for its own).
    #[arg(long, global = true, env = "BRIDLE_TENANT", default_value = "")]
    pub tenant: String,
    /// Bridle API key ("bk_..."), when the harness has auth on.
    #[arg(long, global = true, env = "BRIDLE_API_KEY", hide_env_values = true)]
    pub api_key: Option<String>,
}

/// Adds the API key to every call.
#[derive(Clone)]
pub struct KeyInterceptor(Option<tonic::metadata::MetadataValue<tonic::metadata::Ascii>>);

impl tonic::service::Interceptor for KeyInterceptor {
    fn call(&mut self, mut req: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(v) = &self.0 {
            req.metadata_mut().insert("authorization", v.clone());
        }
        Ok(req)
    }
}

pub type Ch = tonic::codegen::InterceptedService<Channel, KeyInterceptor>;

async fn channel(what: &str, url: &str) -> anyhow::Result<Channel> {
    let ch = tonic::transport::Endpoint::from_shared(url.to_string())
        .with_context(|| format!("{what} address '{url}'"))?
        .connect_timeout(Duration::from_secs(5))
        .connect()
        .await
        .with_context(|| format!("cannot reach the {what} at {url} (is `bridle dev` running?)"))?;
    Ok(ch)
}

impl ConnArgs {
    fn interceptor(&self) -> anyhow::Result<KeyInterceptor> {
        let v = match &self.api_key {
            Some(k) if !k.is_empty() => Some(format!("Bearer {k}").parse().map_err(|_| {
                anyhow::anyhow!("the API key contains characters that cannot be sent in a header")
            })?),
            _ => None,
        };
        Ok(KeyInterceptor(v))
    }

    pub async fn orchestrator(&self) -> anyhow::Result<OrchestratorClient<Ch>> {
        let ch = channel("orchestrator", &self.server).await?;
        Ok(
            OrchestratorClient::with_interceptor(ch, self.interceptor()?)
                .max_decoding_message_size(64 << 20),
        )
    }

    pub async fn manifests(&self) -> anyhow::Result<ManifestsClient<Ch>> {
        let ch = channel("orchestrator", &self.server).await?;
        Ok(ManifestsClient::with_interceptor(ch, self.interceptor()?))
    }

    pub async fn admin(&self) -> anyhow::Result<AdminClient<Ch>> {
        let ch = channel("orchestrator", &self.server).await?;
        Ok(AdminClient::with_interceptor(ch, self.interceptor()?))
    }

    pub async fn approvals(&self) -> anyhow::Result<ApprovalsClient<Ch>> {
        let ch = channel("approvals service", &self.approvals_server).await?;
        Ok(ApprovalsClient::with_interceptor(ch, self.interceptor()?))
    }
}

/// A gRPC error as a one-line message: the status message, and the code when it adds
/// something.
pub fn status(what: &str, s: tonic::Status) -> anyhow::Error {
    let code = match s.code() {
        tonic::Code::NotFound => "not found",
        tonic::Code::InvalidArgument => "invalid",
        tonic::Code::FailedPrecondition => "refused",
        tonic::Code::PermissionDenied => "permission denied",
        tonic::Code::Unauthenticated => "unauthenticated",
        tonic::Code::Unavailable => "unavailable",
        tonic::Code::DeadlineExceeded => "timed out",
        tonic::Code::ResourceExhausted => "limit reached",
        _ => "failed",
    };
    anyhow::anyhow!("{what} {code}: {}", s.message())
}
