//! A model call as the OpenTelemetry GenAI conventions describe it, shared by the
//! orchestrator (an agent's model calls) and the router's gateway (an application's): the
//! response attributes of a `chat {model}` span, its metrics, and the message content
//! (`gen_ai.input.messages`, `gen_ai.output.messages`, `gen_ai.system_instructions`) in the
//! conventions' JSON message format, recorded only when content capture is on
//! ([`capture_content`]).

use opentelemetry::KeyValue;
use serde_json::{Value, json};
use tracing_opentelemetry::OpenTelemetrySpanExt as _;

use bridle_proto as pb;

/// Whether message and argument content may be recorded on spans: the conventions'
/// `OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT=true`, or Bridle's older name for it,
/// `BRIDLE_OTEL_CAPTURE_CONTENT`.
pub fn capture_content() -> bool {
    [
        "OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT",
        "BRIDLE_OTEL_CAPTURE_CONTENT",
    ]
    .iter()
    .any(|k| std::env::var(k).is_ok_and(|v| v.eq_ignore_ascii_case("true") || v == "1"))
}

/// The conventions' finish reason for Bridle's.
pub fn finish_reason(f: i32) -> &'static str {
    match pb::FinishReason::try_from(f).unwrap_or(pb::FinishReason::Unspecified) {
        pb::FinishReason::Stop | pb::FinishReason::Unspecified => "stop",
        pb::FinishReason::ToolCalls => "tool_call",
        pb::FinishReason::Length => "length",
        pb::FinishReason::ContentFilter => "content_filter",
        pb::FinishReason::Error => "error",
    }
}

/// A tool call's arguments as the JSON the model wrote (an object), or as the text when it is
/// not JSON.
fn arguments(a: &str) -> Value {
    serde_json::from_str(a).unwrap_or_else(|_| Value::String(a.to_string()))
}

/// The parts of one message: its text, then the tool calls it asks for, or (a tool message)
/// the response to a call.
fn parts(m: &pb::Message) -> Vec<Value> {
    let mut parts = Vec::new();
    if m.role == pb::Role::Tool as i32 {
        parts.push(json!({"type": "tool_call_response", "id": m.tool_call_id, "response": m.text}));
        return parts;
    }
    if !m.text.is_empty() {
        parts.push(json!({"type": "text", "content": m.text}));
    }
    for c in &m.tool_calls {
        parts.push(json!({"type": "tool_call", "id": c.id, "name": c.name, "arguments": arguments(&c.arguments_json)}));
    }
    parts
}

fn role(r: i32) -> &'static str {
    match pb::Role::try_from(r).unwrap_or(pb::Role::Unspecified) {
        pb::Role::System => "system",
        pb::Role::Assistant => "assistant",
        pb::Role::Tool => "tool",
        pb::Role::User | pb::Role::Unspecified => "user",
    }
}

/// `gen_ai.system_instructions` (the system messages' parts, when there are any) and
/// `gen_ai.input.messages` (the others) of a request.
pub fn input_messages(messages: &[pb::Message]) -> (Option<Value>, Value) {
    let mut system = Vec::new();
    let mut input = Vec::new();
    for m in messages {
        if m.role == pb::Role::System as i32 {
            system.extend(parts(m));
        } else {
            input.push(json!({"role": role(m.role), "parts": parts(m)}));
        }
    }
    (
        (!system.is_empty()).then_some(Value::Array(system)),
        Value::Array(input),
    )
}

/// `gen_ai.output.messages` of a response: the one message the model answered.
pub fn output_messages(r: &pb::CompleteResponse) -> Value {
    let m = r.message.clone().unwrap_or_default();
    json!([{"role": "assistant", "parts": parts(&m), "finish_reason": finish_reason(r.finish_reason)}])
}

/// Records a request's messages on its span (only with content capture on).
pub fn record_request(span: &tracing::Span, req: &pb::CompleteRequest) {
    if !capture_content() {
        return;
    }
    let (system, input) = input_messages(&req.messages);
    if let Some(s) = system {
        span.set_attribute("gen_ai.system_instructions", s.to_string());
    }
    span.set_attribute("gen_ai.input.messages", input.to_string());
}

