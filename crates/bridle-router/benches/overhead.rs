//! What the router adds to a model call: latency at fixed request rates, and how many calls
//! one core of router can carry. Not a test: it prints figures.
//!
//! Run: `cargo bench -p bridle-router --bench overhead` (options after `--`: `--seconds N`
//! per measurement, `--rates 1000,3000`).
//!
//! Setup: a real redis-server; a mock OpenAI upstream answering every call at once (the
//! testkit's, with the published example's body) in a process of its own; and the router
//! binary as its own process. With two or more CPUs, the router and the mock are pinned to
//! CPU 1 and this process (the load generator) and Redis to CPU 0, so a call straight to the
//! mock and a call through the router cross the same cores. Each rate is an open-loop schedule
//! (requests start at fixed times whether or not earlier ones finished); latency is timed from
//! each request's start. The router's added latency is the latency through it minus the
//! latency of calling the mock directly at the same rate. Capacity is the number of calls
//! divided by the CPU time the router process used for them (from /proc), so it does not
//! depend on what else the machine runs: it is what one fully used core carries; the wall
//! rate next to it is what this machine's load generator reached.

// A benchmark's output is what it prints.
#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use bridle_proto::manifests_client::ManifestsClient;
use bridle_proto::router_client::RouterClient;
use bridle_proto::{ApplyRequest, CompleteRequest, ManifestDocument, Message, Role, Scope};
use bridle_testkit::RedisServer;
use bridle_testkit::mock_openai::{MockOpenAi, Reply};
use futures::StreamExt as _;
use tonic::transport::Channel;

const ROUTE: &str = "bench";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Path {
    Direct,
    Grpc,
    Http,
}

#[derive(Clone)]
struct Clients {
    mock_url: String,
    http_url: String,
    http: reqwest::Client,
    grpc: RouterClient<Channel>,
}

fn request() -> CompleteRequest {
    CompleteRequest {
        scope: Some(Scope {
            tenant: "default".into(),
            agent: "bench".into(),
            ..Default::default()
        }),
        route: ROUTE.into(),
        messages: vec![
            Message {
                role: Role::System as i32,
                text: "You are a helpful assistant.".into(),
                ..Default::default()
            },
            Message {
                role: Role::User as i32,
                text: "Hello!".into(),
                ..Default::default()
            },
        ],
        ..Default::default()
    }
}

fn chat_body(model: &str, stream: bool) -> serde_json::Value {
    serde_json::json!({"model": model, "stream": stream, "messages": [
        {"role": "system", "content": "You are a helpful assistant."},
        {"role": "user", "content": "Hello!"}]})
}

/// One call along `path`; Ok once the whole answer has arrived.
async fn call(c: &Clients, path: Path, stream: bool) -> anyhow::Result<()> {
    match path {
        Path::Direct | Path::Http => {
            let (url, model) = match path {
                Path::Direct => (format!("{}/chat/completions", c.mock_url), "gpt-4o-mini"),
                _ => (format!("{}/v1/chat/completions", c.http_url), ROUTE),
            };
            let resp = c
                .http
                .post(url)
                .json(&chat_body(model, stream))
                .send()
                .await?;
            anyhow::ensure!(resp.status().is_success(), "HTTP {}", resp.status());
            let body = resp.bytes().await?;
            anyhow::ensure!(!body.is_empty(), "empty body");
            Ok(())
        }
        Path::Grpc if stream => {
            let mut s = c
                .grpc
                .clone()
                .complete_stream(request())
                .await?
                .into_inner();
            while let Some(item) = s.next().await {
                item?;
            }
            Ok(())
        }
        Path::Grpc => {
            c.grpc.clone().complete(request()).await?;
            Ok(())
        }
    }
}

struct Sample {
    latencies_us: Vec<u64>,
    errors: usize,
    achieved: f64,
}

