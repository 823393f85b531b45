//! Bridle's metrics, exported over OTLP with the traces and served for scraping at
//! `metrics_listen` (nothing is recorded when neither is configured: the instruments are
//! no-ops then).
//!
//! Names follow the OpenTelemetry GenAI semantic conventions where one exists
//! (`gen_ai.client.token.usage`, `gen_ai.client.operation.duration`); Bridle's own are under
//! `bridle.*`. Instruments are made on first use, after telemetry is initialised.

use std::sync::OnceLock;

use opentelemetry::KeyValue;
use opentelemetry::metrics::{Counter, Gauge, Histogram};

pub struct Metrics {
    /// Tokens per model call, by `gen_ai.token.type` (input / output).
    pub token_usage: Histogram<u64>,
    /// Seconds per model call.
    pub operation_duration: Histogram<f64>,
    /// US dollars spent, by tenant, agent and model (known prices only).
    pub cost: Counter<f64>,
    /// Runs that ended, by status and reason.
    pub runs_finished: Counter<u64>,
    /// Steps waiting in the work stream, and steps delivered but not yet acknowledged.
    pub queue_depth: Gauge<u64>,
    /// Seconds from a step being queued to a worker taking it.
    pub claim_lag: Histogram<f64>,
    /// Seconds from an approval being asked for to its decision (or expiry).
    pub approval_wait: Histogram<f64>,
    /// Sandboxes started ahead of demand, by image.
    pub sandbox_pool_size: Gauge<u64>,
    /// Tool calls that had to start a sandbox (no warm one), by image.
    pub sandbox_cold_starts: Counter<u64>,
    /// Failed tries against a provider, by provider, target and error type.
    pub provider_errors: Counter<u64>,
    pub budget_warnings: Counter<u64>,
    /// Circuit breaker state per target: 0 closed, 1 half open, 2 open.
    pub breaker_state: Gauge<u64>,
    /// Seconds per gRPC call served (OpenTelemetry RPC conventions: `rpc.server.call.duration`
    /// by `rpc.system.name`, `rpc.method` and `rpc.response.status_code`).
    pub rpc_server_duration: Histogram<f64>,
    /// Seconds per gRPC call made to another service (`rpc.client.call.duration`).
    pub rpc_client_duration: Histogram<f64>,
    /// Age in seconds of the oldest step waiting, and of the oldest delivered but not yet
    /// acknowledged, by `bridle.queue.state` (0 when there is none).
    pub queue_oldest_age: Gauge<f64>,
    /// Steps moved to the dead-letter stream (their run failed).
    pub queue_dead_lettered: Counter<u64>,
    /// Approvals waiting for a decision.
    pub approvals_pending: Gauge<u64>,
    /// Warm sandboxes asked for, by image (`pool.warm` of the tools that use it).
    pub sandbox_pool_target: Gauge<u64>,
    /// 1 while a dependency (`bridle.dependency`: redis, vault) answers this service's probe,
    /// 0 while it does not.
    pub dependency_up: Gauge<u64>,
}

/// The RPC conventions' recommended boundaries for call durations, in seconds.
const RPC_DURATION_BOUNDS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
];

const DURATION_BOUNDS: &[f64] = &[
    0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48, 40.96, 81.92,
];
const TOKEN_BOUNDS: &[f64] = &[
    1.0, 4.0, 16.0, 64.0, 256.0, 1024.0, 4096.0, 16384.0, 65536.0, 262144.0, 1048576.0, 4194304.0,
];

