//! Telemetry: tracing to stderr (text on a terminal, JSON otherwise, or as `BRIDLE_LOG_FORMAT`
//! says), and OTLP export of traces, metrics and logs, set by the standard `OTEL_*`
//! environment:
//! - `OTEL_EXPORTER_OTLP_ENDPOINT` (or `OTEL_EXPORTER_OTLP_<SIGNAL>_ENDPOINT`) turns a signal's
//!   export on; `OTEL_<SIGNAL>_EXPORTER=none` turns it off again.
//! - `OTEL_EXPORTER_OTLP_PROTOCOL` (and per signal): `grpc` (Bridle's default) or
//!   `http/protobuf`; `OTEL_EXPORTER_OTLP_HEADERS`, `..._TIMEOUT`, `..._COMPRESSION` and their
//!   per-signal forms are read by the exporters themselves.
//! - `OTEL_SERVICE_NAME`, `OTEL_RESOURCE_ATTRIBUTES`; `service.version` and a per-process
//!   `service.instance.id` are set unless those name them.
//! - `OTEL_TRACES_SAMPLER` / `OTEL_TRACES_SAMPLER_ARG` (for example `parentbased_traceidratio`
//!   and `0.1`), read by the SDK.
//!
//! A value Bridle cannot carry out (an unknown protocol, exporter or sampler) is refused by
//! name and the process does not start ([`Telemetry::refused`]), where the SDK would fall back
//! silently. Logs go over OTLP with the trace and span they were written in.
//!
//! Export is batched and never blocks a request: when the collector is down, spans are dropped
//! after the batch queue fills, and the service keeps serving. [`Telemetry::shutdown`] flushes
//! what is queued; processes call it last, after draining.

use std::io::IsTerminal;
use std::time::Duration;

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::logs::SdkLoggerProvider;
use opentelemetry_sdk::metrics::SdkMeterProvider;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::Layer as _;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

/// Owns the exporters; dropping it without [`Telemetry::shutdown`] loses queued spans.
#[must_use = "call shutdown() at exit to flush spans"]
pub struct Telemetry {
    tracer: Option<SdkTracerProvider>,
    meter: Option<SdkMeterProvider>,
    logger: Option<SdkLoggerProvider>,
    /// How metrics are exported over OTLP, and the resource: for [`Telemetry::start_metrics`].
    metrics: Option<Export>,
    resource: Resource,
    /// `OTEL_*` settings Bridle cannot carry out, each naming its variable.
    refused: Vec<String>,
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

// Libraries that open INFO spans of their own (vaultrs' HTTP client) would flood traces.
const DEFAULT_FILTER: &str = "info,h2=warn,hyper=warn,tower=warn,bollard=warn,rustify=warn,vaultrs=warn,reqwest=warn,rmcp=warn,opentelemetry=warn,opentelemetry_sdk=warn,opentelemetry_otlp=warn";

/// What a process reports as `service.version`: the crate version and the git revision it was
/// built from (`BRIDLE_GIT_REVISION` at build time, else `git`; `unknown` without either).
pub const VERSION: &str = concat!(env!("CARGO_PKG_VERSION"), "+", env!("BRIDLE_GIT_REVISION"));

/// The instrumentation scope `name` at Bridle's version.
pub fn scope(name: &'static str) -> opentelemetry::InstrumentationScope {
    opentelemetry::InstrumentationScope::builder(name)
        .with_version(VERSION)
        .build()
}

/// Sets up tracing for a process named `service` ("bridle-router"). Call once, first.
pub fn init(service: &str) -> Telemetry {
    init_with(service, LogFormat::from_env(), DEFAULT_FILTER)
}

/// Sets up tracing for `bridle dev`: one process that runs `services` ("bridle-router", ...),
/// each on a Tokio runtime whose threads are named after it. Spans and log records go out
/// under the `service.name` of the thread they end on (the service's own runtime); anything
/// else (the harness itself) under `process`.
pub fn init_dev(process: &str, services: &[&str]) -> Telemetry {
    init_as(
        Identity {
            process,
            services: services.iter().map(|s| s.to_string()).collect(),
        },
        LogFormat::from_env(),
        DEFAULT_FILTER,
    )
}

/// Who the process reports as: itself, or (under `bridle dev`) one service per runtime.
struct Identity<'a> {
    process: &'a str,
    services: Vec<String>,
}

