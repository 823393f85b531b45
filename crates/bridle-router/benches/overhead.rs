//! What the router adds to a model call: latency at fixed request rates, and how many calls
//! one core of router can carry. Not a test: it prints figures.
//!
//! Run: `cargo bench -p bridle-router --bench overhead` (options after `--`: `--seconds N`
//! per measurement, `--rates 1000,3000`).
//!
//! Setup: a real redis-server; a mock OpenAI upstream answering every call at once (the
//! testkit's, with the published example's body) in a process of its own; the router binary
//! as its own process; a bare TCP relay (this program, copying bytes both ways) in front of the
//! mock; and a gRPC echo (this program too, on Bridle's gRPC server like the router). With two
//! or more CPUs, the router, the relay and the echo are pinned to CPU 1 and everything else
//! (this process, which generates the load; the mock; Redis) to CPU 0, so the router has its
//! core to itself as it would in a deployment, where the provider is another machine.
//! `BENCH_MOCK_CPU=1` puts the mock on the router's core instead (the placement of earlier
//! figures: a direct call then crosses cores as often as a routed one does, but the mock's
//! work queues the router's).
//! `BENCH_PIN=0` pins nothing and leaves placement to the kernel (the router then runs as
//! many runtime workers as the machine has CPUs).
//!
//! Each rate is an open-loop schedule (requests start at fixed times whether or not earlier
//! ones finished); latency is timed from each request's start. The five paths (direct to the
//! mock; through the relay; to a gRPC echo server on the router's core that answers at once;
//! through the router over gRPC; through its HTTP front) take turns in half-second slices until
//! each has run its seconds, so a disturbance of this shared machine falls on all of them
//! alike. The router's added latency is the latency through it minus the latency of calling the
//! mock directly at the same rate; "over floor" subtracts instead the same hop with no routing
//! behind it (the echo for gRPC, the relay for HTTP): what routing costs beyond the hop itself,
//! which on a virtual machine is mostly the kernel waking the other core.
//!
//! Capacity is the number of calls divided by the CPU time the router process used for them
//! (from /proc), so it does not depend on what else the machine runs: it is what one fully
//! used core carries; the wall rate next to it is what this machine's load generator reached.

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
/// The CPU the router (and the relay and echo standing in for it) runs on when pinning.
const ROUTER_CPU: &str = "1";
/// The CPU of this process (the load generator), Redis and, unless `BENCH_MOCK_CPU` says
/// otherwise, the mock.
const LOAD_CPU: &str = "0";
/// How long each path runs before the next takes its turn.
const SLICE_SECS: f64 = 0.5;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Path {
    Direct,
    /// To the mock through a bare TCP relay on the router's core: what one more process hop
    /// costs on this machine, before any routing work.
    Relay,
    /// A gRPC server on the router's core that answers `Complete` with a fixed response and
    /// `CompleteStream` with fixed chunks: what a gRPC hop costs (both ends of tonic and h2)
    /// before any routing work.
    GrpcEcho,
    Grpc,
    Http,
}

/// Every path, in the order the table shows them.
const PATHS: [Path; 5] = [
    Path::Direct,
    Path::Relay,
    Path::GrpcEcho,
    Path::Grpc,
    Path::Http,
];

