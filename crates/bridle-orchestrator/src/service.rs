//! The `bridle.v1.Orchestrator` gRPC service: starting, reading, listing, cancelling and
//! watching runs.

use std::pin::Pin;
use std::time::Duration;

use futures::Stream;
use tonic::{Request, Response, Status};

use bridle_core::Shutdown;
use bridle_core::auth::{Principal, Role, principal};
use bridle_core::manifest::{Agent, Manifest};
use bridle_core::paging::{self, MAX_PAGE_SIZE, Page};
use bridle_core::store::ManifestStore;
use bridle_core::timeutil::now_ms;
use bridle_proto as pb;
use bridle_proto::run_event::Kind;

use bridle_core::ids::{AgentName, RunId, TenantId};

use crate::Error;
use crate::engine::Engine;
use crate::state::{Actor, Limits, NewRun, RunState, Status as RunStatus, ToolInfo};
use crate::store::IdempotencyHolder;

/// How long a StartRun that finds its idempotency key claimed but not confirmed waits for the
/// request that claimed it, before finishing the run's creation itself.
const PENDING_GRACE: Duration = Duration::from_secs(5);

/// How long the model a route tries first is remembered for new runs' token counts and
/// context window: a route changed by an apply reaches new runs within this.
pub const ROUTE_MODEL_TTL: Duration = Duration::from_secs(5);

/// The first model of each route, as the router last said, per tenant: without it every
/// StartRun asked the router for all the tenant's routes (a gRPC call, and the router reads
/// every stored route).
#[derive(Default)]
pub struct RouteModels {
    map: std::sync::Mutex<RouteModelMap>,
}

type RouteModelMap = std::collections::HashMap<(String, String), (String, std::time::Instant)>;

/// Entries kept; past this the map starts over (it is only a cache).
const ROUTE_MODEL_ENTRIES: usize = 10_000;

impl RouteModels {
    fn lock(&self) -> std::sync::MutexGuard<'_, RouteModelMap> {
        self.map.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn get(&self, tenant: &TenantId, route: &str) -> Option<String> {
        self.lock()
            .get(&(tenant.to_string(), route.to_string()))
            .filter(|(_, at)| at.elapsed() < ROUTE_MODEL_TTL)
            .map(|(model, _)| model.clone())
    }

    fn put_all(&self, tenant: &TenantId, routes: impl Iterator<Item = (String, String)>) {
        let now = std::time::Instant::now();
        let mut map = self.lock();
        if map.len() >= ROUTE_MODEL_ENTRIES {
            map.retain(|_, (_, at)| at.elapsed() < ROUTE_MODEL_TTL);
            if map.len() >= ROUTE_MODEL_ENTRIES {
                map.clear();
            }
        }
        for (route, model) in routes {
            map.insert((tenant.to_string(), route), (model, now));
        }
    }
}

pub struct OrchestratorService {
    pub engine: Engine,
    pub agents: ManifestStore,
    /// This process's WatchRun followers, woken by the events channel.
    pub events: crate::events::Hub,
    pub route_models: RouteModels,
    pub shutdown: Shutdown,
    pub caller_trace: crate::options::CallerTrace,
}

impl OrchestratorService {
    async fn agent(&self, tenant: &TenantId, name: &AgentName) -> Result<Agent, Error> {
        match self.agents.get("Agent", tenant, name).await? {
            Some(Manifest::Agent(a)) => Ok(a),
            _ => Err(Error::UnknownAgent {
                tenant: tenant.to_string(),
                agent: name.to_string(),
            }),
        }
    }

    /// The tools agent `name` of `tenant` may call, as a run of it would see them now.
    pub(crate) async fn agent_tools(
        &self,
        tenant: &TenantId,
        name: &AgentName,
    ) -> Result<Vec<ToolInfo>, Error> {
        let agent = self.agent(tenant, name).await?;
        self.tools_of(tenant, &agent).await
    }

