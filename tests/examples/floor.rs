//! The floor under the load benchmark (not a test): what the transport of a run costs in CPU on
//! this machine when nothing else is done, measured the way the harness uses it.
//!
//!   cargo run --release -p bridle-e2e --example floor -- [CONCURRENCY] [SECONDS]
//!
//! Three parts, each at CONCURRENCY (1000) calls in flight for SECONDS (5), client and server
//! in this process on loopback except Redis, as in the load benchmark:
//! - an empty gRPC unary call (`grpc.health.v1.Health/Check` on tonic, one HTTP/2 connection,
//!   as a service's client has), which is what StartRun, each model call, the policy check
//!   and the tool call are at the least;
//! - a Redis round trip (`GET` of a small key on one multiplexed connection, as the services
//!   share theirs), the CPU of this process and of `redis-server` both;
//! - an HTTP/1.1 POST of a small body (reqwest to axum), what an HTTP tool's call is.
//!
//! Each prints calls/s, the wall time of a call (at CONCURRENCY 1, the round trip one at a time
//! costs) and CPU per call. Then the floor of one load-benchmark run: its
//! transport (the gRPC calls and HTTP calls it makes and the Redis round trips its steps take,
//! counted from the code and from the load benchmark's MONITOR figures; see the benchmarks
//! page) priced at these costs, and the runs/s that floor allows on this machine's cores.
//! `FLOOR_GRPC`, `FLOOR_HTTP` and `FLOOR_REDIS` change the counts per run.

#![allow(
    clippy::expect_used,
    clippy::unwrap_used,
    clippy::print_stdout,
    clippy::print_stderr
)]

#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

mod cpu;

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures::StreamExt as _;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_client::HealthClient;

/// Per run of the load benchmark (two steps: a model call asking for the tool, then the tool
/// call and the model's answer):
/// StartRun and the tools service's lookup of the Agent's tools it makes, two Complete calls
/// to the router, one Evaluate to the approvals service, one Execute to the tools service, and
/// WatchRun (a stream: counted as one call, its ~15 event messages not priced at all).
const GRPC_PER_RUN: f64 = 7.0;
/// The tool's HTTP call.
const HTTP_PER_RUN: f64 = 1.0;
/// Round trips to Redis per run: the load benchmark's MONITOR count, 17.4 commands per step
/// over two steps (the watcher's XRANGEs included), less the two of each step that share a
/// pipeline with another (XACK and XDEL go with XADD).
const REDIS_PER_RUN: f64 = 31.0;

struct Cost {
    what: &'static str,
    calls: u64,
    secs: f64,
    /// CPU seconds: this process, and another (Redis) when measured.
    own: f64,
    other: f64,
    /// Calls in flight: with `calls` and `secs`, the wall time a call took.
    concurrency: usize,
}

impl Cost {
    fn us_per_call(&self) -> f64 {
        (self.own + self.other) * 1e6 / self.calls.max(1) as f64
    }

    /// Mean wall time of one call, from its start to its answer (Little's law: calls in
    /// flight over calls per second).
    fn wall_us_per_call(&self) -> f64 {
        self.concurrency as f64 * self.secs * 1e6 / self.calls.max(1) as f64
    }

    fn print(&self) {
        println!(
            "{}: {:.0} calls/s, {:.0} us each from start to answer; CPU per call {:.1} us ({:.1} us this process{})",
            self.what,
            self.calls as f64 / self.secs,
            self.wall_us_per_call(),
            self.us_per_call(),
            self.own * 1e6 / self.calls.max(1) as f64,
            if self.other > 0.0 {
                format!(
                    ", {:.1} us redis-server",
                    self.other * 1e6 / self.calls.max(1) as f64
                )
            } else {
                String::new()
            }
        );
    }
}

