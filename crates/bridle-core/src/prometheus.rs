//! The metrics in Prometheus' text format, served at `GET /metrics` on `metrics_listen` (off
//! unless set): the same instruments the OTLP exporter sends, read on each scrape.
//!
//! Names follow OpenTelemetry's Prometheus compatibility rules, which are also what the
//! collector's Prometheus exporter produces, so one dashboard or alert serves both paths:
//! characters other than `[a-zA-Z0-9_:]` become `_`; the unit is appended (`s` as `_seconds`,
//! `By` as `_bytes`; annotations such as `{token}` are dropped); monotonic sums end in
//! `_total`; histograms give `_bucket{le}`, `_sum` and `_count`. Attribute keys are sanitised
//! the same way. The process's resource (`service.name`, `service.version`,
//! `service.instance.id`, ...) is one `target_info` series.
//!
//! *Why a reader of our own and not a Prometheus client library:* the instruments already
//! aggregate in the OpenTelemetry SDK; a pull reader on the same provider exposes exactly
//! those numbers, with no second registry to keep in step.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::{Arc, Weak};
use std::time::Duration;

use opentelemetry::{KeyValue, Value};
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::metrics::data::{AggregatedMetrics, Metric, MetricData, ResourceMetrics};
use opentelemetry_sdk::metrics::reader::MetricReader;
use opentelemetry_sdk::metrics::{InstrumentKind, ManualReader, Pipeline, Temporality};

/// The pull side of the meter provider: register [`Scrape::reader`] with it, then
/// [`Scrape::render`] on each scrape.
#[derive(Clone, Debug)]
pub struct Scrape(Arc<ManualReader>);

/// The reader registered with the provider (the provider owns it; [`Scrape`] keeps a handle).
#[derive(Debug)]
pub struct Reader(Arc<ManualReader>);

impl Default for Scrape {
    fn default() -> Self {
        Self(Arc::new(
            ManualReader::builder()
                .with_temporality(Temporality::Cumulative)
                .build(),
        ))
    }
}

impl Scrape {
    pub fn reader(&self) -> Reader {
        Reader(self.0.clone())
    }

    /// Every metric as Prometheus text (format 0.0.4).
    pub fn render(&self) -> Result<String, String> {
        let mut rm = ResourceMetrics::default();
        self.0
            .collect(&mut rm)
            .map_err(|e| format!("collecting metrics: {e}"))?;
        Ok(render(&rm))
    }
}

impl MetricReader for Reader {
    fn register_pipeline(&self, pipeline: Weak<Pipeline>) {
        self.0.register_pipeline(pipeline);
    }
    fn collect(&self, rm: &mut ResourceMetrics) -> OTelSdkResult {
        self.0.collect(rm)
    }
    fn force_flush(&self) -> OTelSdkResult {
        self.0.force_flush()
    }
    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.0.shutdown_with_timeout(timeout)
    }
    fn temporality(&self, kind: InstrumentKind) -> Temporality {
        self.0.temporality(kind)
    }
}

/// One exposed family: its type, help, and sample lines.
struct Family {
    kind: &'static str,
    help: String,
    lines: Vec<String>,
}

fn render(rm: &ResourceMetrics) -> String {
    let mut families: BTreeMap<String, Family> = BTreeMap::new();
    let target: Vec<KeyValue> = rm
        .resource()
        .iter()
        .map(|(k, v)| KeyValue::new(k.clone(), v.clone()))
        .collect();
    families.insert(
        "target_info".into(),
        Family {
            kind: "gauge",
            help: "Target metadata".into(),
            lines: vec![format!("target_info{} 1", labels(target.iter(), None))],
        },
    );
    for scope in rm.scope_metrics() {
        for m in scope.metrics() {
            add(&mut families, m);
        }
    }
    let mut out = String::new();
    for (name, f) in families {
        if f.lines.is_empty() {
            continue;
        }
        let _ = writeln!(out, "# HELP {name} {}", escape_help(&f.help));
        let _ = writeln!(out, "# TYPE {name} {}", f.kind);
        for l in f.lines {
            out.push_str(&l);
            out.push('\n');
        }
    }
    out
}

fn add(families: &mut BTreeMap<String, Family>, m: &Metric) {
    match m.data() {
        AggregatedMetrics::F64(d) => add_data(families, m, d, |v| *v),
        AggregatedMetrics::U64(d) => add_data(families, m, d, |v| *v as f64),
        AggregatedMetrics::I64(d) => add_data(families, m, d, |v| *v as f64),
    }
}

