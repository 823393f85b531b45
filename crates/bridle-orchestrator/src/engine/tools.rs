//! The tool half of a step: each call the model asked for is checked by policy (and parked for
//! a human when policy says so), then run or refused, and its result becomes the observation
//! the model sees next. And the approvals that hold an ended run.

use std::time::Duration;

use bridle_core::timeutil::{now_ms, pb_duration, pb_duration_ms};
use bridle_proto as pb;
use bridle_proto::run_event::Kind;

use super::{Cursor, Engine, Outcome, retry};
use crate::Error;
use crate::clients::is_transient;
use crate::state::{End, EndReason, Gate, Msg, Phase, Status};

/// What the approvals service says about a call's approval.
enum Verdict {
    Pending,
    Approved {
        by: String,
        reason: String,
        waited_ms: i64,
    },
    Refused {
        outcome: &'static str,
        by: String,
        reason: String,
        waited_ms: i64,
    },
}

fn verdict(a: &pb::Approval) -> Verdict {
    let waited_ms = match (&a.created_at, &a.decided_at) {
        (Some(c), Some(d)) => {
            bridle_core::timeutil::ms_from_ts(d) - bridle_core::timeutil::ms_from_ts(c)
        }
        (Some(c), None) => now_ms() - bridle_core::timeutil::ms_from_ts(c),
        _ => 0,
    };
    match pb::ApprovalState::try_from(a.state).unwrap_or(pb::ApprovalState::Unspecified) {
        pb::ApprovalState::Pending | pb::ApprovalState::Unspecified => Verdict::Pending,
        pb::ApprovalState::Approved => Verdict::Approved {
            by: a.decided_by.clone(),
            reason: a.reason.clone(),
            waited_ms,
        },
        pb::ApprovalState::Denied => Verdict::Refused {
            outcome: "denied",
            by: a.decided_by.clone(),
            reason: a.reason.clone(),
            waited_ms,
        },
        pb::ApprovalState::Expired => Verdict::Refused {
            outcome: "expired",
            by: String::new(),
            reason: "nobody decided before the approval expired".into(),
            waited_ms,
        },
    }
}

impl Engine {
    pub(super) async fn tools_phase(&self, cur: &mut Cursor) -> Result<Outcome, Error> {
        // A direct call's run starts here, not at a model step (committed with its next part).
        if cur.state.status == Status::Queued {
            cur.state.status = Status::Running;
        }
        loop {
            let Phase::Tools { calls, .. } = &cur.state.phase else {
                return Ok(Outcome::Done);
            };
            let Some(i) = calls.iter().position(|c| !c.done) else {
                return self.end_step(cur).await;
            };
            let pending = calls[i].clone();
            match pending.gate {
                Gate::Unchecked => {
                    if let Some(o) = self.evaluate(cur, i).await? {
                        return Ok(o);
                    }
                }
                Gate::Awaiting { approval_id } => {
                    if let Some(o) = self.check_approval(cur, i, &approval_id).await? {
                        return Ok(o);
                    }
                }
                Gate::Allowed => {
                    if let Some(o) = self.execute(cur, i).await? {
                        return Ok(o);
                    }
                }
                Gate::Denied { reason } => {
                    let call = pending.call.clone();
                    let text = format!("The call was not run: {reason}");
                    cur.state
                        .messages
                        .push(Msg::tool(&call, text.clone(), true));
                    set_done(cur, i);
                    cur.event(Kind::ToolFinished(pb::ToolFinished {
                        call_id: call.id.clone(),
                        tool: call.name.clone(),
                        is_error: true,
                        output: text,
                        skipped: true,
                        ..Default::default()
                    }));
                    self.commit_unless_last(cur).await?;
                }
            }
        }
    }