    async fn tools_of(&self, tenant: &TenantId, agent: &Agent) -> Result<Vec<ToolInfo>, Error> {
        if agent.spec.tools.is_empty() {
            return Ok(vec![]);
        }
        let mut c = self.engine.clients.tools.clone();
        let resp = c
            .list_tools(pb::ListToolsRequest {
                tenant: tenant.to_string(),
                names: agent.spec.tools.clone(),
                ..Default::default()
            })
            .await
            .map_err(|s| bridle_core::client::call_error("tools service", s))?
            .into_inner();
        if !resp.missing.is_empty() {
            return Err(Error::FailedPrecondition(format!(
                "agent '{}' uses tools that are not defined for tenant '{tenant}': {} (apply their Tool manifests)",
                agent.metadata.name,
                resp.missing.join(", ")
            )));
        }
        Ok(resp.tools.iter().map(ToolInfo::from_pb).collect())
    }

    /// The model the agent's route tries first, for token counts and the context window. Best
    /// effort: without it, tokens are estimated and the window is the default.
    /// The router's answer is remembered for [`ROUTE_MODEL_TTL`] (`RouteModels`).
    async fn context_of(&self, tenant: &TenantId, agent: &Agent) -> crate::state::ContextInfo {
        let model = match self.route_models.get(tenant, &agent.spec.route) {
            Some(model) => model,
            None => self.ask_route_model(tenant, agent).await,
        };
        let window = agent
            .spec
            .model
            .context_window
            .unwrap_or_else(|| crate::engine::context::default_window(&model));
        crate::state::ContextInfo { model, window }
    }

    async fn ask_route_model(&self, tenant: &TenantId, agent: &Agent) -> String {
        let mut r = tonic::Request::new(pb::ListModelsRequest {
            tenant: tenant.to_string(),
            ..Default::default()
        });
        r.set_timeout(std::time::Duration::from_secs(5));
        match self.engine.clients.router.clone().list_models(r).await {
            Ok(resp) => {
                // Each route's first model, read once.
                let models: Vec<(String, String)> = resp
                    .into_inner()
                    .routes
                    .into_iter()
                    .map(|x| {
                        let first = x.targets.into_iter().next().map(|t| t.model);
                        (x.name, first.unwrap_or_default())
                    })
                    .collect();
                let model = models
                    .iter()
                    .find(|(route, _)| *route == agent.spec.route)
                    .map(|(_, model)| model.clone())
                    .unwrap_or_default();
                // Every route of the tenant, not only this one: the next run of another
                // Agent finds its route too.
                self.route_models.put_all(tenant, models.into_iter());
                model
            }
            Err(st) => {
                tracing::warn!(
                    "cannot ask the router for route '{}': {}",
                    agent.spec.route,
                    st.message()
                );
                String::new()
            }
        }
    }

