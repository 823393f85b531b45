//! The `bridle.v1.Tools` gRPC service.

use std::collections::BTreeMap;
use std::sync::Arc;

use bridle_core::auth::{AuthMode, Caller, principal};
use bridle_core::paging::Page;
use bridle_proto::tools_server::Tools;
use bridle_proto::{
    BeginAuthorizationRequest, BeginAuthorizationResponse, CompleteAuthorizationRequest,
    CompleteAuthorizationResponse, EndRunRequest, EndRunResponse, ExecuteRequest, ExecuteResponse,
    ListToolsRequest, ListToolsResponse, RedactRequest, RedactResponse, RevokeAuthorizationRequest,
    RevokeAuthorizationResponse, Scope,
};
use tonic::{Request, Response, Status};

use crate::Error;
use crate::affinity::{self, Affinity, FORWARDED_TO, Route};
use crate::exec::Executor;
use crate::registry::tenant_or_default;

pub struct ToolsService {
    exec: Arc<Executor>,
    auth: AuthMode,
    affinity: Affinity,
}

/// Execute and EndRun run and stop tools as the orchestrator decided after asking policy:
/// any other caller (another service holding the internal token, an API key) would bypass the
/// policy check, so only the orchestrator may call them.
const RUNS_TOOLS: &str = "orchestrator";
/// A call forwarded to the replica that owns its run comes from another tools replica.
const FORWARDS: &str = "tools";

/// How many times a call follows its run to a new owner after the last one died under it.
const MAX_REROUTES: usize = 2;

impl ToolsService {
    pub fn new(exec: Arc<Executor>, auth: AuthMode, affinity: Affinity) -> Self {
        Self {
            exec,
            auth,
            affinity,
        }
    }

    /// Checks who may make this call; true when it was forwarded here by another replica
    /// (then it is never forwarded again).
    /// The tenant's Tool manifest `name`, which must exist.
    async fn oauth_tool(
        &self,
        tenant: &str,
        name: &str,
    ) -> Result<bridle_core::manifest::Tool, Status> {
        bridle_core::ids::check_name(name)
            .map_err(|e| Status::invalid_argument(format!("tool: {e}")))?;
        self.exec.registry.get(tenant, name).await?.ok_or_else(|| {
            Status::not_found(format!(
                "tool '{name}' is not defined for tenant '{tenant}' (apply its Tool manifest)"
            ))
        })
    }

    fn admit<T>(&self, req: &Request<T>, action: &str) -> Result<bool, Status> {
        let caller = Caller::of(req, self.auth);
        let Some(to) = req.metadata().get(FORWARDED_TO) else {
            caller.require(RUNS_TOOLS, action)?;
            return Ok(false);
        };
        caller.require(FORWARDS, action)?;
        let to = to.to_str().unwrap_or_default();
        if to != self.affinity.me() {
            return Err(Status::unavailable(format!(
                "a call forwarded to tools replica {to} reached replica {}: the replicas' advertise_url options point at the wrong replica",
                self.affinity.me()
            )));
        }
        Ok(true)
    }

    /// The replica to forward a call of `scope`'s run to (None: here). `claim`: the call needs
    /// the run's state, so this replica takes the run when nobody (alive) holds it.
    async fn owner(
        &self,
        scope: &Scope,
        claim: bool,
        forwarded: bool,
    ) -> Result<Option<(String, String)>, Status> {
        let tenant = tenant_or_default(&scope.tenant);
        match self.affinity.route(tenant, &scope.run_id, claim).await? {
            Route::Local => Ok(None),
            Route::Forward { replica, .. } if forwarded => Err(Status::unavailable(format!(
                "run '{}' is held by tools replica {replica}, not by the one this call was forwarded to; retry",
                scope.run_id
            ))),
            Route::Forward { replica, url } => Ok(Some((replica, url))),
        }
    }