fn add_data<T: Copy>(
    families: &mut BTreeMap<String, Family>,
    m: &Metric,
    data: &MetricData<T>,
    f: impl Fn(&T) -> f64,
) {
    let base = name(m.name(), m.unit());
    let help = m.description();
    match data {
        MetricData::Gauge(g) => {
            let fam = family_of(families, base.clone(), "gauge", help);
            for p in g.data_points() {
                fam.lines.push(format!(
                    "{base}{} {}",
                    labels(p.attributes(), None),
                    num(f(&p.value()))
                ));
            }
        }
        MetricData::Sum(s) => {
            let (n, kind) = if s.is_monotonic() {
                (
                    format!("{}_total", base.trim_end_matches("_total")),
                    "counter",
                )
            } else {
                (base.clone(), "gauge")
            };
            let fam = family_of(families, n.clone(), kind, help);
            for p in s.data_points() {
                fam.lines.push(format!(
                    "{n}{} {}",
                    labels(p.attributes(), None),
                    num(f(&p.value()))
                ));
            }
        }
        MetricData::Histogram(h) => {
            let fam = family_of(families, base.clone(), "histogram", help);
            for p in h.data_points() {
                let mut cumulative = 0u64;
                let bounds: Vec<f64> = p.bounds().collect();
                for (i, c) in p.bucket_counts().enumerate() {
                    cumulative += c;
                    let le = bounds
                        .get(i)
                        .map_or_else(|| "+Inf".to_string(), |b| num(*b));
                    fam.lines.push(format!(
                        "{base}_bucket{} {cumulative}",
                        labels(p.attributes(), Some(&le))
                    ));
                }
                let l = labels(p.attributes(), None);
                fam.lines
                    .push(format!("{base}_sum{l} {}", num(f(&p.sum()))));
                fam.lines.push(format!("{base}_count{l} {}", p.count()));
            }
        }
        // No Bridle instrument is an exponential histogram; one would be left out, not
        // misreported.
        MetricData::ExponentialHistogram(_) => {}
    }
}

fn family_of<'a>(
    families: &'a mut BTreeMap<String, Family>,
    name: String,
    kind: &'static str,
    help: &str,
) -> &'a mut Family {
    families.entry(name).or_insert_with(|| Family {
        kind,
        help: help.to_string(),
        lines: Vec::new(),
    })
}

/// The Prometheus name of an instrument with this unit.
pub fn name(instrument: &str, unit: &str) -> String {
    let mut n = sanitize(instrument);
    let suffix = match unit {
        "s" => "seconds",
        "ms" => "milliseconds",
        "By" => "bytes",
        "KiBy" => "kibibytes",
        "MiBy" => "mebibytes",
        "%" => "percent",
        // Annotations (`{token}`) and dimensionless units add nothing.
        u if u.is_empty() || u.starts_with('{') || u == "1" => "",
        u => return format!("{n}_{}", sanitize(u)),
    };
    if !suffix.is_empty() && !n.ends_with(&format!("_{suffix}")) {
        n.push('_');
        n.push_str(suffix);
    }
    n
}

/// `[a-zA-Z0-9_:]` kept, anything else `_`, runs of `_` collapsed, no leading digit.
fn sanitize(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        let c = if c.is_ascii_alphanumeric() || c == ':' {
            c
        } else {
            '_'
        };
        if c == '_' && out.ends_with('_') {
            continue;
        }
        out.push(c);
    }
    if out.starts_with(|c: char| c.is_ascii_digit()) {
        out.insert(0, '_');
    }
    out
}

fn labels<'a>(attrs: impl Iterator<Item = &'a KeyValue>, le: Option<&str>) -> String {
    // Keys that sanitise to the same name are joined with `;`, as the compatibility rules say.
    let mut by: BTreeMap<String, String> = BTreeMap::new();
    for kv in attrs {
        let v = value(&kv.value);
        by.entry(sanitize(kv.key.as_str()))
            .and_modify(|e| {
                e.push(';');
                e.push_str(&v);
            })
            .or_insert(v);
    }
    if let Some(le) = le {
        by.insert("le".into(), le.to_string());
    }
    if by.is_empty() {
        return String::new();
    }
    let parts: Vec<String> = by
        .iter()
        .map(|(k, v)| format!("{k}=\"{}\"", escape_value(v)))
        .collect();
    format!("{{{}}}", parts.join(","))
}

fn value(v: &Value) -> String {
    v.as_str().into_owned()
}