    /// Builds the run of a StartRun and writes it (state, first event, index, first task).
    /// The run an idempotency key stands for, its creation finished if the request that
    /// claimed the key never confirmed it. That request may still be at work: it gets
    /// [`PENDING_GRACE`] to confirm. After that it is taken to have died, or lost Redis,
    /// between claiming the key and queueing the run (a replica killed, Redis restarted): the
    /// run is created under the claimed id from this request (same key, same intent), or, if
    /// it was written but never indexed or queued, it is indexed and its first step queued.
    /// Without this, the key would name a run that does not exist, or one queued for ever.
    async fn settle_idempotency(
        &self,
        tenant: &TenantId,
        agent: &AgentName,
        req: &pb::StartRunRequest,
        started_by: &Actor,
        mut holder: IdempotencyHolder,
    ) -> Result<RunId, Status> {
        let store = &self.engine.store;
        let deadline = tokio::time::Instant::now() + PENDING_GRACE;
        while holder.pending && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(100)).await;
            match store
                .idempotency_holder(tenant, &req.idempotency_key)
                .await?
            {
                Some(h) => holder = h,
                // Released: the first request failed and said so; nothing stands for the key.
                None => break,
            }
        }
        if !holder.pending {
            return Ok(holder.run_id);
        }
        let id = holder.run_id;
        match store.load(&id).await? {
            Some(l)
                if l.state.status == RunStatus::Queued
                    && (l.state.step == 0 || !l.state.tool_call.is_empty()) =>
            {
                tracing::warn!(run = %id, "finishing the creation of a run whose StartRun did not confirm it");
                store
                    .finish_creation(&l.state)
                    .await
                    .map_err(|e| e.doing("the run's creation was not finished"))?;
            }
            Some(_) => {}
            None => {
                tracing::warn!(run = %id, "creating the run whose StartRun claimed the idempotency key and never wrote it");
                match self
                    .create_run(tenant, agent, req, &id, None, started_by)
                    .await
                {
                    Ok(_) => {}
                    // Written meanwhile by the first request after all.
                    Err(e) if e.to_string().contains("already exists") => {}
                    Err(e) => return Err(e.doing("the run was not created").into()),
                }
            }
        }
        store
            .confirm_idempotency(tenant, &req.idempotency_key, &id)
            .await;
        Ok(id)
    }

    async fn create_run(
        &self,
        tenant: &TenantId,
        name: &AgentName,
        req: &pb::StartRunRequest,
        run_id: &RunId,
        caller: Option<(String, String)>,
        started_by: &Actor,
    ) -> Result<RunState, Error> {
        let agent = self.agent(tenant, name).await?;
        let tools = self.tools_of(tenant, &agent).await?;
        let limits = Limits::resolve(&agent.spec, req.budget.as_ref());
        let direct = direct_call(req, &tools)?;
        // A direct call asks no model: no model to count tokens for.
        let context = match direct {
            None => self.context_of(tenant, &agent).await,
            Some(_) => crate::state::ContextInfo::default(),
        };
        let new = NewRun {
            id: run_id.clone(),
            tenant: tenant.clone(),
            agent: name.clone(),
            spec: agent.spec,
            input: req.input.clone(),
            tools,
            limits,
            direct,
            context,
            idempotency_key: req.idempotency_key.clone(),
            labels: req.labels.clone().into_iter().collect(),
            trace: crate::state::TraceIds::for_run(
                caller,
                self.caller_trace,
                bridle_core::telemetry::current_span_ids(),
            ),
            started_by: started_by.clone(),
            end_user: req.end_user.clone(),
            now_ms: now_ms(),
        };
        self.engine.start(new).await
    }

    /// A run the caller may see; another tenant's run is reported as not existing.
    async fn visible_run(&self, p: &Principal, id: &str) -> Result<crate::store::Loaded, Error> {
        let id = RunId::parse(id).map_err(|e| Error::InvalidArgument(format!("run_id {e}")))?;
        let l = self.engine.store.load_required(&id).await?;
        if !p.sees(&l.state.tenant) {
            return Err(Error::UnknownRun(id));
        }
        // The call (GetRun, WatchRun, CancelRun), in a trace of its own, links to the run's.
        bridle_core::telemetry::link_current_to_run(
            &l.state.trace.trace_id,
            &l.state.trace.span_id,
        );
        Ok(l)
    }

    /// An MCP server's authorization is an operator's act; the tools service does it for the
    /// caller's tenant.
    fn for_tools<T: ForTools>(
        &self,
        req: Request<T>,
    ) -> Result<
        (
            T,
            pb::tools_client::ToolsClient<bridle_core::client::Traced>,
        ),
        Status,
    > {
        let p = principal(&req);
        p.require(Role::Operator)?;
        let mut req = req.into_inner();
        let tenant = p.tenant_for(req.tenant_mut())?;
        *req.tenant_mut() = tenant.into();
        Ok((req, self.engine.clients.tools.clone()))
    }
}

/// The call of a direct run (`StartRunRequest.tool_call`), checked against the agent's tools.
fn direct_call(
    req: &pb::StartRunRequest,
    tools: &[crate::state::ToolInfo],
) -> Result<Option<crate::state::Call>, Error> {
    let Some(c) = &req.tool_call else {
        return Ok(None);
    };
    if !tools.iter().any(|t| t.name == c.name) {
        let mut names: Vec<&str> = tools.iter().map(|t| t.name.as_str()).collect();
        names.sort_unstable();
        return Err(Error::InvalidArgument(format!(
            "tool_call.name: agent '{}' has no tool '{}' (its tools: {})",
            req.agent,
            bridle_core::redact::quote(&c.name),
            if names.is_empty() {
                "none".to_string()
            } else {
                names.join(", ")
            }
        )));
    }
    let arguments = if c.arguments_json.trim().is_empty() {
        "{}".to_string()
    } else {
        match serde_json::from_str::<serde_json::Value>(&c.arguments_json) {
            Ok(serde_json::Value::Object(_)) => c.arguments_json.clone(),
            Ok(_) => {
                return Err(Error::InvalidArgument(
                    "tool_call.arguments_json: must be a JSON object".into(),
                ));
            }
            Err(e) => {
                return Err(Error::InvalidArgument(format!(
                    "tool_call.arguments_json: not JSON: {e}"
                )));
            }
        }
    };
    Ok(Some(crate::state::Call {
        id: "call_1".into(),
        name: c.name.clone(),
        arguments,
    }))
}

