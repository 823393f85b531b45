//! The `bridle.v1.Approvals` gRPC service: request validation and the mapping between the
//! contract and the policy engine and store.

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bridle_core::auth::{AuthMode, Principal, Role, principal};
use bridle_core::ids;
use bridle_core::timeutil::{now_ms, std_duration};
use bridle_proto::approvals_server::Approvals;
use bridle_proto::{
    Approval, ApprovalEvent, ApprovalState, DecideRequest, EvaluateRequest, EvaluateResponse,
    GetApprovalRequest, ListApprovalsRequest, ListApprovalsResponse, WatchApprovalsRequest,
};
use futures::Stream;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status};

use crate::canonical::arguments_sha256;
use crate::error::quote;
use crate::policies::Policies;
use crate::policy::{Decision, PolicyInput, decide};
use crate::record::NewApproval;
use crate::store::{EvalOutcome, Store};
use crate::{Error, watch};

const MAX_CALL_ID: usize = 256;
const MAX_TOOL_NAME: usize = 256;
const MAX_APPROVER: usize = 256;
const MAX_REASON: usize = 4096;
const DEFAULT_PAGE: usize = 50;

pub struct ApprovalsService {
    store: Store,
    policies: Arc<Policies>,
    default_ttl: Duration,
    auth_mode: AuthMode,
    stop: CancellationToken,
}

/// Who a decision is recorded as made by: the authenticated caller (its key's name and id, or
/// the service), and only when auth is off the name the caller gave (`requested`).
/// Who decides: the name recorded as `decided_by`, the id that tells distinct people apart,
/// and the groups the tool's `approvers.groups` are checked against.
#[derive(Clone, Debug)]
pub struct Decider {
    pub name: String,
    pub id: String,
    pub groups: Vec<String>,
}

impl Decider {
    /// The caller of a decision (with auth off, the request's `approver` names the person).
    pub fn of(p: &Principal, mode: AuthMode, requested: &str) -> Self {
        let name = approver_name(p, mode, requested);
        let id = match mode {
            AuthMode::Off => format!("name:{name}"),
            AuthMode::Keys => p.id.clone(),
        };
        Self {
            name,
            id,
            groups: p.groups.clone(),
        }
    }
}

pub fn approver_name(p: &Principal, mode: AuthMode, requested: &str) -> String {
    match mode {
        AuthMode::Off => {
            let r = requested.trim();
            if r.is_empty() { "anonymous" } else { r }.to_string()
        }
        AuthMode::Keys if p.service => format!("service:{}", p.name),
        AuthMode::Keys => format!("{} ({})", p.name, p.id),
    }
}

impl ApprovalsService {
    pub fn new(
        store: Store,
        policies: Arc<Policies>,
        default_ttl: Duration,
        auth_mode: AuthMode,
        stop: CancellationToken,
    ) -> Self {
        Self {
            store,
            policies,
            default_ttl,
            auth_mode,
            stop,
        }
    }

    pub fn store(&self) -> &Store {
        &self.store
    }
}

fn invalid(msg: impl Into<String>) -> Error {
    Error::InvalidArgument(msg.into())
}

/// Longest name `ids::check_name` accepts.
const MAX_NAME: usize = 63;

pub(crate) fn check_name(field: &str, value: &str) -> Result<(), Error> {
    // ids::check_name quotes the whole name: past its length limit, say so without the rest.
    if value.len() > MAX_NAME {
        return Err(invalid(format!(
            "{field}: '{}' is longer than {MAX_NAME} characters",
            quote(value)
        )));
    }
    ids::check_name(value).map_err(|e| invalid(format!("{field}: {e}")))
}

fn check_len(field: &str, value: &str, max: usize) -> Result<(), Error> {
    if value.chars().count() > max {
        return Err(invalid(format!("{field}: longer than {max} characters")));
    }
    Ok(())
}

fn check_approval_id(id: &str) -> Result<(), Error> {
    ids::check_id("approval id", "apr", id).map_err(Error::from)
}