/// Open loop: `rate` calls a second for `secs`, each timed from its start (the timer's
/// millisecond granularity makes scheduled starts too coarse to time from).
async fn at_rate(c: &Clients, path: Path, stream: bool, rate: u32, secs: f64) -> Sample {
    let n = (f64::from(rate) * secs) as usize;
    let start = Instant::now() + Duration::from_millis(20);
    let interval = Duration::from_secs_f64(1.0 / f64::from(rate));
    let mut tasks = Vec::with_capacity(n);
    for i in 0..n {
        let due = start + interval * i as u32;
        tokio::time::sleep_until(due.into()).await;
        let c = c.clone();
        // The benchmark owns these tasks and awaits every one below.
        #[allow(clippy::disallowed_methods)]
        tasks.push(tokio::spawn(async move {
            let t0 = Instant::now();
            let ok = call(&c, path, stream).await.is_ok();
            (ok, t0.elapsed())
        }));
    }
    let mut latencies_us = Vec::with_capacity(n);
    let mut errors = 0;
    for t in tasks {
        match t.await {
            Ok((true, d)) => latencies_us.push(d.as_micros() as u64),
            _ => errors += 1,
        }
    }
    let took = start.elapsed().as_secs_f64();
    latencies_us.sort_unstable();
    Sample {
        latencies_us,
        errors,
        achieved: n as f64 / took,
    }
}

fn pct(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// CPU time (user + system) a process has used, from /proc.
fn cpu_secs(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which may hold spaces) start after the last ')'.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    // utime and stime are fields 14 and 15 of the line: 11 and 12 after the ')'.
    (ticks(11) + ticks(12)) / 100.0
}

/// Closed loop with `conc` callers for `secs`: calls done, and router CPU seconds used.
async fn capacity(
    c: &Clients,
    path: Path,
    stream: bool,
    conc: usize,
    secs: f64,
    pid: u32,
) -> (usize, f64, f64) {
    let cpu0 = cpu_secs(pid);
    let t0 = Instant::now();
    let end = t0 + Duration::from_secs_f64(secs);
    let mut tasks = Vec::new();
    for _ in 0..conc {
        let c = c.clone();
        #[allow(clippy::disallowed_methods)]
        tasks.push(tokio::spawn(async move {
            let mut done = 0usize;
            while Instant::now() < end {
                if call(&c, path, stream).await.is_ok() {
                    done += 1;
                }
            }
            done
        }));
    }
    let mut total = 0;
    for t in tasks {
        total += t.await.unwrap_or(0);
    }
    (total, t0.elapsed().as_secs_f64(), cpu_secs(pid) - cpu0)
}

struct Router {
    child: tokio::process::Child,
    grpc: SocketAddr,
    http: SocketAddr,
    _dir: tempfile::TempDir,
}

async fn start_router(redis: &RedisServer, pin: bool) -> anyhow::Result<Router> {
    let dir = tempfile::tempdir()?;
    let (gf, hf) = (dir.path().join("grpc"), dir.path().join("http"));
    let bin = env!("CARGO_BIN_EXE_bridle-router");
    // BENCH_ROUTER_PREFIX runs the router under another program, a profiler for instance:
    // BENCH_ROUTER_PREFIX="perf record -e cpu-clock -g -o /tmp/router.perf --".
    let mut argv: Vec<String> = std::env::var("BENCH_ROUTER_PREFIX")
        .unwrap_or_default()
        .split_whitespace()
        .map(str::to_string)
        .collect();
    if pin {
        argv.extend(["taskset".into(), "-c".into(), "1".into()]);
    }
    argv.push(bin.into());
    let mut cmd = tokio::process::Command::new(&argv[0]);
    cmd.args(&argv[1..]);
    cmd.arg("--listen")
        .arg("127.0.0.1:0")
        .arg("--addr-file")
        .arg(&gf)
        .env("BRIDLE_ROUTER_REDIS_URL", redis.url())
        .env("BRIDLE_ROUTER_KEY_PREFIX", bridle_testkit::unique("bench"))
        // The bench route has no key: the broker is never called.
        .env("BRIDLE_ROUTER_SECRETS_URL", "http://127.0.0.1:9")
        .env("BRIDLE_ROUTER_HTTP_LISTEN", "127.0.0.1:0")
        .env("BRIDLE_ROUTER_HTTP_ADDR_FILE", &hf)
        .env("BRIDLE_ROUTER_CONCURRENCY_LIMIT", "100000")
        .env(
            "BRIDLE_LOG",
            std::env::var("BENCH_ROUTER_LOG").unwrap_or_else(|_| "warn".into()),
        )
        .stdout(std::process::Stdio::null())
        .kill_on_drop(true);
    let child = cmd.spawn().context("starting the router")?;
    let read = |p: std::path::PathBuf| async move {
        bridle_testkit::wait_for("the router's address", Duration::from_secs(30), || {
            let p = p.clone();
            async move {
                std::fs::read_to_string(&p)
                    .ok()
                    .and_then(|s| s.trim().parse::<SocketAddr>().ok())
            }
        })
        .await
    };
    Ok(Router {
        child,
        grpc: read(gf).await?,
        http: read(hf).await?,
        _dir: dir,
    })
}