fn summary(a: &Agent, tenant: &TenantId) -> pb::AgentSummary {
    pb::AgentSummary {
        name: a.metadata.name.clone(),
        tenant: tenant.to_string(),
        description: a.spec.description.clone(),
        route: a.spec.route.clone(),
        tools: a.spec.tools.clone(),
        budget: Some(Limits::resolve(&a.spec, None).to_pb()),
    }
}

type EventStream = Pin<Box<dyn Stream<Item = Result<pb::RunEvent, Status>> + Send>>;

/// A request the orchestrator passes on to the tools service for the caller's tenant.
trait ForTools {
    fn tenant_mut(&mut self) -> &mut String;
}

impl ForTools for pb::BeginToolAuthorizationRequest {
    fn tenant_mut(&mut self) -> &mut String {
        &mut self.tenant
    }
}

impl ForTools for pb::CompleteToolAuthorizationRequest {
    fn tenant_mut(&mut self) -> &mut String {
        &mut self.tenant
    }
}

impl ForTools for pb::RevokeToolAuthorizationRequest {
    fn tenant_mut(&mut self) -> &mut String {
        &mut self.tenant
    }
}

/// A message as its wire-identical twin: the orchestrator's own messages for the calls it
/// passes on (`OrchestratorListModelsRequest` as the router's `ListModelsRequest`, the answer
/// back), which `crates/bridle-proto/tests/contracts.rs` keeps field for field the same.
fn recast<A: prost::Message, B: prost::Message + Default>(a: &A) -> Result<B, Status> {
    B::decode(a.encode_to_vec().as_slice())
        .map_err(|e| Status::internal(format!("passing on a {}: {e}", std::any::type_name::<A>())))
}

fn tools_error(s: Status) -> Status {
    bridle_core::client::call_error("tools service", s).into()
}

#[tonic::async_trait]
impl pb::orchestrator_server::Orchestrator for OrchestratorService {
    async fn start_run(
        &self,
        req: Request<pb::StartRunRequest>,
    ) -> Result<Response<pb::StartRunResponse>, Status> {
        let p = principal(&req);
        p.require(Role::Operator)?;
        // The caller's span, when it sent its trace context: the run's trace joins it.
        let caller = bridle_core::telemetry::caller_span(&req.metadata().clone().into_headers());
        let req = req.into_inner();
        let tenant = p.tenant_for(&req.tenant)?;
        let agent = AgentName::parse(&req.agent)
            .map_err(|e| Error::InvalidArgument(format!("agent: {e}")))?;
        if req.input.trim().is_empty() && req.tool_call.is_none() {
            return Err(Error::InvalidArgument("input: must not be empty".into()).into());
        }
        if req.end_user.len() > 256 || req.end_user.chars().any(char::is_control) {
            return Err(Error::InvalidArgument(
                "end_user: at most 256 bytes, without control characters".into(),
            )
            .into());
        }
        let started_by = Actor::of(&p);
        let run_id = RunId::new();
        if !req.idempotency_key.is_empty() {
            if req.idempotency_key.len() > 256 {
                return Err(Error::InvalidArgument(
                    "idempotency_key: at most 256 characters".into(),
                )
                .into());
            }
            if let Some(holder) = self
                .engine
                .store
                .claim_idempotency(&tenant, &req.idempotency_key, &run_id)
                .await
                .map_err(|e| e.doing("the run was not created"))?
            {
                // Same key, same run — even while the first request is still creating it.
                let id = self
                    .settle_idempotency(&tenant, &agent, &req, &started_by, holder)
                    .await?;
                let run = match self.engine.store.load(&id).await? {
                    Some(l) => {
                        bridle_core::telemetry::link_current_to_run(
                            &l.state.trace.trace_id,
                            &l.state.trace.span_id,
                        );
                        l.state.to_pb(l.offset)
                    }
                    None => pb::Run {
                        id: id.to_string(),
                        tenant: tenant.to_string(),
                        agent: req.agent.clone(),
                        ..Default::default()
                    },
                };
                return Ok(Response::new(pb::StartRunResponse {
                    run: Some(run),
                    created: false,
                }));
            }
        }
        let state = match self
            .create_run(&tenant, &agent, &req, &run_id, caller, &started_by)
            .await
        {
            Ok(s) => s,
            Err(e) => {
                if !req.idempotency_key.is_empty() {
                    // The key must not name a run that does not exist: a retry with it would
                    // be told the run was created.
                    self.engine
                        .store
                        .release_idempotency(&tenant, &req.idempotency_key, &run_id)
                        .await;
                }
                return Err(e.doing("the run was not created").into());
            }
        };
        if !req.idempotency_key.is_empty() {
            self.engine
                .store
                .confirm_idempotency(&tenant, &req.idempotency_key, &run_id)
                .await;
        }
        bridle_core::telemetry::link_current_to_run(&state.trace.trace_id, &state.trace.span_id);
        tracing::info!(run = %run_id, agent = %req.agent, tenant = %tenant, started_by = %started_by.id, "run started");
        Ok(Response::new(pb::StartRunResponse {
            run: Some(state.to_pb(1)),
            created: true,
        }))
    }