/// The process's OTel resource: `service.name` (`OTEL_SERVICE_NAME`, else the binary's
/// name), `service.version` and a `service.instance.id` unique to this process, then whatever
/// `OTEL_RESOURCE_ATTRIBUTES` says (which wins over the two defaults).
fn resource(service: &str) -> Resource {
    let name = std::env::var("OTEL_SERVICE_NAME")
        .ok()
        .filter(|s| !s.trim().is_empty())
        .unwrap_or_else(|| service.to_string());
    resource_named(name)
}

/// A resource named `name` whatever `OTEL_SERVICE_NAME` says (a service under `bridle dev`).
fn resource_named(name: String) -> Resource {
    let given = std::env::var("OTEL_RESOURCE_ATTRIBUTES").unwrap_or_default();
    let set_by_env = |key: &str| {
        given
            .split(',')
            .any(|kv| kv.split('=').next().map(str::trim) == Some(key))
    };
    let mut defaults = Vec::new();
    if !set_by_env("service.version") {
        defaults.push(KeyValue::new("service.version", VERSION));
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

/// The three OTLP signals, with the names their environment variables use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Signal {
    Traces,
    Metrics,
    Logs,
}

impl Signal {
    fn env(self) -> &'static str {
        match self {
            Signal::Traces => "TRACES",
            Signal::Metrics => "METRICS",
            Signal::Logs => "LOGS",
        }
    }
}

/// How one signal is exported, from the standard `OTEL_*` environment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Export {
    /// The endpoint the exporter reads (per signal or the shared one), for the log line.
    pub endpoint: String,
    pub protocol: Protocol,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Protocol {
    Grpc,
    HttpProtobuf,
}

const SAMPLERS: &[&str] = &[
    "always_on",
    "always_off",
    "traceidratio",
    "parentbased_always_on",
    "parentbased_always_off",
    "parentbased_traceidratio",
];

/// A variable's value, unset when empty.
fn var(env: &dyn Fn(&str) -> Option<String>, name: &str) -> Option<String> {
    env(name).filter(|v| !v.trim().is_empty())
}

