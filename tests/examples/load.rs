//! Load benchmark of the harness (not a test): many concurrent runs of an agent whose model is
//! the scripted provider and whose tool is a trivial HTTP call to a local server, with all
//! services in this process (as `bridle dev` runs them) over loopback gRPC and one real Redis.
//!
//!   cargo run --release -p bridle-e2e --example load -- [RUNS] [CONCURRENCY]
//!   (BENCH_WORKERS sets the orchestrator's workers; default 8, its own default;
//!   BENCH_PARTITIONS its work stream partitions, default its own default)
//!
//! Reports runs/s, the harness's overhead per step (the time of a step not spent in the model
//! or the tool: Redis, checkpoints, policy checks, RPCs) at p50/p99, how long finished steps
//! waited in the work queue for a free worker, errors, the CPU time a step costs (this process:
//! every service and the clients; and Redis's) with the throughput that cost allows on this
//! machine's cores, Redis's own execution time per step by command (INFO commandstats), and
//! the Redis commands a step sends (every service's, by command; `redis-cli` must be on the
//! PATH).

#![allow(
    clippy::expect_used,
    clippy::unwrap_used,
    clippy::print_stdout,
    clippy::print_stderr
)]

// The allocator the service binaries use.
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

mod cpu;
mod inproc;

use std::time::{Duration, Instant};

use bridle_core::timeutil::std_duration;
use bridle_proto as pb;
use bridle_proto::run_event::Kind;
use futures::StreamExt as _;
use serde_json::json;

fn micros(ts: &prost_types::Timestamp) -> i64 {
    ts.seconds * 1_000_000 + i64::from(ts.nanos) / 1000
}

fn pct(v: &mut [f64], p: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    let i = ((v.len() as f64 - 1.0) * p).round() as usize;
    v[i]
}

