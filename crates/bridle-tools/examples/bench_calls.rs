//! Tool-call latency through the tool service (gRPC Execute, real Redis, real Docker) for a
//! trivial command (`true` in bridle-sandbox:python): cold (a new sandbox per call), from
//! the warm pool (a new run taking a pre-started sandbox), and a run's next call (its own
//! sandbox again); one at a time and 50 at once. Prints p50/p95/p99/max per scenario.
//!
//!   cargo run --release -p bridle-tools --example bench_calls
//!   BENCH_N=50 BENCH_CONCURRENCY=50 cargo run --release -p bridle-tools --example bench_calls
//!   BENCH_RUNTIME=runsc cargo run --release -p bridle-tools --example bench_calls   # gVisor
//!   BENCH_ROOTLESS=1 cargo run --release -p bridle-tools --example bench_calls  # rootless dockerd
//!   BENCH_POD=1 cargo run --release -p bridle-tools --example bench_calls  # the chart's tools pod
//!
//! A benchmark, not a test: nothing here passes or fails on time.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stdout,
    clippy::panic
)]

use std::time::{Duration, Instant};

use bridle_core::Shutdown;
use bridle_core::config::ServerOptions;
use bridle_proto::manifests_client::ManifestsClient;
use bridle_proto::tools_client::ToolsClient;
use bridle_proto::{ApplyRequest, EndRunRequest, ExecuteRequest, ManifestDocument, Scope};
use tonic::transport::Channel;

const TENANT: &str = "bench";

/// Each tool gets its own sandbox profile (memory differs), so their pools are separate.
fn tool(name: &str, warm: usize, memory: &str) -> String {
    format!(
        "apiVersion: bridle.dev/v1\nkind: Tool\nmetadata:\n  name: {name}\nspec:\n  description: Does nothing.\n  container:\n    image: bridle-sandbox:python\n    command: [\"true\"]\n    stdin: false\n    limits: {{memory: {memory}}}\n    pool: {{warm: {warm}}}\n"
    )
}

struct Bench {
    tools: ToolsClient<Channel>,
    ns: String,
    docker_host: Option<String>,
}

impl Bench {
    async fn call(&self, tool: &str, run: &str) -> Duration {
        let req = ExecuteRequest {
            scope: Some(Scope {
                tenant: TENANT.into(),
                run_id: run.into(),
                ..Default::default()
            }),
            tool: tool.into(),
            arguments_json: "{}".into(),
            ..Default::default()
        };
        let t = Instant::now();
        let r = self.tools.clone().execute(req).await.unwrap().into_inner();
        let took = t.elapsed();
        let r = r.result.unwrap();
        assert!(!r.is_error, "{r:?}");
        took
    }

    async fn end(&self, run: &str) {
        self.tools
            .clone()
            .end_run(EndRunRequest {
                scope: Some(Scope {
                    tenant: TENANT.into(),
                    run_id: run.into(),
                    ..Default::default()
                }),
            })
            .await
            .unwrap();
    }