/// Whether and how `signal` is exported: an endpoint is set for it (its own
/// `OTEL_EXPORTER_OTLP_<SIGNAL>_ENDPOINT` or the shared `OTEL_EXPORTER_OTLP_ENDPOINT`) and
/// `OTEL_<SIGNAL>_EXPORTER` is not `none`. Values Bridle cannot carry out are errors that
/// name the variable: a protocol other than `grpc` and `http/protobuf`, an exporter other than
/// `otlp` and `none`.
pub fn export_of(
    signal: Signal,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Option<Export>, String> {
    let s = signal.env();
    let exporter = format!("OTEL_{s}_EXPORTER");
    match var(env, &exporter).as_deref().map(str::trim) {
        None | Some("otlp") => {}
        Some("none") => return Ok(None),
        Some(other) => {
            return Err(format!(
                "{exporter}: '{other}' is not an exporter Bridle has; use 'otlp' or 'none'"
            ));
        }
    }
    let own = format!("OTEL_EXPORTER_OTLP_{s}_PROTOCOL");
    let protocol = match var(env, &own).map(|v| (own.clone(), v)).or_else(|| {
        var(env, "OTEL_EXPORTER_OTLP_PROTOCOL")
            .map(|v| ("OTEL_EXPORTER_OTLP_PROTOCOL".to_string(), v))
    }) {
        None => Protocol::Grpc,
        Some((_, v)) if v.trim() == "grpc" => Protocol::Grpc,
        Some((_, v)) if v.trim() == "http/protobuf" => Protocol::HttpProtobuf,
        Some((name, v)) => {
            return Err(format!(
                "{name}: '{v}' is not a protocol Bridle exports with; use 'grpc' or 'http/protobuf'"
            ));
        }
    };
    let endpoint = var(env, &format!("OTEL_EXPORTER_OTLP_{s}_ENDPOINT"))
        .or_else(|| var(env, "OTEL_EXPORTER_OTLP_ENDPOINT"));
    Ok(endpoint.map(|endpoint| Export { endpoint, protocol }))
}

/// The sampler settings the SDK reads (`OTEL_TRACES_SAMPLER`, `OTEL_TRACES_SAMPLER_ARG`),
/// checked: the SDK itself falls back to sampling everything on a value it does not know.
pub fn sampler_problems(env: &dyn Fn(&str) -> Option<String>) -> Vec<String> {
    let mut out = Vec::new();
    let sampler = var(env, "OTEL_TRACES_SAMPLER");
    if let Some(s) = &sampler
        && !SAMPLERS.contains(&s.trim())
    {
        out.push(format!(
            "OTEL_TRACES_SAMPLER: '{s}' is not a sampler Bridle has; use one of {}",
            SAMPLERS.join(", ")
        ));
    }
    if sampler
        .as_deref()
        .is_some_and(|s| s.ends_with("traceidratio"))
        && let Some(arg) = var(env, "OTEL_TRACES_SAMPLER_ARG")
        && !arg
            .trim()
            .parse::<f64>()
            .is_ok_and(|r| (0.0..=1.0).contains(&r))
    {
        out.push(format!(
            "OTEL_TRACES_SAMPLER_ARG: '{arg}' is not a ratio from 0 to 1"
        ));
    }
    out
}

fn process_env(name: &str) -> Option<String> {
    std::env::var(name).ok()
}

/// Targets whose events never go to the OTLP log exporter: the exporters' own (a log about a
/// failed export must not be exported) and the HTTP/2 stack under them.
fn exported_log(meta: &tracing::Metadata<'_>) -> bool {
    let t = meta.target();
    !["opentelemetry", "tonic", "h2", "hyper", "reqwest", "tower"]
        .iter()
        .any(|p| t.starts_with(p))
}

pub fn init_with(service: &str, format: LogFormat, default_filter: &str) -> Telemetry {
    init_as(
        Identity {
            process: service,
            services: Vec::new(),
        },
        format,
        default_filter,
    )
}

fn span_processor(
    e: &Export,
    resource: &Resource,
) -> Result<opentelemetry_sdk::trace::BatchSpanProcessor, String> {
    use opentelemetry_sdk::trace::SpanProcessor as _;
    let built = match e.protocol {
        Protocol::Grpc => opentelemetry_otlp::SpanExporter::builder()
            .with_tonic()
            .build(),
        Protocol::HttpProtobuf => opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .build(),
    };
    let exporter = built.map_err(|e| format!("OTLP span exporter: {e}"))?;
    let mut p = opentelemetry_sdk::trace::BatchSpanProcessor::builder(exporter).build();
    p.set_resource(resource);
    Ok(p)
}

fn log_processor(
    e: &Export,
    resource: &Resource,
) -> Result<opentelemetry_sdk::logs::BatchLogProcessor, String> {
    use opentelemetry_sdk::logs::LogProcessor as _;
    let built = match e.protocol {
        Protocol::Grpc => opentelemetry_otlp::LogExporter::builder()
            .with_tonic()
            .build(),
        Protocol::HttpProtobuf => opentelemetry_otlp::LogExporter::builder()
            .with_http()
            .build(),
    };
    let exporter = built.map_err(|e| format!("OTLP log exporter: {e}"))?;
    let mut p = opentelemetry_sdk::logs::BatchLogProcessor::builder(exporter).build();
    p.set_resource(resource);
    Ok(p)
}

/// One processor per service under `bridle dev`, picked by the name of the thread a span or
/// log record ends on (each service's runtime names its threads after it), and one for the
/// rest. Each has its own resource, so each service reports its own `service.name`.
#[derive(Debug)]
struct ByThread<P> {
    routes: Vec<(String, P)>,
    other: P,
}

impl<P> ByThread<P> {
    fn build(
        id: &Identity<'_>,
        resource: &Resource,
        make: impl Fn(&Resource) -> Result<P, String>,
    ) -> Result<Self, String> {
        let mut routes = Vec::new();
        for s in &id.services {
            routes.push((s.clone(), make(&resource_named(s.clone()))?));
        }
        Ok(ByThread {
            routes,
            other: make(resource)?,
        })
    }

    fn pick(&self) -> &P {
        let t = std::thread::current();
        t.name()
            .and_then(|n| self.routes.iter().find(|(s, _)| s == n))
            .map_or(&self.other, |(_, p)| p)
    }

    fn all(&self) -> impl Iterator<Item = &P> {
        self.routes
            .iter()
            .map(|(_, p)| p)
            .chain(std::iter::once(&self.other))
    }
}

fn first_error(
    results: impl Iterator<Item = opentelemetry_sdk::error::OTelSdkResult>,
) -> opentelemetry_sdk::error::OTelSdkResult {
    // Every processor is asked, whatever the first answered.
    let mut first = Ok(());
    for r in results {
        if first.is_ok() {
            first = r;
        }
    }
    first
}

impl<P: opentelemetry_sdk::trace::SpanProcessor> opentelemetry_sdk::trace::SpanProcessor
    for ByThread<P>
{
    fn on_start(&self, span: &mut opentelemetry_sdk::trace::Span, cx: &Context) {
        self.pick().on_start(span, cx);
    }
    fn on_end(&self, span: opentelemetry_sdk::trace::SpanData) {
        self.pick().on_end(span);
    }
    fn force_flush(&self) -> opentelemetry_sdk::error::OTelSdkResult {
        first_error(self.all().map(|p| p.force_flush()))
    }
    fn shutdown_with_timeout(&self, timeout: Duration) -> opentelemetry_sdk::error::OTelSdkResult {
        first_error(self.all().map(|p| p.shutdown_with_timeout(timeout)))
    }
    // Each route was given its own resource when it was made.
    fn set_resource(&mut self, _: &Resource) {}
}

impl<P: opentelemetry_sdk::logs::LogProcessor> opentelemetry_sdk::logs::LogProcessor
    for ByThread<P>
{
    fn emit(
        &self,
        data: &mut opentelemetry_sdk::logs::SdkLogRecord,
        scope: &opentelemetry::InstrumentationScope,
    ) {
        self.pick().emit(data, scope);
    }
    fn force_flush(&self) -> opentelemetry_sdk::error::OTelSdkResult {
        first_error(self.all().map(|p| p.force_flush()))
    }
    fn shutdown_with_timeout(&self, timeout: Duration) -> opentelemetry_sdk::error::OTelSdkResult {
        first_error(self.all().map(|p| p.shutdown_with_timeout(timeout)))
    }
    fn set_resource(&mut self, _: &Resource) {}
}

fn init_as(id: Identity<'_>, format: LogFormat, default_filter: &str) -> Telemetry {
    let service = id.process;
    let resource = resource(service);
    let mut problems = Vec::new();
    let mut refused = sampler_problems(&process_env);
    let mut export = |signal| match export_of(signal, &process_env) {
        Ok(e) => e,
        Err(e) => {
            refused.push(e);
            None
        }
    };
    let (traces, metrics, logs) = (
        export(Signal::Traces),
        export(Signal::Metrics),
        export(Signal::Logs),
    );

    let tracer = traces.as_ref().and_then(|e| {
        let builder = SdkTracerProvider::builder()
            .with_resource(resource.clone())
            .with_id_generator(PresetIds::default());
        let built = if id.services.is_empty() {
            span_processor(e, &resource).map(|p| builder.with_span_processor(p))
        } else {
            ByThread::build(&id, &resource, |r| span_processor(e, r))
                .map(|p| builder.with_span_processor(p))
        };
        match built {
            Ok(b) => Some(b.build()),
            Err(e) => {
                problems.push(e);
                None
            }
        }
    });
    let logger = logs.as_ref().and_then(|e| {
        let builder = SdkLoggerProvider::builder().with_resource(resource.clone());
        let built = if id.services.is_empty() {
            log_processor(e, &resource).map(|p| builder.with_log_processor(p))
        } else {
            ByThread::build(&id, &resource, |r| log_processor(e, r))
                .map(|p| builder.with_log_processor(p))
        };
        match built {
            Ok(b) => Some(b.build()),
            Err(e) => {
                problems.push(e);
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

    // Spans carry what helps a reader: not the layer's bookkeeping (busy/idle time, code
    // location, thread, target).
    let otel_layer = tracer.as_ref().map(|t| {
        tracing_opentelemetry::layer()
            .with_tracked_inactivity(false)
            .with_location(false)
            .with_threads(false)
            .with_target(false)
            .with_tracer(
                t.tracer_with_scope(
                    opentelemetry::InstrumentationScope::builder(service.to_string())
                        .with_version(VERSION)
                        .build(),
                ),
            )
    });
    // Logs carry the trace and span of the span they were written in (the layer above makes
    // that span's context current while it is entered).
    let log_layer = logger.as_ref().map(|l| {
        opentelemetry_appender_tracing::layer::OpenTelemetryTracingBridge::new(l)
            .with_filter(tracing_subscriber::filter::filter_fn(exported_log))
    });
    let registry = tracing_subscriber::registry()
        .with(filter(default_filter))
        .with(otel_layer)
        .with(log_layer);
    let result = match format {
        LogFormat::Json => registry
            .with(
                // No terminal escapes in JSON (the span fields are formatted as text).
                tracing_subscriber::fmt::layer()
                    .with_ansi(false)
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
    for (what, e) in [("traces", &traces), ("metrics", &metrics), ("logs", &logs)] {
        if let Some(e) = e {
            let protocol = match e.protocol {
                Protocol::Grpc => "grpc",
                Protocol::HttpProtobuf => "http/protobuf",
            };
            tracing::info!(endpoint = %e.endpoint, protocol, "exporting {what} over OTLP");
        }
    }
    Telemetry {
        tracer,
        meter: None,
        logger,
        metrics,
        resource,
        refused,
    }
}

impl Telemetry {
    /// `OTEL_*` settings Bridle cannot carry out (an unknown protocol, exporter or sampler),
    /// each naming its variable: a process refuses to start with any (exit 64).
    pub fn refused(&self) -> &[String] {
        &self.refused
    }

    /// Installs the meter provider, once the options are known: exporting over OTLP when an
    /// endpoint is set, and read on scrape when `scrape` (the service's `metrics_listen`).
    /// With neither, no provider is installed and every instrument is a no-op. Call before
    /// the first metric is recorded (instruments are made on first use and keep the provider
    /// they were made with).
    pub fn start_metrics(&mut self, scrape: bool) -> Option<crate::prometheus::Scrape> {
        if self.metrics.is_none() && !scrape {
            return None;
        }
        let mut builder = SdkMeterProvider::builder().with_resource(self.resource.clone());
        if let Some(e) = &self.metrics {
            let built = match e.protocol {
                Protocol::Grpc => opentelemetry_otlp::MetricExporter::builder()
                    .with_tonic()
                    .build(),
                Protocol::HttpProtobuf => opentelemetry_otlp::MetricExporter::builder()
                    .with_http()
                    .build(),
            };
            match built {
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
        if let Some(l) = self.logger
            && let Err(e) = l.shutdown_with_timeout(Duration::from_secs(5))
        {
            // The log exporter is gone: stderr only from here.
            tracing::warn!(error = %e, "flushing logs failed");
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

/// Whether a run's trace is sampled. A run's spans are made over its whole life, in every
/// process that serves one of its steps, so the decision cannot be one process's: it is the
/// configured sampler's decision for a root span of that trace id (`OTEL_TRACES_SAMPLER`;
/// `traceidratio` decides on the id alone, so every process decides the same way). A caller's
/// own sampling flag does not change it: the run's trace follows Bridle's sampler.
pub fn run_sampled(t: TraceId) -> bool {
    use opentelemetry_sdk::trace::{Sampler, ShouldSample as _};
    static SAMPLER: std::sync::OnceLock<Sampler> = std::sync::OnceLock::new();
    let sampler = SAMPLER.get_or_init(|| {
        let env = process_env;
        let ratio = || {
            var(&env, "OTEL_TRACES_SAMPLER_ARG")
                .and_then(|a| a.trim().parse::<f64>().ok())
                .filter(|r| (0.0..=1.0).contains(r))
                .unwrap_or(1.0)
        };
        match var(&env, "OTEL_TRACES_SAMPLER").as_deref().map(str::trim) {
            Some("always_off" | "parentbased_always_off") => Sampler::AlwaysOff,
            Some("traceidratio" | "parentbased_traceidratio") => {
                Sampler::TraceIdRatioBased(ratio())
            }
            _ => Sampler::AlwaysOn,
        }
    });
    let r = sampler.should_sample(
        None,
        t,
        "",
        &opentelemetry::trace::SpanKind::Internal,
        &[],
        &[],
    );
    matches!(
        r.decision,
        opentelemetry_sdk::trace::SamplingDecision::RecordAndSample
    )
}

/// A remote span context of a run's trace, flagged as the run's sampling decision says.
fn run_span_context(t: TraceId, s: SpanId) -> SpanContext {
    let flags = if run_sampled(t) {
        TraceFlags::SAMPLED
    } else {
        TraceFlags::default()
    };
    SpanContext::new(t, s, flags, true, TraceState::default())
}

/// The context whose parent is a run's root span, for the spans of its steps.
pub fn run_parent(trace_hex: &str, span_hex: &str) -> Context {
    match (TraceId::from_hex(trace_hex), SpanId::from_hex(span_hex)) {
        (Ok(t), Ok(s)) if t != TraceId::INVALID => {
            Context::new().with_remote_span_context(run_span_context(t, s))
        }
        _ => Context::new(),
    }
}

/// The span a request's W3C `traceparent` names (the caller's), when it carries a valid one.
fn remote_span(headers: &http::HeaderMap) -> Option<SpanContext> {
    // From nothing: `extract` would start from the current context, which inside a handler
    // is the server's own span.
    let cx = opentelemetry::global::get_text_map_propagator(|p| {
        p.extract_with_context(&Context::new(), &HeaderExtractor(headers))
    });
    let sc = cx.span().span_context().clone();
    sc.is_valid().then_some(sc)
}

/// The span a request's W3C `traceparent` names (the caller's), as hex (trace id, span id);
/// None when it carries none or an invalid one.
pub fn caller_span(headers: &http::HeaderMap) -> Option<(String, String)> {
    remote_span(headers).map(|sc| (sc.trace_id().to_string(), sc.span_id().to_string()))
}

/// The W3C `traceparent` a request carries (the caller's span, with its sampled flag), to
/// keep beside a record made for a run; None when it carries none or an invalid one.
pub fn traceparent_of(headers: &http::HeaderMap) -> Option<String> {
    remote_span(headers).map(|sc| {
        format!(
            "00-{}-{}-{:02x}",
            sc.trace_id(),
            sc.span_id(),
            sc.trace_flags().to_u8()
        )
    })
}

/// The span context a kept `traceparent` names.
fn parse_traceparent(tp: &str) -> Option<SpanContext> {
    let mut h = http::HeaderMap::new();
    h.insert("traceparent", http::HeaderValue::from_str(tp).ok()?);
    remote_span(&h)
}

/// Links the current span (a call served about a run: WatchRun, Decide, ...) to the run's
/// trace: to its root span (`trace_hex`, `span_hex`), so that the call, which has a trace of
/// its own, is found from the run and the run from the call.
pub fn link_current_to_run(trace_hex: &str, span_hex: &str) {
    use tracing_opentelemetry::OpenTelemetrySpanExt as _;
    if let (Ok(t), Ok(s)) = (TraceId::from_hex(trace_hex), SpanId::from_hex(span_hex))
        && t != TraceId::INVALID
    {
        tracing::Span::current().add_link(run_span_context(t, s));
    }
}

/// Links the current span to the span a kept `traceparent` names (see `traceparent_of`).
pub fn link_current_to(traceparent: &str) {
    use tracing_opentelemetry::OpenTelemetrySpanExt as _;
    if let Some(sc) = parse_traceparent(traceparent) {
        tracing::Span::current().add_link(sc);
    }
}

/// Puts `span` in the trace a kept `traceparent` names, under that span, and links it to the
/// current span: work one call does for a run (a person's decision on its approval) shows in
/// the run's trace, and its log lines carry the run's trace id.
pub fn place_in(span: &tracing::Span, traceparent: &str) {
    use opentelemetry::trace::TraceContextExt as _;
    use tracing_opentelemetry::OpenTelemetrySpanExt as _;
    let Some(sc) = parse_traceparent(traceparent) else {
        return;
    };
    let current = tracing::Span::current()
        .context()
        .span()
        .span_context()
        .clone();
    let _ = span.set_parent(Context::new().with_remote_span_context(sc));
    if current.is_valid() {
        span.add_link(current);
    }
}

/// Where a run's root span hangs: under the caller's span (`parent`, a span id of the run's
/// own trace), or neither; and the spans of other traces it links to (`links`: trace id, span
/// id; the caller's span when the run has a trace of its own, the StartRun call that made it).
#[derive(Clone, Debug, Default)]
pub struct RootPlace<'a> {
    pub parent: Option<&'a str>,
    pub links: Vec<(&'a str, &'a str)>,
}

/// The current span's (trace id, span id) as hex, when it is a traced span.
pub fn current_span_ids() -> Option<(String, String)> {
    use opentelemetry::trace::TraceContextExt as _;
    use tracing_opentelemetry::OpenTelemetrySpanExt as _;
    let cx = tracing::Span::current().context();
    let sc = cx.span().span_context().clone();
    sc.is_valid()
        .then(|| (sc.trace_id().to_string(), sc.span_id().to_string()))
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
    // The caller's span, as the run recorded it, flagged as the run's steps were (see
    // `run_sampled`): the root and its steps are exported together or not at all.
    let parent = match place.parent.map(SpanId::from_hex) {
        Some(Ok(p)) if p != SpanId::INVALID => {
            Context::new().with_remote_span_context(run_span_context(t, p))
        }
        _ => Context::new(),
    };
    let links = place
        .links
        .iter()
        .filter_map(
            |(lt, ls)| match (TraceId::from_hex(lt), SpanId::from_hex(ls)) {
                (Ok(lt), Ok(ls)) if lt != TraceId::INVALID => {
                    Some(opentelemetry::trace::Link::with_context(sampled(lt, ls)))
                }
                _ => None,
            },
        )
        .collect();
    let tracer = opentelemetry::global::tracer_with_scope(scope("bridle"));
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
    let tracer = opentelemetry::global::tracer_with_scope(scope("bridle"));
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

#[cfg(test)]
mod tests {
    use super::*;

    fn env_of(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: std::collections::HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k| map.get(k).cloned()
    }

    #[test]
    fn a_signal_is_exported_with_its_own_or_the_shared_settings() {
        let e = env_of(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4317"),
            (
                "OTEL_EXPORTER_OTLP_LOGS_ENDPOINT",
                "http://logs:4318/v1/logs",
            ),
            ("OTEL_EXPORTER_OTLP_LOGS_PROTOCOL", "http/protobuf"),
            ("OTEL_METRICS_EXPORTER", "none"),
        ]);
        assert_eq!(
            export_of(Signal::Traces, &e).unwrap(),
            Some(Export {
                endpoint: "http://c:4317".into(),
                protocol: Protocol::Grpc
            })
        );
        assert_eq!(export_of(Signal::Metrics, &e).unwrap(), None);
        assert_eq!(
            export_of(Signal::Logs, &e).unwrap(),
            Some(Export {
                endpoint: "http://logs:4318/v1/logs".into(),
                protocol: Protocol::HttpProtobuf
            })
        );
        // No endpoint: nothing exported.
        assert_eq!(export_of(Signal::Traces, &env_of(&[])).unwrap(), None);
    }

    #[test]
    fn settings_bridle_cannot_carry_out_are_refused_by_name() {
        let e = env_of(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318"),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json"),
            ("OTEL_LOGS_EXPORTER", "console"),
        ]);
        assert_eq!(
            export_of(Signal::Traces, &e).unwrap_err(),
            "OTEL_EXPORTER_OTLP_PROTOCOL: 'http/json' is not a protocol Bridle exports with; use 'grpc' or 'http/protobuf'"
        );
        assert_eq!(
            export_of(Signal::Logs, &e).unwrap_err(),
            "OTEL_LOGS_EXPORTER: 'console' is not an exporter Bridle has; use 'otlp' or 'none'"
        );
        let s = sampler_problems(&env_of(&[
            ("OTEL_TRACES_SAMPLER", "parentbased_traceidratio"),
            ("OTEL_TRACES_SAMPLER_ARG", "1.5"),
        ]));
        assert_eq!(
            s,
            vec!["OTEL_TRACES_SAMPLER_ARG: '1.5' is not a ratio from 0 to 1".to_string()]
        );
        let s = sampler_problems(&env_of(&[("OTEL_TRACES_SAMPLER", "jaeger_remote")]));
        assert!(
            s[0].starts_with("OTEL_TRACES_SAMPLER: 'jaeger_remote' is not a sampler"),
            "{s:?}"
        );
        assert!(
            sampler_problems(&env_of(&[
                ("OTEL_TRACES_SAMPLER", "parentbased_traceidratio"),
                ("OTEL_TRACES_SAMPLER_ARG", "0.25"),
            ]))
            .is_empty()
        );
    }
}