/// `--serve-mock FILE`: serves the mock upstream, writes its base URL to FILE, runs until
/// killed.
async fn serve_mock(file: &str) -> anyhow::Result<()> {
    let mock = MockOpenAi::start().await?;
    mock.set_recording(false);
    mock.set_default(Some(Reply::text(
        "Hello there, how may I assist you today?",
    )));
    std::fs::write(file, mock.base_url())?;
    std::future::pending::<()>().await;
    Ok(())
}

/// Starts this program as the mock upstream (on CPU 1 when `pin`); returns its base URL.
async fn start_mock(
    pin: bool,
    dir: &std::path::Path,
) -> anyhow::Result<(tokio::process::Child, String)> {
    let file = dir.join("mock");
    let me = std::env::current_exe()?;
    let mut cmd = if pin {
        let mut c = tokio::process::Command::new("taskset");
        c.arg("-c").arg("1").arg(&me);
        c
    } else {
        tokio::process::Command::new(&me)
    };
    cmd.arg("--serve-mock").arg(&file).kill_on_drop(true);
    let child = cmd.spawn().context("starting the mock")?;
    let url = bridle_testkit::wait_for("the mock's address", Duration::from_secs(30), || {
        let f = file.clone();
        async move { std::fs::read_to_string(&f).ok().filter(|s| !s.is_empty()) }
    })
    .await?;
    Ok((child, url))
}

