//! The Docker backend: a sandbox is one hardened container on the engine [`Engine`] connects
//! to, made through [`super::config::build`] ([`create`]), called with `docker exec` when it
//! has no agent ([`exec`]), looked at through `docker inspect`, `top` and events ([`state`]),
//! and removed by id or label ([`remove`]).

mod create;
mod exec;
mod remove;
mod state;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use super::backend::{
    Backend, Cleanup, Created, ExecError, ExecOutcome, ExecRequest, Failed, Process, Stopped,
};
use super::config::SandboxSpec;
use super::engine::Engine;
use super::profile::Profile;
use crate::Error;

pub struct DockerBackend {
    pub engine: Arc<Engine>,
    /// Where the guards of its containers are tracked and their removal drained.
    cleanup: Cleanup,
}

impl DockerBackend {
    pub fn new(engine: Arc<Engine>, cleanup: Cleanup) -> Arc<Self> {
        Arc::new(Self { engine, cleanup })
    }
}

#[tonic::async_trait]
impl Backend for DockerBackend {
    async fn create(
        self: Arc<Self>,
        profile: &Profile,
        spec: SandboxSpec,
    ) -> Result<Created, Failed> {
        create::create(self, profile, spec).await
    }

    async fn exec(&self, id: &str, req: ExecRequest) -> Result<ExecOutcome, ExecError> {
        let docker = self.engine.client().await?;
        exec::exec(&self.engine, &docker, id, req).await
    }

    async fn alive(&self, id: &str) -> bool {
        match self.engine.client().await {
            Ok(docker) => state::alive(&docker, id).await,
            Err(_) => false,
        }
    }

    async fn why_stopped(&self, id: &str) -> Stopped {
        match self.engine.client().await {
            Ok(docker) => state::why_stopped(&docker, id).await,
            Err(_) => Stopped::Other,
        }
    }

    async fn oom_since(&self, id: &str, since: SystemTime) -> bool {
        match self.engine.client().await {
            Ok(docker) => state::oom_since(&docker, id, since).await,
            Err(_) => false,
        }
    }

    async fn processes(&self, id: &str) -> Option<Vec<Process>> {
        let docker = self.engine.client().await.ok()?;
        state::processes(&docker, id).await
    }

    async fn remove(&self, id: &str) -> bool {
        match self.engine.client().await {
            Ok(docker) => remove::remove_now(&docker, id).await,
            Err(e) => {
                tracing::warn!(container = %id, error = %e, "cannot remove container");
                false
            }
        }
    }

    async fn remove_labelled(&self, labels: &BTreeMap<String, String>) -> u32 {
        remove::remove_labelled(&self.engine, labels).await
    }

    async fn sweep_orphans(&self, ns: &str, instance: &str, grace: Duration) -> u32 {
        remove::sweep_orphans(&self.engine, ns, instance, grace).await
    }

    async fn has_runtime(&self, name: &str) -> Option<Result<(), Error>> {
        self.engine.has_runtime(name).await
    }
}