fn env_f64(name: &str, default: f64) -> f64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Runs `call` `concurrency` at a time for `secs`, after a second of warm-up, measuring the
/// CPU of this process and of `other` (a pid).
async fn measure<F, Fut>(
    what: &'static str,
    concurrency: usize,
    secs: u64,
    other: Option<&str>,
    call: F,
) -> Cost
where
    F: Fn() -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = ()> + Send,
{
    let ticks = cpu::clock_ticks();
    let mut pids = vec![std::process::id().to_string()];
    pids.extend(other.map(str::to_string));
    let run_for = |d: Duration, count: Arc<AtomicU64>| {
        let call = call.clone();
        async move {
            let end = Instant::now() + d;
            futures::stream::iter(0..concurrency)
                .map(|_| {
                    let (call, count) = (call.clone(), count.clone());
                    async move {
                        while Instant::now() < end {
                            call().await;
                            count.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                })
                .buffer_unordered(concurrency)
                .collect::<Vec<()>>()
                .await;
        }
    };
    run_for(Duration::from_secs(1), Arc::default()).await;
    let count = Arc::new(AtomicU64::new(0));
    let (t0, c0) = (Instant::now(), cpu::sample_cpu(&pids));
    run_for(Duration::from_secs(secs), count.clone()).await;
    let (t1, c1) = (Instant::now(), cpu::sample_cpu(&pids));
    let d = |i: usize| c1.procs[i].saturating_sub(c0.procs[i]) as f64 / ticks;
    Cost {
        what,
        calls: count.load(Ordering::Relaxed),
        secs: (t1 - t0).as_secs_f64(),
        own: d(0),
        other: if pids.len() > 1 { d(1) } else { 0.0 },
        concurrency,
    }
}

#[tokio::main(flavor = "multi_thread")]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let concurrency: usize = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(1000);
    let secs: u64 = args.get(2).and_then(|a| a.parse().ok()).unwrap_or(5);
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    eprintln!(
        "{concurrency} calls in flight, {secs} s each, {cores} cores, load average {}",
        cpu::load_average()
    );

    // gRPC: tonic's health service, nothing behind it.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let (_reporter, health) = tonic_health::server::health_reporter();
    // A benchmark's server, stopped with the process.
    #[allow(clippy::disallowed_methods)]
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(health)
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))?
        .connect()
        .await?;
    let grpc = measure(
        "gRPC unary call (empty)",
        concurrency,
        secs,
        None,
        move || {
            let mut c = HealthClient::new(channel.clone());
            async move {
                c.check(HealthCheckRequest::default()).await.unwrap();
            }
        },
    )
    .await;
    grpc.print();

    // Redis: a GET on one multiplexed connection.
    let redis = bridle_testkit::RedisServer::start().await?;
    let client = redis::Client::open(redis.url())?;
    let conn = client.get_multiplexed_async_connection().await?;
    let redis_pid = cpu::redis_pid(&redis.url()).await?;
    let mut c = conn.clone();
    let () = redis::cmd("SET")
        .arg("k")
        .arg("a small value")
        .query_async(&mut c)
        .await?;
    let rt = measure(
        "Redis round trip (GET)",
        concurrency,
        secs,
        Some(&redis_pid),
        move || {
            let mut c = conn.clone();
            async move {
                let _: String = redis::cmd("GET")
                    .arg("k")
                    .query_async(&mut c)
                    .await
                    .unwrap();
            }
        },
    )
    .await;
    rt.print();

    // HTTP/1.1: an axum echo, as the load benchmark's tool.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let app = axum::Router::new().route(
        "/echo",
        axum::routing::post(|body: String| async move { body }),
    );
    #[allow(clippy::disallowed_methods)]
    tokio::spawn(async move { axum::serve(listener, app).await });
    let http = bridle_core::http_client::new();
    let url = format!("http://{addr}/echo");
    let h = measure("HTTP/1.1 POST (echo)", concurrency, secs, None, move || {
        let (http, url) = (http.clone(), url.clone());
        async move {
            http.post(&url)
                .body(r#"{"n":1}"#)
                .send()
                .await
                .unwrap()
                .bytes()
                .await
                .unwrap();
        }
    })
    .await;
    h.print();

    let (g, hh, r) = (
        env_f64("FLOOR_GRPC", GRPC_PER_RUN),
        env_f64("FLOOR_HTTP", HTTP_PER_RUN),
        env_f64("FLOOR_REDIS", REDIS_PER_RUN),
    );
    let floor = g * grpc.us_per_call() + hh * h.us_per_call() + r * rt.us_per_call();
    println!(
        "floor of one load-benchmark run ({g} gRPC calls, {hh} HTTP call, {r} Redis round trips): {floor:.0} us of CPU; {cores} cores allow at most {:.0} runs/s ({:.0} steps/s of two per run) before any work is done",
        cores as f64 * 1e6 / floor,
        2.0 * cores as f64 * 1e6 / floor,
    );
    Ok(())
}
