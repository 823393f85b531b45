//! Scaling benchmark (not a test): runs per second with 1, 2 and 4 orchestrator replicas when
//! the model, not the CPU, is what a run waits for.
//!
//!   cargo run --release -p bridle-e2e --example scaling -- [--fast] [REPLICAS ...]
//!
//! For each replica count (default 1 2 4) it starts, from nothing: the router, tools, approvals
//! and secrets binaries (one process each) and N orchestrator binaries (each its own port on
//! 127.0.0.1, its default consumer name and worker count), all on one real Redis, the router's
//! key in a real OpenBao. The model is the testkit's mock OpenAI server answering every call
//! after `SCALING_LATENCY_MS` (200); the agent asks the model, calls an HTTP tool that answers
//! at once (a local server), and asks the model again for its final answer, so a run is two
//! steps and two model calls. `SCALING_CONCURRENCY` clients (128) each start a run, watch it to
//! its end and start the next, through one balanced channel over every replica (a list peer
//! URL, as a service would dial them). Completions are counted in a steady window after a
//! warm-up; the steps waiting in the work queue for a worker are counted meanwhile, so a window
//! in which the queue ran dry (the clients, not the workers, were the limit) shows.
//!
//! Knobs (environment): `SCALING_LATENCY_MS` (200), `SCALING_WORKERS` (each orchestrator's
//! workers; default its own default, 8), `SCALING_CONCURRENCY` (128), `SCALING_AGENT`
//! (`tool`: model, tool, model, the default; `answer`: one model call), `SCALING_WARMUP` and
//! `SCALING_WINDOW` (seconds; 10 and 30, or 2 and 6 with `--fast`).
//!
//! CPU: the machine's busy time (all processes, /proc/stat) and each benchmark process's own
//! (/proc/<pid>/stat) over the window are printed beside the figures, with the load average:
//! on a small machine the ratios mean something only while the CPU is not saturated.

#![allow(
    clippy::expect_used,
    clippy::unwrap_used,
    clippy::print_stdout,
    clippy::print_stderr
)]

mod cpu;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use bridle_e2e::{ServiceProcess, env};
use bridle_proto as pb;
use bridle_proto::run_event::Kind;
use bridle_testkit::mock_openai::{MockOpenAi, Reply};
use bridle_testkit::{OpenBao, RedisServer};
use cpu::{clock_ticks, load_average, sample_cpu};
use futures::StreamExt as _;
use serde_json::Value;

type Client = pb::orchestrator_client::OrchestratorClient<bridle_core::peers::Peer>;

#[derive(Clone, Copy, PartialEq)]
enum Agent {
    /// Model (a tool call), the tool, model (the final answer): two steps.
    Tool,
    /// One model call that answers: one step.
    Answer,
}

struct Settings {
    replicas: Vec<usize>,
    latency: Duration,
    workers: Option<usize>,
    concurrency: usize,
    agent: Agent,
    warmup: Duration,
    window: Duration,
}

fn env_num<T: std::str::FromStr>(name: &str) -> anyhow::Result<Option<T>> {
    match std::env::var(name) {
        Ok(v) => v
            .trim()
            .parse()
            .map(Some)
            .map_err(|_| anyhow::anyhow!("{name}={v:?} is not a number")),
        Err(_) => Ok(None),
    }
}

fn settings() -> anyhow::Result<Settings> {
    let mut fast = false;
    let mut replicas = Vec::new();
    for a in std::env::args().skip(1) {
        if a == "--fast" {
            fast = true;
        } else {
            let n: usize = a.parse().ok().filter(|n| *n >= 1).with_context(|| {
                format!("argument {a:?}: expected --fast or a replica count (1 or more)")
            })?;
            replicas.push(n);
        }
    }
    if replicas.is_empty() {
        replicas = vec![1, 2, 4];
    }
    let agent = match std::env::var("SCALING_AGENT").as_deref() {
        Err(_) | Ok("tool") => Agent::Tool,
        Ok("answer") => Agent::Answer,
        Ok(other) => anyhow::bail!("SCALING_AGENT={other:?}: expected tool or answer"),
    };
    let secs = |name: &str, full: u64, quick: u64| -> anyhow::Result<Duration> {
        Ok(Duration::from_secs(env_num(name)?.unwrap_or(if fast {
            quick
        } else {
            full
        })))
    };
    let s = Settings {
        replicas,
        latency: Duration::from_millis(env_num("SCALING_LATENCY_MS")?.unwrap_or(200)),
        workers: env_num("SCALING_WORKERS")?,
        concurrency: env_num("SCALING_CONCURRENCY")?.unwrap_or(128),
        agent,
        warmup: secs("SCALING_WARMUP", 10, 2)?,
        window: secs("SCALING_WINDOW", 30, 6)?,
    };
    anyhow::ensure!(s.concurrency >= 1, "SCALING_CONCURRENCY must be at least 1");
    anyhow::ensure!(s.workers != Some(0), "SCALING_WORKERS must be at least 1");
    anyhow::ensure!(!s.window.is_zero(), "SCALING_WINDOW must be at least 1");
    Ok(s)
}

