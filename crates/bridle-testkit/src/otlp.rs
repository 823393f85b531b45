//! An OTLP receiver for tests, keeping everything exported to it: the opentelemetry-proto
//! collector services (traces, metrics, logs) under tonic on one 127.0.0.1 port, and OTLP/HTTP
//! with protobuf bodies (`POST /v1/traces`, `/v1/metrics`, `/v1/logs`) on another. It records
//! the headers (gRPC metadata) each export came with.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use opentelemetry_proto::tonic::collector::logs::v1::logs_service_server::{
    LogsService, LogsServiceServer,
};
use opentelemetry_proto::tonic::collector::logs::v1::{
    ExportLogsServiceRequest, ExportLogsServiceResponse,
};
use opentelemetry_proto::tonic::collector::metrics::v1::metrics_service_server::{
    MetricsService, MetricsServiceServer,
};
use opentelemetry_proto::tonic::collector::metrics::v1::{
    ExportMetricsServiceRequest, ExportMetricsServiceResponse,
};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::KeyValue;
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::logs::v1::LogRecord;
use opentelemetry_proto::tonic::metrics::v1::Metric;
use opentelemetry_proto::tonic::trace::v1::Span;

/// A span as received, with the service that sent it.
#[derive(Clone, Debug)]
pub struct ReceivedSpan {
    pub service: String,
    /// The sending process's resource attributes.
    pub resource: Vec<KeyValue>,
    /// The instrumentation scope's name and version.
    pub scope: (String, String),
    pub span: Span,
}

impl ReceivedSpan {
    pub fn trace_id(&self) -> String {
        hex(&self.span.trace_id)
    }
    pub fn span_id(&self) -> String {
        hex(&self.span.span_id)
    }
    pub fn parent_id(&self) -> String {
        hex(&self.span.parent_span_id)
    }
    pub fn attr(&self, key: &str) -> Option<String> {
        attr(&self.span.attributes, key)
    }
    /// A string-array attribute's items.
    pub fn attr_list(&self, key: &str) -> Vec<String> {
        let Some(Value::ArrayValue(a)) = self
            .span
            .attributes
            .iter()
            .find(|kv| kv.key == key)
            .and_then(|kv| kv.value.as_ref())
            .and_then(|v| v.value.as_ref())
        else {
            return Vec::new();
        };
        a.values
            .iter()
            .filter_map(|v| match &v.value {
                Some(Value::StringValue(s)) => Some(s.clone()),
                _ => None,
            })
            .collect()
    }
    /// The (trace id, span id) of each span this one links to.
    pub fn links(&self) -> Vec<(String, String)> {
        self.span
            .links
            .iter()
            .map(|l| (hex(&l.trace_id), hex(&l.span_id)))
            .collect()
    }
    /// A resource attribute of the process that sent the span.
    pub fn resource_attr(&self, key: &str) -> Option<String> {
        attr(&self.resource, key)
    }
}

