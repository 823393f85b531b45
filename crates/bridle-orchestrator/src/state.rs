//! The durable state of a run, as checkpointed in Redis, and its proto views.
//!
//! The state is everything needed to resume the run on any worker after a crash: the agent and
//! tool definitions as they were when the run started (a re-apply never changes a run in
//! flight), the conversation, where in the step it is, and the totals budgets are checked
//! against.

use bridle_core::ids::{AgentName, RunId, TenantId};
use bridle_core::manifest::{AgentSpec, DEFAULT_MAX_STEPS};
use bridle_core::timeutil::{pb_duration_ms, ts_from_ms};
use bridle_proto as pb;
use serde::{Deserialize, Serialize};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Queued,
    Running,
    AwaitingApproval,
    Succeeded,
    Failed,
    Cancelled,
}

impl Status {
    pub fn is_terminal(self) -> bool {
        matches!(self, Status::Succeeded | Status::Failed | Status::Cancelled)
    }

    pub fn to_pb(self) -> pb::RunStatus {
        match self {
            Status::Queued => pb::RunStatus::Queued,
            Status::Running => pb::RunStatus::Running,
            Status::AwaitingApproval => pb::RunStatus::AwaitingApproval,
            Status::Succeeded => pb::RunStatus::Succeeded,
            Status::Failed => pb::RunStatus::Failed,
            Status::Cancelled => pb::RunStatus::Cancelled,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EndReason {
    FinalAnswer,
    MaxSteps,
    TokenBudget,
    CostBudget,
    WallTime,
    Cancelled,
    Error,
    DeadLetter,
}

impl EndReason {
    pub fn to_pb(self) -> pb::EndReason {
        match self {
            EndReason::FinalAnswer => pb::EndReason::FinalAnswer,
            EndReason::MaxSteps => pb::EndReason::MaxSteps,
            EndReason::TokenBudget => pb::EndReason::TokenBudget,
            EndReason::CostBudget => pb::EndReason::CostBudget,
            EndReason::WallTime => pb::EndReason::WallTime,
            EndReason::Cancelled => pb::EndReason::Cancelled,
            EndReason::Error => pb::EndReason::Error,
            EndReason::DeadLetter => pb::EndReason::DeadLetter,
        }
    }
}

/// A chat message, as stored (a serde mirror of `bridle.v1.Message`).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Msg {
    pub role: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub text: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tool_calls: Vec<Call>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub tool_call_id: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub name: String,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub is_error: bool,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub provider_state: String,
    /// Token count, cached by the context manager.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tokens: Option<u32>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Call {
    pub id: String,
    pub name: String,
    pub arguments: String,
}

impl Msg {
    pub fn user(text: &str) -> Self {
        Msg {
            role: "user".into(),
            text: text.into(),
            ..Default::default()
        }
    }

    pub fn tool(call: &Call, output: String, is_error: bool) -> Self {
        Msg {
            role: "tool".into(),
            text: output,
            tool_call_id: call.id.clone(),
            name: call.name.clone(),
            is_error,
            ..Default::default()
        }
    }

    pub fn from_pb(m: &pb::Message) -> Self {
        let role = match pb::Role::try_from(m.role).unwrap_or(pb::Role::Unspecified) {
            pb::Role::System => "system",
            pb::Role::User => "user",
            pb::Role::Assistant | pb::Role::Unspecified => "assistant",
            pb::Role::Tool => "tool",
        };
        Msg {
            role: role.into(),
            text: m.text.clone(),
            tool_calls: m
                .tool_calls
                .iter()
                .map(|c| Call {
                    id: c.id.clone(),
                    name: c.name.clone(),
                    arguments: c.arguments_json.clone(),
                })
                .collect(),
            tool_call_id: m.tool_call_id.clone(),
            name: m.name.clone(),
            is_error: m.is_error,
            provider_state: m.provider_state.clone(),
            tokens: None,
        }
    }

    pub fn to_pb(&self) -> pb::Message {
        let role = match self.role.as_str() {
            "system" => pb::Role::System,
            "user" => pb::Role::User,
            "tool" => pb::Role::Tool,
            _ => pb::Role::Assistant,
        };
        pb::Message {
            role: role as i32,
            text: self.text.clone(),
            tool_calls: self.tool_calls.iter().map(Call::to_pb).collect(),
            tool_call_id: self.tool_call_id.clone(),
            name: self.name.clone(),
            is_error: self.is_error,
            provider_state: self.provider_state.clone(),
            // Set per call by the engine, never stored.
            cache_breakpoint: false,
        }
    }
}

impl Call {
    pub fn to_pb(&self) -> pb::ToolCall {
        pb::ToolCall {
            id: self.id.clone(),
            name: self.name.clone(),
            arguments_json: self.arguments.clone(),
        }
    }
}

/// A tool as the run saw it when it started.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ToolInfo {
    pub name: String,
    pub description: String,
    pub schema: String,
    pub risk: i32,
    pub kind: String,
    #[serde(default)]
    pub tags: Vec<String>,
    /// Where `risk` came from (`ToolSpec.risk_source`); empty in runs stored before it was.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub risk_source: String,
    /// Separation of duties for its approvals (`ToolSpec.approvers`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approvers: Option<ApproverRule>,
}

/// A serde mirror of `bridle.v1.ApproverRule`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApproverRule {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub groups: Vec<String>,
    pub count: u32,
    #[serde(default)]
    pub not_the_starter: bool,
}

