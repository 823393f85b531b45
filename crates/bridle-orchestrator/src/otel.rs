//! The run's trace: a root `invoke_agent {agent}` span (emitted when the run ends, with the ids
//! recorded when it started), and under it `chat {model}`, `execute_tool {tool}`, policy-check
//! and approval-wait spans, named and attributed after the OpenTelemetry GenAI semantic
//! conventions; Bridle's own facts are under `bridle.*`. Message and argument content is not
//! recorded unless content capture is on (`bridle_core::genai::capture_content`), and then
//! only redacted.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use opentelemetry::KeyValue;
use tracing_opentelemetry::OpenTelemetrySpanExt as _;

use bridle_proto as pb;

use crate::state::{EndReason, RunState, Status};

fn parent(s: &RunState) -> opentelemetry::Context {
    bridle_core::telemetry::run_parent(&s.trace.trace_id, &s.trace.span_id)
}

/// `span` as a span of the run's trace: a child of its root, with the run's attributes.
fn in_run(span: tracing::Span, s: &RunState) -> tracing::Span {
    let _ = span.set_parent(parent(s));
    span.set_attribute("gen_ai.conversation.id", s.id.to_string());
    span.set_attribute("gen_ai.agent.name", s.agent.to_string());
    span.set_attribute("bridle.tenant", s.tenant.to_string());
    span.set_attribute("bridle.step", i64::from(s.step));
    span
}

/// Whether message and argument content may be recorded on spans.
pub fn capture_content() -> bool {
    bridle_core::genai::capture_content()
}

/// The model the run asks for, when it knows it (a route's model is the router's to choose:
/// no `gen_ai.request.model` then, rather than the route's name under it).
fn requested_model(s: &RunState) -> Option<String> {
    (!s.context.model.is_empty()).then(|| s.context.model.clone())
}

/// The span of one model call.
pub fn chat(s: &RunState) -> tracing::Span {
    let name = match requested_model(s) {
        Some(m) => format!("chat {m}"),
        None => "chat".to_string(),
    };
    let span = in_run(
        tracing::info_span!("chat", "otel.name" = %name, "otel.kind" = "client"),
        s,
    );
    span.set_attribute("gen_ai.operation.name", "chat");
    if let Some(m) = requested_model(s) {
        span.set_attribute("gen_ai.request.model", m);
    }
    span.set_attribute("bridle.route", s.spec.route.clone());
    span
}

fn chat_attrs(s: &RunState) -> Vec<KeyValue> {
    let mut a = vec![
        KeyValue::new("gen_ai.operation.name", "chat"),
        KeyValue::new("bridle.tenant", s.tenant.to_string()),
        KeyValue::new("gen_ai.agent.name", s.agent.to_string()),
        KeyValue::new("bridle.route", s.spec.route.clone()),
    ];
    if let Some(m) = requested_model(s) {
        a.push(KeyValue::new("gen_ai.request.model", m));
    }
    a
}

/// Metrics of one model call. The duration is what the run waited for the answer, as the
/// conventions define `gen_ai.client.operation.duration` (the router's own time with the
/// provider is in its response, not this metric).
pub fn record_chat(s: &RunState, r: &pb::CompleteResponse, elapsed: Duration) {
    bridle_core::genai::record_metrics(&chat_attrs(s), r, elapsed.as_secs_f64());
}

/// Metrics of a model call that failed.
pub fn record_chat_error(s: &RunState, st: &tonic::Status, elapsed: Duration) {
    bridle_core::genai::record_failure_metrics(
        &chat_attrs(s),
        &format!("{:?}", st.code()),
        elapsed.as_secs_f64(),
    );
}

pub fn chat_done(span: &tracing::Span, r: &pb::CompleteResponse) {
    bridle_core::genai::record_response(span, r);
}

pub fn failed(span: &tracing::Span, st: &tonic::Status) {
    bridle_core::genai::record_failure(span, &format!("{:?}", st.code()), st.message());
}

/// The span of one tool call.
pub fn execute_tool(s: &RunState, tool: &str, call_id: &str, arguments: &str) -> tracing::Span {
    // INTERNAL, as the conventions say for execute_tool: the call to the tools service is a
    // client span of its own, under this one.
    let span = in_run(
        tracing::info_span!("execute_tool", "otel.name" = %format!("execute_tool {tool}"), "otel.kind" = "internal"),
        s,
    );
    span.set_attribute("gen_ai.operation.name", "execute_tool");
    span.set_attribute("gen_ai.tool.name", tool.to_string());
    span.set_attribute("gen_ai.tool.call.id", call_id.to_string());
    if let Some(t) = s.tools.iter().find(|t| t.name == tool) {
        // Every Bridle tool runs on the agent's side, under the harness (the conventions'
        // `extension`, against `function` for one the application runs); how it runs is
        // Bridle's own attribute.
        span.set_attribute("gen_ai.tool.type", "extension");
        span.set_attribute("bridle.tool.kind", t.kind.clone());
    }
    if capture_content() {
        span.set_attribute("gen_ai.tool.call.arguments", arguments.to_string());
    }
    span
}