/// What every replica count shares: Redis, OpenBao, the mock model and the tool's server.
struct Shared {
    redis: RedisServer,
    bao: OpenBao,
    mock: MockOpenAi,
    echo: SocketAddr,
}

/// The services of one measurement.
struct Stack {
    prefix: String,
    services: Vec<ServiceProcess>,
    orchestrators: Vec<ServiceProcess>,
    _dir: tempfile::TempDir,
}

async fn start_stack(shared: &Shared, s: &Settings, n: usize) -> anyhow::Result<Stack> {
    let prefix = bridle_testkit::unique("scaling");
    shared
        .bao
        .put_kv(
            &format!("{prefix}/openai-api-key"),
            serde_json::json!({ "value": "sk-scaling-bench" }),
        )
        .await?;
    let dir = tempfile::tempdir()?;
    let redis_url = shared.redis.url();
    let common = |svc: &str, extra: &[(&str, &str)]| {
        let mut pairs: Vec<(&str, &str)> = vec![("redis_url", &redis_url), ("key_prefix", &prefix)];
        pairs.extend_from_slice(extra);
        env(svc, &pairs)
    };
    let secrets = ServiceProcess::start(
        "bridle-secrets",
        &env(
            "secrets",
            &[
                ("vault_addr", &shared.bao.addr()),
                ("vault_token", shared.bao.root_token()),
                ("path_prefix", &prefix),
                ("redis_url", &redis_url),
                ("key_prefix", &prefix),
                ("unbound", "convention"),
            ],
        ),
        dir.path(),
    )
    .await?;
    let approvals =
        ServiceProcess::start("bridle-approvals", &common("approvals", &[]), dir.path()).await?;
    let tools = ServiceProcess::start(
        "bridle-tools",
        &common(
            "tools",
            &[
                ("secrets_url", &secrets.addr),
                ("egress_allow_private", "true"),
            ],
        ),
        dir.path(),
    )
    .await?;
    let router = ServiceProcess::start(
        "bridle-router",
        &common("router", &[("secrets_url", &secrets.addr)]),
        dir.path(),
    )
    .await?;
    let workers = s.workers.map(|w| w.to_string());
    let mut orchestrators = Vec::new();
    for i in 0..n {
        let mut extra = vec![
            ("router_url", router.addr.as_str()),
            ("tools_url", tools.addr.as_str()),
            ("approvals_url", approvals.addr.as_str()),
            ("secrets_url", secrets.addr.as_str()),
        ];
        if let Some(w) = &workers {
            extra.push(("workers", w));
        }
        // No consumer name: each replica makes its own (host-pid-random), as in a deployment.
        let d = dir.path().join(format!("orchestrator-{i}"));
        std::fs::create_dir_all(&d)?;
        orchestrators.push(
            ServiceProcess::start("bridle-orchestrator", &common("orchestrator", &extra), &d)
                .await?,
        );
    }
    let stack = Stack {
        prefix,
        services: vec![secrets, approvals, tools, router],
        orchestrators,
        _dir: dir,
    };
    apply(shared, s, &stack).await?;
    Ok(stack)
}