impl ToolInfo {
    pub fn from_pb(t: &pb::ToolSpec) -> Self {
        ToolInfo {
            name: t.name.clone(),
            description: t.description.clone(),
            schema: t.parameters_json_schema.clone(),
            risk: t.risk,
            kind: bridle_core::manifest::tool_kind_word(t.kind).to_string(),
            tags: t.tags.clone(),
            risk_source: t.risk_source.clone(),
            approvers: t.approvers.as_ref().map(|a| ApproverRule {
                groups: a.groups.clone(),
                count: a.count,
                not_the_starter: a.not_the_starter,
            }),
        }
    }

    pub fn to_pb(&self) -> pb::ToolSpec {
        pb::ToolSpec {
            name: self.name.clone(),
            description: self.description.clone(),
            parameters_json_schema: self.schema.clone(),
            risk: self.risk,
            tags: self.tags.clone(),
            kind: bridle_core::manifest::tool_kind_value(&self.kind) as i32,
            risk_source: self.risk_source.clone(),
            approvers: self.approvers.as_ref().map(|a| pb::ApproverRule {
                groups: a.groups.clone(),
                count: a.count,
                not_the_starter: a.not_the_starter,
            }),
            // An Agent's tools: their schemas need not meet a provider's strict subset.
            strict: false,
            // Set per call by the engine (an Agent's promptCache).
            cache_breakpoint: false,
        }
    }
}

/// Where the policy check of one call stands.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "state")]
pub enum Gate {
    /// Not evaluated yet.
    Unchecked,
    Allowed,
    /// Denied by policy, by a human, or by expiry: `reason` goes to the model.
    Denied {
        reason: String,
    },
    /// Parked until the approval is decided.
    Awaiting {
        approval_id: String,
    },
}

/// One tool call of the current step.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PendingCall {
    pub call: Call,
    pub gate: Gate,
    /// Set once the call has a result in the conversation.
    pub done: bool,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "phase")]
pub enum Phase {
    /// The next thing to do is a model call.
    Model,
    /// The model asked for these calls; they run in order.
    Tools {
        calls: Vec<PendingCall>,
        step_started_ms: i64,
    },
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Totals {
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub cache_read_tokens: u64,
    pub cache_write_tokens: u64,
    pub reasoning_tokens: u64,
    pub cost_nano_usd: i64,
    /// False once any model call had no known price.
    pub cost_known: bool,
}

impl Totals {
    pub fn new() -> Self {
        Totals {
            cost_known: true,
            ..Default::default()
        }
    }