    async fn get_run(&self, req: Request<pb::GetRunRequest>) -> Result<Response<pb::Run>, Status> {
        let p = principal(&req);
        p.require(Role::Viewer)?;
        let l = self.visible_run(&p, &req.into_inner().run_id).await?;
        Ok(Response::new(l.state.to_pb(l.offset)))
    }

    async fn list_runs(
        &self,
        req: Request<pb::ListRunsRequest>,
    ) -> Result<Response<pb::ListRunsResponse>, Status> {
        let p = principal(&req);
        p.require(Role::Viewer)?;
        let req = req.into_inner();
        let tenant = p.tenant_for(&req.tenant)?;
        let asked = Page::parse(req.page_size, &req.page_token, Some(50), MAX_PAGE_SIZE)?;
        let page = asked.size.unwrap_or(50);
        let mut start = asked.offset()?;
        let mut runs = Vec::new();
        let want_status = pb::RunStatus::try_from(req.status).unwrap_or(pb::RunStatus::Unspecified);
        // Filters are applied after reading the index; read in batches until the page is full.
        loop {
            let ids = self.engine.store.list_ids(&tenant, start, page * 2).await?;
            let n = ids.len();
            for id in ids {
                start += 1;
                let Some(l) = self.engine.store.load(&id).await? else {
                    continue;
                };
                let run = l.state.to_pb(l.offset);
                if (!req.agent.is_empty() && run.agent != req.agent)
                    || (want_status != pb::RunStatus::Unspecified
                        && run.status != want_status as i32)
                {
                    continue;
                }
                runs.push(run);
                if runs.len() == page {
                    break;
                }
            }
            if runs.len() == page || n < page * 2 {
                let more = runs.len() == page;
                return Ok(Response::new(pb::ListRunsResponse {
                    runs,
                    next_page_token: if more {
                        paging::token(&start.to_string())
                    } else {
                        String::new()
                    },
                }));
            }
        }
    }

    async fn cancel_run(
        &self,
        req: Request<pb::CancelRunRequest>,
    ) -> Result<Response<pb::Run>, Status> {
        let p = principal(&req);
        p.require(Role::Operator)?;
        let req = req.into_inner();
        let id = self.visible_run(&p, &req.run_id).await?.state.id;
        let l = self.engine.cancel(&id, &req.reason, &Actor::of(&p)).await?;
        Ok(Response::new(l.state.to_pb(l.offset)))
    }

    type WatchRunStream = EventStream;