impl ApprovalsService {
    /// `traceparent`: the caller's span (the run's policy check), kept with an approval.
    async fn do_evaluate(
        &self,
        req: EvaluateRequest,
        traceparent: Option<String>,
    ) -> Result<EvaluateResponse, Error> {
        let scope = req.scope.clone().unwrap_or_default();
        check_name("scope.tenant", &scope.tenant)?;
        check_name("scope.agent", &scope.agent)?;
        ids::check_id("scope.run_id", "run", &scope.run_id)?;
        if req.call_id.is_empty() {
            return Err(invalid("call_id: must not be empty"));
        }
        check_len("call_id", &req.call_id, MAX_CALL_ID)?;
        let tool = req.tool.clone().unwrap_or_default();
        if tool.name.is_empty() {
            return Err(invalid("tool.name: must not be empty"));
        }
        // Any other name is judged by the policy (an unknown tool is denied), not refused here.
        check_len("tool.name", &tool.name, MAX_TOOL_NAME)?;
        if !scope.tool.is_empty() && scope.tool != tool.name {
            return Err(invalid(format!(
                "scope.tool '{}' and tool.name '{}' disagree; which call is this?",
                quote(&scope.tool),
                quote(&tool.name)
            )));
        }

        let sha = arguments_sha256(&req.arguments_json);
        let engine = self.policies.engine(&scope.tenant).await?;
        let verdict = decide(
            engine.as_ref(),
            &PolicyInput {
                tenant: &scope.tenant,
                agent: &scope.agent,
                run_id: &scope.run_id,
                step: req.step,
                call_id: &req.call_id,
                tool: &tool,
                arguments_json: &req.arguments_json,
                arguments_sha256: &sha,
                facts: req.facts.as_ref(),
                granted_tools: &req.granted_tools,
                approval_required_tools: &req.approval_required_tools,
            },
        )?;

        let now = now_ms();
        let ttl = std_duration(req.approval_ttl.as_ref()).unwrap_or(self.default_ttl);
        let ttl_ms = i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX);
        let candidate = NewApproval {
            id: ids::new_approval_id(),
            tenant: scope.tenant.clone(),
            agent: scope.agent.clone(),
            run_id: scope.run_id.clone(),
            step: req.step,
            call_id: req.call_id.clone(),
            tool: tool.name.clone(),
            arguments_json: req.arguments_json,
            arguments_sha256: sha.clone(),
            risk: tool.risk,
            created_ms: now,
            expires_ms: now.saturating_add(ttl_ms),
            policy_reason: verdict.reason.clone(),
            policy_ids: verdict.policies.clone(),
            traceparent: traceparent.unwrap_or_default(),
            facts: req.facts.unwrap_or_default(),
            duties: crate::record::Duties {
                groups: tool
                    .approvers
                    .as_ref()
                    .map(|a| a.groups.clone())
                    .unwrap_or_default(),
                required: tool.approvers.as_ref().map_or(1, |a| {
                    a.count.clamp(1, bridle_core::manifest::MAX_APPROVERS)
                }),
                not_the_starter: tool.approvers.as_ref().is_some_and(|a| a.not_the_starter),
                started_by: req.started_by.map(|a| a.id).unwrap_or_default(),
            },
        };
        let outcome = self
            .store
            .record_evaluation(verdict.decision, &verdict.reason, &candidate)
            .await?;
        let log = |decision: Decision, approval: &str| {
            tracing::info!(
                tenant = %scope.tenant,
                agent = %scope.agent,
                run = %scope.run_id,
                step = req.step,
                call = %req.call_id,
                tool = %tool.name,
                decision = decision.as_str(),
                approval,
                "evaluated"
            );
        };
        match outcome {
            EvalOutcome::Decided => {
                log(verdict.decision, "");
                Ok(EvaluateResponse {
                    decision: verdict.decision.to_proto() as i32,
                    reason: verdict.reason,
                    approval: None,
                    policy_ids: verdict.policies,
                })
            }
            EvalOutcome::Created(id) | EvalOutcome::Existing(id) => {
                log(Decision::RequireApproval, &id);
                let approval = self.store.get(&id).await?;
                Ok(EvaluateResponse {
                    decision: Decision::RequireApproval.to_proto() as i32,
                    reason: approval.policy_reason.clone(),
                    policy_ids: approval.policy_ids.clone(),
                    approval: Some(approval),
                })
            }
            EvalOutcome::Conflict { id, stored_sha256 } => Err(Error::Refused(format!(
                "call '{}' of run {} step {} already has approval {id} for other arguments \
                 (sha256 {stored_sha256}, now {sha}); an approval binds to exact arguments",
                req.call_id, scope.run_id, req.step
            ))),
        }
    }

    /// The approval, when `p` may see it (one of another tenant is "not found").
    async fn visible(&self, p: &Principal, id: &str) -> Result<Approval, Error> {
        check_approval_id(id)?;
        let (a, traceparent) = self.store.get_traced(id).await?;
        if !p.sees(&a.tenant) {
            return Err(Error::NotFound(id.to_string()));
        }
        // A read of an approval (the orchestrator's, a person's) links to the run that asked.
        if let Some(tp) = &traceparent {
            bridle_core::telemetry::link_current_to(tp);
        }
        Ok(a)
    }

    async fn do_decide(&self, p: &Principal, req: DecideRequest) -> Result<Approval, Error> {
        p.require(Role::Approver)?;
        check_approval_id(&req.id)?;
        // Another tenant's approval is "not found"; a missing one is reported by decide.
        if let Some(t) = self.store.tenant_of(&req.id).await?
            && !p.sees(&t)
        {
            return Err(Error::NotFound(req.id));
        }
        let approver = Decider::of(p, self.auth_mode, &req.approver);
        self.decide_as(&req, &approver).await
    }

    /// Decides `req` on behalf of `approver` (whoever the caller proved to be; the gRPC
    /// `approver` field only when auth is off). Shared by gRPC and the web inbox.
    pub async fn decide_as(
        &self,
        req: &DecideRequest,
        decider: &Decider,
    ) -> Result<Approval, Error> {
        let approver = decider.name.as_str();
        check_approval_id(&req.id)?;
        if approver.is_empty() {
            return Err(invalid("approver: must not be empty"));
        }
        check_len("approver", approver, MAX_APPROVER)?;
        check_len("reason", &req.reason, MAX_REASON)?;
        let want = req.arguments_sha256.to_ascii_lowercase();
        if !want.is_empty() && (want.len() != 64 || !want.bytes().all(|b| b.is_ascii_hexdigit())) {
            return Err(invalid(
                "arguments_sha256: expected 64 hex digits (or nothing)",
            ));
        }
        let (a, traceparent) = self
            .store
            .decide(&req.id, req.approve, decider, &req.reason, &want)
            .await?;
        // The decision in the run's trace too (under the policy check that asked, linked to
        // this call), with the log line in it: the run's trace answers who decided and why.
        let outcome = if a.state == bridle_proto::ApprovalState::Pending as i32 {
            // Approved, and waiting for approvals from other people (approvers.count).
            "approval_added"
        } else if req.approve {
            "approved"
        } else {
            "denied"
        };
        let span = tracing::info_span!(
            "decide_approval",
            "otel.name" = %format!("decide_approval {}", a.tool),
            "otel.kind" = "internal",
            "gen_ai.conversation.id" = %a.run_id,
            "gen_ai.agent.name" = %a.agent,
            "gen_ai.tool.name" = %a.tool,
            "gen_ai.tool.call.id" = %a.call_id,
            "bridle.tenant" = %a.tenant,
            "bridle.approval.id" = %a.id,
            "bridle.approval.outcome" = outcome,
            "bridle.approval.decided_by" = approver,
            "bridle.approval.reason" = tracing::field::Empty,
        );
        if !req.reason.is_empty() {
            span.record("bridle.approval.reason", req.reason.as_str());
        }
        if let Some(tp) = &traceparent {
            bridle_core::telemetry::link_current_to(tp);
            bridle_core::telemetry::place_in(&span, tp);
        }
        span.in_scope(|| {
            tracing::info!(
                approval = %a.id,
                tenant = %a.tenant,
                run = %a.run_id,
                call = %a.call_id,
                approve = req.approve,
                approver,
                "decided"
            );
        });
        Ok(a)
    }

    async fn do_list(
        &self,
        p: &Principal,
        mut req: ListApprovalsRequest,
    ) -> Result<ListApprovalsResponse, Error> {
        p.require(Role::Viewer)?;
        // Longer than a name may be: said without quoting it all (then the one tenant rule).
        if !req.tenant.is_empty() {
            check_name("tenant", &req.tenant)?;
        }
        req.tenant = p.tenant_for(&req.tenant)?.into();
        let state = match ApprovalState::try_from(req.state) {
            Ok(ApprovalState::Unspecified) => ApprovalState::Pending,
            Ok(s) => s,
            Err(_) => {
                return Err(invalid(format!(
                    "state: {} is not an approval state",
                    req.state
                )));
            }
        };
        let run = (!req.run_id.is_empty()).then_some(req.run_id.as_str());
        if let Some(r) = run {
            ids::check_id("run_id", "run", r)?;
        }
        let page = bridle_core::paging::Page::parse(
            req.page_size,
            &req.page_token,
            Some(DEFAULT_PAGE),
            bridle_core::paging::MAX_PAGE_SIZE,
        )?;
        let limit = page.size.unwrap_or(DEFAULT_PAGE);
        let (approvals, next) = self
            .store
            .list(&req.tenant, state, run, page.offset()?, limit)
            .await?;
        Ok(ListApprovalsResponse {
            approvals,
            next_page_token: next
                .map(|n| bridle_core::paging::token(&n.to_string()))
                .unwrap_or_default(),
        })
    }
}