#[tokio::main(flavor = "multi_thread")]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let runs: usize = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(1000);
    let concurrency: usize = args.get(2).and_then(|a| a.parse().ok()).unwrap_or(runs);
    let workers: usize = std::env::var("BENCH_WORKERS")
        .ok()
        .and_then(|w| w.parse().ok())
        .unwrap_or(8);
    let partitions: usize = std::env::var("BENCH_PARTITIONS")
        .ok()
        .and_then(|w| w.parse().ok())
        .unwrap_or(bridle_orchestrator::DEFAULT_WORK_PARTITIONS);

    let bench = inproc::start(json!({ "workers": workers, "work_partitions": partitions })).await?;
    let client = bench.client.clone();

    eprintln!(
        "{runs} runs, {concurrency} at once, {workers} workers, {partitions} work partitions; warming up"
    );
    // Warm-up: one run end to end (first connections, first pool containers, JIT-free paths).
    let warm = inproc::run_one(client.clone()).await;
    if warm.is_err() {
        anyhow::bail!("warm-up run failed: {warm:?}");
    }

    let redis_pid = cpu::redis_pid(&bench.redis.url()).await?;
    let pids = [std::process::id().to_string(), redis_pid];
    let ticks = cpu::clock_ticks();
    cpu::reset_redis_stats(&bench.redis.url()).await?;
    let cpu0 = cpu::sample_cpu(&pids);
    let t0 = Instant::now();
    let results: Vec<Result<Vec<pb::RunEvent>, String>> = futures::stream::iter(0..runs)
        .map(|_| inproc::run_one(client.clone()))
        .buffer_unordered(concurrency)
        .collect()
        .await;
    let elapsed = t0.elapsed();
    let cpu1 = cpu::sample_cpu(&pids);
    let load = cpu::load_average();
    let redis_times = cpu::redis_command_times(&bench.redis.url()).await?;

    let mut overhead = Vec::new();
    let mut queued = Vec::new();
    let mut steps = 0usize;
    // Why runs failed: each distinct reason with its count.
    let mut reasons = std::collections::BTreeMap::<String, usize>::new();
    for r in &results {
        let events = match r {
            Ok(events) => events,
            Err(e) => {
                *reasons.entry(e.clone()).or_default() += 1;
                continue;
            }
        };
        let finished = events.iter().find_map(|e| match &e.kind {
            Some(Kind::RunFinished(f)) => Some(f),
            _ => None,
        });
        if let Some(f) = finished.filter(|f| f.status != pb::RunStatus::Succeeded as i32) {
            *reasons
                .entry(format!("run ended {:?}: {}", f.status(), f.error))
                .or_default() += 1;
        }
        // Per step: wall time from StepStarted to StepFinished (or RunFinished), minus the
        // model's latency and the tools' durations as their services measured them.
        let mut start: Option<i64> = None;
        let mut spent = 0i64;
        let mut last_end: Option<i64> = None;
        for e in events {
            let t = e.time.as_ref().map(micros).unwrap_or(0);
            match &e.kind {
                Some(Kind::StepStarted(_)) => {
                    if let Some(end) = last_end {
                        queued.push((t - end) as f64 / 1000.0);
                    }
                    start = Some(t);
                    spent = 0;
                }
                Some(Kind::ModelCompleted(m)) => {
                    spent += std_duration(m.latency.as_ref()).map_or(0, |d| d.as_micros() as i64)
                }
                Some(Kind::ToolFinished(f)) => {
                    spent += std_duration(f.duration.as_ref()).map_or(0, |d| d.as_micros() as i64)
                }
                Some(Kind::StepFinished(_)) | Some(Kind::RunFinished(_)) => {
                    if let Some(s) = start.take() {
                        overhead.push(((t - s) - spent) as f64 / 1000.0);
                        steps += 1;
                        last_end = Some(t);
                    }
                }
                _ => {}
            }
        }
    }
    let errors: usize = reasons.values().sum();
    let ok = runs - errors;
    println!(
        "runs: {runs} ({ok} succeeded, {errors} errors), {steps} steps, {concurrency} concurrent, {workers} workers, {partitions} partitions"
    );
    for (why, n) in &reasons {
        println!("failed: {n} x {}", bridle_core::redact::preview(why, 300));
    }
    println!(
        "throughput: {:.1} runs/s ({:.1} steps/s) over {:.2}s",
        ok as f64 / elapsed.as_secs_f64(),
        steps as f64 / elapsed.as_secs_f64(),
        elapsed.as_secs_f64()
    );
    println!(
        "harness overhead per step (not model, not tool): p50 {:.2} ms, p99 {:.2} ms",
        pct(&mut overhead.clone(), 0.5),
        pct(&mut overhead, 0.99)
    );
    println!(
        "wait in the work queue between steps: p50 {:.2} ms, p99 {:.2} ms",
        pct(&mut queued.clone(), 0.5),
        pct(&mut queued, 0.99)
    );
    // CPU per step: what the timed runs cost this process (the five services and the clients)
    // and Redis, over the steps they took; the cores divided by it bound the throughput.
    let secs = |a: u64, b: u64| b.saturating_sub(a) as f64 / ticks;
    let us_per_step = |s: f64| s * 1e6 / steps.max(1) as f64;
    let (own, redis) = (
        secs(cpu0.procs[0], cpu1.procs[0]),
        secs(cpu0.procs[1], cpu1.procs[1]),
    );
    let busy = secs(cpu0.machine_busy, cpu1.machine_busy);
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let per_step = us_per_step(own + redis);
    println!(
        "cpu per step: {:.0} us ({:.0} us this process, {:.0} us redis-server); machine busy {:.0}% of {cores} cores, load average {load}; {cores} cores at that cost allow {:.0} steps/s ({:.0} runs/s of {:.1} steps)",
        per_step,
        us_per_step(own),
        us_per_step(redis),
        100.0 * busy / (elapsed.as_secs_f64() * cores as f64),
        cores as f64 * 1e6 / per_step,
        cores as f64 * 1e6 / per_step / (steps as f64 / ok.max(1) as f64),
        steps as f64 / ok.max(1) as f64,
    );
    // Redis's own time per step, by command, over the timed runs.
    let top: Vec<String> = redis_times
        .iter()
        .take(8)
        .map(|(c, calls, us)| {
            format!(
                "{c} {:.1} us ({:.2} calls)",
                *us as f64 / steps.max(1) as f64,
                *calls as f64 / steps.max(1) as f64
            )
        })
        .collect();
    println!(
        "redis execution time per step, by command (INFO commandstats over the timed runs; a script's time includes the commands it runs, also listed on their own): {}",
        top.join(", ")
    );
    round_trips(&bench, &client).await?;
    bench.shutdown.drain(Duration::from_secs(10)).await;
    Ok(())
}

