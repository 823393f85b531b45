//! The run's trace: a root `invoke_agent {agent}` span (emitted when the run ends, with the ids
//! recorded when it started), and under it `chat {model}`, `execute_tool {tool}`, policy-check
//! and approval-wait spans, named and attributed after the OpenTelemetry GenAI semantic
//! conventions; Bridle's own facts are under `bridle.*`. Message and argument content is not
//! recorded unless `BRIDLE_OTEL_CAPTURE_CONTENT=true`, and then only redacted.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use opentelemetry::KeyValue;
use tracing_opentelemetry::OpenTelemetrySpanExt as _;

use bridle_proto as pb;

use crate::state::{EndReason, RunState, Status};

fn parent(s: &RunState) -> opentelemetry::Context {
    bridle_core::telemetry::run_parent(&s.trace.trace_id, &s.trace.span_id)
}

fn common(span: &tracing::Span, s: &RunState) {
    span.set_attribute("gen_ai.conversation.id", s.id.clone());
    span.set_attribute("gen_ai.agent.name", s.agent.clone());
    span.set_attribute("bridle.tenant", s.tenant.clone());
    span.set_attribute("bridle.step", i64::from(s.step));
}

/// Whether message and argument content may be recorded on spans.
pub fn capture_content() -> bool {
    std::env::var("BRIDLE_OTEL_CAPTURE_CONTENT").is_ok_and(|v| v == "true" || v == "1")
}

/// The span of one model call.
pub fn chat(s: &RunState) -> tracing::Span {
    let model = if s.context.model.is_empty() {
        s.spec.route.clone()
    } else {
        s.context.model.clone()
    };
    let span =
        tracing::info_span!("chat", "otel.name" = %format!("chat {model}"), "otel.kind" = "client");
    let _ = span.set_parent(parent(s));
    common(&span, s);
    span.set_attribute("gen_ai.operation.name", "chat");
    span.set_attribute("gen_ai.request.model", model);
    span.set_attribute("bridle.route", s.spec.route.clone());
    span
}

fn chat_attrs(s: &RunState, r: Option<&pb::CompleteResponse>) -> Vec<KeyValue> {
    let mut a = vec![
        KeyValue::new("gen_ai.operation.name", "chat"),
        KeyValue::new(
            "gen_ai.request.model",
            if s.context.model.is_empty() {
                s.spec.route.clone()
            } else {
                s.context.model.clone()
            },
        ),
        KeyValue::new("bridle.tenant", s.tenant.clone()),
        KeyValue::new("gen_ai.agent.name", s.agent.clone()),
    ];
    if let Some(r) = r {
        a.push(KeyValue::new("gen_ai.provider.name", r.provider.clone()));
        a.push(KeyValue::new("gen_ai.response.model", r.model.clone()));
    }
    a
}

/// Metrics of one model call.
pub fn record_chat(s: &RunState, r: &pb::CompleteResponse) {
    let m = bridle_core::metrics::metrics();
    let attrs = chat_attrs(s, Some(r));
    if let Some(u) = &r.usage {
        let mut a = attrs.clone();
        a.push(KeyValue::new("gen_ai.token.type", "input"));
        m.token_usage.record(u.input_tokens, &a);
        a.pop();
        a.push(KeyValue::new("gen_ai.token.type", "output"));
        m.token_usage.record(u.output_tokens, &a);
    }
    if let Some(d) = bridle_core::timeutil::std_duration(r.latency.as_ref()) {
        m.operation_duration.record(d.as_secs_f64(), &attrs);
    }
    if let Some(c) = r.cost.as_ref().filter(|c| c.known) {
        m.cost.add(c.nano_usd as f64 / 1e9, &attrs);
    }
}

/// Metrics of a model call that failed.
pub fn record_chat_error(s: &RunState, st: &tonic::Status, elapsed: Duration) {
    let mut attrs = chat_attrs(s, None);
    attrs.push(KeyValue::new("error.type", format!("{:?}", st.code())));
    bridle_core::metrics::metrics()
        .operation_duration
        .record(elapsed.as_secs_f64(), &attrs);
}

pub fn chat_done(span: &tracing::Span, r: &pb::CompleteResponse) {
    span.set_attribute("gen_ai.provider.name", r.provider.clone());
    span.set_attribute("gen_ai.response.model", r.model.clone());
    span.set_attribute("gen_ai.response.id", r.response_id.clone());
    let finish = pb::FinishReason::try_from(r.finish_reason)
        .map(|f| {
            f.as_str_name()
                .trim_start_matches("FINISH_REASON_")
                .to_lowercase()
        })
        .unwrap_or_default();
    span.set_attribute(
        "gen_ai.response.finish_reasons",
        opentelemetry::Value::Array(vec![opentelemetry::StringValue::from(finish)].into()),
    );
    if let Some(u) = &r.usage {
        span.set_attribute("gen_ai.usage.input_tokens", u.input_tokens as i64);
        span.set_attribute("gen_ai.usage.output_tokens", u.output_tokens as i64);
        span.set_attribute(
            "gen_ai.usage.cache_read.input_tokens",
            u.cache_read_tokens as i64,
        );
        span.set_attribute(
            "gen_ai.usage.cache_creation.input_tokens",
            u.cache_write_tokens as i64,
        );
    }
    match &r.cost {
        Some(c) if c.known => span.set_attribute("bridle.cost.usd", c.nano_usd as f64 / 1e9),
        _ => span.set_attribute("bridle.cost.known", false),
    }
    span.set_attribute("bridle.scripted", r.scripted);
    span.set_attribute("bridle.target", r.target.clone());
    if capture_content() {
        // Opt-in. The text is what the model answered; tool outputs it saw were redacted by
        // the tools service before they ever reached the model.
        if let Some(m) = &r.message {
            let calls: Vec<serde_json::Value> = m
                .tool_calls
                .iter()
                .map(|c| serde_json::json!({"id": c.id, "name": c.name, "arguments": c.arguments_json}))
                .collect();
            let out = serde_json::json!([{"role": "assistant", "parts": [{"type": "text", "content": m.text}], "tool_calls": calls}]);
            span.set_attribute("gen_ai.output.messages", out.to_string());
        }
    }
}

