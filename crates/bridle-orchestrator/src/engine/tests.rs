//! The engine's logic, one decision at a time, against a real Redis (the testkit's) and a
//! policy service the test scripts: the budgets, the tool gate, cancel, and the fence that
//! stops a stale writer. The other services are absent (their addresses refuse connections),
//! so any call the engine should not make shows as a retry instead of passing unnoticed.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bridle_core::Shutdown;
use bridle_core::ids::RunId;
use bridle_core::redis_util::Keys;
use bridle_proto as pb;
use bridle_proto::run_event::Kind;
use tonic::{Request, Response, Status};

use super::{Cursor, Engine, Outcome};
use crate::Error;
use crate::clients::Clients;
use crate::state::{
    Actor, Call, ContextInfo, End, EndReason, Gate, Limits, Moment, NewRun, Phase, RunState,
    Status as RunStatus, TraceIds,
};
use crate::store::{Lifetimes, RunStore};

/// An address nothing listens on: calls to it fail with UNAVAILABLE.
const NOWHERE: &str = "http://127.0.0.1:9";

/// What the scripted policy service answers.
#[derive(Clone)]
enum Policy {
    Allow,
    Deny(&'static str),
    /// Evaluate asks for approval; Get answers with the approval in `state`.
    Approval(pb::ApprovalState),
    /// Evaluate fails with this code.
    Fails(tonic::Code),
}

#[derive(Clone)]
struct FakeApprovals {
    policy: Arc<Mutex<Policy>>,
    evaluated: Arc<Mutex<u32>>,
}

impl FakeApprovals {
    fn policy(&self) -> Policy {
        self.policy.lock().unwrap().clone()
    }

    fn approval(&self, state: pb::ApprovalState) -> pb::Approval {
        pb::Approval {
            id: "apr_01".into(),
            state: state as i32,
            decided_by: if state == pb::ApprovalState::Pending {
                String::new()
            } else {
                "ana".into()
            },
            reason: "looked at it".into(),
            ..Default::default()
        }
    }
}

#[tonic::async_trait]
impl pb::approvals_server::Approvals for FakeApprovals {
    async fn evaluate(
        &self,
        _: Request<pb::EvaluateRequest>,
    ) -> Result<Response<pb::EvaluateResponse>, Status> {
        *self.evaluated.lock().unwrap() += 1;
        let (decision, reason, approval) = match self.policy() {
            Policy::Allow => (pb::PolicyDecision::Allow, String::new(), None),
            Policy::Deny(why) => (pb::PolicyDecision::Deny, why.to_string(), None),
            Policy::Approval(s) => (
                pb::PolicyDecision::RequireApproval,
                "destructive".into(),
                Some(self.approval(s)),
            ),
            Policy::Fails(code) => return Err(Status::new(code, "the policy store is broken")),
        };
        Ok(Response::new(pb::EvaluateResponse {
            decision: decision as i32,
            reason,
            approval,
            policy_ids: Vec::new(),
        }))
    }

    async fn list(
        &self,
        _: Request<pb::ListApprovalsRequest>,
    ) -> Result<Response<pb::ListApprovalsResponse>, Status> {
        Err(Status::unimplemented("not used by the engine"))
    }

    async fn get(
        &self,
        _: Request<pb::GetApprovalRequest>,
    ) -> Result<Response<pb::Approval>, Status> {
        match self.policy() {
            Policy::Approval(s) => Ok(Response::new(self.approval(s))),
            _ => Err(Status::not_found("no such approval")),
        }
    }

    async fn decide(
        &self,
        _: Request<pb::DecideRequest>,
    ) -> Result<Response<pb::Approval>, Status> {
        Err(Status::unimplemented("not used by the engine"))
    }

    type WatchStream = futures::stream::Empty<Result<pb::ApprovalEvent, Status>>;

