//! Telemetry: tracing to stderr (text on a terminal, JSON otherwise, or as `BRIDLE_LOG_FORMAT`
//! says), and OTLP export of spans and metrics when `OTEL_EXPORTER_OTLP_ENDPOINT` is set.
//!
//! Export is batched and never blocks a request: when the collector is down, spans are dropped
//! after the batch queue fills, and the service keeps serving. [`Telemetry::shutdown`] flushes
//! what is queued; processes call it last, after draining.

use std::io::IsTerminal;
use std::time::Duration;

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::metrics::SdkMeterProvider;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

/// Owns the exporters; dropping it without [`Telemetry::shutdown`] loses queued spans.
#[must_use = "call shutdown() at exit to flush spans"]
pub struct Telemetry {
    tracer: Option<SdkTracerProvider>,
    meter: Option<SdkMeterProvider>,
    /// Whether an OTLP endpoint is set, and the resource: for [`Telemetry::start_metrics`].
    otlp: bool,
    resource: Resource,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

impl LogFormat {
    fn from_env() -> Self {
        match std::env::var("BRIDLE_LOG_FORMAT").ok().as_deref() {
            Some("json") => LogFormat::Json,
            Some("text") => LogFormat::Text,
            _ if std::io::stderr().is_terminal() => LogFormat::Text,
            _ => LogFormat::Json,
        }
    }
}

fn filter(default: &str) -> EnvFilter {
    let spec = std::env::var("BRIDLE_LOG")
        .or_else(|_| std::env::var("RUST_LOG"))
        .unwrap_or_else(|_| default.to_string());
    EnvFilter::try_new(&spec).unwrap_or_else(|e| {
        // Logging is not up yet; stderr is the only place to say it.
        #[allow(clippy::print_stderr)]
        {
            eprintln!("BRIDLE_LOG/RUST_LOG '{spec}' is not a valid filter ({e}); using 'info'");
        }
        EnvFilter::new("info")
    })
}

/// Sets up tracing for a process named `service` ("bridle-router"). Call once, first.
pub fn init(service: &str) -> Telemetry {
    // Libraries that open INFO spans of their own (vaultrs' HTTP client) would flood traces.
    init_with(
        service,
        LogFormat::from_env(),
        "info,h2=warn,hyper=warn,tower=warn,bollard=warn,rustify=warn,vaultrs=warn,reqwest=warn,rmcp=warn",
    )
}

/// The process's OTel resource: `service.name` (`OTEL_SERVICE_NAME`, else the binary's
/// name), `service.version` and a `service.instance.id` unique to this process, then whatever
/// `OTEL_RESOURCE_ATTRIBUTES` says (which wins over the two defaults).
fn resource(service: &str) -> Resource {
    let name = std::env::var("OTEL_SERVICE_NAME")
        .ok()
        .filter(|s| !s.trim().is_empty())
        .unwrap_or_else(|| service.to_string());
    let given = std::env::var("OTEL_RESOURCE_ATTRIBUTES").unwrap_or_default();
    let set_by_env = |key: &str| {
        given
            .split(',')
            .any(|kv| kv.split('=').next().map(str::trim) == Some(key))
    };
    let mut defaults = Vec::new();
    if !set_by_env("service.version") {
        defaults.push(KeyValue::new("service.version", env!("CARGO_PKG_VERSION")));
    }
    if !set_by_env("service.instance.id") {
        defaults.push(KeyValue::new(
            "service.instance.id",
            ulid::Ulid::new().to_string().to_lowercase(),
        ));
    }
    // The builder starts from the SDK's detectors, OTEL_RESOURCE_ATTRIBUTES among them.
    Resource::builder()
        .with_attributes(defaults)
        .with_service_name(name)
        .build()
}

pub fn init_with(service: &str, format: LogFormat, default_filter: &str) -> Telemetry {
    let otlp = std::env::var("OTEL_EXPORTER_OTLP_ENDPOINT")
        .ok()
        .filter(|s| !s.is_empty());
    let resource = resource(service);

    let mut problems = Vec::new();
    let tracer = otlp.as_ref().and_then(|_| {
        match opentelemetry_otlp::SpanExporter::builder()
            .with_tonic()
            .build()
        {
            Ok(exporter) => Some(
                SdkTracerProvider::builder()
                    .with_batch_exporter(exporter)
                    .with_resource(resource.clone())
                    .with_id_generator(PresetIds::default())
                    .build(),
            ),
            Err(e) => {
                problems.push(format!("OTLP span exporter: {e}"));
                None
            }
        }
    });
    opentelemetry::global::set_text_map_propagator(
        opentelemetry_sdk::propagation::TraceContextPropagator::new(),
    );
    if let Some(t) = &tracer {
        opentelemetry::global::set_tracer_provider(t.clone());
    }

    let otel_layer = tracer
        .as_ref()
        .map(|t| tracing_opentelemetry::layer().with_tracer(t.tracer(service.to_string())));
    let registry = tracing_subscriber::registry()
        .with(filter(default_filter))
        .with(otel_layer);
    let result = match format {
        LogFormat::Json => registry
            .with(
                tracing_subscriber::fmt::layer()
                    .event_format(JsonWithTrace)
                    .with_writer(std::io::stderr),
            )
            .try_init(),
        LogFormat::Text => registry
            .with(
                tracing_subscriber::fmt::layer()
                    .compact()
                    .with_target(false)
                    .with_writer(std::io::stderr),
            )
            .try_init(),
    };
    if let Err(e) = result {
        problems.push(format!("tracing subscriber already set: {e}"));
    }
    for p in problems {
        tracing::warn!("{p}");
    }
    if let Some(endpoint) = &otlp {
        tracing::info!(%endpoint, "exporting traces and metrics over OTLP");
    }
    Telemetry {
        tracer,
        meter: None,
        otlp: otlp.is_some(),
        resource,
    }
}

impl Telemetry {
    /// Installs the meter provider, once the options are known: exporting over OTLP when an
    /// endpoint is set, and read on scrape when `scrape` (the service's `metrics_listen`).
    /// With neither, no provider is installed and every instrument is a no-op. Call before
    /// the first metric is recorded (instruments are made on first use and keep the provider
    /// they were made with).
    pub fn start_metrics(&mut self, scrape: bool) -> Option<crate::prometheus::Scrape> {
        if !self.otlp && !scrape {
            return None;
        }
        let mut builder = SdkMeterProvider::builder().with_resource(self.resource.clone());
        if self.otlp {
            match opentelemetry_otlp::MetricExporter::builder()
                .with_tonic()
                .build()
            {
                Ok(exporter) => builder = builder.with_periodic_exporter(exporter),
                Err(e) => tracing::warn!("OTLP metric exporter: {e}"),
            }
        }
        let pull = scrape.then(crate::prometheus::Scrape::default);
        if let Some(p) = &pull {
            builder = builder.with_reader(p.reader());
        }
        let provider = builder.build();
        opentelemetry::global::set_meter_provider(provider.clone());
        self.meter = Some(provider);
        pull
    }

