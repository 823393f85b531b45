//! The `bridle.v1.Tools` gRPC service.

use std::collections::HashMap;
use std::sync::Arc;

use bollard::query_parameters::ListContainersOptionsBuilder;
use bridle_core::auth::{AuthMode, Caller};
use bridle_proto::tools_server::Tools;
use bridle_proto::{
    EndRunRequest, EndRunResponse, ExecuteRequest, ExecuteResponse, ListToolsRequest,
    ListToolsResponse, RedactRequest, RedactResponse,
};
use tonic::{Request, Response, Status};

use crate::Error;
use crate::exec::Executor;
use crate::registry::tenant_or_default;
use crate::sandbox::engine::OP_TIMEOUT;
use crate::sandbox::guard::remove_now;

pub struct ToolsService {
    exec: Arc<Executor>,
    auth: AuthMode,
}

/// Execute and EndRun run and stop tools as the orchestrator decided after asking policy:
/// any other caller (another service holding the internal token, an API key) would bypass the
/// policy check, so only the orchestrator may call them.
const RUNS_TOOLS: &str = "orchestrator";

impl ToolsService {
    pub fn new(exec: Arc<Executor>, auth: AuthMode) -> Self {
        Self { exec, auth }
    }

    /// Removes (killing first, when running) every container of the run and its workspace.
    async fn end_run(&self, req: EndRunRequest) -> Result<u32, Error> {
        let scope = req.scope.unwrap_or_default();
        if scope.run_id.is_empty() {
            return Err(Error::InvalidArgument(
                "scope.run_id: the run to end is required".into(),
            ));
        }
        let tenant = tenant_or_default(&scope.tenant);
        self.exec.run_secrets.forget(tenant, &scope.run_id);
        let mut removed = self.exec.sandboxes.end_run(tenant, &scope.run_id).await;
        // Sandboxes made for the run carry its labels; any this instance lost track of (or
        // that another instance made) go too.
        let ns = &self.exec.label_namespace;
        let filters = HashMap::from([(
            "label".to_string(),
            vec![
                format!("{ns}.managed=true"),
                format!("{ns}.run={}", scope.run_id),
                format!("{ns}.tenant={tenant}"),
            ],
        )]);
        if let Ok(docker) = self.exec.engine.client().await {
            let opts = ListContainersOptionsBuilder::new()
                .all(true)
                .filters(&filters)
                .build();
            if let Ok(Ok(found)) =
                tokio::time::timeout(OP_TIMEOUT, docker.list_containers(Some(opts))).await
            {
                for c in found {
                    if let Some(id) = c.id
                        && remove_now(&docker, &id).await
                    {
                        removed += 1;
                    }
                }
            }
        }
        tracing::info!(run = %scope.run_id, tenant, removed, "run ended");
        Ok(removed)
    }
}

#[tonic::async_trait]
impl Tools for ToolsService {
    async fn execute(
        &self,
        req: Request<ExecuteRequest>,
    ) -> Result<Response<ExecuteResponse>, Status> {
        Caller::of(&req, self.auth).require(RUNS_TOOLS, "run tools")?;
        let req = req.into_inner();
        if req.idempotency_key.is_empty() {
            return Ok(Response::new(self.exec.execute(req).await?));
        }
        // A call with an idempotency key runs to completion and stores its result even when
        // the caller goes away (an orchestrator that crashed mid-call): the caller's retry then
        // finds the result instead of running the tool a second time. Stopping a run's calls
        // is EndRun's job, not a dropped connection's.
        let exec = self.exec.clone();
        // The task keeps the request's span: its logs and spans stay in the caller's trace.
        let task = self
            .exec
            .cleanup
            .shutdown()
            .spawn(tracing::Instrument::instrument(
                async move { exec.execute(req).await },
                tracing::Span::current(),
            ));
        match task.await {
            Ok(r) => Ok(Response::new(r?)),
            Err(e) => Err(Status::internal(format!(
                "the tool call's task failed: {e}"
            ))),
        }
    }

    async fn list_tools(
        &self,
        req: Request<ListToolsRequest>,
    ) -> Result<Response<ListToolsResponse>, Status> {
        let req = req.into_inner();
        let (tools, missing) = self
            .exec
            .list(tenant_or_default(&req.tenant), &req.names)
            .await?;
        Ok(Response::new(ListToolsResponse {
            tools,
            missing,
            workspace_quota_max_bytes: self.exec.sandboxes.quotas.max,
        }))
    }

    async fn end_run(
        &self,
        req: Request<EndRunRequest>,
    ) -> Result<Response<EndRunResponse>, Status> {
        Caller::of(&req, self.auth).require(RUNS_TOOLS, "end runs")?;
        let containers_removed = ToolsService::end_run(self, req.into_inner()).await?;
        Ok(Response::new(EndRunResponse { containers_removed }))
    }

    async fn redact(
        &self,
        req: Request<RedactRequest>,
    ) -> Result<Response<RedactResponse>, Status> {
        // The answer tells whether a text held a run's value: the orchestrator's question only.
        Caller::of(&req, self.auth).require(RUNS_TOOLS, "redact run texts")?;
        let req = req.into_inner();
        let mut scope = req.scope.unwrap_or_default();
        if scope.run_id.is_empty() {
            return Err(Status::invalid_argument(
                "scope.run_id: the run whose values to scrub is required",
            ));
        }
        scope.tenant = tenant_or_default(&scope.tenant).to_string();
        let (redactor, _) = self.exec.run_secrets.redactor(&scope);
        let mut redacted = 0;
        let texts = req
            .texts
            .into_iter()
            .map(|t| {
                let r = redactor.redact(&t);
                redacted += u32::from(r != t);
                r
            })
            .collect();
        Ok(Response::new(RedactResponse { texts, redacted }))
    }
}