    async fn end_step(&self, cur: &mut Cursor) -> Result<Outcome, Error> {
        let started = match &cur.state.phase {
            Phase::Tools {
                step_started_ms, ..
            } => *step_started_ms,
            Phase::Model => now_ms(),
        };
        cur.state.phase = Phase::Model;
        cur.state.status = Status::Running;
        cur.event(Kind::StepFinished(pb::StepFinished {
            usage_total: Some(cur.state.totals.usage_pb()),
            cost_total: Some(cur.state.totals.cost_pb()),
            duration: Some(pb_duration_ms(now_ms() - started)),
        }));
        if !cur.state.tool_call.is_empty() {
            // A direct call (StartRunRequest.tool_call): its result is the run's.
            let (text, is_error) = cur
                .state
                .messages
                .iter()
                .rev()
                .find(|m| m.role == "tool")
                .map(|m| (m.text.clone(), m.is_error))
                .unwrap_or_else(|| ("the call left no result".into(), true));
            let end = if is_error {
                End::failed(EndReason::Error, text)
            } else {
                End::answer(text)
            };
            return self.finish(cur, end).await;
        }
        cur.commit(&self.store).await?;
        // The worker queues the next step as it acknowledges this one (one round trip). A
        // crash between the commit and that leaves the current task pending, and its
        // redelivery finds the run at the next step: nothing is lost either way.
        Ok(Outcome::Next)
    }

    /// Policy check of call `i`. Returns Some when the task should stop here.
    async fn evaluate(&self, cur: &mut Cursor, i: usize) -> Result<Option<Outcome>, Error> {
        let s = &cur.state;
        let Phase::Tools { calls, .. } = &s.phase else {
            return Ok(None);
        };
        let call = calls[i].call.clone();
        let tool = s
            .tools
            .iter()
            .find(|t| t.name == call.name)
            .map(|t| t.to_pb())
            .unwrap_or_else(|| pb::ToolSpec {
                name: call.name.clone(),
                ..Default::default()
            });
        let req = pb::EvaluateRequest {
            scope: Some(s.tool_scope(&call.name)),
            step: s.step,
            call_id: call.id.clone(),
            tool: Some(tool),
            arguments_json: call.arguments.clone(),
            facts: Some(pb::RunFacts {
                step: s.step,
                tokens_so_far: s.totals.tokens(),
                cost_so_far: Some(s.totals.cost_pb()),
            }),
            // The run's snapshot: an MCP server granted by name expands to its tools.
            granted_tools: s.tools.iter().map(|t| t.name.clone()).collect(),

            approval_required_tools: s.spec.approval.require.clone(),
            approval_ttl: s.spec.approval.ttl.map(pb_duration),
            started_by: Some(s.started_by.to_pb()),
        };
        let span = crate::otel::policy(s, &call.name, &call.id);
        let check = self.with_retries("policy check", || {
            let mut c = self.clients.approvals.clone();
            let req = req.clone();
            async move { c.evaluate(req).await.map(|r| r.into_inner()) }
        });
        let resp = match tracing::Instrument::instrument(check, span.clone()).await {
            Ok(r) => r,
            Err(st) if is_transient(st.code()) => {
                return Ok(Some(retry("policy check", &st)));
            }
            Err(st) => {
                // Fail closed: a call whose policy cannot be evaluated does not run.
                let reason = format!("policy check failed: {}", st.message());
                tracing::warn!(run = %s.id, call = %call.id, "{reason}");
                pb::EvaluateResponse {
                    decision: pb::PolicyDecision::Deny as i32,
                    reason,
                    approval: None,
                    policy_ids: Vec::new(),
                }
            }
        };
        let decision =
            pb::PolicyDecision::try_from(resp.decision).unwrap_or(pb::PolicyDecision::Deny);
        crate::otel::policy_done(&span, decision, &resp.reason, &resp.policy_ids);
        cur.event(Kind::PolicyEvaluated(pb::PolicyEvaluated {
            call_id: call.id.clone(),
            tool: call.name.clone(),
            decision: decision as i32,
            reason: resp.reason.clone(),
        }));
        let gate = match decision {
            pb::PolicyDecision::Allow => Gate::Allowed,
            pb::PolicyDecision::Deny | pb::PolicyDecision::Unspecified => Gate::Denied {
                reason: if resp.reason.is_empty() {
                    "denied by policy".into()
                } else {
                    resp.reason.clone()
                },
            },
            pb::PolicyDecision::RequireApproval => {
                let Some(a) = resp.approval else {
                    return Err(Error::Core(bridle_core::Error::internal(
                        "approvals service required approval without an approval record",
                    )));
                };
                cur.event(Kind::ApprovalRequested(pb::ApprovalRequested {
                    approval_id: a.id.clone(),
                    call_id: call.id.clone(),
                    tool: call.name.clone(),
                    arguments_json: call.arguments.clone(),
                    expires_at: a.expires_at,
                    reason: resp.reason.clone(),
                }));
                match verdict(&a) {
                    Verdict::Pending => {
                        set_gate(
                            cur,
                            i,
                            Gate::Awaiting {
                                approval_id: a.id.clone(),
                            },
                        );
                        cur.state.status = Status::AwaitingApproval;
                        cur.commit(&self.store).await?;
                        // In the policy check's span: the line carries the run's trace.
                        span.in_scope(|| {
                            tracing::info!(run = %cur.state.id, approval = %a.id, tool = %call.name, "parked for approval");
                        });
                        return Ok(Some(Outcome::Done));
                    }
                    v => resolved_gate(cur, &a, &call.id, &call.name, v),
                }
            }
        };
        drop(span);
        // Not committed here: the decision goes with the next checkpoint (the call's start, or
        // its refusal), one write fewer per call. A crash before it only asks policy again,
        // which answers the same call the same way (Evaluate is idempotent per call).
        set_gate(cur, i, gate);
        Ok(None)
    }