    /// Flushes and stops the exporters, waiting at most a few seconds for a slow collector.
    pub fn shutdown(self) {
        if let Some(t) = self.tracer
            && let Err(e) = t.shutdown_with_timeout(Duration::from_secs(5))
        {
            tracing::warn!(error = %e, "flushing spans failed");
        }
        if let Some(m) = self.meter
            && let Err(e) = m.shutdown_with_timeout(Duration::from_secs(5))
        {
            tracing::warn!(error = %e, "flushing metrics failed");
        }
    }
}

// ---------------------------------------------------------------- traces that outlive a process

use std::cell::Cell;
use std::time::SystemTime;

use opentelemetry::trace::{
    SpanContext, SpanId, TraceContextExt as _, TraceFlags, TraceId, TraceState, Tracer as _,
};
use opentelemetry::{Context, KeyValue};
use opentelemetry_sdk::trace::{IdGenerator, RandomIdGenerator};

thread_local! {
    static PRESET: Cell<Option<(TraceId, SpanId)>> = const { Cell::new(None) };
}

/// Random ids, except while [`end_run_span`] builds a run's root span: that span gets the ids
/// recorded when the run started, so the spans of every step (made earlier, in any process)
/// already point at it.
#[derive(Debug, Default)]
struct PresetIds(RandomIdGenerator);

impl IdGenerator for PresetIds {
    // The SDK may ask for the span id before the trace id: neither consumes the preset; the
    // caller clears it right after building the span.
    fn new_trace_id(&self) -> TraceId {
        PRESET
            .with(|p| p.get())
            .map_or_else(|| self.0.new_trace_id(), |(t, _)| t)
    }

