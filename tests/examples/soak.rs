//! Soak benchmark of Redis memory (not a test): pushes many runs through the harness (all
//! services in this process, one real Redis, as the `load` benchmark) with a short retention,
//! and reports Redis `used_memory` over time and the bytes per live run. With retention the
//! memory plateaus once runs expire as fast as they end; it must not grow with the total.
//!
//!   cargo run --release -p bridle-e2e --example soak -- [RUNS] [CONCURRENCY]
//!   (defaults 20000 and 100; BENCH_RETENTION the orchestrator's retention, default 30s;
//!   BENCH_SAMPLE the sampling period, default 5s)
//!   cargo run --release -p bridle-e2e --example soak -- --fast
//!   (3000 runs, 50 at once, 5s retention, 1s samples: about a minute)
//!
//! A live run is one whose state hash is still in Redis (running, or ended and retained).
//! Bytes per live run = (used_memory - used_memory before the first run) / live runs, taken
//! over the samples where there are live runs.

#![allow(
    clippy::expect_used,
    clippy::unwrap_used,
    clippy::print_stdout,
    clippy::print_stderr
)]

// The allocator the service binaries use.
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

mod inproc;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use futures::StreamExt as _;
use serde_json::json;

struct Sample {
    at: Duration,
    started: usize,
    ended: usize,
    live: u64,
    used: u64,
}

