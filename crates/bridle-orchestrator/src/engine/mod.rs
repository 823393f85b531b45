//! The agent loop: advances one run by one step — model call, policy check, tool calls,
//! observation — checkpointing after each part, so a crash anywhere resumes from the last
//! checkpoint on another worker.
//!
//! `advance` is safe to call for any run at any time, any number of times, concurrently: it
//! reads the state, does the next thing the state says, and commits fenced by version. A
//! stale worker's commit fails and it reloads; tool calls carry an idempotency key so a call
//! that completed is never run twice.

pub mod context;
mod cursor;
#[cfg(test)]
mod tests;
mod tools;

use std::time::Duration;

use bridle_core::Shutdown;
use bridle_core::ids::RunId;
use bridle_core::timeutil::{now_ms, pb_duration, pb_duration_ms};
use bridle_proto as pb;
use bridle_proto::run_event::Kind;

use crate::Error;
use crate::clients::{Clients, is_transient};
use crate::state::{
    End, EndReason, Gate, Moment, Msg, NewRun, PendingCall, Phase, RunState, Status,
};
use crate::store::RunStore;
pub use cursor::Cursor;

/// What the worker does with the task after `advance`.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Acknowledge: the run parked or ended (or its next step was queued otherwise).
    Done,
    /// Acknowledge and queue the run's next step: the step ended and the next one is due.
    Next,
    /// Leave the task pending: a dependency is down; the task is delivered again later.
    Retry(String),
    /// Keep the task and try the step again after a pause: a service's Redis is out of
    /// memory. Redelivery would count a failed delivery each time and dead-letter the run
    /// over an outage that ends when memory is freed.
    WaitForRedis(String),
}

/// The outcome of a step that a transient failure of `what` stopped.
fn retry(what: &str, st: &tonic::Status) -> Outcome {
    let why = format!("{what}: {}", st.message());
    if bridle_core::error::status_is_redis_out_of_memory(st) {
        Outcome::WaitForRedis(why)
    } else {
        Outcome::Retry(why)
    }
}

#[derive(Clone)]
pub struct Engine {
    pub store: RunStore,
    pub clients: Clients,
    pub model_timeout: Duration,
    pub tool_timeout: Duration,
}

/// Attempts of a call to a service that answered with a transient error, before the step
/// is left for redelivery.
const CALL_ATTEMPTS: u32 = 3;

impl Engine {
    /// Writes a new run (state, first event, index) and queues its first step.
    pub async fn start(&self, new: NewRun) -> Result<RunState, Error> {
        let (state, first) = RunState::new(new);
        self.store.create(&state, &first).await?;
        Ok(state)
    }

    /// Advances the run by what its state says comes next. Called by a worker, whose
    /// checkpoints wait out a Redis that is out of memory until `stop`.
    pub async fn advance(&self, run_id: &RunId, stop: &Shutdown) -> Result<Outcome, Error> {
        for _ in 0..8 {
            match self.advance_once(run_id, stop).await {
                Err(Error::Fenced(_)) => {
                    tracing::debug!(run = %run_id, "fenced by another writer; reloading");
                    continue;
                }
                other => return other,
            }
        }
        Ok(Outcome::Retry("run kept changing under this worker".into()))
    }

    async fn advance_once(&self, run_id: &RunId, stop: &Shutdown) -> Result<Outcome, Error> {
        let loaded = match self.store.load(run_id).await? {
            Some(l) => l,
            None => {
                tracing::warn!(
                    run = %run_id,
                    "task for a run that does not exist; dropping it"
                );
                return Ok(Outcome::Done);
            }
        };
        let mut cur = Cursor::new(loaded).waiting_for_memory(stop);
        if cur.state.status.is_terminal() {
            return self.release_holds(&mut cur).await;
        }
        if let Some(why) = cur.state.cancel_requested.clone() {
            return self.finish(&mut cur, End::cancelled(why)).await;
        }
        if let Some(end) = cur.state.over_budget(Moment::Task, now_ms()) {
            return self.finish(&mut cur, end).await;
        }
        match cur.state.phase {
            Phase::Model => self.model_step(&mut cur).await,
            Phase::Tools { .. } => self.tools_phase(&mut cur).await,
        }
    }