fn escape_value(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn escape_help(v: &str) -> String {
    v.replace('\\', "\\\\").replace('\n', "\\n")
}

/// A sample value as Prometheus writes it.
fn num(v: f64) -> String {
    if v.is_nan() {
        "NaN".into()
    } else if v == f64::INFINITY {
        "+Inf".into()
    } else if v == f64::NEG_INFINITY {
        "-Inf".into()
    } else {
        format!("{v}")
    }
}

/// Serves `GET /metrics` on `listener` until `shutdown`.
pub async fn serve(
    listener: tokio::net::TcpListener,
    scrape: Scrape,
    shutdown: crate::Shutdown,
) -> std::io::Result<()> {
    use axum::http::{StatusCode, header};
    let app = axum::Router::new().route(
        "/metrics",
        axum::routing::get(move || {
            let scrape = scrape.clone();
            async move {
                match tokio::task::spawn_blocking(move || scrape.render()).await {
                    Ok(Ok(text)) => (
                        StatusCode::OK,
                        [(
                            header::CONTENT_TYPE,
                            "text/plain; version=0.0.4; charset=utf-8",
                        )],
                        text,
                    ),
                    Ok(Err(e)) => (
                        StatusCode::SERVICE_UNAVAILABLE,
                        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
                        e,
                    ),
                    Err(e) => (
                        StatusCode::INTERNAL_SERVER_ERROR,
                        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
                        format!("rendering metrics failed: {e}"),
                    ),
                }
            }
        }),
    );
    axum::serve(listener, app)
        .with_graceful_shutdown(async move { shutdown.triggered().await })
        .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry::metrics::MeterProvider as _;
    use opentelemetry_sdk::metrics::SdkMeterProvider;

    #[test]
    fn names_follow_the_compatibility_rules() {
        assert_eq!(
            name("rpc.server.call.duration", "s"),
            "rpc_server_call_duration_seconds"
        );
        assert_eq!(
            name("gen_ai.client.token.usage", "{token}"),
            "gen_ai_client_token_usage"
        );
        assert_eq!(name("bridle.cost", "{USD}"), "bridle_cost");
        assert_eq!(name("a.b_seconds", "s"), "a_b_seconds");
        assert_eq!(name("9lives", ""), "_9lives");
        assert_eq!(name("x--y", "By"), "x_y_bytes");
    }

    #[test]
    fn a_provider_renders_counters_gauges_and_histograms() {
        let scrape = Scrape::default();
        let provider = SdkMeterProvider::builder()
            .with_reader(scrape.reader())
            .with_resource(
                opentelemetry_sdk::Resource::builder()
                    .with_service_name("bridle-test")
                    .build(),
            )
            .build();
        let m = provider.meter("t");
        let c = m.f64_counter("bridle.cost").with_unit("{USD}").build();
        c.add(0.25, &[KeyValue::new("bridle.tenant", "a\"b")]);
        c.add(0.5, &[KeyValue::new("bridle.tenant", "a\"b")]);
        let g = m.u64_gauge("bridle.queue.depth").build();
        g.record(7, &[KeyValue::new("bridle.queue.state", "waiting")]);
        let h = m
            .f64_histogram("rpc.server.call.duration")
            .with_unit("s")
            .with_description("Duration of\ngRPC calls")
            .with_boundaries(vec![0.1, 1.0])
            .build();
        h.record(0.05, &[KeyValue::new("rpc.method", "x/Y")]);
        h.record(0.5, &[KeyValue::new("rpc.method", "x/Y")]);
        h.record(3.0, &[KeyValue::new("rpc.method", "x/Y")]);
        let text = scrape.render().unwrap();
        for want in [
            "# TYPE bridle_cost_total counter",
            "bridle_cost_total{bridle_tenant=\"a\\\"b\"} 0.75",
            "# TYPE bridle_queue_depth gauge",
            "bridle_queue_depth{bridle_queue_state=\"waiting\"} 7",
            "# HELP rpc_server_call_duration_seconds Duration of\\ngRPC calls",
            "# TYPE rpc_server_call_duration_seconds histogram",
            "rpc_server_call_duration_seconds_bucket{le=\"0.1\",rpc_method=\"x/Y\"} 1",
            "rpc_server_call_duration_seconds_bucket{le=\"1\",rpc_method=\"x/Y\"} 2",
            "rpc_server_call_duration_seconds_bucket{le=\"+Inf\",rpc_method=\"x/Y\"} 3",
            "rpc_server_call_duration_seconds_sum{rpc_method=\"x/Y\"} 3.55",
            "rpc_server_call_duration_seconds_count{rpc_method=\"x/Y\"} 3",
            "service_name=\"bridle-test\"",
        ] {
            assert!(text.contains(want), "{want:?} missing from:\n{text}");
        }
        // Each family's TYPE comes once, before its samples.
        assert_eq!(text.matches("# TYPE bridle_cost_total").count(), 1);
    }
}