    pub fn add(&mut self, u: Option<&pb::Usage>, c: Option<&pb::Cost>) {
        if let Some(u) = u {
            // Counts come from providers: saturate rather than trust them to add up.
            self.input_tokens = self.input_tokens.saturating_add(u.input_tokens);
            self.output_tokens = self.output_tokens.saturating_add(u.output_tokens);
            self.cache_read_tokens = self.cache_read_tokens.saturating_add(u.cache_read_tokens);
            self.cache_write_tokens = self.cache_write_tokens.saturating_add(u.cache_write_tokens);
            self.reasoning_tokens = self.reasoning_tokens.saturating_add(u.reasoning_tokens);
        }
        match c {
            Some(c) if c.known => {
                self.cost_nano_usd = self.cost_nano_usd.saturating_add(c.nano_usd)
            }
            _ => self.cost_known = false,
        }
    }

    pub fn tokens(&self) -> u64 {
        self.input_tokens.saturating_add(self.output_tokens)
    }

    pub fn usage_pb(&self) -> pb::Usage {
        pb::Usage {
            input_tokens: self.input_tokens,
            output_tokens: self.output_tokens,
            cache_read_tokens: self.cache_read_tokens,
            cache_write_tokens: self.cache_write_tokens,
            reasoning_tokens: self.reasoning_tokens,
        }
    }

    pub fn cost_pb(&self) -> pb::Cost {
        pb::Cost {
            known: self.cost_known,
            nano_usd: self.cost_nano_usd,
        }
    }
}

/// Milliseconds of a duration a caller or a manifest gave, saturated: a budget of centuries
/// is a budget that never runs out, not one that wrapped around to the past.
fn millis(d: std::time::Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// Effective limits of a run.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Limits {
    pub max_steps: u32,
    pub max_tokens: Option<u64>,
    pub max_cost_nano_usd: Option<i64>,
    pub max_wall_time_ms: Option<i64>,
}

impl Limits {
    /// The agent's limits, lowered (never raised) by the request's.
    pub fn resolve(agent: &AgentSpec, req: Option<&pb::Budget>) -> Self {
        let b = &agent.budget;
        let mut l = Limits {
            max_steps: b.max_steps.unwrap_or(DEFAULT_MAX_STEPS),
            max_tokens: b.max_tokens,
            max_cost_nano_usd: b.max_cost_usd.map(|usd| (usd * 1e9).round() as i64),
            max_wall_time_ms: b.max_wall_time.map(millis),
        };
        if let Some(r) = req {
            if r.max_steps > 0 {
                l.max_steps = l.max_steps.min(r.max_steps);
            }
            if r.max_tokens > 0 {
                l.max_tokens = Some(l.max_tokens.map_or(r.max_tokens, |t| t.min(r.max_tokens)));
            }
            if r.max_cost_nano_usd > 0 {
                l.max_cost_nano_usd = Some(
                    l.max_cost_nano_usd
                        .map_or(r.max_cost_nano_usd, |c| c.min(r.max_cost_nano_usd)),
                );
            }
            if let Some(d) = bridle_core::timeutil::std_duration(r.max_wall_time.as_ref()) {
                let ms = millis(d);
                l.max_wall_time_ms = Some(l.max_wall_time_ms.map_or(ms, |t| t.min(ms)));
            }
        }
        l
    }

    pub fn to_pb(&self) -> pb::Budget {
        pb::Budget {
            max_steps: self.max_steps,
            max_tokens: self.max_tokens.unwrap_or(0),
            max_cost_nano_usd: self.max_cost_nano_usd.unwrap_or(0),
            max_wall_time: self.max_wall_time_ms.map(pb_duration_ms),
        }
    }
}

/// How a run ends: its status and reason, with the output (a success) or the error.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct End {
    pub status: Status,
    pub reason: EndReason,
    pub output: String,
    pub error: String,
}

impl End {
    /// Succeeded with the final answer.
    pub fn answer(output: String) -> Self {
        End {
            status: Status::Succeeded,
            reason: EndReason::FinalAnswer,
            output,
            error: String::new(),
        }
    }