/// A metric as received, with the service that sent it.
#[derive(Clone, Debug)]
pub struct ReceivedMetric {
    pub service: String,
    pub metric: Metric,
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// An attribute's value as text (numbers and booleans formatted).
pub fn attr(attrs: &[KeyValue], key: &str) -> Option<String> {
    let v = attrs
        .iter()
        .find(|kv| kv.key == key)?
        .value
        .as_ref()?
        .value
        .as_ref()?;
    Some(match v {
        Value::StringValue(s) => s.clone(),
        Value::BoolValue(b) => b.to_string(),
        Value::IntValue(i) => i.to_string(),
        Value::DoubleValue(d) => d.to_string(),
        other => format!("{other:?}"),
    })
}

/// A log record as received, with the service that sent it.
#[derive(Clone, Debug)]
pub struct ReceivedLog {
    pub service: String,
    pub record: LogRecord,
}

impl ReceivedLog {
    /// The body as text.
    pub fn body(&self) -> String {
        match self.record.body.as_ref().and_then(|b| b.value.as_ref()) {
            Some(Value::StringValue(s)) => s.clone(),
            Some(other) => format!("{other:?}"),
            None => String::new(),
        }
    }
    pub fn trace_id(&self) -> String {
        hex(&self.record.trace_id)
    }
    pub fn span_id(&self) -> String {
        hex(&self.record.span_id)
    }
    pub fn attr(&self, key: &str) -> Option<String> {
        attr(&self.record.attributes, key)
    }
}

/// One export request: which signal, over which transport, and its headers.
#[derive(Clone, Debug)]
pub struct Received {
    /// "traces", "metrics" or "logs".
    pub signal: &'static str,
    /// "grpc" or "http/protobuf".
    pub transport: &'static str,
    pub headers: Vec<(String, String)>,
}

#[derive(Default)]
struct Store {
    spans: Mutex<Vec<ReceivedSpan>>,
    metrics: Mutex<Vec<ReceivedMetric>>,
    logs: Mutex<Vec<ReceivedLog>>,
    requests: Mutex<Vec<Received>>,
}

impl Store {
    fn traces(&self, req: ExportTraceServiceRequest) {
        let mut spans = lock(&self.spans);
        for rs in req.resource_spans {
            let service = service_of(rs.resource.as_ref());
            let resource = rs.resource.map(|r| r.attributes).unwrap_or_default();
            for ss in rs.scope_spans {
                let scope = ss.scope.map(|s| (s.name, s.version)).unwrap_or_default();
                spans.extend(ss.spans.into_iter().map(|span| ReceivedSpan {
                    service: service.clone(),
                    resource: resource.clone(),
                    scope: scope.clone(),
                    span,
                }));
            }
        }
    }

    fn metrics(&self, req: ExportMetricsServiceRequest) {
        let mut metrics = lock(&self.metrics);
        for rm in req.resource_metrics {
            let service = service_of(rm.resource.as_ref());
            for sm in rm.scope_metrics {
                metrics.extend(sm.metrics.into_iter().map(|metric| ReceivedMetric {
                    service: service.clone(),
                    metric,
                }));
            }
        }
    }

    fn logs(&self, req: ExportLogsServiceRequest) {
        let mut logs = lock(&self.logs);
        for rl in req.resource_logs {
            let service = service_of(rl.resource.as_ref());
            for sl in rl.scope_logs {
                logs.extend(sl.log_records.into_iter().map(|record| ReceivedLog {
                    service: service.clone(),
                    record,
                }));
            }
        }
    }