    /// After a forwarded call failed with `s`: whether to route it again (its owner could not
    /// be reached and its lease went meanwhile: it died, and the run is taken over).
    async fn reroute(&self, s: &Status, replica: &str, tries: &mut usize) -> Result<bool, Status> {
        if !affinity::unreachable(s) || *tries >= MAX_REROUTES {
            return Ok(false);
        }
        *tries += 1;
        tracing::info!(replica, error = %s, "the tools replica holding a run did not answer; waiting for its lease");
        Ok(self.affinity.wait_gone(replica).await?)
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
        // First: from now on every replica refuses the run's calls; its snapshot goes.
        self.affinity.end(tenant, &scope.run_id).await?;
        self.exec.run_secrets.forget(tenant, &scope.run_id);
        let mut removed = self.exec.sandboxes.end_run(tenant, &scope.run_id).await;
        // Sandboxes made for the run carry its labels; any this instance lost track of (or
        // that another instance made) go too.
        let ns = &self.exec.label_namespace;
        let labels = BTreeMap::from([
            (format!("{ns}.managed"), "true".to_string()),
            (format!("{ns}.run"), scope.run_id.clone()),
            (format!("{ns}.tenant"), tenant.to_string()),
        ]);
        removed += self.exec.backend.remove_labelled(&labels).await;
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
        let forwarded = self.admit(&req, "run tools")?;
        let meta = req.metadata().clone();
        let req = req.into_inner();
        let scope = req.scope.clone().unwrap_or_default();
        let mut tries = 0;
        while let Some((replica, url)) = self.owner(&scope, true, forwarded).await? {
            let mut owner = self.affinity.client(&url)?;
            let fwd = affinity::forwarded(&meta, req.clone(), &replica)?;
            match owner.execute(fwd).await {
                Ok(r) => return Ok(Response::new(r.into_inner())),
                Err(s) if self.reroute(&s, &replica, &mut tries).await? => {}
                Err(s) => return Err(plain(s)),
            }
        }
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
        let tenant = principal(&req)
            .tenant_for(&req.get_ref().tenant)
            .map_err(Error::from)?;
        let req = req.into_inner();
        let page = Page::parse(
            req.page_size,
            &req.page_token,
            None,
            bridle_core::paging::MAX_PAGE_SIZE,
        )
        .map_err(Error::from)?;
        let (mut tools, missing) = self.exec.list(&tenant, &req.names).await?;
        // Unpaged, the order asked for stays (an agent's tools reach the model in the order it
        // lists them); pages need one order, by name.
        let (tools, next_page_token) = if page == Page::all() {
            (tools, String::new())
        } else {
            tools.sort_by(|a, b| a.name.cmp(&b.name));
            page.of_sorted(tools, |t| t.name.clone())
        };
        Ok(Response::new(ListToolsResponse {
            tools,
            missing,
            workspace_quota_max_bytes: self.exec.sandboxes.quotas.max,
            next_page_token,
        }))
    }

    async fn end_run(
        &self,
        req: Request<EndRunRequest>,
    ) -> Result<Response<EndRunResponse>, Status> {
        let forwarded = self.admit(&req, "end runs")?;
        let meta = req.metadata().clone();
        let req = req.into_inner();
        let scope = req.scope.clone().unwrap_or_default();
        let mut tries = 0;
        while let Some((replica, url)) = self.owner(&scope, false, forwarded).await? {
            let mut owner = self.affinity.client(&url)?;
            let fwd = affinity::forwarded(&meta, req.clone(), &replica)?;
            match owner.end_run(fwd).await {
                Ok(r) => return Ok(Response::new(r.into_inner())),
                Err(s) if self.reroute(&s, &replica, &mut tries).await? => {}
                Err(s) => return Err(plain(s)),
            }
        }
        let containers_removed = ToolsService::end_run(self, req).await?;
        Ok(Response::new(EndRunResponse { containers_removed }))
    }