    async fn model_step(&self, cur: &mut Cursor) -> Result<Outcome, Error> {
        if let Some(end) = cur.state.over_budget(Moment::BeforeModel, now_ms()) {
            return self.finish(cur, end).await;
        }
        cur.state.step += 1;
        cur.state.status = Status::Running;
        cur.event(Kind::StepStarted(pb::StepStarted {}));
        let step_started = now_ms();
        if let Some(o) = self.fit_context(cur).await? {
            return Ok(o);
        }

        let span = crate::otel::chat(&cur.state);
        let called = std::time::Instant::now();
        let call = tracing::Instrument::instrument(self.call_model(&cur.state), span.clone());
        let resp = match with_wall_time(&cur.state, call).await {
            None => return self.wall_time_out(cur).await,
            Some(Ok(mut r)) => {
                // Before the reply is recorded anywhere (span, events, state, the next
                // request): a model that learned a value writes it no further.
                // In the model call's span: the Redact call joins the run's trace.
                if cur.state.holds_secrets
                    && let Err(st) = tracing::Instrument::instrument(
                        self.scrub_reply(&cur.state, &mut r),
                        span.clone(),
                    )
                    .await
                {
                    crate::otel::failed(&span, &st);
                    return Ok(retry(
                        "scrubbing the model's reply of the run's secrets",
                        &st,
                    ));
                }
                crate::otel::chat_done(&span, &r);
                crate::otel::record_chat(&cur.state, &r, called.elapsed());
                r
            }
            Some(Err(st)) if is_transient(st.code()) => {
                crate::otel::failed(&span, &st);
                crate::otel::record_chat_error(&cur.state, &st, called.elapsed());
                return Ok(retry("model call", &st));
            }
            Some(Err(st)) => {
                crate::otel::failed(&span, &st);
                crate::otel::record_chat_error(&cur.state, &st, called.elapsed());
                let msg = format!("model call failed: {}", st.message());
                return self.finish(cur, End::failed(EndReason::Error, msg)).await;
            }
        };
        let message = resp.message.clone().unwrap_or_default();
        cur.state
            .totals
            .add(resp.usage.as_ref(), resp.cost.as_ref());
        cur.state.scripted |= resp.scripted;
        let assistant = Msg::from_pb(&pb::Message {
            role: pb::Role::Assistant as i32,
            ..message.clone()
        });
        cur.state.messages.push(assistant.clone());
        cur.event(Kind::ModelCompleted(pb::ModelCompleted {
            provider: resp.provider.clone(),
            model: resp.model.clone(),
            scripted: resp.scripted,
            usage: resp.usage,
            cost: resp.cost,
            latency: resp.latency,
            text: message.text.clone(),
            tool_calls: message.tool_calls.clone(),
            finish_reason: pb::FinishReason::try_from(resp.finish_reason)
                .map(|f| {
                    f.as_str_name()
                        .trim_start_matches("FINISH_REASON_")
                        .to_lowercase()
                })
                .unwrap_or_default(),
            target: resp.target.clone(),
        }));

        let after = Moment::AfterModel { model: &resp.model };
        if let Some(end) = cur.state.over_budget(after, now_ms()) {
            return self.finish(cur, end).await;
        }
        if assistant.tool_calls.is_empty() {
            return self.finish(cur, End::answer(assistant.text)).await;
        }
        cur.state.phase = Phase::Tools {
            calls: assistant
                .tool_calls
                .iter()
                .map(|c| PendingCall {
                    call: c.clone(),
                    gate: Gate::Unchecked,
                    done: false,
                })
                .collect(),
            step_started_ms: step_started,
        };
        cur.commit(&self.store).await?;
        self.tools_phase(cur).await
    }