type WatchStream = Pin<Box<dyn Stream<Item = Result<ApprovalEvent, Status>> + Send + 'static>>;

#[tonic::async_trait]
impl Approvals for ApprovalsService {
    async fn evaluate(
        &self,
        req: Request<EvaluateRequest>,
    ) -> Result<Response<EvaluateResponse>, Status> {
        // Evaluate creates approvals for any tenant: Bridle services only (or anyone, with
        // auth off, where every caller is the anonymous admin of every tenant).
        let p = principal(&req);
        if !(p.service || (p.tenant.is_none() && p.has(Role::Admin))) {
            return Err(Status::permission_denied(format!(
                "Evaluate is for Bridle services; '{}' is not one",
                p.name
            )));
        }
        let traceparent =
            bridle_core::telemetry::traceparent_of(&req.metadata().clone().into_headers());
        Ok(Response::new(
            self.do_evaluate(req.into_inner(), traceparent).await?,
        ))
    }

    async fn list(
        &self,
        req: Request<ListApprovalsRequest>,
    ) -> Result<Response<ListApprovalsResponse>, Status> {
        let p = principal(&req);
        Ok(Response::new(self.do_list(&p, req.into_inner()).await?))
    }

    async fn get(&self, req: Request<GetApprovalRequest>) -> Result<Response<Approval>, Status> {
        let p = principal(&req);
        p.require(Role::Viewer).map_err(Error::from)?;
        Ok(Response::new(self.visible(&p, &req.into_inner().id).await?))
    }