    fn new_span_id(&self) -> SpanId {
        PRESET
            .with(|p| p.get())
            .map_or_else(|| self.0.new_span_id(), |(_, s)| s)
    }
}

/// Fresh (trace id, root span id) for a run, as hex.
pub fn new_run_trace() -> (String, String) {
    let g = RandomIdGenerator::default();
    (g.new_trace_id().to_string(), g.new_span_id().to_string())
}

/// The context whose parent is a run's root span, for the spans of its steps.
pub fn run_parent(trace_hex: &str, span_hex: &str) -> Context {
    match (TraceId::from_hex(trace_hex), SpanId::from_hex(span_hex)) {
        (Ok(t), Ok(s)) if t != TraceId::INVALID => Context::new().with_remote_span_context(
            SpanContext::new(t, s, TraceFlags::SAMPLED, true, TraceState::default()),
        ),
        _ => Context::new(),
    }
}

/// The span a request's W3C `traceparent` names (the caller's), as hex (trace id, span id);
/// None when it carries none or an invalid one.
pub fn caller_span(headers: &http::HeaderMap) -> Option<(String, String)> {
    use opentelemetry::trace::TraceContextExt as _;
    // From nothing: `extract` would start from the current context, which inside a handler
    // is the server's own span.
    let cx = opentelemetry::global::get_text_map_propagator(|p| {
        p.extract_with_context(&Context::new(), &HeaderExtractor(headers))
    });
    let sc = cx.span().span_context().clone();
    sc.is_valid()
        .then(|| (sc.trace_id().to_string(), sc.span_id().to_string()))
}

/// Where a run's root span hangs: under the caller's span (`parent`, a span id of the run's
/// own trace), or linked to a span of another trace (`link`: trace id, span id), or neither.
#[derive(Clone, Copy, Debug, Default)]
pub struct RootPlace<'a> {
    pub parent: Option<&'a str>,
    pub link: Option<(&'a str, &'a str)>,
}

fn sampled(t: TraceId, s: SpanId) -> SpanContext {
    SpanContext::new(t, s, TraceFlags::SAMPLED, true, TraceState::default())
}

/// Emits a run's root span (`invoke_agent <agent>`) once the run has ended, with the ids
/// recorded when it started and its real start and end times.
#[allow(clippy::too_many_arguments)]
pub fn end_run_span(
    trace_hex: &str,
    span_hex: &str,
    place: RootPlace<'_>,
    name: String,
    start: SystemTime,
    end: SystemTime,
    attributes: Vec<KeyValue>,
    error: Option<String>,
) {
    use opentelemetry::trace::Span as _;
    let (Ok(t), Ok(s)) = (TraceId::from_hex(trace_hex), SpanId::from_hex(span_hex)) else {
        return;
    };
    // The caller's span, as the run recorded it: sampled, whatever the caller decided, since
    // the run's steps were recorded as such (a run's trace is its audit trail).
    let parent = match place.parent.map(SpanId::from_hex) {
        Some(Ok(p)) if p != SpanId::INVALID => {
            Context::new().with_remote_span_context(sampled(t, p))
        }
        _ => Context::new(),
    };
    let links = match place.link {
        Some((lt, ls)) => match (TraceId::from_hex(lt), SpanId::from_hex(ls)) {
            (Ok(lt), Ok(ls)) if lt != TraceId::INVALID => {
                vec![opentelemetry::trace::Link::with_context(sampled(lt, ls))]
            }
            _ => Vec::new(),
        },
        None => Vec::new(),
    };
    let tracer = opentelemetry::global::tracer("bridle");
    PRESET.with(|p| p.set(Some((t, s))));
    let mut span = tracer
        .span_builder(name)
        .with_kind(opentelemetry::trace::SpanKind::Internal)
        .with_start_time(start)
        .with_attributes(attributes)
        .with_links(links)
        .start_with_context(&tracer, &parent);
    // Without an SDK provider the generator was not asked; do not leak the preset.
    PRESET.with(|p| p.set(None));
    if let Some(e) = error {
        span.set_status(opentelemetry::trace::Status::error(e));
    }
    span.end_with_timestamp(end);
}

/// Reads W3C trace context from HTTP/gRPC headers.
pub struct HeaderExtractor<'a>(pub &'a http::HeaderMap);

impl opentelemetry::propagation::Extractor for HeaderExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(|k| k.as_str()).collect()
    }
}

/// Writes W3C trace context into HTTP/gRPC headers.
pub struct HeaderInjector<'a>(pub &'a mut http::HeaderMap);

impl opentelemetry::propagation::Injector for HeaderInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        if let (Ok(k), Ok(v)) = (
            http::header::HeaderName::from_bytes(key.as_bytes()),
            http::HeaderValue::from_str(&value),
        ) {
            self.0.insert(k, v);
        }
    }
}