    async fn watch(
        &self,
        _: Request<pb::WatchApprovalsRequest>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        Err(Status::unimplemented("not used by the engine"))
    }
}

struct Harness {
    redis: bridle_testkit::RedisServer,
    engine: Engine,
    approvals: FakeApprovals,
    stop: Shutdown,
}

impl Harness {
    async fn start(policy: Policy) -> Harness {
        let redis = bridle_testkit::RedisServer::start().await.unwrap();
        let approvals = FakeApprovals {
            policy: Arc::new(Mutex::new(policy)),
            evaluated: Arc::new(Mutex::new(0)),
        };
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let stop = Shutdown::new();
        let server = tonic::transport::Server::builder()
            .add_service(pb::approvals_server::ApprovalsServer::new(
                approvals.clone(),
            ))
            .serve_with_incoming_shutdown(
                tokio_stream::wrappers::TcpListenerStream::new(listener),
                {
                    let stop = stop.clone();
                    async move { stop.triggered().await }
                },
            );
        stop.spawn(async move {
            let _ = server.await;
        });
        let opts = crate::Options {
            redis_url: redis.url(),
            router_url: NOWHERE.into(),
            tools_url: NOWHERE.into(),
            secrets_url: NOWHERE.into(),
            approvals_url: format!("http://{addr}"),
            ..Default::default()
        };
        let conn = bridle_core::redis_util::connect(&redis.url())
            .await
            .unwrap();
        let store = RunStore::new(conn, Keys::new("t"), Lifetimes::default(), 1);
        let engine = Engine {
            store,
            clients: Clients::new(&opts).unwrap(),
            model_timeout: Duration::from_secs(5),
            tool_timeout: Duration::from_secs(5),
        };
        Harness {
            redis,
            engine,
            approvals,
            stop,
        }
    }

    fn set_policy(&self, p: Policy) {
        *self.approvals.policy.lock().unwrap() = p;
    }

    fn evaluations(&self) -> u32 {
        *self.approvals.evaluated.lock().unwrap()
    }

    /// Writes a run and returns its id.
    async fn create(&self, direct: Option<Call>, limits: Limits) -> RunId {
        let id = RunId::new();
        let (state, first) = RunState::new(new_run(&id, direct, limits));
        self.engine.store.create(&state, &first).await.unwrap();
        id
    }

    async fn advance(&self, id: &RunId) -> Outcome {
        self.engine.advance(id, &self.stop).await.unwrap()
    }

    async fn state(&self, id: &RunId) -> RunState {
        self.engine.store.load_required(id).await.unwrap().state
    }