pub fn metrics() -> &'static Metrics {
    static M: OnceLock<Metrics> = OnceLock::new();
    M.get_or_init(|| {
        let m = opentelemetry::global::meter_with_scope(crate::telemetry::scope("bridle"));
        Metrics {
            token_usage: m
                .u64_histogram("gen_ai.client.token.usage")
                .with_unit("{token}")
                .with_description("Tokens used per model call")
                .with_boundaries(TOKEN_BOUNDS.to_vec())
                .build(),
            operation_duration: m
                .f64_histogram("gen_ai.client.operation.duration")
                .with_unit("s")
                .with_description("Duration of model calls")
                .with_boundaries(DURATION_BOUNDS.to_vec())
                .build(),
            cost: m
                .f64_counter("bridle.cost")
                // An annotation, not a unit: exported as `bridle_cost_total` (US dollars).
                .with_unit("{USD}")
                .with_description("Money spent on models")
                .build(),
            runs_finished: m
                .u64_counter("bridle.runs.finished")
                .with_unit("{run}")
                .with_description("Runs that ended")
                .build(),
            queue_depth: m
                .u64_gauge("bridle.queue.depth")
                .with_unit("{step}")
                .with_description("Steps in the work stream")
                .build(),
            claim_lag: m
                .f64_histogram("bridle.queue.claim_lag")
                .with_unit("s")
                .with_description("Time from a step being queued to a worker taking it")
                .with_boundaries(DURATION_BOUNDS.to_vec())
                .build(),
            approval_wait: m
                .f64_histogram("bridle.approval.wait")
                .with_unit("s")
                .with_description("Time from an approval being asked for to its outcome")
                .with_boundaries(vec![
                    1.0, 10.0, 30.0, 60.0, 300.0, 900.0, 1800.0, 3600.0, 14400.0, 86400.0,
                ])
                .build(),
            sandbox_pool_size: m
                .u64_gauge("bridle.sandbox.pool.size")
                .with_unit("{sandbox}")
                .with_description("Warm sandboxes ready")
                .build(),
            sandbox_cold_starts: m
                .u64_counter("bridle.sandbox.cold_starts")
                .with_unit("{sandbox}")
                .with_description("Tool calls that started a sandbox")
                .build(),
            provider_errors: m
                .u64_counter("bridle.provider.errors")
                .with_unit("{error}")
                .with_description("Failed provider tries")
                .build(),
            budget_warnings: m
                .u64_counter("bridle.budget.warnings")
                .with_unit("{warning}")
                .with_description("Spend budgets that passed their warning level")
                .build(),
            breaker_state: m
                .u64_gauge("bridle.breaker.state")
                .with_description("Circuit breaker state: 0 closed, 1 half open, 2 open")
                .build(),
            rpc_server_duration: m
                .f64_histogram("rpc.server.call.duration")
                .with_unit("s")
                .with_description("Duration of gRPC calls served")
                .with_boundaries(RPC_DURATION_BOUNDS.to_vec())
                .build(),
            rpc_client_duration: m
                .f64_histogram("rpc.client.call.duration")
                .with_unit("s")
                .with_description("Duration of gRPC calls made to other services")
                .with_boundaries(RPC_DURATION_BOUNDS.to_vec())
                .build(),
            queue_oldest_age: m
                .f64_gauge("bridle.queue.oldest_age")
                .with_unit("s")
                .with_description("Age of the oldest step waiting or in progress")
                .build(),
            queue_dead_lettered: m
                .u64_counter("bridle.queue.dead_lettered")
                .with_unit("{step}")
                .with_description("Steps moved to the dead-letter stream")
                .build(),
            approvals_pending: m
                .u64_gauge("bridle.approvals.pending")
                .with_unit("{approval}")
                .with_description("Approvals waiting for a decision")
                .build(),
            sandbox_pool_target: m
                .u64_gauge("bridle.sandbox.pool.target")
                .with_unit("{sandbox}")
                .with_description("Warm sandboxes asked for")
                .build(),
            dependency_up: m
                .u64_gauge("bridle.dependency.up")
                .with_description("1 while the dependency answers, 0 while it does not")
                .build(),
        }
    })
}

/// How often [`watch_dependency`] probes, and how long one probe may take.
const PROBE_EVERY: std::time::Duration = std::time::Duration::from_secs(10);
const PROBE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// Probes a dependency every few seconds until shutdown, as `bridle.dependency.up`; a change
/// is logged once (a warning when it stops answering, info when it is back).
pub fn watch_dependency<F, Fut>(name: &'static str, probe: F, shutdown: &crate::Shutdown)
where
    F: Fn() -> Fut + Send + 'static,
    Fut: std::future::Future<Output = Result<(), String>> + Send,
{
    let stop = shutdown.token();
    shutdown.spawn(async move {
        let mut was_up = true;
        loop {
            let up = match tokio::time::timeout(PROBE_TIMEOUT, probe()).await {
                Ok(Ok(())) => true,
                Ok(Err(e)) => {
                    if was_up {
                        tracing::warn!(dependency = name, error = %e, "a dependency does not answer");
                    }
                    false
                }
                Err(_) => {
                    if was_up {
                        tracing::warn!(dependency = name, "a dependency does not answer (no reply within 5s)");
                    }
                    false
                }
            };
            if up && !was_up {
                tracing::info!(dependency = name, "a dependency answers again");
            }
            was_up = up;
            metrics()
                .dependency_up
                .record(u64::from(up), &[kv("bridle.dependency", name)]);
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(PROBE_EVERY) => {}
            }
        }
    });
}

/// [`watch_dependency`] for Redis: a PING on the service's connection.
pub fn watch_redis(conn: crate::redis_util::RedisConn, shutdown: &crate::Shutdown) {
    watch_dependency(
        "redis",
        move || {
            let mut c = conn.clone();
            async move {
                redis::cmd("PING")
                    .query_async::<String>(&mut c)
                    .await
                    .map(|_| ())
                    .map_err(|e| e.to_string())
            }
        },
        shutdown,
    );
}

/// Shorthand for attribute lists.
pub fn kv(k: &'static str, v: impl Into<opentelemetry::Value>) -> KeyValue {
    KeyValue::new(k, v)
}