    async fn check_approval(
        &self,
        cur: &mut Cursor,
        i: usize,
        approval_id: &str,
    ) -> Result<Option<Outcome>, Error> {
        let a = match self.approval(approval_id).await {
            Ok(a) => a,
            Err(st) if is_transient(st.code()) => {
                return Ok(Some(retry("approval lookup", &st)));
            }
            Err(st) => {
                // An approval that cannot be found cannot approve anything.

                pb::Approval {
                    id: approval_id.to_string(),
                    state: pb::ApprovalState::Denied as i32,
                    reason: format!("approval could not be read: {}", st.message()),
                    ..Default::default()
                }
            }
        };
        let (call_id, tool) = match &cur.state.phase {
            Phase::Tools { calls, .. } => (calls[i].call.id.clone(), calls[i].call.name.clone()),
            Phase::Model => (String::new(), String::new()),
        };
        match verdict(&a) {
            Verdict::Pending => {
                if cur.state.status != Status::AwaitingApproval {
                    cur.state.status = Status::AwaitingApproval;
                    cur.commit(&self.store).await?;
                }
                Ok(Some(Outcome::Done))
            }
            v => {
                let gate = resolved_gate(cur, &a, &call_id, &tool, v);
                set_gate(cur, i, gate);
                cur.state.status = Status::Running;
                cur.commit(&self.store).await?;
                Ok(None)
            }
        }
    }