    async fn decide(&self, req: Request<DecideRequest>) -> Result<Response<Approval>, Status> {
        let p = principal(&req);
        Ok(Response::new(self.do_decide(&p, req.into_inner()).await?))
    }

    type WatchStream = WatchStream;

    async fn watch(
        &self,
        req: Request<WatchApprovalsRequest>,
    ) -> Result<Response<WatchStream>, Status> {
        let p = principal(&req);
        p.require(Role::Viewer).map_err(Error::from)?;
        let req = req.into_inner();
        if !req.tenant.is_empty() {
            check_name("tenant", &req.tenant)?;
        }
        // Empty from a caller bound to no tenant (the orchestrator's listener): every tenant.
        let tenant = p
            .tenants_for(&req.tenant)
            .map_err(Error::from)?
            .map(String::from);
        // Connect before answering, so a Redis outage is an error, not an empty stream.
        let mut conn = self
            .store
            .dedicated_connection(watch::RESPONSE_TIMEOUT)
            .await?;
        watch::check_from(&mut conn, self.store.keys(), req.from_offset).await?;
        let events = watch::events(
            self.store.keys().events(),
            conn,
            req.from_offset,
            tenant,
            self.stop.clone(),
        );
        Ok(Response::new(Box::pin(events)))
    }
}