async fn apply(shared: &Shared, s: &Settings, stack: &Stack) -> anyhow::Result<()> {
    let tools = if s.agent == Agent::Tool {
        "[echo]"
    } else {
        "[]"
    };
    let yaml = format!(
        r#"apiVersion: bridle.dev/v1
kind: Tool
metadata:
  name: echo
spec:
  description: Echoes its arguments.
  risk: read_only
  parameters:
    type: object
    properties:
      n: {{type: integer}}
  http:
    method: POST
    url: http://{echo}/echo
    egress: ["{ip}"]
---
apiVersion: bridle.dev/v1
kind: ModelRoute
metadata:
  name: bench
spec:
  targets:
    - name: mock
      provider: openai
      model: gpt-4o-mini
      baseUrl: {base}
      apiKey: secret://openai-api-key
---
apiVersion: bridle.dev/v1
kind: Agent
metadata:
  name: bench
spec:
  route: bench
  tools: {tools}
"#,
        echo = shared.echo,
        ip = shared.echo.ip(),
        base = shared.mock.base_url(),
    );
    let documents = bridle_core::manifest::split_documents("scaling.yaml", &yaml)
        .into_iter()
        .map(|d| pb::ManifestDocument {
            source: d.source,
            yaml: d.yaml,
            first_line: d.first_line,
        })
        .collect();
    pb::manifests_client::ManifestsClient::connect(stack.orchestrators[0].addr.clone())
        .await?
        .apply(pb::ApplyRequest {
            actor: None,
            documents,
            dry_run: false,
            tenant: String::new(),
        })
        .await
        .context("applying the benchmark's manifests")?;
    Ok(())
}