    fn request(&self, signal: &'static str, transport: &'static str, headers: &http::HeaderMap) {
        let headers = headers
            .iter()
            .map(|(k, v)| {
                (
                    k.to_string(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                )
            })
            .collect();
        lock(&self.requests).push(Received {
            signal,
            transport,
            headers,
        });
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn service_of(resource: Option<&opentelemetry_proto::tonic::resource::v1::Resource>) -> String {
    resource
        .and_then(|r| attr(&r.attributes, "service.name"))
        .unwrap_or_default()
}

#[derive(Clone)]
struct Svc(Arc<Store>);

#[tonic::async_trait]
impl TraceService for Svc {
    async fn export(
        &self,
        req: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        self.0
            .request("traces", "grpc", &req.metadata().clone().into_headers());
        self.0.traces(req.into_inner());
        Ok(tonic::Response::new(ExportTraceServiceResponse {
            partial_success: None,
        }))
    }
}

#[tonic::async_trait]
impl MetricsService for Svc {
    async fn export(
        &self,
        req: tonic::Request<ExportMetricsServiceRequest>,
    ) -> Result<tonic::Response<ExportMetricsServiceResponse>, tonic::Status> {
        self.0
            .request("metrics", "grpc", &req.metadata().clone().into_headers());
        self.0.metrics(req.into_inner());
        Ok(tonic::Response::new(ExportMetricsServiceResponse {
            partial_success: None,
        }))
    }
}

#[tonic::async_trait]
impl LogsService for Svc {
    async fn export(
        &self,
        req: tonic::Request<ExportLogsServiceRequest>,
    ) -> Result<tonic::Response<ExportLogsServiceResponse>, tonic::Status> {
        self.0
            .request("logs", "grpc", &req.metadata().clone().into_headers());
        self.0.logs(req.into_inner());
        Ok(tonic::Response::new(ExportLogsServiceResponse {
            partial_success: None,
        }))
    }
}

pub struct OtlpReceiver {
    addr: SocketAddr,
    http_addr: SocketAddr,
    store: Arc<Store>,
    task: tokio::task::JoinHandle<()>,
    http_task: tokio::task::JoinHandle<()>,
}

/// `POST /v1/<signal>` with a protobuf body, as OTLP/HTTP sends it.
async fn http_export(
    axum::extract::State(store): axum::extract::State<Arc<Store>>,
    axum::extract::Path(signal): axum::extract::Path<String>,
    headers: http::HeaderMap,
    body: axum::body::Bytes,
) -> (http::StatusCode, String) {
    use prost::Message as _;
    let ok = match signal.as_str() {
        "traces" => ExportTraceServiceRequest::decode(body).map(|r| {
            store.request("traces", "http/protobuf", &headers);
            store.traces(r);
        }),
        "metrics" => ExportMetricsServiceRequest::decode(body).map(|r| {
            store.request("metrics", "http/protobuf", &headers);
            store.metrics(r);
        }),
        "logs" => ExportLogsServiceRequest::decode(body).map(|r| {
            store.request("logs", "http/protobuf", &headers);
            store.logs(r);
        }),
        _ => return (http::StatusCode::NOT_FOUND, format!("no signal {signal}")),
    };
    match ok {
        // An empty Export*ServiceResponse is zero bytes of protobuf.
        Ok(()) => (http::StatusCode::OK, String::new()),
        Err(e) => (http::StatusCode::BAD_REQUEST, e.to_string()),
    }
}

impl OtlpReceiver {
    pub async fn start() -> anyhow::Result<Self> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let store = Arc::new(Store::default());
        let svc = Svc(store.clone());
        let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
        // The test owns the receiver; Drop aborts this task.
        #[allow(clippy::disallowed_methods)]
        let task = tokio::spawn(async move {
            let _ = tonic::transport::Server::builder()
                .add_service(TraceServiceServer::new(svc.clone()))
                .add_service(MetricsServiceServer::new(svc.clone()))
                .add_service(LogsServiceServer::new(svc))
                .serve_with_incoming(incoming)
                .await;
        });
        let http_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let http_addr = http_listener.local_addr()?;
        let app = axum::Router::new()
            .route("/v1/{signal}", axum::routing::post(http_export))
            .with_state(store.clone());
        #[allow(clippy::disallowed_methods)]
        let http_task = tokio::spawn(async move {
            let _ = axum::serve(http_listener, app).await;
        });
        Ok(Self {
            addr,
            http_addr,
            store,
            task,
            http_task,
        })
    }

    /// "http://127.0.0.1:PORT", for OTEL_EXPORTER_OTLP_ENDPOINT (gRPC).
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// "http://127.0.0.1:PORT" of the OTLP/HTTP listener, for OTEL_EXPORTER_OTLP_ENDPOINT
    /// with OTEL_EXPORTER_OTLP_PROTOCOL=http/protobuf (the exporters append `/v1/<signal>`).
    pub fn http_endpoint(&self) -> String {
        format!("http://{}", self.http_addr)
    }

    pub fn logs(&self) -> Vec<ReceivedLog> {
        lock(&self.store.logs).clone()
    }

    /// Every export request received, in order.
    pub fn requests(&self) -> Vec<Received> {
        lock(&self.store.requests).clone()
    }

    pub fn spans(&self) -> Vec<ReceivedSpan> {
        lock(&self.store.spans).clone()
    }

    pub fn metrics(&self) -> Vec<ReceivedMetric> {
        lock(&self.store.metrics).clone()
    }
}

impl Drop for OtlpReceiver {
    fn drop(&mut self) {
        self.task.abort();
        self.http_task.abort();
    }
}