async fn run(secs: f64, rates: Vec<u32>, pinned: bool) -> anyhow::Result<()> {
    let redis = RedisServer::start().await?;
    let dir = tempfile::tempdir()?;
    let (_mock, mock_url) = start_mock(pinned, dir.path()).await?;
    let router = start_router(&redis, pinned).await?;
    let pid = router.child.id().context("router pid")?;
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", router.grpc))?
        .connect()
        .await?;
    let route = format!(
        "apiVersion: bridle.dev/v1\nkind: ModelRoute\nmetadata:\n  name: {ROUTE}\nspec:\n  targets:\n    - name: mock\n      provider: openai\n      model: gpt-4o-mini\n      baseUrl: {}\n",
        mock_url
    );
    ManifestsClient::new(channel.clone())
        .apply(ApplyRequest {
            documents: vec![ManifestDocument {
                source: "bench.yaml".into(),
                yaml: route,
                first_line: 1,
            }],
            dry_run: false,
            tenant: String::new(),
        })
        .await?;
    let c = Clients {
        mock_url: mock_url.clone(),
        http_url: format!("http://{}", router.http),
        http: reqwest::Client::builder()
            .pool_max_idle_per_host(1024)
            .build()?,
        grpc: RouterClient::new(channel),
    };
    // Warm every path (connections, the route, allocator).
    for path in [Path::Direct, Path::Grpc, Path::Http] {
        for stream in [false, true] {
            at_rate(&c, path, stream, 500, 1.0).await;
        }
    }
    println!(
        "\nRouter overhead ({}; {secs}s per row)\n",
        if pinned {
            "router and mock pinned to CPU 1, load generator and Redis to CPU 0"
        } else {
            "nothing pinned"
        }
    );
    println!(
        "| path | mode | target rps | achieved rps | errors | p50 µs | p99 µs | added p50 µs | added p99 µs |"
    );
    println!("|---|---|---:|---:|---:|---:|---:|---:|---:|");
    for stream in [false, true] {
        for &rate in &rates {
            let direct = at_rate(&c, Path::Direct, stream, rate, secs).await;
            let (d50, d99) = (
                pct(&direct.latencies_us, 0.5),
                pct(&direct.latencies_us, 0.99),
            );
            for path in [Path::Direct, Path::Grpc, Path::Http] {
                let s = if path == Path::Direct {
                    Sample {
                        latencies_us: direct.latencies_us.clone(),
                        errors: direct.errors,
                        achieved: direct.achieved,
                    }
                } else {
                    at_rate(&c, path, stream, rate, secs).await
                };
                let (p50, p99) = (pct(&s.latencies_us, 0.5), pct(&s.latencies_us, 0.99));
                let added = |v: u64, d: u64| {
                    if path == Path::Direct {
                        "—".to_string()
                    } else {
                        (v as i64 - d as i64).to_string()
                    }
                };
                println!(
                    "| {path:?} | {} | {rate} | {:.0} | {} | {p50} | {p99} | {} | {} |",
                    if stream { "stream" } else { "plain" },
                    s.achieved,
                    s.errors,
                    added(p50, d50),
                    added(p99, d99)
                );
            }
        }
    }
    println!(
        "\nCapacity: calls per second of router CPU time (closed loop, 64 callers, {secs}s)\n"
    );
    println!("| path | mode | calls | wall rps | router CPU s | calls per router CPU-second |");
    println!("|---|---|---:|---:|---:|---:|");
    for (path, stream) in [
        (Path::Grpc, false),
        (Path::Http, false),
        (Path::Grpc, true),
        (Path::Http, true),
    ] {
        let (n, wall, cpu) = capacity(&c, path, stream, 64, secs, pid).await;
        println!(
            "| {path:?} | {} | {n} | {:.0} | {cpu:.2} | {:.0} |",
            if stream { "stream" } else { "plain" },
            n as f64 / wall,
            if cpu > 0.0 { n as f64 / cpu } else { 0.0 }
        );
    }
    // A profiler wrapping the router writes its data on SIGINT.
    let mut child = router.child;
    let _ = std::process::Command::new("kill")
        .arg("-INT")
        .arg(pid.to_string())
        .status();
    let _ = tokio::time::timeout(Duration::from_secs(60), child.wait()).await;
    Ok(())
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == "--serve-mock") {
        let file = args.get(i + 1).cloned().unwrap_or_default();
        let rt = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build();
        return match rt.map(|rt| rt.block_on(serve_mock(&file))) {
            Ok(Ok(())) => ExitCode::SUCCESS,
            _ => ExitCode::FAILURE,
        };
    }
    let mut secs = 5.0;
    let mut rates = vec![1000, 3000];
    let mut i = 1;
    while i < args.len() {
        match args[i].as_str() {
            "--seconds" => {
                secs = args.get(i + 1).and_then(|v| v.parse().ok()).unwrap_or(secs);
                i += 1;
            }
            "--rates" => {
                if let Some(v) = args.get(i + 1) {
                    rates = v.split(',').filter_map(|r| r.parse().ok()).collect();
                }
                i += 1;
            }
            _ => {} // cargo bench passes --bench
        }
        i += 1;
    }
    // This process (load, mock, Redis) on CPU 0, the router on CPU 1: set before the runtime
    // starts its threads, which inherit it.
    let cpus = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    let pinned = cpus >= 2
        && std::process::Command::new("taskset")
            .arg("-cp")
            .arg("0")
            .arg(std::process::id().to_string())
            .stdout(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("bench: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(run(secs, rates, pinned)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bench failed: {e:#}");
            ExitCode::FAILURE
        }
    }
}