    pub fn failed(reason: EndReason, error: impl Into<String>) -> Self {
        End {
            status: Status::Failed,
            reason,
            output: String::new(),
            error: error.into(),
        }
    }

    pub fn cancelled(why: impl Into<String>) -> Self {
        End {
            status: Status::Cancelled,
            reason: EndReason::Cancelled,
            output: String::new(),
            error: why.into(),
        }
    }
}

/// When a run's budgets are checked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Moment<'a> {
    /// Before any work of a task: only the wall time can have run out.
    Task,
    /// Before a model call: a budget used up to the last token or nano-dollar leaves nothing
    /// for the call, and the last step has been taken.
    BeforeModel,
    /// After a model call to `model`: a reply that took the run past a budget ends it.
    AfterModel { model: &'a str },
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RunState {
    pub id: RunId,
    pub tenant: TenantId,
    pub agent: AgentName,
    pub input: String,
    pub status: Status,
    pub end_reason: Option<EndReason>,
    pub output: String,
    pub error: String,
    pub created_ms: i64,
    pub updated_ms: i64,
    pub finished_ms: Option<i64>,
    pub spec: AgentSpec,
    pub tools: Vec<ToolInfo>,
    pub limits: Limits,
    pub messages: Vec<Msg>,
    /// Steps started.
    pub step: u32,
    pub phase: Phase,
    pub totals: Totals,
    pub scripted: bool,
    pub idempotency_key: String,
    #[serde(default)]
    pub labels: std::collections::BTreeMap<String, String>,
    #[serde(default)]
    pub cancel_requested: Option<String>,
    /// Model used for token counts and its context window.
    #[serde(default)]
    pub context: ContextInfo,
    /// Ids of the run's trace and of its root span.
    #[serde(default)]
    pub trace: TraceIds,
    /// A tool call of the run resolved secrets: what the model writes from then on is
    /// scrubbed of their values (Tools.Redact) before it is kept or sent on.
    #[serde(default)]
    pub holds_secrets: bool,
    /// Approvals that were still open when the run ended. While any is, the run's keys get no
    /// expiry: an approver following a link to the run still finds it. Each is dropped once
    /// the approvals service says it is decided or expired (the approval listener wakes the
    /// run for that), and the checkpoint that empties this sets the retention.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub held_by: Vec<String>,
    /// The tool this run calls directly instead of asking the model
    /// (`StartRunRequest.tool_call`): its one step is that call, and its result ends the run.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub tool_call: String,
    /// Who started the run (the StartRun caller). Runs written before this was recorded
    /// have an empty one.
    #[serde(default)]
    pub started_by: Actor,
    /// The application's own user the run acts for (`StartRunRequest.end_user`).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub end_user: String,
    /// Who cancelled the run, when a request did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cancelled_by: Option<Actor>,
}

/// Who did something (a serde mirror of `bridle.v1.Actor`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Actor {
    pub id: String,
    pub name: String,
    pub kind: String,
}

impl Actor {
    /// The caller of a request.
    pub fn of(p: &bridle_core::auth::Principal) -> Self {
        Self {
            id: p.id.clone(),
            name: p.name.clone(),
            kind: p.kind().into(),
        }
    }

    pub fn to_pb(&self) -> pb::Actor {
        pb::Actor {
            id: self.id.clone(),
            name: self.name.clone(),
            kind: bridle_core::auth::actor_kind(&self.kind) as i32,
        }
    }