    async fn execute(&self, cur: &mut Cursor, i: usize) -> Result<Option<Outcome>, Error> {
        let s = &cur.state;
        let Phase::Tools { calls, .. } = &s.phase else {
            return Ok(None);
        };
        let call = calls[i].call.clone();
        cur.event(Kind::ToolStarted(pb::ToolStarted {
            call_id: call.id.clone(),
            tool: call.name.clone(),
            arguments_json: call.arguments.clone(),
        }));
        cur.commit(&self.store).await?;

        let s = &cur.state;
        let (limit, limit_kind) = call_limit(self.tool_timeout, s);
        let req = pb::ExecuteRequest {
            scope: Some(s.tool_scope(&call.name)),
            tool: call.name.clone(),
            arguments_json: call.arguments.clone(),
            idempotency_key: format!("{}:{}:{}", s.id, s.step, call.id),
            call_id: call.id.clone(),
            step: s.step,
            timeout: Some(pb_duration(limit)),
            timeout_limit: limit_kind as i32,
            workspace_quota_bytes: s.spec.workspace.quota_bytes().unwrap_or(0),
        };
        // The tools service cuts the call at `limit` (or the tool's own, smaller timeout) and
        // answers; the deadline leaves it time to.
        let timeout = limit + Duration::from_secs(10);
        let exec = self.with_retries("tool call", || {
            let mut c = self.clients.tools.clone();
            let mut r = tonic::Request::new(req.clone());
            r.set_timeout(timeout);
            async move { c.execute(r).await.map(|r| r.into_inner()) }
        });
        let span = crate::otel::execute_tool(&cur.state, &call.name, &call.id, &call.arguments);
        let exec = tracing::Instrument::instrument(exec, span.clone());
        let Some(result) = super::with_wall_time(&cur.state, exec).await else {
            return self.wall_time_out(cur).await.map(Some);
        };
        let (output, is_error, finished) = match result {
            Ok(resp) => {
                if let Some(r) = &resp.result {
                    crate::otel::tool_done(&span, r, resp.replayed);
                }

                let r = resp.result.unwrap_or_default();
                cur.state.holds_secrets |= r.run_holds_secrets;
                let finished = pb::ToolFinished {
                    call_id: call.id.clone(),
                    tool: call.name.clone(),
                    is_error: r.is_error,
                    output: r.output.clone(),
                    exit_code: r.exit_code,
                    duration: r.duration,
                    timed_out: r.timed_out,
                    truncated: r.stdout_truncated || r.stderr_truncated,
                    replayed: resp.replayed,
                    skipped: false,
                };
                (r.output, r.is_error, finished)
            }
            Err(st) if is_transient(st.code()) => {
                return Ok(Some(retry("tool call", &st)));
            }
            Err(st) => {
                // The tool cannot run as defined (missing image, deleted tool...): the model
                // learns why and can try something else.
                let text = format!("The tool '{}' could not run: {}", call.name, st.message());
                let finished = pb::ToolFinished {
                    call_id: call.id.clone(),
                    tool: call.name.clone(),
                    is_error: true,
                    output: text.clone(),
                    exit_code: -1,
                    skipped: true,
                    ..Default::default()
                };
                (text, true, finished)
            }
        };
        cur.state.messages.push(Msg::tool(&call, output, is_error));
        set_done(cur, i);
        cur.event(Kind::ToolFinished(finished));
        self.commit_unless_last(cur).await?;
        Ok(None)
    }

    /// Checkpoints a call's result, unless it was the step's last call: the end of the step
    /// (or of the run) checkpoints next, at once, and carries it. A crash in between redoes
    /// the call under the same idempotency key, and the tools service answers with the result
    /// it stored (`replayed`) instead of running it again.
    async fn commit_unless_last(&self, cur: &mut Cursor) -> Result<(), Error> {
        let more =
            matches!(&cur.state.phase, Phase::Tools { calls, .. } if calls.iter().any(|c| !c.done));
        if more {
            cur.commit(&self.store).await?;
        }
        Ok(())
    }

