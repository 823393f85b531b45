//! A gateway call traced and metered like an agent's model call: a `chat {model}` span (a
//! CLIENT span of the GenAI conventions, under the caller's `traceparent` when it sends one),
//! the token usage, duration and cost metrics, all with `bridle.purpose` = `gateway`. A
//! streamed call's span ends with its stream.

use std::time::Instant;

use axum::http::HeaderMap;
use opentelemetry::KeyValue;
use tokio::sync::mpsc;
use tracing_opentelemetry::OpenTelemetrySpanExt as _;

use bridle_proto::CompleteRequest;
use bridle_proto::complete_chunk::Chunk;

use super::{Failure, Kind};
use crate::provider::StreamItem;

pub struct Call {
    pub span: tracing::Span,
    attrs: Vec<KeyValue>,
    started: Instant,
}

fn kind_name(k: Kind) -> &'static str {
    match k {
        Kind::InvalidRequest => "invalid_request",
        Kind::Authentication => "authentication",
        Kind::Permission => "permission",
        Kind::NotFound => "not_found",
        Kind::TooLarge => "too_large",
        Kind::RateLimit => "rate_limit",
        Kind::Upstream => "upstream",
        Kind::Timeout => "timeout",
        Kind::Internal => "internal",
    }
}

impl Call {
    /// Starts the span of a parsed request (its scope set; `route` is the model the caller
    /// asked for, which the gateway serves as a route).
    pub fn start(headers: &HeaderMap, req: &CompleteRequest) -> Call {
        let model = req.route.clone();
        let span = tracing::info_span!("chat", "otel.name" = %format!("chat {model}"), "otel.kind" = "client");
        let _ = span.set_parent(bridle_core::telemetry::extract(headers));
        let scope = req.scope.clone().unwrap_or_default();
        let mut attrs = vec![
            KeyValue::new("gen_ai.operation.name", "chat"),
            KeyValue::new("gen_ai.request.model", model.clone()),
            KeyValue::new("bridle.route", model),
            KeyValue::new("bridle.tenant", scope.tenant.clone()),
            KeyValue::new("bridle.purpose", "gateway"),
        ];
        if !scope.agent.is_empty() {
            attrs.push(KeyValue::new("gen_ai.agent.name", scope.agent.clone()));
        }
        if !req.end_user.is_empty() {
            span.set_attribute("enduser.id", req.end_user.clone());
        }
        for a in &attrs {
            span.set_attribute(a.key.clone(), a.value.clone());
        }
        if let Some(t) = req.temperature {
            span.set_attribute("gen_ai.request.temperature", f64::from(t));
        }
        if let Some(m) = req.max_output_tokens {
            span.set_attribute("gen_ai.request.max_tokens", i64::from(m));
        }
        let output_type = req
            .response_format
            .as_ref()
            .and_then(|f| bridle_proto::ResponseFormatType::try_from(f.r#type).ok());
        match output_type {
            Some(bridle_proto::ResponseFormatType::Text) => {
                span.set_attribute("gen_ai.output.type", "text");
            }
            Some(
                bridle_proto::ResponseFormatType::JsonObject
                | bridle_proto::ResponseFormatType::JsonSchema,
            ) => {
                span.set_attribute("gen_ai.output.type", "json");
            }
            _ => {}
        }
        if let Some(p) = req.top_p {
            span.set_attribute("gen_ai.request.top_p", f64::from(p));
        }
        if let Some(s) = req.seed {
            span.set_attribute("gen_ai.request.seed", s);
        }
        if !req.stop.is_empty() {
            let stop = req.stop.iter().cloned().map(Into::into).collect();
            span.set_attribute(
                "gen_ai.request.stop_sequences",
                opentelemetry::Value::Array(opentelemetry::Array::String(stop)),
            );
        }
        bridle_core::genai::record_request(&span, req);
        Call {
            span,
            attrs,
            started: Instant::now(),
        }
    }

    pub fn done(&self, r: &bridle_proto::CompleteResponse) {
        bridle_core::genai::record_response(&self.span, r);
        bridle_core::genai::record_metrics(&self.attrs, r, self.started.elapsed().as_secs_f64());
    }

    pub fn failed(&self, f: &Failure) {
        let t = kind_name(f.kind);
        bridle_core::genai::record_failure(&self.span, t, &f.message);
        bridle_core::genai::record_failure_metrics(
            &self.attrs,
            t,
            self.started.elapsed().as_secs_f64(),
        );
    }

    /// Records a result's outcome and passes it on.
    pub fn check<T>(&self, r: Result<T, Failure>) -> Result<T, Failure> {
        if let Err(f) = &r {
            self.failed(f);
        }
        r
    }

    /// Passes a stream's items on, recording the call when its last one (the response, or
    /// the error) goes by.
    pub fn watch(
        self,
        mut rx: mpsc::Receiver<StreamItem>,
        shutdown: &bridle_core::Shutdown,
    ) -> mpsc::Receiver<StreamItem> {
        let (tx, out) = mpsc::channel(64);
        shutdown.spawn(async move {
            let mut ended = false;
            while let Some(item) = rx.recv().await {
                match &item {
                    Ok(c) => {
                        if let Some(Chunk::Done(r)) = &c.chunk {
                            self.done(r);
                            ended = true;
                        }
                    }
                    Err(s) => {
                        self.failed(&Failure::from_status(s));
                        ended = true;
                    }
                }
                if tx.send(item).await.is_err() {
                    if !ended {
                        self.failed(&Failure::new(
                            axum::http::StatusCode::from_u16(499)
                                .unwrap_or(axum::http::StatusCode::BAD_REQUEST),
                            Kind::InvalidRequest,
                            "the client went away before the stream ended",
                        ));
                    }
                    return;
                }
            }
        });
        out
    }
}