#[derive(Clone)]
struct Clients {
    mock_url: String,
    relay_url: String,
    http_url: String,
    http: reqwest::Client,
    grpc: RouterClient<Channel>,
    echo: RouterClient<Channel>,
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

impl Clients {
    fn grpc_of(&self, path: Path) -> &RouterClient<Channel> {
        if path == Path::GrpcEcho {
            &self.echo
        } else {
            &self.grpc
        }
    }
}

/// One call along `path`; Ok once the whole answer has arrived.
async fn call(c: &Clients, path: Path, stream: bool) -> anyhow::Result<()> {
    match path {
        Path::Direct | Path::Relay | Path::Http => {
            let (url, model) = match path {
                Path::Direct => (format!("{}/chat/completions", c.mock_url), "gpt-4o-mini"),
                Path::Relay => (format!("{}/chat/completions", c.relay_url), "gpt-4o-mini"),
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
        Path::Grpc | Path::GrpcEcho if stream => {
            let mut s = c
                .grpc_of(path)
                .clone()
                .complete_stream(request())
                .await?
                .into_inner();
            while let Some(item) = s.next().await {
                item?;
            }
            Ok(())
        }
        Path::Grpc | Path::GrpcEcho => {
            c.grpc_of(path).clone().complete(request()).await?;
            Ok(())
        }
    }
}

#[derive(Default)]
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

/// Closed loop with `conc` callers for `secs`: calls done, wall seconds, and the CPU seconds
/// the router (`pid`) and the mock (`mock_pid`) used meanwhile.
async fn capacity(
    c: &Clients,
    path: Path,
    stream: bool,
    conc: usize,
    secs: f64,
    (pid, mock_pid): (u32, u32),
) -> (usize, f64, f64, f64) {
    let (cpu0, mock0) = (cpu_secs(pid), cpu_secs(mock_pid));
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
    (
        total,
        t0.elapsed().as_secs_f64(),
        cpu_secs(pid) - cpu0,
        cpu_secs(mock_pid) - mock0,
    )
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
        argv.extend(["taskset".into(), "-c".into(), ROUTER_CPU.into()]);
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
        .env("BRIDLE_AUTH", "off")
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

/// `--serve-grpc-echo FILE`: a `bridle.v1.Router` that answers every call with a fixed
/// response (and a stream with the mock's 12 chunks of it), writes its address to FILE, runs
/// until killed.
async fn serve_grpc_echo(file: &str) -> anyhow::Result<()> {
    use bridle_proto::complete_chunk::Chunk;
    use bridle_proto::router_server::{Router, RouterServer};
    use bridle_proto::{
        CompleteChunk, CompleteResponse, FinishReason, ListModelsRequest, ListModelsResponse, Usage,
    };
    use tonic::{Request, Response, Status};

    const TEXT: &str = "Hello there, how may I assist you today?";
    fn answer() -> CompleteResponse {
        CompleteResponse {
            message: Some(Message {
                role: Role::Assistant as i32,
                text: TEXT.into(),
                ..Default::default()
            }),
            finish_reason: FinishReason::Stop as i32,
            provider: "openai".into(),
            model: "gpt-4o-mini-2024-07-18".into(),
            target: "mock".into(),
            usage: Some(Usage {
                input_tokens: 19,
                output_tokens: 10,
                ..Default::default()
            }),
            response_id: "chatcmpl-123".into(),
            ..Default::default()
        }
    }
    struct Echo;
    #[tonic::async_trait]
    impl Router for Echo {
        async fn complete(
            &self,
            _: Request<CompleteRequest>,
        ) -> Result<Response<CompleteResponse>, Status> {
            Ok(Response::new(answer()))
        }
        type CompleteStreamStream =
            tokio_stream::Iter<std::vec::IntoIter<Result<CompleteChunk, Status>>>;
        async fn complete_stream(
            &self,
            _: Request<CompleteRequest>,
        ) -> Result<Response<Self::CompleteStreamStream>, Status> {
            // TEXT is ASCII: 12 slices at byte offsets are 12 valid strings.
            let cut = |k: usize| k * TEXT.len() / 12;
            let mut chunks: Vec<_> = (0..12)
                .map(|k| {
                    Ok(CompleteChunk {
                        chunk: Some(Chunk::TextDelta(TEXT[cut(k)..cut(k + 1)].into())),
                    })
                })
                .collect();
            chunks.push(Ok(CompleteChunk {
                chunk: Some(Chunk::Done(answer())),
            }));
            Ok(Response::new(tokio_stream::iter(chunks)))
        }
        async fn list_models(
            &self,
            _: Request<ListModelsRequest>,
        ) -> Result<Response<ListModelsResponse>, Status> {
            Err(Status::unimplemented("the bench's echo lists no models"))
        }
        async fn spend(
            &self,
            _: Request<bridle_proto::SpendRequest>,
        ) -> Result<Response<bridle_proto::SpendResponse>, Status> {
            Err(Status::unimplemented("the bench's echo keeps no ledger"))
        }
    }
    // Served like the router (Bridle's gRPC server: TCP_NODELAY, auth, timeout, trace span),
    // so the floor holds everything but the routing.
    let opts = bridle_core::config::ServerOptions {
        concurrency_limit: 100_000,
        ..bridle_core::config::ServerOptions::unauthenticated(0)
    };
    let server = bridle_core::server::GrpcServer::bind("echo", &opts).await?;
    std::fs::write(file, server.local_addr().to_string())?;
    server
        .serve(
            tonic::service::Routes::new(RouterServer::new(Echo)),
            &["bridle.v1.Router"],
            bridle_core::Shutdown::new(),
        )
        .await?;
    Ok(())
}

/// `--serve-relay FILE UPSTREAM`: relays every TCP connection to UPSTREAM ("host:port")
/// byte for byte, writes its address to FILE, runs until killed.
async fn serve_relay(file: &str, upstream: &str) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    std::fs::write(file, listener.local_addr()?.to_string())?;
    loop {
        let (mut inbound, _) = listener.accept().await?;
        let upstream = upstream.to_string();
        // Each connection's task ends when either side closes; the relay lives until killed.
        #[allow(clippy::disallowed_methods)]
        tokio::spawn(async move {
            let _ = inbound.set_nodelay(true);
            if let Ok(mut outbound) = tokio::net::TcpStream::connect(&upstream).await {
                let _ = outbound.set_nodelay(true);
                let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
            }
        });
    }
}

/// Starts this program with `args` (a `--serve-*` mode whose first value is the file it
/// writes its address to), on `cpu` when given; returns the child and what it wrote.
async fn start_helper(
    args: &[&str],
    cpu: Option<&str>,
    dir: &std::path::Path,
) -> anyhow::Result<(tokio::process::Child, String)> {
    let file = dir.join(args[0].trim_start_matches("--serve-"));
    let me = std::env::current_exe()?;
    let mut cmd = match cpu {
        Some(cpu) => {
            let mut c = tokio::process::Command::new("taskset");
            c.arg("-c").arg(cpu).arg(&me);
            c
        }
        None => tokio::process::Command::new(&me),
    };
    cmd.arg(args[0])
        .arg(&file)
        .args(&args[1..])
        .kill_on_drop(true);
    let child = cmd
        .spawn()
        .with_context(|| format!("starting {}", args[0]))?;
    let what = format!("the address written by {}", args[0]);
    let url = bridle_testkit::wait_for(&what, Duration::from_secs(30), || {
        let f = file.clone();
        async move { std::fs::read_to_string(&f).ok().filter(|s| !s.is_empty()) }
    })
    .await?;
    Ok((child, url))
}

async fn run(secs: f64, rates: Vec<u32>, pinned: bool) -> anyhow::Result<()> {
    let redis = RedisServer::start().await?;
    let dir = tempfile::tempdir()?;
    // The mock beside the load generator by default (BENCH_MOCK_CPU moves it).
    let mock_cpu = std::env::var("BENCH_MOCK_CPU").unwrap_or_else(|_| LOAD_CPU.into());
    let (mock_child, mock_url) =
        start_helper(&["--serve-mock"], pinned.then_some(&*mock_cpu), dir.path()).await?;
    // taskset execs the program: the child's pid is the mock's.
    let mock_pid = mock_child.id().context("mock pid")?;
    let mock = reqwest::Url::parse(&mock_url)?;
    let upstream = format!(
        "{}:{}",
        mock.host_str().unwrap_or("127.0.0.1"),
        mock.port_or_known_default().unwrap_or(80)
    );
    let (_relay, relay_addr) = start_helper(
        &["--serve-relay", &upstream],
        pinned.then_some(ROUTER_CPU),
        dir.path(),
    )
    .await?;
    let (_echo, echo_addr) = start_helper(
        &["--serve-grpc-echo"],
        pinned.then_some(ROUTER_CPU),
        dir.path(),
    )
    .await?;
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
            actor: None,
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
        relay_url: format!("http://{relay_addr}{}", mock.path().trim_end_matches('/')),
        http_url: format!("http://{}", router.http),
        http: bridle_core::http_client::builder()
            .pool_max_idle_per_host(1024)
            .build()?,
        grpc: RouterClient::new(channel),
        echo: RouterClient::new(
            tonic::transport::Endpoint::from_shared(format!("http://{echo_addr}"))?
                .connect()
                .await?,
        ),
    };
    // Warm every path (connections, the route, allocator).
    for path in PATHS {
        for stream in [false, true] {
            at_rate(&c, path, stream, 500, 1.0).await;
        }
    }
    println!(
        "\nRouter overhead ({}; {secs}s per row)\n",
        if !pinned {
            "nothing pinned".to_string()
        } else if mock_cpu == ROUTER_CPU {
            format!(
                "router, relay, echo and mock pinned to CPU {ROUTER_CPU}, load generator and Redis to the other"
            )
        } else {
            format!(
                "router, relay and echo pinned to CPU {ROUTER_CPU}, mock on CPU {mock_cpu} with the load generator and Redis"
            )
        }
    );
    println!(
        "| path | mode | target rps | achieved rps | errors | p50 µs | p99 µs | max µs | added p50 µs | added p99 µs | over floor p50 µs | over floor p99 µs |"
    );
    println!("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for stream in [false, true] {
        for &rate in &rates {
            // The paths take turns in short slices, so a disturbance of this shared machine
            // (another process, the host) falls on all of them alike rather than on one row.
            let mut samples = PATHS.map(|_| Sample::default());
            let rounds = (secs / SLICE_SECS).ceil().max(1.0) as usize;
            for _ in 0..rounds {
                for (path, into) in PATHS.iter().zip(samples.iter_mut()) {
                    let s = at_rate(&c, *path, stream, rate, SLICE_SECS).await;
                    into.latencies_us.extend(s.latencies_us);
                    into.errors += s.errors;
                    into.achieved += s.achieved / rounds as f64;
                }
            }
            let p = samples.each_mut().map(|s| {
                s.latencies_us.sort_unstable();
                (pct(&s.latencies_us, 0.5), pct(&s.latencies_us, 0.99))
            });
            let (direct, relay, echo) = (p[0], p[1], p[2]);
            for ((path, s), &(p50, p99)) in PATHS.iter().zip(&samples).zip(&p) {
                // `v` minus `base`, or a dash where the row has no such base.
                let minus = |v: u64, base: Option<u64>| {
                    base.map_or("—".to_string(), |b| (v as i64 - b as i64).to_string())
                };
                let direct = (*path != Path::Direct).then_some(direct);
                // A routed call's floor: the same hop with no routing behind it.
                let floor = match path {
                    Path::Grpc => Some(echo),
                    Path::Http => Some(relay),
                    _ => None,
                };
                println!(
                    "| {path:?} | {} | {rate} | {:.0} | {} | {p50} | {p99} | {} | {} | {} | {} | {} |",
                    if stream { "stream" } else { "plain" },
                    s.achieved,
                    s.errors,
                    s.latencies_us.last().copied().unwrap_or(0),
                    minus(p50, direct.map(|d| d.0)),
                    minus(p99, direct.map(|d| d.1)),
                    minus(p50, floor.map(|f| f.0)),
                    minus(p99, floor.map(|f| f.1)),
                );
            }
        }
    }
    println!(
        "\nCapacity: calls per second of router CPU time (closed loop, 64 callers, {secs}s). \
         The mock's CPU per call is the machine's yardstick: the same calls straight to the \
         mock show how fast this machine serves HTTP, and \"router ÷ mock\" is what a routed \
         call costs the router in units of what answering it costs the mock, which moves less \
         from machine to machine than calls per second do.\n"
    );
    println!(
        "| path | mode | calls | wall rps | router CPU s | calls per router CPU-second | mock CPU s | calls per mock CPU-second | router ÷ mock |"
    );
    println!("|---|---|---:|---:|---:|---:|---:|---:|---:|");
    let per = |n: usize, cpu: f64| if cpu > 0.0 { n as f64 / cpu } else { 0.0 };
    for (path, stream) in [
        (Path::Direct, false),
        (Path::Grpc, false),
        (Path::Http, false),
        (Path::Direct, true),
        (Path::Grpc, true),
        (Path::Http, true),
    ] {
        let (n, wall, cpu, mock) = capacity(&c, path, stream, 64, secs, (pid, mock_pid)).await;
        // A direct call has no router: its router columns are dashes.
        let [router_cpu, per_router_cpu, ratio] = if path == Path::Direct {
            ["—".to_string(), "—".to_string(), "—".to_string()]
        } else {
            [
                format!("{cpu:.2}"),
                format!("{:.0}", per(n, cpu)),
                if mock > 0.0 {
                    format!("{:.2}", cpu / mock)
                } else {
                    "—".to_string()
                },
            ]
        };
        println!(
            "| {path:?} | {} | {n} | {:.0} | {router_cpu} | {per_router_cpu} | {mock:.2} | {:.0} | {ratio} |",
            if stream { "stream" } else { "plain" },
            n as f64 / wall,
            per(n, mock),
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
    let serve = |mode: &str| args.iter().position(|a| a == mode);
    if let Some(i) = serve("--serve-mock")
        .or(serve("--serve-relay"))
        .or(serve("--serve-grpc-echo"))
    {
        let arg = |k: usize| args.get(i + k).cloned().unwrap_or_default();
        let (file, upstream) = (arg(1), arg(2));
        let rt = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build();
        let result = rt.map(|rt| {
            rt.block_on(async {
                match args[i].as_str() {
                    "--serve-mock" => serve_mock(&file).await,
                    "--serve-grpc-echo" => serve_grpc_echo(&file).await,
                    _ => serve_relay(&file, &upstream).await,
                }
            })
        });
        return match result {
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
    // starts its threads, which inherit it. BENCH_PIN=0 leaves placement to the kernel.
    let cpus = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    let pinned = cpus >= 2
        && std::env::var("BENCH_PIN").map_or(true, |v| v != "0")
        && std::process::Command::new("taskset")
            .arg("-cp")
            .arg(LOAD_CPU)
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