    /// An ended run held by approvals that were still open when it ended: each time a task
    /// for it comes (the approval listener queues one when an approval is resolved), the holds
    /// are checked with the approvals service and the resolved ones dropped. The checkpoint
    /// that drops the last one gives the run its retention (see `RunStore`).
    pub(super) async fn release_holds(&self, cur: &mut Cursor) -> Result<Outcome, Error> {
        if cur.state.held_by.is_empty() {
            return Ok(Outcome::Done);
        }
        let mut still_open = Vec::new();
        for id in cur.state.held_by.clone() {
            let r = self.approval(&id).await;
            match r {
                Ok(a) if a.state == pb::ApprovalState::Pending as i32 => still_open.push(id),
                Ok(_) => {}
                Err(st) if is_transient(st.code()) => {
                    return Ok(retry("approval lookup", &st));
                }
                // Gone (or never readable): it can no longer hold the run.
                Err(st) => {
                    tracing::info!(run = %cur.state.id, approval = %id, "approval unreadable ({}); no longer holding the run", st.message());
                }
            }
        }
        if still_open.len() != cur.state.held_by.len() {
            cur.state.held_by = still_open;
            cur.commit(&self.store).await?;
            if cur.state.held_by.is_empty() {
                tracing::info!(run = %cur.state.id, "ended run no longer held by an approval; its retention starts");
            }
        }
        Ok(Outcome::Done)
    }

    /// An approval, read from the approvals service (transient failures retried).
    pub(super) async fn approval(&self, id: &str) -> Result<pb::Approval, tonic::Status> {
        self.with_retries("approval lookup", || {
            let mut c = self.clients.approvals.clone();
            let id = id.to_string();
            async move {
                c.get(pb::GetApprovalRequest { id })
                    .await
                    .map(|r| r.into_inner())
            }
        })
        .await
    }
}

/// The limit the orchestrator puts on a tool call: its ceiling (`tool_timeout`), or what is
/// left of the run's wall-time budget when that is less. The tools service lowers it further
/// to the tool's own `timeout`.
fn call_limit(ceiling: Duration, s: &crate::state::RunState) -> (Duration, pb::TimeoutLimit) {
    match s.wall_time_left(now_ms()) {
        Some(left) if left < ceiling => (left, pb::TimeoutLimit::RunWallTime),
        _ => (ceiling, pb::TimeoutLimit::Caller),
    }
}

fn resolved_gate(
    cur: &mut Cursor,
    a: &pb::Approval,
    call_id: &str,
    tool: &str,
    v: Verdict,
) -> Gate {
    let (outcome, by, reason, waited_ms, gate) = match v {
        Verdict::Approved {
            by,
            reason,
            waited_ms,
        } => ("approved", by, reason, waited_ms, Gate::Allowed),
        Verdict::Refused {
            outcome,
            by,
            reason,
            waited_ms,
        } => {
            let why = match (outcome, by.is_empty(), reason.is_empty()) {
                ("expired", ..) => "the approval expired before anyone decided".to_string(),
                (_, false, false) => format!("denied by {by}: {reason}"),
                (_, false, true) => format!("denied by {by}"),
                (_, true, false) => format!("denied: {reason}"),
                _ => "denied".to_string(),
            };
            (outcome, by, reason, waited_ms, Gate::Denied { reason: why })
        }
        Verdict::Pending => {
            return Gate::Awaiting {
                approval_id: a.id.clone(),
            };
        }
    };
    crate::otel::approval_wait(
        &cur.state,
        &crate::otel::Resolved {
            tool,
            call_id,
            approval: a,
            outcome,
            by: &by,
            reason: &reason,
            waited_ms,
        },
    );
    cur.event(Kind::ApprovalResolved(pb::ApprovalResolved {
        approval_id: a.id.clone(),
        call_id: call_id.to_string(),
        // Approved, Denied or Expired: Pending (and a state this build does not know) returned
        // above.
        outcome: a.state,
        decided_by: by,
        reason,
        waited: Some(pb_duration_ms(waited_ms)),
    }));
    gate
}

fn set_gate(cur: &mut Cursor, i: usize, gate: Gate) {
    if let Phase::Tools { calls, .. } = &mut cur.state.phase {
        calls[i].gate = gate;
    }
}

fn set_done(cur: &mut Cursor, i: usize) {
    if let Phase::Tools { calls, .. } = &mut cur.state.phase {
        calls[i].done = true;
    }
}