/// The response's attributes on a `chat` span.
pub fn record_response(span: &tracing::Span, r: &pb::CompleteResponse) {
    span.set_attribute("gen_ai.provider.name", r.provider.clone());
    span.set_attribute("gen_ai.response.model", r.model.clone());
    span.set_attribute("gen_ai.response.id", r.response_id.clone());
    span.set_attribute(
        "gen_ai.response.finish_reasons",
        opentelemetry::Value::Array(
            vec![opentelemetry::StringValue::from(finish_reason(
                r.finish_reason,
            ))]
            .into(),
        ),
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
        // Opt-in. What the model answered (the orchestrator scrubs a run's secrets from it
        // before it is recorded anywhere).
        span.set_attribute("gen_ai.output.messages", output_messages(r).to_string());
    }
}

/// A failed call on its span.
pub fn record_failure(span: &tracing::Span, error_type: &str, message: &str) {
    span.set_attribute("error.type", error_type.to_string());
    span.set_status(opentelemetry::trace::Status::error(message.to_string()));
}

/// The call's metrics: token usage by type, duration, and cost when its price is known.
/// `attrs` are the call's (`gen_ai.operation.name`, `gen_ai.request.model`, ...); the
/// response's provider and model are added.
pub fn record_metrics(attrs: &[KeyValue], r: &pb::CompleteResponse, seconds: f64) {
    let m = crate::metrics::metrics();
    let mut a = attrs.to_vec();
    a.push(KeyValue::new("gen_ai.provider.name", r.provider.clone()));
    a.push(KeyValue::new("gen_ai.response.model", r.model.clone()));
    if let Some(u) = &r.usage {
        a.push(KeyValue::new("gen_ai.token.type", "input"));
        m.token_usage.record(u.input_tokens, &a);
        a.pop();
        a.push(KeyValue::new("gen_ai.token.type", "output"));
        m.token_usage.record(u.output_tokens, &a);
        a.pop();
    }
    m.operation_duration.record(seconds, &a);
    if let Some(c) = r.cost.as_ref().filter(|c| c.known) {
        m.cost.add(c.nano_usd as f64 / 1e9, &a);
    }
}

/// The duration metric of a call that failed, with its `error.type`.
pub fn record_failure_metrics(attrs: &[KeyValue], error_type: &str, seconds: f64) {
    let mut a = attrs.to_vec();
    a.push(KeyValue::new("error.type", error_type.to_string()));
    crate::metrics::metrics()
        .operation_duration
        .record(seconds, &a);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_take_the_conventions_shape() {
        let msgs = vec![
            pb::Message {
                role: pb::Role::System as i32,
                text: "be brief".into(),
                ..Default::default()
            },
            pb::Message {
                role: pb::Role::User as i32,
                text: "add".into(),
                ..Default::default()
            },
            pb::Message {
                role: pb::Role::Assistant as i32,
                tool_calls: vec![pb::ToolCall {
                    id: "c1".into(),
                    name: "sum".into(),
                    arguments_json: r#"{"a":1}"#.into(),
                }],
                ..Default::default()
            },
            pb::Message {
                role: pb::Role::Tool as i32,
                text: "1".into(),
                tool_call_id: "c1".into(),
                ..Default::default()
            },
        ];
        let (system, input) = input_messages(&msgs);
        assert_eq!(
            system.unwrap(),
            json!([{"type": "text", "content": "be brief"}])
        );
        assert_eq!(
            input,
            json!([
                {"role": "user", "parts": [{"type": "text", "content": "add"}]},
                {"role": "assistant", "parts": [{"type": "tool_call", "id": "c1", "name": "sum", "arguments": {"a": 1}}]},
                {"role": "tool", "parts": [{"type": "tool_call_response", "id": "c1", "response": "1"}]},
            ])
        );
        let out = output_messages(&pb::CompleteResponse {
            message: Some(pb::Message {
                role: pb::Role::Assistant as i32,
                text: "2".into(),
                ..Default::default()
            }),
            finish_reason: pb::FinishReason::Stop as i32,
            ..Default::default()
        });
        assert_eq!(
            out,
            json!([{"role": "assistant", "parts": [{"type": "text", "content": "2"}], "finish_reason": "stop"}])
        );
    }
}