    async fn events(&self, id: &RunId) -> Vec<Kind> {
        let evs = self.engine.store.events_after(id, 0, 1000).await.unwrap();
        evs.into_iter().filter_map(|e| e.kind).collect()
    }
}

impl Drop for Harness {
    fn drop(&mut self) {
        self.stop.trigger();
    }
}

fn spec() -> bridle_core::manifest::AgentSpec {
    serde_json::from_value(serde_json::json!({ "route": "default", "tools": ["drop-table"] }))
        .unwrap()
}

fn limits() -> Limits {
    Limits::resolve(&spec(), None)
}

fn call() -> Call {
    Call {
        id: "call_1".into(),
        name: "drop-table".into(),
        arguments: r#"{"table":"users"}"#.into(),
    }
}

fn new_run(id: &RunId, direct: Option<Call>, limits: Limits) -> NewRun {
    NewRun {
        id: id.clone(),
        tenant: bridle_core::ids::TenantId::parse("acme").unwrap(),
        agent: bridle_core::ids::AgentName::parse("analyst").unwrap(),
        spec: spec(),
        input: "clean up".into(),
        tools: Vec::new(),
        limits,
        direct,
        context: ContextInfo::default(),
        idempotency_key: String::new(),
        labels: Default::default(),
        trace: TraceIds::default(),
        started_by: Actor {
            id: "key_1".into(),
            name: "ci".into(),
            kind: "api_key".into(),
        },
        end_user: String::new(),
        now_ms: bridle_core::timeutil::now_ms(),
    }
}

/// The tool message the model sees next.
fn tool_result(s: &RunState) -> &crate::state::Msg {
    s.messages
        .iter()
        .find(|m| m.role == "tool")
        .expect("a tool result")
}

fn gate_of(s: &RunState) -> Gate {
    match &s.phase {
        Phase::Tools { calls, .. } => calls[0].gate.clone(),
        Phase::Model => panic!("the run left the tool phase: {:?}", s.phase),
    }
}

// ---- budgets ----

fn state_with(limits: Limits) -> RunState {
    RunState::new(new_run(&RunId::new(), None, limits)).0
}

#[test]
fn before_a_model_call_a_budget_used_to_the_last_unit_leaves_nothing() {
    let mut s = state_with(Limits {
        max_steps: 3,
        max_tokens: Some(100),
        max_cost_nano_usd: Some(1_000),
        max_wall_time_ms: None,
    });
    let now = s.created_ms;
    assert_eq!(s.over_budget(Moment::BeforeModel, now), None);

    s.totals.input_tokens = 100;
    let end = s.over_budget(Moment::BeforeModel, now).unwrap();
    assert_eq!(end.reason, EndReason::TokenBudget);
    assert_eq!(end.status, RunStatus::Failed);
    assert_eq!(end.error, "token budget of 100 used (100 tokens)");

    s.totals.input_tokens = 10;
    s.totals.cost_nano_usd = 1_000;
    let end = s.over_budget(Moment::BeforeModel, now).unwrap();
    assert_eq!(end.reason, EndReason::CostBudget);

    s.totals.cost_nano_usd = 0;
    s.step = 3;
    let end = s.over_budget(Moment::BeforeModel, now).unwrap();
    assert_eq!(end.reason, EndReason::MaxSteps);
    assert_eq!(
        end.error,
        "reached the step budget (3) without a final answer"
    );
}

#[test]
fn after_a_model_call_only_going_past_a_budget_ends_the_run() {
    let mut s = state_with(Limits {
        max_steps: 3,
        max_tokens: Some(100),
        max_cost_nano_usd: Some(1_000),
        max_wall_time_ms: None,
    });
    let now = s.created_ms;
    let after = Moment::AfterModel { model: "gpt-4o" };
    s.totals.input_tokens = 100;
    s.totals.cost_nano_usd = 1_000;
    assert_eq!(s.over_budget(after, now), None, "exactly used is kept");

    s.totals.output_tokens = 1;
    let end = s.over_budget(after, now).unwrap();
    assert_eq!(end.reason, EndReason::TokenBudget);
    assert_eq!(end.error, "token budget of 100 exceeded (101 tokens)");

    s.totals.output_tokens = 0;
    s.totals.cost_nano_usd = 1_001;
    assert_eq!(
        s.over_budget(after, now).unwrap().reason,
        EndReason::CostBudget
    );

    // A reply whose price nobody knows cannot be kept within a cost budget.
    s.totals.cost_nano_usd = 0;
    s.totals.cost_known = false;
    let end = s.over_budget(after, now).unwrap();
    assert_eq!(end.reason, EndReason::CostBudget);
    assert!(end.error.contains("model 'gpt-4o'"), "{}", end.error);

    // Without a cost budget an unknown price is no reason to stop.
    s.limits.max_cost_nano_usd = None;
    assert_eq!(s.over_budget(after, now), None);
}

#[test]
fn the_wall_time_is_checked_at_every_task_and_bounds_what_is_left() {
    let s = state_with(Limits {
        max_steps: 3,
        max_tokens: None,
        max_cost_nano_usd: None,
        max_wall_time_ms: Some(60_000),
    });
    let t0 = s.created_ms;
    assert_eq!(s.over_budget(Moment::Task, t0 + 60_000), None);
    let end = s.over_budget(Moment::Task, t0 + 60_001).unwrap();
    assert_eq!(end.reason, EndReason::WallTime);
    assert_eq!(end.error, "wall-time budget of 1m00s exceeded");
    assert_eq!(s.wall_time_left(t0 + 15_000), Some(Duration::from_secs(45)));
    assert_eq!(s.wall_time_left(t0 + 90_000), Some(Duration::ZERO));
    assert_eq!(state_with(limits()).wall_time_left(t0), None);
}

#[tokio::test]
async fn a_run_out_of_steps_ends_without_calling_the_model() {
    let h = Harness::start(Policy::Allow).await;
    let id = h
        .create(
            None,
            Limits {
                max_steps: 0,
                ..limits()
            },
        )
        .await;
    // The router is absent: a model call would be a retry, not an end.
    assert_eq!(h.advance(&id).await, Outcome::Done);
    let s = h.state(&id).await;
    assert_eq!(s.status, RunStatus::Failed);
    assert_eq!(s.end_reason, Some(EndReason::MaxSteps));
    assert!(matches!(
        h.events(&id).await.last(),
        Some(Kind::RunFinished(f)) if f.reason == pb::EndReason::MaxSteps as i32
    ));
}

// ---- the tool gate ----

#[tokio::test]
async fn a_call_policy_denies_is_not_run_and_the_model_is_told_why() {
    let h = Harness::start(Policy::Deny("tables are not dropped here")).await;
    let id = h.create(Some(call()), limits()).await;
    // The tools service is absent: running the call would leave the step for a retry.
    assert_eq!(h.advance(&id).await, Outcome::Done);
    let s = h.state(&id).await;
    let tool = tool_result(&s);
    assert!(tool.is_error);
    assert_eq!(
        tool.text,
        "The call was not run: tables are not dropped here"
    );
    // A direct call's result is the run's.
    assert_eq!(s.status, RunStatus::Failed);
    let evs = h.events(&id).await;
    assert!(evs.iter().any(
        |k| matches!(k, Kind::PolicyEvaluated(p) if p.decision == pb::PolicyDecision::Deny as i32)
    ));
    assert!(
        evs.iter()
            .any(|k| matches!(k, Kind::ToolFinished(f) if f.skipped && f.is_error))
    );
    assert!(!evs.iter().any(|k| matches!(k, Kind::ToolStarted(_))));
    assert_eq!(h.evaluations(), 1);
}

/// What the model is told of a direct call the gate refused under `policy` in one task.
async fn refusal_under(policy: Policy) -> String {
    let h = Harness::start(policy).await;
    let id = h.create(Some(call()), limits()).await;
    assert_eq!(h.advance(&id).await, Outcome::Done);
    tool_result(&h.state(&id).await).text.clone()
}

#[tokio::test]
async fn a_policy_that_cannot_be_evaluated_fails_closed() {
    let text = refusal_under(Policy::Fails(tonic::Code::Internal)).await;
    assert!(
        text.starts_with("The call was not run: policy check failed"),
        "{text}"
    );
}

#[tokio::test]
async fn a_policy_service_that_is_down_leaves_the_step_for_later_and_runs_nothing() {
    let h = Harness::start(Policy::Fails(tonic::Code::Unavailable)).await;
    let id = h.create(Some(call()), limits()).await;
    assert!(matches!(h.advance(&id).await, Outcome::Retry(why) if why.starts_with("policy check")));
    // Tried with back-off, then left: the gate is still unchecked and nothing ran.
    assert_eq!(h.evaluations(), super::CALL_ATTEMPTS);
    let s = h.state(&id).await;
    assert_eq!(gate_of(&s), Gate::Unchecked);
    assert!(!s.messages.iter().any(|m| m.role == "tool"));
}

#[tokio::test]
async fn a_call_needing_approval_parks_the_run_until_a_person_decides() {
    let h = Harness::start(Policy::Approval(pb::ApprovalState::Pending)).await;
    let id = h.create(Some(call()), limits()).await;
    assert_eq!(h.advance(&id).await, Outcome::Done);
    let s = h.state(&id).await;
    assert_eq!(s.status, RunStatus::AwaitingApproval);
    assert_eq!(
        gate_of(&s),
        Gate::Awaiting {
            approval_id: "apr_01".into()
        }
    );
    assert_eq!(s.pending_approval(), Some("apr_01"));

    // Woken while still pending: it stays parked, without asking policy again.
    assert_eq!(h.advance(&id).await, Outcome::Done);
    assert_eq!(h.state(&id).await.status, RunStatus::AwaitingApproval);
    assert_eq!(h.evaluations(), 1);

    // Denied: the call is not run and the reason names who decided.
    h.set_policy(Policy::Approval(pb::ApprovalState::Denied));
    assert_eq!(h.advance(&id).await, Outcome::Done);
    let s = h.state(&id).await;
    let tool = tool_result(&s);
    assert_eq!(
        tool.text,
        "The call was not run: denied by ana: looked at it"
    );
    assert!(h.events(&id).await.iter().any(|k| matches!(k, Kind::ApprovalResolved(r) if r.outcome == pb::ApprovalState::Denied as i32 && r.decided_by == "ana")));
}

#[tokio::test]
async fn an_approved_call_goes_to_the_tools_service() {
    let h = Harness::start(Policy::Approval(pb::ApprovalState::Pending)).await;
    let id = h.create(Some(call()), limits()).await;
    assert_eq!(h.advance(&id).await, Outcome::Done);
    h.set_policy(Policy::Approval(pb::ApprovalState::Approved));
    // The tools service is absent: the approved call is tried, and the step left for later.
    assert!(matches!(h.advance(&id).await, Outcome::Retry(why) if why.starts_with("tool call")));
    let s = h.state(&id).await;
    assert_eq!(gate_of(&s), Gate::Allowed);
    assert_eq!(s.status, RunStatus::Running);
    let evs = h.events(&id).await;
    assert!(
        evs.iter()
            .any(|k| matches!(k, Kind::ApprovalResolved(r) if r.outcome == pb::ApprovalState::Approved as i32))
    );
    assert!(evs.iter().any(|k| matches!(k, Kind::ToolStarted(_))));
}

#[tokio::test]
async fn an_expired_approval_denies_the_call() {
    assert_eq!(
        refusal_under(Policy::Approval(pb::ApprovalState::Expired)).await,
        "The call was not run: the approval expired before anyone decided"
    );
}

// ---- cancel ----

#[tokio::test]
async fn cancelling_a_queued_run_ends_it_at_once() {
    let h = Harness::start(Policy::Allow).await;
    let id = h.create(None, limits()).await;
    let by = Actor {
        id: "key_2".into(),
        name: "ops".into(),
        kind: "api_key".into(),
    };
    let l = h.engine.cancel(&id, "wrong input", &by).await.unwrap();
    assert_eq!(l.state.status, RunStatus::Cancelled);
    assert_eq!(l.state.error, "cancelled by API key 'ops': wrong input");
    assert_eq!(l.state.cancelled_by, Some(by.clone()));
    // Cancelling again changes nothing.
    let again = h.engine.cancel(&id, "twice", &by).await.unwrap();
    assert_eq!(again.state.error, l.state.error);
    assert_eq!(
        h.events(&id)
            .await
            .iter()
            .filter(|k| matches!(k, Kind::RunFinished(_)))
            .count(),
        1
    );
}

#[tokio::test]
async fn cancelling_a_running_run_flags_it_and_its_next_task_ends_it() {
    let h = Harness::start(Policy::Approval(pb::ApprovalState::Pending)).await;
    let id = h.create(Some(call()), limits()).await;
    // Mark it running, as a worker in the middle of a step would.
    let mut cur = Cursor::new(h.engine.store.load_required(&id).await.unwrap());
    cur.state.status = RunStatus::Running;
    cur.commit(&h.engine.store).await.unwrap();

    let by = Actor {
        id: "key_2".into(),
        name: "ops".into(),
        kind: "api_key".into(),
    };
    let l = h.engine.cancel(&id, "", &by).await.unwrap();
    assert_eq!(l.state.status, RunStatus::Running, "only flagged");
    assert!(l.state.cancel_requested.is_some());

    // The next task ends it before doing anything else (no policy check).
    assert_eq!(h.advance(&id).await, Outcome::Done);
    let s = h.state(&id).await;
    assert_eq!(s.status, RunStatus::Cancelled);
    assert_eq!(s.error, "cancelled by API key 'ops'");
    assert_eq!(h.evaluations(), 0);
}

// ---- the fence ----

#[tokio::test]
async fn a_stale_writer_is_fenced_and_writes_nothing() {
    let h = Harness::start(Policy::Allow).await;
    let id = h.create(None, limits()).await;
    let store = &h.engine.store;
    let mut a = Cursor::new(store.load_required(&id).await.unwrap());
    let mut b = Cursor::new(store.load_required(&id).await.unwrap());

    a.state.output = "from a".into();
    a.event(Kind::StepStarted(pb::StepStarted {}));
    a.commit(store).await.unwrap();

    b.state.output = "from b".into();
    b.event(Kind::StepStarted(pb::StepStarted {}));
    b.event(Kind::StepStarted(pb::StepStarted {}));
    assert!(matches!(b.commit(store).await, Err(Error::Fenced(r)) if r == id));

    let l = store.load_required(&id).await.unwrap();
    assert_eq!(l.state.output, "from a");
    // RunCreated and a's one event; none of b's.
    assert_eq!(h.events(&id).await.len(), 2);
    assert_eq!(l.offset, 2);

    // Reloaded, the loser writes on top of what won.
    let mut b = Cursor::new(l);
    b.state.output = "from b".into();
    b.commit(store).await.unwrap();
    assert_eq!(h.state(&id).await.output, "from b");
}

#[tokio::test]
async fn finish_releases_an_open_approval_hold_and_keeps_only_finished_calls() {
    let h = Harness::start(Policy::Approval(pb::ApprovalState::Pending)).await;
    let id = h.create(Some(call()), limits()).await;
    assert_eq!(h.advance(&id).await, Outcome::Done);
    let mut cur = Cursor::new(h.engine.store.load_required(&id).await.unwrap());
    h.engine
        .finish(&mut cur, End::failed(EndReason::Error, "stopped"))
        .await
        .unwrap();
    let s = h.state(&id).await;
    // The open approval holds the ended run (it keeps no retention until resolved) and the
    // parked call will not run after the end.
    assert_eq!(s.held_by, vec!["apr_01".to_string()]);
    assert!(matches!(&s.phase, Phase::Tools { calls, .. } if calls.is_empty()));
    // Once the approval is resolved, the next task drops the hold.
    h.set_policy(Policy::Approval(pb::ApprovalState::Denied));
    assert_eq!(h.advance(&id).await, Outcome::Done);
    assert!(h.state(&id).await.held_by.is_empty());
}

// ---- the queue ----

#[tokio::test]
async fn a_queued_step_that_names_no_run_is_dead_lettered_and_the_next_is_read() {
    let h = Harness::start(Policy::Allow).await;
    let queue = h.engine.store.queue();
    queue.register().await.unwrap();
    let mut c = bridle_core::redis_util::connect(&h.redis.url())
        .await
        .unwrap();
    // Damaged data: Bridle never queues an entry without a run id.
    let _: String = redis::cmd("XADD")
        .arg("t:work:{steps}")
        .arg("*")
        .arg("run")
        .arg("run_bad:id")
        .query_async(&mut c)
        .await
        .unwrap();
    let id = RunId::new();
    queue.enqueue(&id).await.unwrap();

    let mut rc = c.clone();
    assert!(queue.read(&mut rc, 0, "w1", None).await.unwrap().is_none());
    let task = queue.read(&mut rc, 0, "w1", None).await.unwrap().unwrap();
    assert_eq!(task.run, id);
    let dead: redis::streams::StreamRangeReply = redis::cmd("XRANGE")
        .arg("t:work:{steps}:dead")
        .arg("-")
        .arg("+")
        .query_async(&mut c)
        .await
        .unwrap();
    assert_eq!(dead.ids.len(), 1);
    assert_eq!(
        dead.ids[0].get::<String>("run").as_deref(),
        Some("run_bad:id")
    );
    // Only the good entry is left, pending with its worker.
    let len: u64 = redis::cmd("XLEN")
        .arg("t:work:{steps}")
        .query_async(&mut c)
        .await
        .unwrap();
    assert_eq!(len, 1);
}

#[tokio::test]
async fn a_checkpoint_that_appends_events_wakes_the_runs_watchers_and_one_that_does_not_is_quiet() {
    let h = Harness::start(Policy::Allow).await;
    let id = h.create(None, limits()).await;
    let other = h.create(None, limits()).await;
    let store = &h.engine.store;
    let hub = crate::events::Hub::default();
    let mut watch = hub.watch(&id);
    h.stop.spawn(crate::events::listen(
        h.redis.url(),
        store.events_channel(),
        hub.clone(),
        h.stop.clone(),
    ));
    // Well inside the backstop, so only a notice can wake the watcher this soon.
    let soon = Duration::from_millis(4000);
    // Once subscribed, the listener wakes every watcher (notices may have been missed).
    assert!(
        tokio::time::timeout(soon, watch.wait()).await.is_ok(),
        "subscribing did not wake the watchers"
    );

    // Another run's events, and a checkpoint with no events: no notice for this run.
    let mut o = Cursor::new(store.load_required(&other).await.unwrap());
    o.event(Kind::StepStarted(pb::StepStarted {}));
    o.commit(store).await.unwrap();
    let mut quiet = Cursor::new(store.load_required(&id).await.unwrap());
    quiet.state.output = "no events".into();
    quiet.commit(store).await.unwrap();
    assert!(
        tokio::time::timeout(Duration::from_millis(500), watch.wait())
            .await
            .is_err(),
        "woken without an event of its run"
    );

    let mut a = Cursor::new(store.load_required(&id).await.unwrap());
    a.event(Kind::StepStarted(pb::StepStarted {}));
    a.commit(store).await.unwrap();
    assert!(
        tokio::time::timeout(soon, watch.wait()).await.is_ok(),
        "the checkpoint's events did not wake the watcher"
    );
}

#[tokio::test]
async fn a_model_call_carries_the_agents_model_parameters_and_caps_output_by_the_budget_left() {
    let h = Harness::start(Policy::Allow).await;
    let mut s = state_with(Limits {
        max_tokens: Some(100),
        ..limits()
    });
    s.spec = serde_json::from_value(serde_json::json!({
        "route": "default",
        "instructions": "be brief",
        "model": {"temperature": 0.2, "topP": 0.5, "stop": ["END"], "seed": 7, "maxOutputTokens": 500,
            "reasoningEffort": "high", "thinkingBudgetTokens": 2048},
    }))
    .unwrap();
    s.totals.input_tokens = 60;
    let req = h.engine.model_request(&s);
    assert_eq!(req.route, "default");
    assert_eq!(req.messages[0].text, "be brief");
    assert_eq!(req.messages[0].role, pb::Role::System as i32);
    assert_eq!(req.temperature, Some(0.2));
    assert_eq!(req.top_p, Some(0.5));
    assert_eq!(req.stop, vec!["END".to_string()]);
    assert_eq!(req.seed, Some(7));
    assert_eq!(
        (req.reasoning_effort.as_str(), req.thinking_budget_tokens),
        ("high", Some(2048))
    );
    // 500 asked for, 40 tokens of budget left.
    assert_eq!(req.max_output_tokens, Some(40));
    assert!(!req.require_price);

    assert!(
        req.messages.iter().all(|m| !m.cache_breakpoint),
        "no caching unless asked"
    );

    s.spec.model = Default::default();
    let req = h.engine.model_request(&s);
    assert_eq!((req.temperature, req.top_p, req.seed), (None, None, None));
    assert!(req.stop.is_empty());

    // Prompt caching: breakpoints after the instructions and after the conversation so far.
    s.spec.model.prompt_cache = true;
    s.messages.push(crate::state::Msg {
        role: "user".into(),
        text: "hello".into(),
        ..Default::default()
    });
    let req = h.engine.model_request(&s);
    let marks: Vec<bool> = req.messages.iter().map(|m| m.cache_breakpoint).collect();
    assert_eq!(marks.first(), Some(&true), "{marks:?}");
    assert_eq!(marks.last(), Some(&true), "{marks:?}");
}