    /// Compacts the conversation when the next model call would not fit the window.
    async fn fit_context(&self, cur: &mut Cursor) -> Result<Option<Outcome>, Error> {
        let s = &mut cur.state;
        let f = context::family(&s.context.model);
        let window = s
            .spec
            .model
            .context_window
            .unwrap_or(if s.context.window > 0 {
                s.context.window
            } else {
                context::default_window(&s.context.model)
            });
        let reserve = u64::from(s.spec.model.max_output_tokens.unwrap_or(4096));
        let limit = context::limit(window, reserve);
        let fixed = context::count_text(f, &s.spec.instructions)
            + s.tools
                .iter()
                .map(|t| {
                    context::count_text(f, &t.schema) + context::count_text(f, &t.description) + 8
                })
                .sum::<u64>();
        let before = fixed + context::total(f, &mut s.messages);
        if before <= limit {
            return Ok(None);
        }
        // Compacting is a part of the run's trace: the summary's model call joins it, and the
        // log line carries it.
        let span = crate::otel::compact_context(s);
        let compacted = self.compact(cur, fixed, before, limit);
        tracing::Instrument::instrument(compacted, span).await
    }

    async fn compact(
        &self,
        cur: &mut Cursor,
        fixed: u64,
        before: u64,
        limit: u64,
    ) -> Result<Option<Outcome>, Error> {
        let s = &mut cur.state;
        let f = context::family(&s.context.model);
        let mut after = fixed + context::trim_tool_outputs(f, &mut s.messages, fixed, limit);
        let mut method = "trimmed old tool outputs";
        if after > limit
            && let Some(range) = context::summarisable(&s.messages)
        {
            let transcript = context::transcript(&s.messages[range.clone()]);
            let req = pb::CompleteRequest {
                scope: Some(s.scope()),
                route: s.spec.route.clone(),
                messages: vec![
                    pb::Message {
                        role: pb::Role::System as i32,
                        text: context::SUMMARY_PROMPT.into(),
                        ..Default::default()
                    },
                    pb::Message {
                        role: pb::Role::User as i32,
                        text: transcript,
                        ..Default::default()
                    },
                ],
                max_output_tokens: Some(2048),
                timeout: Some(pb_duration(self.model_timeout)),
                require_price: s.limits.max_cost_nano_usd.is_some(),
                metadata: [("bridle.purpose".to_string(), "context_summary".to_string())].into(),
                end_user: s.end_user.clone(),
                caller: Some(s.started_by.to_pb()),
                ..Default::default()
            };
            let mut r = tonic::Request::new(req);
            r.set_timeout(self.model_timeout + Duration::from_secs(5));
            match self.clients.router.clone().complete(r).await {
                Ok(resp) => {
                    let resp = resp.into_inner();
                    s.totals.add(resp.usage.as_ref(), resp.cost.as_ref());
                    let text = resp.message.map(|m| m.text).unwrap_or_default();
                    s.messages.splice(range, [context::summary_message(&text)]);
                    after = fixed + context::total(f, &mut s.messages);
                    method = "trimmed old tool outputs and summarised older turns";
                }
                Err(st) if is_transient(st.code()) => {
                    return Ok(Some(retry("context summary", &st)));
                }
                Err(st) => {
                    tracing::warn!(run = %s.id, "summarising the context failed, sending it as it is: {}", st.message());
                }
            }
        }
        tracing::info!(run = %s.id, before, after, limit, "context compacted");
        cur.event(Kind::ContextCompacted(pb::ContextCompacted {
            tokens_before: before,
            tokens_after: after,
            method: method.into(),
        }));
        Ok(None)
    }