    async fn watch_run(
        &self,
        req: Request<pb::WatchRunRequest>,
    ) -> Result<Response<Self::WatchRunStream>, Status> {
        let p = principal(&req);
        p.require(Role::Viewer)?;
        let req = req.into_inner();
        // NOT_FOUND now, rather than an empty stream.
        let l = self.visible_run(&p, &req.run_id).await?;
        let store = self.engine.store.clone();
        let shutdown = self.shutdown.clone();
        let run_id = l.state.id.clone();
        let follow = req.follow && !l.state.status.is_terminal();
        // Registered before the first read, so a checkpoint that lands between a read and
        // the wait still wakes this watcher (`crate::events`).
        let mut watch = follow.then(|| self.events.watch(&run_id));
        let mut after = req.from_offset;
        let stream = async_stream::try_stream! {
            'read: loop {
                let batch = store.events_after(&run_id, after, 256).await.map_err(Status::from)?;
                let n = batch.len();
                for ev in batch {
                    after = ev.offset;
                    let end = matches!(ev.kind, Some(Kind::RunFinished(_)));
                    yield ev;
                    if end {
                        break 'read;
                    }
                }
                if n == 256 {
                    continue;
                }
                let Some(w) = watch.as_mut() else { break };
                let woken = tokio::select! {
                    _ = w.wait() => true,
                    _ = shutdown.triggered() => false,
                };
                if !woken {
                    Err(Status::unavailable("the orchestrator is shutting down; resume watching from the last offset"))?;
                }
            }
        };
        Ok(Response::new(Box::pin(stream)))
    }

    async fn describe_agent(
        &self,
        req: Request<pb::DescribeAgentRequest>,
    ) -> Result<Response<pb::AgentDescription>, Status> {
        let p = principal(&req);
        p.require(Role::Viewer)?;
        let req = req.into_inner();
        let tenant = p.tenant_for(&req.tenant)?;
        let name = AgentName::parse(&req.name)
            .map_err(|e| Error::InvalidArgument(format!("name: {e}")))?;
        let a = self.agent(&tenant, &name).await?;
        let tools = self.tools_of(&tenant, &a).await?;
        Ok(Response::new(pb::AgentDescription {
            agent: Some(summary(&a, &tenant)),
            tools: tools.iter().map(ToolInfo::to_pb).collect(),
        }))
    }

    async fn begin_tool_authorization(
        &self,
        req: Request<pb::BeginToolAuthorizationRequest>,
    ) -> Result<Response<pb::BeginToolAuthorizationResponse>, Status> {
        let (req, mut tools) = self.for_tools(req)?;
        let r = tools
            .begin_authorization(recast::<_, pb::BeginAuthorizationRequest>(&req)?)
            .await
            .map_err(tools_error)?;
        Ok(Response::new(recast(r.get_ref())?))
    }

    async fn complete_tool_authorization(
        &self,
        req: Request<pb::CompleteToolAuthorizationRequest>,
    ) -> Result<Response<pb::CompleteToolAuthorizationResponse>, Status> {
        let (req, mut tools) = self.for_tools(req)?;
        let r = tools
            .complete_authorization(recast::<_, pb::CompleteAuthorizationRequest>(&req)?)
            .await
            .map_err(tools_error)?;
        Ok(Response::new(recast(r.get_ref())?))
    }

    async fn revoke_tool_authorization(
        &self,
        req: Request<pb::RevokeToolAuthorizationRequest>,
    ) -> Result<Response<pb::RevokeToolAuthorizationResponse>, Status> {
        let (req, mut tools) = self.for_tools(req)?;
        let r = tools
            .revoke_authorization(recast::<_, pb::RevokeAuthorizationRequest>(&req)?)
            .await
            .map_err(tools_error)?;
        Ok(Response::new(recast(r.get_ref())?))
    }

    async fn list_models(
        &self,
        req: Request<pb::OrchestratorListModelsRequest>,
    ) -> Result<Response<pb::OrchestratorListModelsResponse>, Status> {
        let p = principal(&req);
        p.require(Role::Viewer)?;
        let mut req = req.into_inner();
        req.tenant = p.tenant_for(&req.tenant)?.into();
        let resp = self
            .engine
            .clients
            .router
            .clone()
            .list_models(recast::<_, pb::ListModelsRequest>(&req)?)
            .await
            .map_err(|s| Status::from(bridle_core::client::call_error("router", s)))?;
        Ok(Response::new(recast(resp.get_ref())?))
    }

    async fn get_spend(
        &self,
        req: Request<pb::GetSpendRequest>,
    ) -> Result<Response<pb::GetSpendResponse>, Status> {
        let p = principal(&req);
        p.require(Role::Viewer)?;
        let mut req = req.into_inner();
        req.tenant = p.tenant_for(&req.tenant)?.into();
        let resp = self
            .engine
            .clients
            .router
            .clone()
            .spend(recast::<_, pb::SpendRequest>(&req)?)
            .await
            .map_err(|s| Status::from(bridle_core::client::call_error("router", s)))?;
        Ok(Response::new(recast(resp.get_ref())?))
    }

    async fn list_agents(
        &self,
        req: Request<pb::ListAgentsRequest>,
    ) -> Result<Response<pb::ListAgentsResponse>, Status> {
        let p = principal(&req);
        p.require(Role::Viewer)?;
        let req = req.into_inner();
        let tenant = p.tenant_for(&req.tenant)?;
        let page = Page::parse(req.page_size, &req.page_token, None, MAX_PAGE_SIZE)?;
        let list = self.agents.list(&tenant, Some("Agent")).await?;
        let mut agents: Vec<pb::AgentSummary> = list
            .into_iter()
            .filter_map(|(m, _)| match m {
                Manifest::Agent(a) => Some(summary(&a, &tenant)),
                _ => None,
            })
            .collect();
        agents.sort_by(|a, b| a.name.cmp(&b.name));
        let (agents, next_page_token) = page.of_sorted(agents, |a| a.name.clone());
        Ok(Response::new(pb::ListAgentsResponse {
            agents,
            next_page_token,
        }))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn a_routes_model_is_remembered_per_tenant() {
        let m = RouteModels::default();
        let acme = TenantId::parse("acme").unwrap();
        let other = TenantId::parse("other").unwrap();
        m.put_all(
            &acme,
            [
                ("default".to_string(), "gpt-4o".to_string()),
                ("cheap".to_string(), "gpt-4o-mini".to_string()),
            ]
            .into_iter(),
        );
        assert_eq!(m.get(&acme, "default").as_deref(), Some("gpt-4o"));
        assert_eq!(m.get(&acme, "cheap").as_deref(), Some("gpt-4o-mini"));
        assert_eq!(m.get(&acme, "absent"), None);
        assert_eq!(m.get(&other, "default"), None);
    }

    fn tool(name: &str) -> ToolInfo {
        ToolInfo {
            name: name.into(),
            description: String::new(),
            schema: "{}".into(),
            risk: 1,
            kind: "http".into(),
            tags: vec![],
            risk_source: String::new(),
            approvers: None,
        }
    }

    fn req(name: &str, args: &str) -> pb::StartRunRequest {
        pb::StartRunRequest {
            agent: "analyst".into(),
            tool_call: Some(pb::ToolCall {
                id: "ignored".into(),
                name: name.into(),
                arguments_json: args.into(),
            }),
            ..Default::default()
        }
    }

    #[test]
    fn a_direct_call_names_one_of_the_agents_tools_with_an_object_of_arguments() {
        let tools = [tool("python"), tool("delete")];
        let c = direct_call(&req("python", r#"{"code": "1"}"#), &tools)
            .unwrap()
            .unwrap();
        assert_eq!(
            (c.id.as_str(), c.name.as_str(), c.arguments.as_str()),
            ("call_1", "python", r#"{"code": "1"}"#)
        );
        // No arguments: an empty object.
        let c = direct_call(&req("python", " "), &tools).unwrap().unwrap();
        assert_eq!(c.arguments, "{}");
        // Not a direct call at all.
        let plain = pb::StartRunRequest::default();
        assert!(direct_call(&plain, &tools).unwrap().is_none());

        let e = direct_call(&req("rm", "{}"), &tools)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("agent 'analyst' has no tool 'rm' (its tools: delete, python)"),
            "{e}"
        );
        let e = direct_call(&req("python", "[1]"), &tools)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("tool_call.arguments_json: must be a JSON object"),
            "{e}"
        );
        let e = direct_call(&req("python", "{"), &tools)
            .unwrap_err()
            .to_string();
        assert!(e.contains("tool_call.arguments_json: not JSON"), "{e}");
    }
}