    /// "API key 'ops'", "user 'alice@example.com'", "anonymous", for messages.
    pub fn describe(&self) -> String {
        match self.kind.as_str() {
            "anonymous" => "anonymous".into(),
            k => format!("{} '{}'", bridle_core::auth::kind_word(k), self.name),
        }
    }
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TraceIds {
    pub trace_id: String,
    pub span_id: String,
    /// The caller's span the run's root is a child of (StartRun carried a `traceparent` and
    /// `caller_trace` is `child`): the trace id above is then the caller's.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub parent_span_id: String,
    /// The caller's span the root links to instead (`caller_trace = link`): trace id, span id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub link: Option<(String, String)>,
    /// The StartRun call's own span, when it is in another trace than the run's (the caller
    /// sent no trace context, or `caller_trace` is `link`): the root links to it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_call: Option<(String, String)>,
}

impl TraceIds {
    /// A run's ids: in the caller's trace under its span, or a trace of its own (linked to
    /// the caller's span when `mode` says so).
    /// `start_call`: the span of the StartRun call that makes the run.
    pub fn for_run(
        caller: Option<(String, String)>,
        mode: crate::options::CallerTrace,
        start_call: Option<(String, String)>,
    ) -> Self {
        let (trace_id, span_id) = bridle_core::telemetry::new_run_trace();
        let mut ids = match (caller, mode) {
            (Some((t, parent)), crate::options::CallerTrace::Child) => TraceIds {
                trace_id: t,
                span_id,
                parent_span_id: parent,
                link: None,
                start_call: None,
            },
            (caller, _) => TraceIds {
                trace_id,
                span_id,
                parent_span_id: String::new(),
                link: caller,
                start_call: None,
            },
        };
        ids.start_call = start_call.filter(|(t, _)| *t != ids.trace_id);
        ids
    }
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ContextInfo {
    pub model: String,
    pub window: u64,
}

/// What a new run is made of, gathered by the StartRun handler.
pub struct NewRun {
    pub id: RunId,
    pub tenant: TenantId,
    pub agent: AgentName,
    pub spec: AgentSpec,
    pub input: String,
    pub tools: Vec<ToolInfo>,
    pub limits: Limits,
    /// A direct call (StartRunRequest.tool_call): the run's one step is this call.
    pub direct: Option<Call>,
    pub context: ContextInfo,
    pub idempotency_key: String,
    pub labels: std::collections::BTreeMap<String, String>,
    pub trace: TraceIds,
    pub started_by: Actor,
    pub end_user: String,
    pub now_ms: i64,
}

impl RunState {
    /// A queued run, with the event that records its creation (offset 1). A run that asks the
    /// model starts at step 0 in the model phase; a direct call starts at step 1 with the call
    /// waiting for its policy check.
    pub fn new(n: NewRun) -> (RunState, pb::RunEvent) {
        let input = match &n.direct {
            Some(c) if n.input.trim().is_empty() => format!("call {}", c.name),
            _ => n.input,
        };
        let mut messages = vec![Msg::user(&input)];
        let (phase, step) = match &n.direct {
            None => (Phase::Model, 0),
            Some(call) => {
                messages.push(Msg {
                    role: "assistant".into(),
                    tool_calls: vec![call.clone()],
                    ..Default::default()
                });
                let pending = PendingCall {
                    call: call.clone(),
                    gate: Gate::Unchecked,
                    done: false,
                };
                let phase = Phase::Tools {
                    calls: vec![pending],
                    step_started_ms: n.now_ms,
                };
                (phase, 1)
            }
        };
        let first = pb::RunEvent {
            run_id: n.id.to_string(),
            offset: 1,
            time: Some(ts_from_ms(n.now_ms)),
            step: 0,
            kind: Some(pb::run_event::Kind::RunCreated(pb::RunCreated {
                agent: n.agent.to_string(),
                input: input.clone(),
                budget: Some(n.limits.to_pb()),
                tenant: n.tenant.to_string(),
                started_by: Some(n.started_by.to_pb()),
                end_user: n.end_user.clone(),
            })),
        };
        let state = RunState {
            id: n.id,
            tenant: n.tenant,
            agent: n.agent,
            input,
            status: Status::Queued,
            end_reason: None,
            output: String::new(),
            error: String::new(),
            created_ms: n.now_ms,
            updated_ms: n.now_ms,
            finished_ms: None,
            spec: n.spec,
            tools: n.tools,
            limits: n.limits,
            messages,
            step,
            phase,
            totals: Totals::new(),
            scripted: false,
            idempotency_key: n.idempotency_key,
            labels: n.labels,
            cancel_requested: None,
            context: n.context,
            trace: n.trace,
            holds_secrets: false,
            held_by: Vec::new(),
            tool_call: n.direct.map(|c| c.name).unwrap_or_default(),
            started_by: n.started_by,
            end_user: n.end_user,
            cancelled_by: None,
        };
        (state, first)
    }