pub fn tool_done(span: &tracing::Span, r: &pb::ToolResult, replayed: bool) {
    if capture_content() {
        // The tool service has already scrubbed the run's secrets from the output.
        span.set_attribute("gen_ai.tool.call.result", r.output.clone());
    }
    span.set_attribute("bridle.sandbox.id", r.sandbox_id.clone());
    span.set_attribute("bridle.tool.exit_code", i64::from(r.exit_code));
    span.set_attribute("bridle.tool.replayed", replayed);
    span.set_attribute("bridle.tool.timed_out", r.timed_out);
    if r.is_error {
        let kind = pb::ToolErrorKind::try_from(r.error_kind)
            .map(|k| {
                k.as_str_name()
                    .trim_start_matches("TOOL_ERROR_KIND_")
                    .to_lowercase()
            })
            .unwrap_or_else(|_| "failed".into());
        span.set_attribute("error.type", kind);
    }
}

/// The span of one policy check.
pub fn policy(s: &RunState, tool: &str, call_id: &str) -> tracing::Span {
    let span = in_run(
        tracing::info_span!("policy", "otel.name" = %format!("check_policy {tool}"), "otel.kind" = "client"),
        s,
    );
    span.set_attribute("gen_ai.tool.name", tool.to_string());
    span.set_attribute("gen_ai.tool.call.id", call_id.to_string());
    span
}

pub fn policy_done(
    span: &tracing::Span,
    decision: pb::PolicyDecision,
    reason: &str,
    policy_ids: &[String],
) {
    let d = decision
        .as_str_name()
        .trim_start_matches("POLICY_DECISION_")
        .to_lowercase();
    span.set_attribute("bridle.policy.decision", d);
    if !reason.is_empty() {
        span.set_attribute("bridle.policy.reason", reason.to_string());
    }
    if !policy_ids.is_empty() {
        span.set_attribute("bridle.policy.ids", string_array(policy_ids));
    }
}

fn string_array(items: &[String]) -> opentelemetry::Value {
    opentelemetry::Value::Array(opentelemetry::Array::String(
        items.iter().map(|i| i.clone().into()).collect(),
    ))
}

fn system_time(ms: i64) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(ms.max(0) as u64)
}

/// An approval the run saw resolved.
pub struct Resolved<'a> {
    pub tool: &'a str,
    pub call_id: &'a str,
    pub approval: &'a pb::Approval,
    /// `approved`, `denied` or `expired`.
    pub outcome: &'a str,
    pub by: &'a str,
    pub reason: &'a str,
    pub waited_ms: i64,
}

/// Records the wait for a human's decision: from when the approval was asked for to when it
/// was decided (or now, for one the run found expired), with who decided, when and why, and
/// the policy that asked.
pub fn approval_wait(s: &RunState, r: &Resolved<'_>) {
    bridle_core::metrics::metrics().approval_wait.record(
        r.waited_ms.max(0) as f64 / 1000.0,
        &[
            KeyValue::new("bridle.tenant", s.tenant.to_string()),
            KeyValue::new("gen_ai.tool.name", r.tool.to_string()),
            KeyValue::new("bridle.approval.outcome", r.outcome.to_string()),
        ],
    );
    let a = r.approval;
    let end = a
        .decided_at
        .as_ref()
        .map(|t| system_time(bridle_core::timeutil::ms_from_ts(t)))
        .unwrap_or_else(SystemTime::now);
    let start = end
        .checked_sub(Duration::from_millis(r.waited_ms.max(0) as u64))
        .unwrap_or(end);
    let mut attrs = vec![
        KeyValue::new("gen_ai.conversation.id", s.id.to_string()),
        KeyValue::new("gen_ai.agent.name", s.agent.to_string()),
        KeyValue::new("bridle.tenant", s.tenant.to_string()),
        KeyValue::new("gen_ai.tool.name", r.tool.to_string()),
        KeyValue::new("gen_ai.tool.call.id", r.call_id.to_string()),
        KeyValue::new("bridle.approval.id", a.id.clone()),
        KeyValue::new("bridle.approval.outcome", r.outcome.to_string()),
    ];
    if !r.by.is_empty() {
        attrs.push(KeyValue::new(
            "bridle.approval.decided_by",
            r.by.to_string(),
        ));
    }
    if !r.reason.is_empty() {
        attrs.push(KeyValue::new(
            "bridle.approval.reason",
            r.reason.to_string(),
        ));
    }
    if let Some(t) = &a.decided_at {
        attrs.push(KeyValue::new("bridle.approval.decided_at", t.to_string()));
    }
    if !a.policy_reason.is_empty() {
        attrs.push(KeyValue::new(
            "bridle.policy.reason",
            a.policy_reason.clone(),
        ));
    }
    if !a.policy_ids.is_empty() {
        attrs.push(KeyValue::new(
            "bridle.policy.ids",
            string_array(&a.policy_ids),
        ));
    }
    bridle_core::telemetry::emit_span(
        &parent(s),
        format!("await_approval {}", r.tool),
        start,
        end,
        attrs,
    );
}