pub fn failed(span: &tracing::Span, st: &tonic::Status) {
    span.set_attribute("error.type", format!("{:?}", st.code()));
    span.set_status(opentelemetry::trace::Status::error(
        st.message().to_string(),
    ));
}

/// The span of one tool call.
pub fn execute_tool(s: &RunState, tool: &str, call_id: &str, arguments: &str) -> tracing::Span {
    let span = tracing::info_span!("execute_tool", "otel.name" = %format!("execute_tool {tool}"), "otel.kind" = "client");
    let _ = span.set_parent(parent(s));
    common(&span, s);
    span.set_attribute("gen_ai.operation.name", "execute_tool");
    span.set_attribute("gen_ai.tool.name", tool.to_string());
    span.set_attribute("gen_ai.tool.call.id", call_id.to_string());
    if let Some(t) = s.tools.iter().find(|t| t.name == tool) {
        span.set_attribute("gen_ai.tool.type", t.kind.clone());
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
    let span = tracing::info_span!("policy", "otel.name" = %format!("check_policy {tool}"), "otel.kind" = "client");
    let _ = span.set_parent(parent(s));
    common(&span, s);
    span.set_attribute("gen_ai.tool.name", tool.to_string());
    span.set_attribute("gen_ai.tool.call.id", call_id.to_string());
    span
}

pub fn policy_done(span: &tracing::Span, decision: pb::PolicyDecision) {
    let d = decision
        .as_str_name()
        .trim_start_matches("POLICY_DECISION_")
        .to_lowercase();
    span.set_attribute("bridle.policy.decision", d);
}

fn system_time(ms: i64) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(ms.max(0) as u64)
}

/// Records the wait for a human's decision, from when the approval was asked for.
pub fn approval_wait(
    s: &RunState,
    tool: &str,
    call_id: &str,
    approval_id: &str,
    outcome: &str,
    waited_ms: i64,
) {
    bridle_core::metrics::metrics().approval_wait.record(
        waited_ms.max(0) as f64 / 1000.0,
        &[
            KeyValue::new("bridle.tenant", s.tenant.clone()),
            KeyValue::new("gen_ai.tool.name", tool.to_string()),
            KeyValue::new("bridle.approval.outcome", outcome.to_string()),
        ],
    );
    let end = SystemTime::now();
    let start = end
        .checked_sub(Duration::from_millis(waited_ms.max(0) as u64))
        .unwrap_or(end);
    bridle_core::telemetry::emit_span(
        &parent(s),
        format!("await_approval {tool}"),
        start,
        end,
        vec![
            KeyValue::new("gen_ai.conversation.id", s.id.clone()),
            KeyValue::new("gen_ai.agent.name", s.agent.clone()),
            KeyValue::new("gen_ai.tool.name", tool.to_string()),
            KeyValue::new("gen_ai.tool.call.id", call_id.to_string()),
            KeyValue::new("bridle.approval.id", approval_id.to_string()),
            KeyValue::new("bridle.approval.outcome", outcome.to_string()),
        ],
    );
}

/// The run's root span, once it has ended.
pub fn run_finished(s: &RunState) {
    let t = &s.totals;
    bridle_core::metrics::metrics().runs_finished.add(
        1,
        &[
            KeyValue::new("bridle.tenant", s.tenant.clone()),
            KeyValue::new("gen_ai.agent.name", s.agent.clone()),
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
        KeyValue::new("gen_ai.agent.name", s.agent.clone()),
        KeyValue::new("gen_ai.conversation.id", s.id.clone()),
        KeyValue::new("gen_ai.usage.input_tokens", t.input_tokens as i64),
        KeyValue::new("gen_ai.usage.output_tokens", t.output_tokens as i64),
        KeyValue::new("bridle.tenant", s.tenant.clone()),
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
            link: s
                .trace
                .link
                .as_ref()
                .map(|(t, sp)| (t.as_str(), sp.as_str())),
        },
        format!("invoke_agent {}", s.agent),
        system_time(s.created_ms),
        system_time(s.finished_ms.unwrap_or(s.updated_ms)),
        attrs,
        error,
    );
}