    async fn redact(
        &self,
        req: Request<RedactRequest>,
    ) -> Result<Response<RedactResponse>, Status> {
        // The answer tells whether a text held a run's value: the orchestrator's question only.
        let forwarded = self.admit(&req, "redact run texts")?;
        let meta = req.metadata().clone();
        let req = req.into_inner();
        let routed = req.scope.clone().unwrap_or_default();
        let mut tries = 0;
        while let Some((replica, url)) = self.owner(&routed, false, forwarded).await? {
            let mut owner = self.affinity.client(&url)?;
            let fwd = affinity::forwarded(&meta, req.clone(), &replica)?;
            match owner.redact(fwd).await {
                Ok(r) => return Ok(Response::new(r.into_inner())),
                Err(s) if self.reroute(&s, &replica, &mut tries).await? => {}
                Err(s) => return Err(plain(s)),
            }
        }
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

    async fn begin_authorization(
        &self,
        req: Request<BeginAuthorizationRequest>,
    ) -> Result<Response<BeginAuthorizationResponse>, Status> {
        // The orchestrator asks for the person (operator role, their tenant).
        Caller::of(&req, self.auth).require(RUNS_TOOLS, "authorize MCP servers")?;
        let tenant = principal(&req)
            .tenant_for(&req.get_ref().tenant)
            .map_err(Error::from)?;
        let tenant = tenant.as_str();
        let req = req.into_inner();
        if req.redirect_uri.len() > 2048 {
            return Err(Status::invalid_argument("redirect_uri: at most 2048 bytes"));
        }
        let tool = self.oauth_tool(tenant, &req.tool).await?;
        let Some(m) = &tool.spec.mcp else {
            return Err(Status::failed_precondition(format!(
                "tool '{}' is not an MCP tool",
                req.tool
            )));
        };
        let b = self
            .exec
            .oauth
            .begin(tenant, &tool, m, &req.redirect_uri)
            .await?;
        Ok(Response::new(BeginAuthorizationResponse {
            authorization_url: b.url,
            state: b.state,
            expires_in: Some(bridle_core::timeutil::pb_duration(
                crate::mcp::oauth::PENDING_TTL,
            )),
            client_id: b.client_id,
            registered: b.registered,
        }))
    }

    async fn complete_authorization(
        &self,
        req: Request<CompleteAuthorizationRequest>,
    ) -> Result<Response<CompleteAuthorizationResponse>, Status> {
        Caller::of(&req, self.auth).require(RUNS_TOOLS, "authorize MCP servers")?;
        let tenant = principal(&req)
            .tenant_for(&req.get_ref().tenant)
            .map_err(Error::from)?;
        let tenant = tenant.as_str();
        let req = req.into_inner();
        if req.state.is_empty() || req.code.is_empty() {
            return Err(Status::invalid_argument(
                "state and code: both are required (the redirect's query parameters)",
            ));
        }
        for (field, v, max) in [
            ("state", &req.state, 512),
            ("code", &req.code, 4096),
            ("issuer", &req.issuer, 2048),
        ] {
            if v.len() > max {
                return Err(Status::invalid_argument(format!(
                    "{field}: at most {max} bytes (got {})",
                    v.len()
                )));
            }
        }
        let issuer = (!req.issuer.is_empty()).then_some(req.issuer.as_str());
        let c = self
            .exec
            .oauth
            .complete(tenant, &req.state, &req.code, issuer, &self.exec.registry)
            .await?;
        Ok(Response::new(CompleteAuthorizationResponse {
            tool: c.tool,
            scopes: c.scopes,
            expires_in: c.expires_in.map(bridle_core::timeutil::pb_duration),
            refreshable: c.refreshable,
        }))
    }

    async fn revoke_authorization(
        &self,
        req: Request<RevokeAuthorizationRequest>,
    ) -> Result<Response<RevokeAuthorizationResponse>, Status> {
        Caller::of(&req, self.auth).require(RUNS_TOOLS, "authorize MCP servers")?;
        let tenant = principal(&req)
            .tenant_for(&req.get_ref().tenant)
            .map_err(Error::from)?;
        let tenant = tenant.as_str();
        let req = req.into_inner();
        bridle_core::ids::check_name(&req.tool)
            .map_err(|e| Status::invalid_argument(format!("tool: {e}")))?;
        let revoked = self.exec.oauth.revoke(tenant, &req.tool).await?;
        Ok(Response::new(RevokeAuthorizationResponse { revoked }))
    }
}

/// The owner's answer as this replica's: code, message and google.rpc details (the same code
/// made them); its HTTP headers stay behind.
fn plain(s: Status) -> Status {
    Status::with_details(s.code(), s.message(), s.details().to_vec().into())
}