    /// Has the tools service scrub the reply's text and tool arguments of every value the
    /// run's calls resolved (only it holds them). Fails closed: a reply that cannot be
    /// scrubbed is not kept (the step is retried).
    async fn scrub_reply(
        &self,
        s: &crate::state::RunState,
        r: &mut pb::CompleteResponse,
    ) -> Result<(), tonic::Status> {
        let Some(m) = r.message.as_mut() else {
            return Ok(());
        };
        let texts: Vec<String> = std::iter::once(m.text.clone())
            .chain(m.tool_calls.iter().map(|c| c.arguments_json.clone()))
            .collect();
        let req = pb::RedactRequest {
            scope: Some(s.scope()),
            texts,
        };
        let out = self
            .with_retries("scrubbing a reply", || {
                let mut c = self.clients.tools.clone();
                let mut r = tonic::Request::new(req.clone());
                r.set_timeout(Duration::from_secs(30));
                async move { c.redact(r).await.map(|r| r.into_inner()) }
            })
            .await?;
        if out.texts.len() != 1 + m.tool_calls.len() {
            return Err(tonic::Status::internal(
                "the tools service answered Redact with a different number of texts",
            ));
        }
        if out.redacted > 0 {
            tracing::warn!(
                run = %s.id,
                texts = out.redacted,
                "the model wrote a value of the run's secrets; scrubbed"
            );
        }
        let mut texts = out.texts.into_iter();
        m.text = texts.next().unwrap_or_default();
        for (c, t) in m.tool_calls.iter_mut().zip(texts) {
            c.arguments_json = t;
        }
        Ok(())
    }

    async fn call_model(
        &self,
        s: &crate::state::RunState,
    ) -> Result<pb::CompleteResponse, tonic::Status> {
        let req = self.model_request(s);
        // On the `chat` span this call runs in (content only when capture is on).
        bridle_core::genai::record_request(&tracing::Span::current(), &req);
        self.with_retries("model call", || {
            let mut c = self.clients.router.clone();
            let mut r = tonic::Request::new(req.clone());
            r.set_timeout(self.model_timeout + Duration::from_secs(5));
            async move { c.complete(r).await.map(|r| r.into_inner()) }
        })
        .await
    }

    /// The run's next model call: its conversation after the Agent's instructions, its tools,
    /// and the Agent's model parameters (the output cap never above what the token budget has
    /// left).
    fn model_request(&self, s: &crate::state::RunState) -> pb::CompleteRequest {
        let mut messages = Vec::with_capacity(s.messages.len() + 1);
        if !s.spec.instructions.is_empty() {
            messages.push(pb::Message {
                role: pb::Role::System as i32,
                text: s.spec.instructions.clone(),
                ..Default::default()
            });
        }
        messages.extend(s.messages.iter().map(Msg::to_pb));
        // Never ask for more output than the token budget has left.
        let remaining = s
            .limits
            .max_tokens
            .map(|m| m.saturating_sub(s.totals.tokens()).min(u32::MAX as u64) as u32);
        let max_out = match (s.spec.model.max_output_tokens, remaining) {
            (Some(a), Some(b)) => Some(a.min(b.max(1))),
            (a, b) => a.or(b.map(|b| b.max(1))),
        };
        let mut tools: Vec<pb::ToolSpec> = s.tools.iter().map(|t| t.to_pb()).collect();
        if s.spec.model.prompt_cache {
            // Three breakpoints: the tools, the instructions, and the conversation so far, so
            // the next step reads all of it from the cache (Anthropic takes at most four).
            if let Some(t) = tools.last_mut() {
                t.cache_breakpoint = true;
            }
            if let Some(m) = messages
                .first_mut()
                .filter(|m| m.role == pb::Role::System as i32)
            {
                m.cache_breakpoint = true;
            }
            if let Some(m) = messages.last_mut() {
                m.cache_breakpoint = true;
            }
        }
        pb::CompleteRequest {
            scope: Some(s.scope()),
            route: s.spec.route.clone(),
            messages,
            tools,
            tool_choice: None,
            temperature: s.spec.model.temperature,
            top_p: s.spec.model.top_p,
            stop: s.spec.model.stop.clone(),
            seed: s.spec.model.seed,
            reasoning_effort: s.spec.model.reasoning_effort.clone().unwrap_or_default(),
            thinking_budget_tokens: s.spec.model.thinking_budget_tokens,
            // A routing hint of OpenAI's only; breakpoints are what both providers act on.
            prompt_cache_key: String::new(),
            // Free text: an Agent's structured output is not a model parameter yet.
            response_format: None,
            max_output_tokens: max_out,
            timeout: Some(pb_duration(self.model_timeout)),
            metadata: Default::default(),
            // A cost budget cannot be kept on a model whose cost is unknown.
            require_price: s.limits.max_cost_nano_usd.is_some(),
            end_user: s.end_user.clone(),
            // Spend budgets count the run's calls against whoever started it.
            caller: Some(s.started_by.to_pb()),
        }
    }