    /// The budget the run has broken at `when` (it is `now_ms` now), as the end it brings.
    pub fn over_budget(&self, when: Moment<'_>, now_ms: i64) -> Option<End> {
        let l = &self.limits;
        let t = &self.totals;
        let usd = |nano: i64| nano as f64 / 1e9;
        let (reason, why) = match when {
            Moment::Task => {
                let limit = l.max_wall_time_ms?;
                if now_ms.saturating_sub(self.created_ms) <= limit {
                    return None;
                }
                return Some(self.wall_time_end());
            }
            Moment::BeforeModel => {
                if self.step >= l.max_steps {
                    (
                        EndReason::MaxSteps,
                        format!(
                            "reached the step budget ({}) without a final answer",
                            l.max_steps
                        ),
                    )
                } else if let Some(max) = l.max_tokens.filter(|&m| t.tokens() >= m) {
                    (
                        EndReason::TokenBudget,
                        format!("token budget of {max} used ({} tokens)", t.tokens()),
                    )
                } else if let Some(max) = l.max_cost_nano_usd.filter(|&m| t.cost_nano_usd >= m) {
                    (
                        EndReason::CostBudget,
                        format!("cost budget of ${:.4} used", usd(max)),
                    )
                } else {
                    return None;
                }
            }
            Moment::AfterModel { model } => {
                if let Some(max) = l.max_tokens.filter(|&m| t.tokens() > m) {
                    (
                        EndReason::TokenBudget,
                        format!("token budget of {max} exceeded ({} tokens)", t.tokens()),
                    )
                } else if l.max_cost_nano_usd.is_some() && !t.cost_known {
                    // The router refuses unpriced targets under a cost budget; a reply without
                    // a price anyway (a router that does not know the flag) must not go
                    // uncounted.
                    (
                        EndReason::CostBudget,
                        format!(
                            "the cost of the model call (model '{model}') is unknown, so the cost budget cannot be kept; declare `price` on the route's targets"
                        ),
                    )
                } else if let Some(max) = l.max_cost_nano_usd.filter(|&m| t.cost_nano_usd > m) {
                    (
                        EndReason::CostBudget,
                        format!("cost budget of ${:.4} exceeded", usd(max)),
                    )
                } else {
                    return None;
                }
            }
        };
        Some(End::failed(reason, why))
    }

    /// The end of a run whose wall-time budget ran out (at a task, or during a call it cut).
    pub fn wall_time_end(&self) -> End {
        let limit = self.limits.max_wall_time_ms.unwrap_or(0);
        End::failed(
            EndReason::WallTime,
            format!("wall-time budget of {} exceeded", short_ms(limit)),
        )
    }

    /// The wall time the run has left, if it has a wall-time budget (zero once it ran out).
    pub fn wall_time_left(&self, now_ms: i64) -> Option<std::time::Duration> {
        let limit = self.limits.max_wall_time_ms?;
        let left = self
            .created_ms
            .saturating_add(limit)
            .saturating_sub(now_ms)
            .max(0);
        Some(std::time::Duration::from_millis(left as u64))
    }

    /// The run's scope for a call to another service.
    pub fn scope(&self) -> pb::Scope {
        pb::Scope {
            tenant: self.tenant.to_string(),
            agent: self.agent.to_string(),
            run_id: self.id.to_string(),
            ..Default::default()
        }
    }

    /// The run's scope for a call about one of its tools.
    pub fn tool_scope(&self, tool: &str) -> pb::Scope {
        pb::Scope {
            tool: tool.to_string(),
            ..self.scope()
        }
    }