async fn used_memory(c: &mut redis::aio::MultiplexedConnection) -> u64 {
    let info: String = redis::cmd("INFO")
        .arg("memory")
        .query_async(c)
        .await
        .unwrap();
    info.lines()
        .find_map(|l| l.strip_prefix("used_memory:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

/// Run state hashes present (not their event streams).
async fn live_runs(c: &mut redis::aio::MultiplexedConnection, prefix: &str) -> u64 {
    let mut cursor = 0u64;
    let mut n = 0u64;
    loop {
        let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(format!("{prefix}:run:{{*}}"))
            .arg("COUNT")
            .arg(1000)
            .query_async(c)
            .await
            .unwrap();
        n += keys.iter().filter(|k| k.ends_with('}')).count() as u64;
        if next == 0 {
            return n;
        }
        cursor = next;
    }
}

fn env_duration(name: &str, default: &str) -> anyhow::Result<Duration> {
    let v = std::env::var(name).unwrap_or_else(|_| default.into());
    humantime::parse_duration(&v).map_err(|e| anyhow::anyhow!("{name}: '{v}': {e}"))
}

#[tokio::main(flavor = "multi_thread")]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let fast = args.iter().any(|a| a == "--fast");
    let nums: Vec<usize> = args.iter().filter_map(|a| a.parse().ok()).collect();
    let (runs, concurrency, retention, every) = if fast {
        (3000, 50, Duration::from_secs(5), Duration::from_secs(1))
    } else {
        (
            nums.first().copied().unwrap_or(20_000),
            nums.get(1).copied().unwrap_or(100),
            env_duration("BENCH_RETENTION", "30s")?,
            env_duration("BENCH_SAMPLE", "5s")?,
        )
    };
    let bench = inproc::start(json!({
        "retention": humantime::format_duration(retention).to_string(),
    }))
    .await?;
    let mut redis = bench.redis.client().await?;
    // One run end to end first, so connections, scripts and the agent are in place.
    inproc::run_one(bench.client.clone())
        .await
        .map_err(|e| anyhow::anyhow!("warm-up run failed: {e}"))?;
    tokio::time::sleep(retention + Duration::from_secs(2)).await;
    let base = used_memory(&mut redis).await;
    eprintln!(
        "{runs} runs, {concurrency} at once, retention {}; used_memory before: {base} bytes",
        humantime::format_duration(retention)
    );

    let started = Arc::new(AtomicUsize::new(0));
    let ended = Arc::new(AtomicUsize::new(0));
    let errors = Arc::new(AtomicUsize::new(0));
    let t0 = Instant::now();
    let load = {
        let (client, started, ended, errors) = (
            bench.client.clone(),
            started.clone(),
            ended.clone(),
            errors.clone(),
        );
        async move {
            futures::stream::iter(0..runs)
                .map(|_| {
                    let (client, started, ended, errors) = (
                        client.clone(),
                        started.clone(),
                        ended.clone(),
                        errors.clone(),
                    );
                    async move {
                        started.fetch_add(1, Ordering::Relaxed);
                        if let Err(e) = inproc::run_one(client).await {
                            // The first few, so an error rate comes with its reasons.
                            if errors.fetch_add(1, Ordering::Relaxed) < 3 {
                                eprintln!("run error: {e}");
                            }
                        }
                        ended.fetch_add(1, Ordering::Relaxed);
                    }
                })
                .buffer_unordered(concurrency)
                .collect::<Vec<()>>()
                .await
        }
    };
    let mut samples = Vec::new();
    let sampler = async {
        let mut tick = tokio::time::interval(every);
        loop {
            tick.tick().await;
            let s = Sample {
                at: t0.elapsed(),
                started: started.load(Ordering::Relaxed),
                ended: ended.load(Ordering::Relaxed),
                live: live_runs(&mut redis, &bench.prefix).await,
                used: used_memory(&mut redis).await,
            };
            println!(
                "t={:>6.1}s started={:>6} ended={:>6} live={:>6} used_memory={:>7.2} MiB",
                s.at.as_secs_f64(),
                s.started,
                s.ended,
                s.live,
                s.used as f64 / 1048576.0
            );
            samples.push(s);
        }
    };
    tokio::select! {
        _ = load => {}
        _ = sampler => {}
    }
    let elapsed = t0.elapsed();
    // After the last run: everything expires within the retention (plus a sweep).
    let mut redis = bench.redis.client().await?;
    tokio::time::sleep(retention + Duration::from_secs(3)).await;
    let after_live = live_runs(&mut redis, &bench.prefix).await;
    let after_used = used_memory(&mut redis).await;

    let per_run: Vec<f64> = samples
        .iter()
        .filter(|s| s.live >= 100)
        .map(|s| s.used.saturating_sub(base) as f64 / s.live as f64)
        .collect();
    let mean = per_run.iter().sum::<f64>() / per_run.len().max(1) as f64;
    // Plateau: the mean used_memory over the second quarter of the samples against the last.
    let q = samples.len() / 4;
    let avg = |s: &[Sample]| s.iter().map(|x| x.used as f64).sum::<f64>() / s.len().max(1) as f64;
    let (second, last) = if q > 0 {
        (avg(&samples[q..2 * q]), avg(&samples[3 * q..]))
    } else {
        (f64::NAN, f64::NAN)
    };
    println!(
        "runs: {runs} ({} errors) in {:.1}s ({:.0} runs/s), retention {}",
        errors.load(Ordering::Relaxed),
        elapsed.as_secs_f64(),
        runs as f64 / elapsed.as_secs_f64(),
        humantime::format_duration(retention)
    );
    println!(
        "used_memory: before {:.2} MiB; mean over 2nd quarter {:.2} MiB, over last quarter {:.2} MiB; peak {:.2} MiB; {:.2} MiB with {after_live} live runs {}s after the last run",
        base as f64 / 1048576.0,
        second / 1048576.0,
        last / 1048576.0,
        samples.iter().map(|s| s.used).max().unwrap_or(0) as f64 / 1048576.0,
        after_used as f64 / 1048576.0,
        (retention + Duration::from_secs(3)).as_secs()
    );
    println!(
        "bytes per live run: mean {:.0} (over {} samples with >= 100 live runs)",
        mean,
        per_run.len()
    );
    bench.shutdown.drain(Duration::from_secs(10)).await;
    Ok(())
}