    /// Ends the run: terminal state and event, then releases what the run held elsewhere.
    pub(crate) async fn finish(&self, cur: &mut Cursor, end: End) -> Result<Outcome, Error> {
        let End {
            status,
            reason,
            output,
            error,
        } = end;
        let now = now_ms();
        let s = &mut cur.state;
        s.status = status;
        s.end_reason = Some(reason);
        s.output = output.clone();
        s.error = error.clone();
        s.finished_ms = Some(now);
        if let Phase::Tools { calls, .. } = &mut s.phase {
            // An approval still open keeps the run from expiring until it is resolved.
            s.held_by = calls
                .iter()
                .filter_map(|c| match &c.gate {
                    Gate::Awaiting { approval_id } if !c.done => Some(approval_id.clone()),
                    _ => None,
                })
                .collect();
            // Nothing of an unfinished step runs after the end.
            calls.retain(|c| c.done);
        }
        let (usage, cost) = (s.totals.usage_pb(), s.totals.cost_pb());
        let steps = s.step;
        let duration = pb_duration_ms(now - s.created_ms);
        cur.event(Kind::RunFinished(pb::RunFinished {
            status: status.to_pb() as i32,
            reason: reason.to_pb() as i32,
            output,
            error,
            usage: Some(usage),
            cost: Some(cost),
            duration: Some(duration),
            steps,
        }));
        cur.commit(&self.store).await?;
        crate::otel::run_finished(&cur.state);
        // Releasing is the run's last work, in its trace: the tools' and secrets' EndRun calls
        // are children of it, and the log line carries the run's trace id.
        let span = crate::otel::release(&cur.state);
        span.in_scope(|| {
            tracing::info!(run = %cur.state.id, status = ?status, reason = ?reason, "run finished");
        });
        tracing::Instrument::instrument(self.release(&cur.state), span).await;
        Ok(Outcome::Done)
    }

    /// Best effort: the tools service removes the run's containers and workspace, and the
    /// secrets broker revokes the run's leases. A failure is logged; the tools service also
    /// reaps what it finds orphaned, and unrenewed leases lapse.
    pub(crate) async fn release(&self, s: &crate::state::RunState) {
        let scope = s.scope();
        let mut r = tonic::Request::new(pb::EndRunRequest {
            scope: Some(scope.clone()),
        });
        r.set_timeout(Duration::from_secs(30));
        let mut leases = tonic::Request::new(pb::SecretsEndRunRequest { scope: Some(scope) });
        leases.set_timeout(Duration::from_secs(30));
        // Sandboxes and leases are released side by side; each failure is only logged (leases
        // lapse at the end of their duration once nobody renews them).
        let mut tools = self.clients.tools.clone();
        let mut secrets = self.clients.secrets.clone();
        let (sandboxes, leases) = tokio::join!(tools.end_run(r), secrets.end_run(leases));
        if let Err(st) = sandboxes {
            tracing::warn!(run = %s.id, "releasing the run's sandboxes failed: {}", st.message());
        }
        if let Err(st) = leases {
            tracing::warn!(run = %s.id, "revoking the run's secret leases failed: {}", st.message());
        }
    }