    pub fn pending_approval(&self) -> Option<&str> {
        match &self.phase {
            Phase::Tools { calls, .. } => calls.iter().find_map(|c| match &c.gate {
                Gate::Awaiting { approval_id } if !c.done => Some(approval_id.as_str()),
                _ => None,
            }),
            Phase::Model => None,
        }
    }

    /// The proto view; `last_offset` is the offset of the last event.
    pub fn to_pb(&self, last_offset: u64) -> pb::Run {
        let end = self.finished_ms.unwrap_or(self.updated_ms);
        pb::Run {
            id: self.id.to_string(),
            tenant: self.tenant.to_string(),
            agent: self.agent.to_string(),
            input: self.input.clone(),
            status: self.status.to_pb() as i32,
            end_reason: self
                .end_reason
                .map_or(pb::EndReason::Unspecified, EndReason::to_pb)
                as i32,
            step: self.step,
            usage: Some(self.totals.usage_pb()),
            cost: Some(self.totals.cost_pb()),
            created_at: Some(ts_from_ms(self.created_ms)),
            updated_at: Some(ts_from_ms(self.updated_ms)),
            finished_at: self.finished_ms.map(ts_from_ms),
            output: self.output.clone(),
            error: self.error.clone(),
            pending_approval_id: self.pending_approval().unwrap_or_default().to_string(),
            budget: Some(self.limits.to_pb()),
            idempotency_key: self.idempotency_key.clone(),
            last_event_offset: last_offset,
            labels: self.labels.clone().into_iter().collect(),
            scripted: self.scripted,
            trace_id: self.trace.trace_id.clone(),
            duration: Some(pb_duration_ms(end - self.created_ms)),
            tool_call: self.tool_call.clone(),
            started_by: Some(self.started_by.to_pb()),
            end_user: self.end_user.clone(),
            cancelled_by: self.cancelled_by.as_ref().map(Actor::to_pb),
        }
    }
}

/// A duration in milliseconds, briefly (`1m30s`).
fn short_ms(ms: i64) -> String {
    bridle_core::timeutil::short_duration(std::time::Duration::from_millis(ms.max(0) as u64))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::options::CallerTrace;

    #[test]
    fn a_runs_trace_follows_the_caller_as_configured() {
        let caller = || {
            Some((
                "4bf92f3577b34da6a3ce929d0e0e4736".to_string(),
                "00f067aa0ba902b7".to_string(),
            ))
        };
        // The StartRun call's span, in the caller's trace when it sent one.
        let call = |t: &str| Some((t.to_string(), "1111111111111111".to_string()));
        let child = TraceIds::for_run(
            caller(),
            CallerTrace::Child,
            call("4bf92f3577b34da6a3ce929d0e0e4736"),
        );
        assert_eq!(child.trace_id, "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(child.parent_span_id, "00f067aa0ba902b7");
        assert_ne!(child.span_id, "00f067aa0ba902b7");
        assert_eq!(child.link, None);
        // Same trace: no link needed.
        assert_eq!(child.start_call, None);

        let linked = TraceIds::for_run(
            caller(),
            CallerTrace::Link,
            call("4bf92f3577b34da6a3ce929d0e0e4736"),
        );
        assert_ne!(linked.trace_id, "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(linked.parent_span_id, "");
        assert_eq!(linked.link, caller());
        assert_eq!(linked.start_call, call("4bf92f3577b34da6a3ce929d0e0e4736"));

        let alone = TraceIds::for_run(
            None,
            CallerTrace::Child,
            call("ffff2f3577b34da6a3ce929d0e0e4736"),
        );
        assert_eq!(alone.trace_id.len(), 32);
        assert_eq!((alone.parent_span_id.as_str(), alone.link), ("", None));
        assert_eq!(alone.start_call, call("ffff2f3577b34da6a3ce929d0e0e4736"));
        // A run stored before these fields existed still loads.
        let old: TraceIds = serde_json::from_str(r#"{"trace_id":"ab","span_id":"cd"}"#).unwrap();
        assert_eq!(old.parent_span_id, "");
    }
}