/// Commands sent to Redis per step, by command, from `redis-cli monitor` over a sample of runs
/// after the timed part (MONITOR slows Redis down, so it never watches the timed runs). Each
/// is a round trip, except that a pipeline's commands share one. A script's own commands show
/// as `lua` there: they cost no round trip, and are counted apart.
async fn round_trips(
    bench: &inproc::Bench,
    client: &pb::orchestrator_client::OrchestratorClient<tonic::transport::Channel>,
) -> anyhow::Result<()> {
    const SAMPLE: usize = 100;
    let mut monitor = tokio::process::Command::new("redis-cli")
        .args(["-p", &bench.redis.port().to_string(), "monitor"])
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()?;
    let stdout = monitor.stdout.take().expect("piped");
    // A benchmark's reader of a child's output, joined below (no service to drain).
    #[allow(clippy::disallowed_methods)]
    let lines = tokio::spawn(async move {
        use tokio::io::AsyncBufReadExt as _;
        let mut out = Vec::new();
        let mut r = tokio::io::BufReader::new(stdout).lines();
        while let Ok(Some(l)) = r.next_line().await {
            out.push(l);
        }
        out
    });
    // MONITOR answers OK before it streams; a moment for it to be in place.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let results: Vec<_> = futures::stream::iter(0..SAMPLE)
        .map(|_| inproc::run_one(client.clone()))
        .buffer_unordered(10)
        .collect()
        .await;
    // The last checkpoints' MONITOR lines are on their way.
    tokio::time::sleep(Duration::from_millis(300)).await;
    monitor.kill().await?;
    let lines = lines.await?;
    let steps: usize = results
        .iter()
        .filter_map(|r| r.as_ref().ok())
        .map(|evs| {
            evs.iter()
                .filter(|e| matches!(e.kind, Some(Kind::StepStarted(_))))
                .count()
        })
        .sum();
    let mut trips = std::collections::BTreeMap::<String, usize>::new();
    let mut scripted = 0usize;
    for l in &lines {
        // 1700000000.123456 [0 127.0.0.1:5555] "EVALSHA" "..." | [0 lua] "HSET" ...
        let Some((source, rest)) = l.split_once("] ") else {
            continue;
        };
        let cmd = rest.split('"').nth(1).unwrap_or("").to_lowercase();
        if source.ends_with(" lua") {
            scripted += 1;
        } else if !matches!(cmd.as_str(), "monitor" | "info") {
            *trips.entry(cmd).or_default() += 1;
        }
    }
    let per = |n: usize| n as f64 / steps.max(1) as f64;
    let mut by: Vec<(String, usize)> = trips.into_iter().collect();
    by.sort_by_key(|b| std::cmp::Reverse(b.1));
    let total: usize = by.iter().map(|(_, n)| n).sum();
    println!(
        "redis commands sent per step ({SAMPLE} runs watched by MONITOR, {steps} steps): {:.1}, and {:.1} run inside scripts; by command: {}",
        per(total),
        per(scripted),
        by.iter()
            .map(|(c, n)| format!("{c} {:.2}", per(*n)))
            .collect::<Vec<_>>()
            .join(", ")
    );
    Ok(())
}