    pub(crate) async fn wall_time_out(&self, cur: &mut Cursor) -> Result<Outcome, Error> {
        let end = cur.state.wall_time_end();
        self.finish(cur, end).await
    }

    /// Ends a run whose task failed too often.
    pub async fn fail_dead_letter(&self, run_id: &RunId, deliveries: u64) -> Result<(), Error> {
        for _ in 0..8 {
            let Some(l) = self.store.load(run_id).await? else {
                return Ok(());
            };
            let mut cur = Cursor::new(l);
            if cur.state.status.is_terminal() {
                return Ok(());
            }
            let msg = format!(
                "a step of this run failed {deliveries} times (see the orchestrator log); it was moved to the dead-letter stream"
            );
            match self
                .finish(&mut cur, End::failed(EndReason::DeadLetter, msg))
                .await
            {
                Err(Error::Fenced(_)) => continue,
                other => return other.map(|_| ()),
            }
        }
        Ok(())
    }

    /// Cancels a run. A run in a worker's hands is only flagged (the worker's next checkpoint
    /// is fenced by this write, and it then ends the run); any other run ends here.
    pub async fn cancel(
        &self,
        run_id: &RunId,
        reason: &str,
        by: &crate::state::Actor,
    ) -> Result<crate::store::Loaded, Error> {
        for _ in 0..8 {
            let l = self.store.load_required(run_id).await?;
            if l.state.status.is_terminal() {
                return Ok(l);
            }
            let mut cur = Cursor::new(l);
            let why = if reason.is_empty() {
                format!("cancelled by {}", by.describe())
            } else {
                format!("cancelled by {}: {reason}", by.describe())
            };
            cur.state.cancel_requested = Some(why.clone());
            cur.state.cancelled_by = Some(by.clone());
            let r = match cur.state.status {
                Status::Queued | Status::AwaitingApproval => {
                    self.finish(&mut cur, End::cancelled(why)).await.map(|_| ())
                }
                _ => {
                    let r = cur.commit(&self.store).await;
                    if r.is_ok() {
                        // Interrupt the worker inside the step, wherever it runs; and make
                        // sure some worker sees the flag even if the run is between steps.
                        self.store.publish_cancel(run_id).await?;
                        self.store.enqueue(run_id).await?;
                    }
                    r
                }
            };
            match r {
                Err(Error::Fenced(_)) => continue,
                Err(e) => return Err(e),
                Ok(()) => return self.store.load_required(run_id).await,
            }
        }
        Err(Error::Fenced(run_id.clone()))
    }

    /// Calls `f` up to CALL_ATTEMPTS times while it fails with a transient status, with
    /// back-off between attempts.
    async fn with_retries<T, F, Fut>(&self, what: &str, mut f: F) -> Result<T, tonic::Status>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<T, tonic::Status>>,
    {
        let mut attempt = 0;
        loop {
            attempt += 1;
            match f().await {
                Err(st) if is_transient(st.code()) && attempt < CALL_ATTEMPTS => {
                    tracing::warn!(code = ?st.code(), "{what} failed, retrying: {}", st.message());
                    tokio::time::sleep(backoff(attempt)).await;
                }
                other => return other,
            }
        }
    }
}

/// Runs `call` within what is left of the run's wall-time budget; `None` when it ran out.
pub(crate) async fn with_wall_time<T>(
    s: &crate::state::RunState,
    call: impl std::future::Future<Output = T>,
) -> Option<T> {
    match s.wall_time_left(now_ms()) {
        None => Some(call.await),
        Some(left) => tokio::time::timeout(left, call).await.ok(),
    }
}

pub(crate) fn backoff(attempt: u32) -> Duration {
    let base = Duration::from_millis(250 * 2u64.pow(attempt.min(6)));
    let jitter = Duration::from_millis(u64::from(ulid::Ulid::new().random() as u16 % 200));
    base + jitter
}