/// One balanced channel over every orchestrator replica, once each answers its health check.
async fn client(stack: &Stack) -> anyhow::Result<Client> {
    let urls: Vec<&str> = stack
        .orchestrators
        .iter()
        .map(|o| o.addr.as_str())
        .collect();
    let peer = bridle_core::client::peer(
        "orchestrator",
        &urls.join(","),
        Duration::from_secs(120),
        &bridle_core::client::Outgoing::default(),
        Arc::new(bridle_core::peers::SystemResolver),
    )?;
    let deadline = Instant::now() + Duration::from_secs(30);
    while let Some(ready) = peer.ready_endpoints()
        && ready < urls.len()
    {
        anyhow::ensure!(
            Instant::now() < deadline,
            "only {ready} of {} orchestrators became ready within 30s",
            urls.len()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(pb::orchestrator_client::OrchestratorClient::new(peer))
}

/// Starts one run and follows it to its end: its step count, or why it did not succeed.
async fn run_one(mut c: Client) -> Result<u32, String> {
    let run = c
        .start_run(pb::StartRunRequest {
            agent: "bench".into(),
            input: "go".into(),
            ..Default::default()
        })
        .await
        .map_err(|e| format!("StartRun: {e}"))?
        .into_inner()
        .run
        .ok_or("StartRun answered no run")?;
    let mut events = c
        .watch_run(pb::WatchRunRequest {
            run_id: run.id.clone(),
            from_offset: 0,
            follow: true,
        })
        .await
        .map_err(|e| format!("WatchRun {}: {e}", run.id))?
        .into_inner();
    while let Some(ev) = events.next().await {
        let ev = ev.map_err(|e| format!("WatchRun {}: {e}", run.id))?;
        if let Some(Kind::RunFinished(f)) = ev.kind {
            if f.status == pb::RunStatus::Succeeded as i32 {
                return Ok(f.steps);
            }
            return Err(format!("run {} ended {:?}: {}", run.id, f.status, f.error));
        }
    }
    Err(format!(
        "WatchRun {}: the stream ended before the run",
        run.id
    ))
}

struct Done {
    at: Instant,
    result: Result<u32, String>,
}

/// Steps waiting in the work queue for a worker: entries in the stream (acknowledged ones are
/// deleted) less those a worker holds (pending in the group).
async fn backlog(c: &mut redis::aio::MultiplexedConnection, key: &str) -> u64 {
    let r: redis::RedisResult<(u64, (u64, redis::Value, redis::Value, redis::Value))> =
        redis::pipe()
            .cmd("XLEN")
            .arg(key)
            .cmd("XPENDING")
            .arg(key)
            .arg("workers")
            .query_async(c)
            .await;
    r.map_or(0, |(len, pending)| len.saturating_sub(pending.0))
}

struct Row {
    n: usize,
    workers: usize,
    runs_per_s: f64,
    steps_per_s: f64,
    ceiling: f64,
    backlog_min: u64,
    backlog_mean: f64,
    errors: usize,
    first_error: Option<String>,
    machine_cores: f64,
    /// CPU in cores: orchestrators (all), router, tools, approvals, secrets, redis, this process.
    procs: Vec<f64>,
    load: String,
}

async fn measure(shared: &Shared, s: &Settings, n: usize, ticks: f64) -> anyhow::Result<Row> {
    let started = Instant::now();
    let stack = start_stack(shared, s, n).await?;
    let client = client(&stack).await?;
    // One run end to end first: connections, the router's key, the tool.
    run_one(client.clone())
        .await
        .map_err(|e| anyhow::anyhow!("warm-up run failed: {e}"))?;
    eprintln!(
        "{n} orchestrator(s) up in {:.1}s; {} clients, warm-up {:?}, window {:?}",
        started.elapsed().as_secs_f64(),
        s.concurrency,
        s.warmup,
        s.window
    );

    let stop = Arc::new(AtomicBool::new(false));
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Done>();
    let mut clients = tokio::task::JoinSet::new();
    for _ in 0..s.concurrency {
        let (c, stop, tx) = (client.clone(), stop.clone(), tx.clone());
        clients.spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let result = match tokio::time::timeout(
                    Duration::from_secs(300),
                    run_one(c.clone()),
                )
                .await
                {
                    Ok(r) => r,
                    Err(_) => Err("the run did not end within 300s".into()),
                };
                let _ = tx.send(Done {
                    at: Instant::now(),
                    result,
                });
            }
        });
    }
    drop(tx);

    let mut pids: Vec<String> = stack
        .orchestrators
        .iter()
        .chain(&stack.services)
        .filter_map(|p| p.pid().map(|p| p.to_string()))
        .collect();
    let mut redis = shared.redis.client().await?;
    let info: String = redis::cmd("INFO")
        .arg("server")
        .query_async(&mut redis)
        .await?;
    let redis_pid = info
        .lines()
        .find_map(|l| l.strip_prefix("process_id:"))
        .unwrap_or("0")
        .trim()
        .to_string();
    pids.push(redis_pid);
    pids.push("self".into());
    let queue = format!("{}:work:{{steps}}", stack.prefix);

    tokio::time::sleep(s.warmup).await;
    let (t0, cpu0) = (Instant::now(), sample_cpu(&pids));
    let mut samples = Vec::new();
    while t0.elapsed() < s.window {
        samples.push(backlog(&mut redis, &queue).await);
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let (t1, cpu1) = (Instant::now(), sample_cpu(&pids));
    let load = load_average();
    stop.store(true, Ordering::Relaxed);
    // Every client finishes the run it is in: nothing is cut off, so nothing counts as an
    // error that the benchmark itself caused.
    let drained = tokio::time::timeout(Duration::from_secs(300), async {
        while clients.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        clients.abort_all();
        eprintln!("some clients were still in a run 300s after the window; aborted");
    }

    let secs = (t1 - t0).as_secs_f64();
    let (mut runs, mut steps, mut errors, mut first_error) = (0u64, 0u64, 0usize, None);
    while let Ok(d) = rx.try_recv() {
        match d.result {
            Ok(st) if d.at >= t0 && d.at < t1 => {
                runs += 1;
                steps += u64::from(st);
            }
            Ok(_) => {}
            Err(e) => {
                errors += 1;
                first_error.get_or_insert(e);
            }
        }
    }
    let workers = s
        .workers
        .unwrap_or_else(|| bridle_orchestrator::Options::default().workers);
    let calls_per_run = if s.agent == Agent::Tool { 2.0 } else { 1.0 };
    let cores = |a: u64, b: u64| (b.saturating_sub(a)) as f64 / ticks / secs;
    let machine_share = (cpu1.machine_busy - cpu0.machine_busy) as f64
        / (cpu1.machine_total - cpu0.machine_total).max(1) as f64;
    let ncpu = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
    let per: Vec<f64> = cpu0
        .procs
        .iter()
        .zip(&cpu1.procs)
        .map(|(a, b)| cores(*a, *b))
        .collect();
    let mut procs = vec![per[..n].iter().sum::<f64>()];
    procs.extend_from_slice(&per[n..]);
    let mean = samples.iter().sum::<u64>() as f64 / samples.len().max(1) as f64;
    drop(client);
    let row = Row {
        n,
        workers,
        runs_per_s: runs as f64 / secs,
        steps_per_s: steps as f64 / secs,
        ceiling: (n * workers) as f64 / (calls_per_run * s.latency.as_secs_f64()),
        backlog_min: samples.iter().copied().min().unwrap_or(0),
        backlog_mean: mean,
        errors,
        first_error,
        machine_cores: machine_share * ncpu,
        procs,
        load,
    };
    drop(stack);
    Ok(row)
}

#[tokio::main(flavor = "multi_thread")]
async fn main() -> anyhow::Result<()> {
    let s = settings()?;
    let ticks = clock_ticks();
    let redis = RedisServer::start().await?;
    let bao = OpenBao::start().await?;
    let mock = MockOpenAi::start().await?;
    mock.set_recording(false);
    let latency = s.latency;
    let agent = s.agent;
    mock.set_responder(Some(Arc::new(move |req: &Value| {
        let answered_tool = req
            .get("messages")
            .and_then(Value::as_array)
            .is_some_and(|m| {
                m.iter()
                    .any(|m| m.get("role") == Some(&Value::from("tool")))
            });
        let reply = if agent == Agent::Answer || answered_tool {
            Reply::text("done")
        } else {
            Reply::tool_calls(&[("call_1", "echo", r#"{"n": 1}"#)])
        };
        Reply::Delay(latency, Box::new(reply))
    })));
    // The tool: an HTTP endpoint that answers at once.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let echo = listener.local_addr()?;
    let app = axum::Router::new().route(
        "/echo",
        axum::routing::post(|body: String| async move { body }),
    );
    let mut background = tokio::task::JoinSet::new();
    background.spawn(async move { axum::serve(listener, app).await });
    let shared = Shared {
        redis,
        bao,
        mock,
        echo,
    };

    eprintln!(
        "model latency {:?}, agent {}, {} clients, replicas {:?}; load average before: {}",
        s.latency,
        if s.agent == Agent::Tool {
            "model -> tool -> model"
        } else {
            "one model call"
        },
        s.concurrency,
        s.replicas,
        load_average()
    );
    let mut rows = Vec::new();
    for &n in &s.replicas {
        let row = measure(&shared, &s, n, ticks).await?;
        eprintln!(
            "{n} replica(s): {:.1} runs/s, {} errors",
            row.runs_per_s, row.errors
        );
        rows.push(row);
    }

    let base = rows.first().map_or(1.0, |r| r.runs_per_s);
    println!(
        "\nmodel {} ms per call, {} calls per run, {} clients, window {}s after {}s of warm-up",
        s.latency.as_millis(),
        if s.agent == Agent::Tool { 2 } else { 1 },
        s.concurrency,
        s.window.as_secs(),
        s.warmup.as_secs()
    );
    println!(
        "| replicas | workers each | runs/s | steps/s | vs first | ceiling runs/s | of ceiling | steps waiting for a worker min / mean | errors | machine CPU busy (cores) | load avg 1/5/15 |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|");
    for r in &rows {
        println!(
            "| {} | {} | {:.1} | {:.1} | {:.2}x | {:.0} | {:.0}% | {} / {:.0} | {} | {:.2} of {} | {} |",
            r.n,
            r.workers,
            r.runs_per_s,
            r.steps_per_s,
            r.runs_per_s / base,
            r.ceiling,
            100.0 * r.runs_per_s / r.ceiling,
            r.backlog_min,
            r.backlog_mean,
            r.errors,
            r.machine_cores,
            std::thread::available_parallelism().map_or(1, |n| n.get()),
            r.load
        );
    }
    println!(
        "\nCPU of the benchmark's processes over the window, in cores:\n| replicas | orchestrators (all) | router | tools | approvals | secrets | redis | client + mock |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    for r in &rows {
        // Order of `procs`: orchestrators, then secrets, approvals, tools, router, redis, self.
        let p = &r.procs;
        println!(
            "| {} | {:.2} | {:.2} | {:.2} | {:.2} | {:.2} | {:.2} | {:.2} |",
            r.n, p[0], p[4], p[3], p[2], p[1], p[5], p[6]
        );
    }
    for r in &rows {
        if let Some(e) = &r.first_error {
            println!("{} replica(s), first error: {e}", r.n);
        }
    }
    background.abort_all();
    Ok(())
}