    /// Waits until `n` warm sandboxes are running (and a moment for the last to be handed
    /// to the pool).
    async fn pool_full(&self, n: usize) {
        let deadline = Instant::now() + Duration::from_secs(300);
        loop {
            let mut docker = tokio::process::Command::new("docker");
            if let Some(h) = &self.docker_host {
                docker.env("DOCKER_HOST", h);
            }
            let out = docker
                .args([
                    "ps",
                    "-q",
                    "--filter",
                    &format!("label={}.pool=warm", self.ns),
                ])
                .output()
                .await
                .unwrap();
            let running = String::from_utf8_lossy(&out.stdout)
                .split_whitespace()
                .count();
            if running >= n {
                tokio::time::sleep(Duration::from_millis(300)).await;
                return;
            }
            assert!(Instant::now() < deadline, "the pool did not fill");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

fn report(name: &str, mut d: Vec<Duration>) {
    d.sort();
    let q = |p: f64| {
        let i = ((d.len() as f64 - 1.0) * p).round() as usize;
        d[i].as_secs_f64() * 1000.0
    };
    println!(
        "{name:<44} n={:<4} p50={:>7.1}ms p95={:>7.1}ms p99={:>7.1}ms max={:>7.1}ms",
        d.len(),
        q(0.50),
        q(0.95),
        q(0.99),
        q(1.0)
    );
}

/// An engine other than the local one, and what the service needs to use it.
struct Engine {
    host: String,
    /// Where workspace roots go (a folder the engine reaches at the same path).
    parent: std::path::PathBuf,
    sandbox_uid: u32,
    gid: u32,
    unenforced: Vec<String>,
    /// Workspaces are plain folders (no warm pool).
    folders: bool,
}

#[tokio::main]
async fn main() {
    let n: usize = std::env::var("BENCH_N")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(30);
    let c: usize = std::env::var("BENCH_CONCURRENCY")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(50);
    // The sandboxes' runtime (the engine's default when unset) and engine.
    let runtime = std::env::var("BENCH_RUNTIME")
        .ok()
        .filter(|r| !r.is_empty());
    let runtime_name = runtime.clone();
    // BENCH_ROOTLESS=1: a rootless Docker engine started by scripts/rootless-engine.sh, with
    // the limits it cannot enforce accepted (as the rootless:: tests do).
    // BENCH_POD=1: the Helm chart's rootless engine sidecar, run with the settings the chart
    // renders (helm/tests/pod_engine.py), and the chart's tools settings (workspace folders).
    let engine = if std::env::var("BENCH_ROOTLESS").is_ok_and(|v| v == "1") {
        let r = bridle_testkit::rootless::start("dockerd").await.unwrap();
        Some(Engine {
            host: r.host,
            parent: r.shared,
            sandbox_uid: r.sandbox_uid,
            gid: r.gid,
            unenforced: r.unenforced,
            folders: false,
        })
    } else if std::env::var("BENCH_POD").is_ok_and(|v| v == "1") {
        let p = bridle_testkit::pod_engine::start().await.unwrap();
        Some(Engine {
            host: p.host,
            parent: p.workspace_parent,
            sandbox_uid: p.sandbox_host_uid,
            gid: p.tools_gid,
            unenforced: p.limits_unenforced,
            folders: p.workspace_mode == "folder",
        })
    } else {
        None
    };
    let docker_host = engine.as_ref().map(|r| r.host.clone());
    println!(
        "runtime: {}, engine: {}",
        runtime.as_deref().unwrap_or("the engine's default"),
        docker_host.as_deref().unwrap_or("the local one")
    );
    if docker_host.is_none() {
        bridle_testkit::docker::ensure_sandbox_image("python")
            .await
            .unwrap();
    }
    let redis = bridle_testkit::RedisServer::start().await.unwrap();
    let workspaces = match &engine {
        None => tempfile::tempdir().unwrap(),
        Some(r) => {
            // Below the folder the engine's namespace follows, reachable by its user.
            let d = tempfile::Builder::new()
                .prefix("b")
                .tempdir_in(&r.parent)
                .unwrap();
            use std::os::unix::fs::PermissionsExt as _;
            std::fs::set_permissions(d.path(), std::fs::Permissions::from_mode(0o711)).unwrap();
            d
        }
    };
    let ns = bridle_testkit::unique("bench");
    let shutdown = Shutdown::new();
    let addr = bridle_tools::start(
        bridle_tools::Options {
            server: ServerOptions::unauthenticated(0),
            redis_url: redis.url(),
            key_prefix: bridle_testkit::unique("bench"),
            label_namespace: ns.clone(),
            workspace_root: Some(workspaces.path().to_path_buf()),
            pool_max_warm: c.max(8) + 4,
            pool_parallel_starts: 4,
            sandbox_runtime: runtime.clone(),
            docker_host: docker_host.clone(),
            sandbox_host_uid: engine
                .as_ref()
                .map_or(bridle_tools::Options::default().sandbox_host_uid, |r| {
                    r.sandbox_uid
                }),
            engine_gid: engine.as_ref().map(|r| r.gid),
            workspace_mode: if engine.as_ref().is_some_and(|r| r.folders) {
                bridle_tools::workspace::Mode::Folder
            } else {
                bridle_tools::workspace::Mode::Quota
            },
            sandbox_limits_unenforced: engine
                .as_ref()
                .map(|r| r.unenforced.clone())
                .unwrap_or_default(),
            ..Default::default()
        },
        shutdown.clone(),
    )
    .await
    .unwrap();
    let url = format!("http://{addr}");
    // A runtime that does not share the host's mounts has no warm pool (see ARCHITECTURE.md,
    // "Runtimes"): those scenarios are skipped, and said so.
    let can_warm = bridle_tools::sandbox::runtime::shares_host_mounts(runtime_name.as_deref())
        && !engine.as_ref().is_some_and(|r| r.folders);
    let pool = |n: usize| if can_warm { n } else { 0 };
    let mut manifests = ManifestsClient::connect(url.clone()).await.unwrap();
    for (name, warm, memory) in [
        ("cold", 0, "128Mi"),
        ("warm", pool(4), "129Mi"),
        ("warm50", pool(c), "130Mi"),
    ] {
        manifests
            .apply(ApplyRequest {
                actor: None,
                documents: vec![ManifestDocument {
                    source: "bench.yaml".into(),
                    yaml: tool(name, warm, memory),
                    first_line: 1,
                }],
                dry_run: false,
                tenant: TENANT.into(),
            })
            .await
            .unwrap();
    }
    let b = Bench {
        tools: ToolsClient::connect(url).await.unwrap(),
        ns: ns.clone(),
        docker_host,
    };
    println!(
        "tool-call latency through the service, trivial command, {n} calls per single scenario, {c} concurrent"
    );

    // Warm-up of everything lazy (client connection, validators, image cache).
    b.call("cold", "warmup").await;
    b.end("warmup").await;

    let mut d = Vec::new();
    for i in 0..n {
        let run = format!("cold-{i}");
        d.push(b.call("cold", &run).await);
        b.end(&run).await;
    }
    report("cold: new sandbox per call, single", d);

    let _ = b
        .tools
        .clone()
        .list_tools(bridle_proto::ListToolsRequest {
            tenant: TENANT.into(),
            names: vec!["warm".into()],
            ..Default::default()
        })
        .await;
    if can_warm {
        let mut d = Vec::new();
        for i in 0..n {
            b.pool_full(4).await;
            let run = format!("warm-{i}");
            d.push(b.call("warm", &run).await);
            b.end(&run).await;
        }
        report("warm pool: new run takes a warm sandbox, single", d);
    } else {
        println!(
            "warm pool: none in this setup (its sandboxes are made for their run: a runtime that does not share the host's mounts, or workspace folders)"
        );
    }

    let mut d = Vec::new();
    b.call("warm", "reuse").await;
    for _ in 0..n {
        d.push(b.call("warm", "reuse").await);
    }
    b.end("reuse").await;
    report("same run: next call in the run's sandbox, single", d);

    let runs: Vec<String> = (0..c).map(|i| format!("ccold-{i}")).collect();
    let d = futures::future::join_all(runs.iter().map(|r| b.call("cold", r))).await;
    report(&format!("cold: new sandbox per call, {c} concurrent"), d);
    for r in &runs {
        b.end(r).await;
    }

    let _ = b
        .tools
        .clone()
        .list_tools(bridle_proto::ListToolsRequest {
            tenant: TENANT.into(),
            names: vec!["warm50".into()],
            ..Default::default()
        })
        .await;
    let runs: Vec<String> = (0..c).map(|i| format!("cwarm-{i}")).collect();
    if can_warm {
        b.pool_full(c + 4).await;
        let d = futures::future::join_all(runs.iter().map(|r| b.call("warm50", r))).await;
        report(&format!("warm pool: {c} new runs at once"), d);
    } else {
        // The runs' first calls make their sandboxes (not measured here: the cold row is).
        futures::future::join_all(runs.iter().map(|r| b.call("warm50", r))).await;
    }

    let d = futures::future::join_all(runs.iter().map(|r| b.call("warm50", r))).await;
    report(&format!("same run: {c} runs' next calls at once"), d);
    for r in &runs {
        b.end(r).await;
    }

    shutdown.drain(Duration::from_secs(30)).await;
}