/// The span of compacting a run's conversation to fit the model's window (old tool outputs
/// trimmed, older turns summarised by a model call of its own).
pub fn compact_context(s: &RunState) -> tracing::Span {
    in_run(
        tracing::info_span!(
            "compact_context",
            "otel.name" = "compact_context",
            "otel.kind" = "internal"
        ),
        s,
    )
}

/// The span of releasing what a run held (its sandboxes and workspace, its secret leases)
/// once it has ended.
pub fn release(s: &RunState) -> tracing::Span {
    in_run(
        tracing::info_span!(
            "release",
            "otel.name" = "release_run",
            "otel.kind" = "internal"
        ),
        s,
    )
}

/// The run's root span, once it has ended.
pub fn run_finished(s: &RunState) {
    let t = &s.totals;
    bridle_core::metrics::metrics().runs_finished.add(
        1,
        &[
            KeyValue::new("bridle.tenant", s.tenant.to_string()),
            KeyValue::new("gen_ai.agent.name", s.agent.to_string()),
            KeyValue::new(
                "bridle.run.status",
                format!("{:?}", s.status).to_lowercase(),
            ),
            KeyValue::new(
                "bridle.run.end_reason",
                s.end_reason
                    .map(|r| format!("{r:?}"))
                    .unwrap_or_default()
                    .to_lowercase(),
            ),
        ],
    );

    let mut attrs = vec![
        KeyValue::new("gen_ai.operation.name", "invoke_agent"),
        KeyValue::new("gen_ai.agent.name", s.agent.to_string()),
        KeyValue::new("gen_ai.conversation.id", s.id.to_string()),
        KeyValue::new("gen_ai.usage.input_tokens", t.input_tokens as i64),
        KeyValue::new("gen_ai.usage.output_tokens", t.output_tokens as i64),
        KeyValue::new("bridle.tenant", s.tenant.to_string()),
        KeyValue::new("bridle.run.steps", i64::from(s.step)),
        KeyValue::new(
            "bridle.run.status",
            format!("{:?}", s.status).to_lowercase(),
        ),
        KeyValue::new(
            "bridle.run.end_reason",
            s.end_reason
                .map(|r| format!("{r:?}"))
                .unwrap_or_default()
                .to_lowercase(),
        ),
        KeyValue::new("bridle.scripted", s.scripted),
    ];
    // Who caused the run (OpenTelemetry's `user.id`), and for which of an application's users.
    if !s.started_by.id.is_empty() {
        attrs.push(KeyValue::new("user.id", s.started_by.id.clone()));
    }
    if !s.end_user.is_empty() {
        attrs.push(KeyValue::new("enduser.id", s.end_user.clone()));
    }
    if let Some(by) = &s.cancelled_by {
        attrs.push(KeyValue::new("bridle.run.cancelled_by", by.id.clone()));
    }
    if t.cost_known {
        attrs.push(KeyValue::new(
            "bridle.cost.usd",
            t.cost_nano_usd as f64 / 1e9,
        ));
    } else {
        attrs.push(KeyValue::new("bridle.cost.known", false));
    }
    let error = match s.status {
        Status::Failed => {
            attrs.push(KeyValue::new(
                "error.type",
                match s.end_reason {
                    Some(EndReason::Error) => "error".to_string(),
                    Some(r) => format!("{r:?}").to_lowercase(),
                    None => "error".to_string(),
                },
            ));
            Some(s.error.clone())
        }
        _ => None,
    };
    bridle_core::telemetry::end_run_span(
        &s.trace.trace_id,
        &s.trace.span_id,
        bridle_core::telemetry::RootPlace {
            parent: Some(s.trace.parent_span_id.as_str()).filter(|p| !p.is_empty()),
            links: s
                .trace
                .link
                .iter()
                .chain(&s.trace.start_call)
                .map(|(t, sp)| (t.as_str(), sp.as_str()))
                .collect(),
        },
        format!("invoke_agent {}", s.agent),
        system_time(s.created_ms),
        system_time(s.finished_ms.unwrap_or(s.updated_ms)),
        attrs,
        error,
    );
}