/// The parent context carried by a request's headers.
pub fn extract(headers: &http::HeaderMap) -> Context {
    opentelemetry::global::get_text_map_propagator(|p| p.extract(&HeaderExtractor(headers)))
}

/// Adds the current span's context to outgoing headers.
pub fn inject_current(headers: &mut http::HeaderMap) {
    use tracing_opentelemetry::OpenTelemetrySpanExt as _;
    let cx = tracing::Span::current().context();
    opentelemetry::global::get_text_map_propagator(|p| {
        p.inject_context(&cx, &mut HeaderInjector(headers))
    });
}

/// Emits a finished span with explicit times under `parent` (for waits that span processes,
/// such as an approval: it is recorded when it ends, with its real start).
pub fn emit_span(
    parent: &Context,
    name: String,
    start: SystemTime,
    end: SystemTime,
    attributes: Vec<KeyValue>,
) {
    use opentelemetry::trace::Span as _;
    let tracer = opentelemetry::global::tracer("bridle");
    let mut span = tracer
        .span_builder(name)
        .with_start_time(start)
        .with_attributes(attributes)
        .start_with_context(&tracer, parent);
    span.end_with_timestamp(end);
}

// ---------------------------------------------------------------- JSON logs with trace ids

use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields, FormattedFields};
use tracing_subscriber::registry::LookupSpan;

/// One JSON object per line: time, level, target, message and fields, the current span's
/// name and fields, and — when the event happens inside a traced span — `trace_id` and
/// `span_id`, so a log line leads to its trace.
pub struct JsonWithTrace;

struct JsonVisitor<'a>(&'a mut serde_json::Map<String, serde_json::Value>);

impl tracing::field::Visit for JsonVisitor<'_> {
    fn record_debug(&mut self, f: &tracing::field::Field, v: &dyn std::fmt::Debug) {
        self.0.insert(
            f.name().to_string(),
            serde_json::Value::String(format!("{v:?}")),
        );
    }
    fn record_str(&mut self, f: &tracing::field::Field, v: &str) {
        self.0.insert(
            f.name().to_string(),
            serde_json::Value::String(v.to_string()),
        );
    }
    fn record_i64(&mut self, f: &tracing::field::Field, v: i64) {
        self.0.insert(f.name().to_string(), v.into());
    }
    fn record_u64(&mut self, f: &tracing::field::Field, v: u64) {
        self.0.insert(f.name().to_string(), v.into());
    }
    fn record_bool(&mut self, f: &tracing::field::Field, v: bool) {
        self.0.insert(f.name().to_string(), v.into());
    }
    fn record_f64(&mut self, f: &tracing::field::Field, v: f64) {
        self.0.insert(f.name().to_string(), v.into());
    }
}

impl<S, N> FormatEvent<S, N> for JsonWithTrace
where
    S: tracing::Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &tracing::Event<'_>,
    ) -> std::fmt::Result {
        use opentelemetry::trace::TraceContextExt as _;
        use tracing_opentelemetry::OpenTelemetrySpanExt as _;
        let mut line = serde_json::Map::new();
        let now = time::OffsetDateTime::now_utc();
        line.insert(
            "timestamp".into(),
            now.format(&time::format_description::well_known::Rfc3339)
                .unwrap_or_default()
                .into(),
        );
        line.insert("level".into(), event.metadata().level().as_str().into());
        line.insert("target".into(), event.metadata().target().into());
        let mut fields = serde_json::Map::new();
        event.record(&mut JsonVisitor(&mut fields));
        if let Some(m) = fields.remove("message") {
            line.insert("message".into(), m);
        }
        if !fields.is_empty() {
            line.insert("fields".into(), fields.into());
        }
        if let Some(span) = ctx.lookup_current() {
            let mut s = serde_json::Map::new();
            s.insert("name".into(), span.name().into());
            if let Some(f) = span.extensions().get::<FormattedFields<N>>()
                && !f.is_empty()
            {
                s.insert("fields".into(), f.to_string().into());
            }
            line.insert("span".into(), s.into());
        }
        let cx = tracing::Span::current().context();
        let sc = cx.span().span_context().clone();
        if sc.is_valid() {
            line.insert("trace_id".into(), sc.trace_id().to_string().into());
            line.insert("span_id".into(), sc.span_id().to_string().into());
        }
        writeln!(writer, "{}", serde_json::Value::Object(line))
    }
}
