//! A run's tool calls go to the tools replica that holds its sandboxes and workspace, and the
//! run moves, files included, when that replica dies. Two tool service processes share one
//! Redis; the test sends each call straight to one of them, as a balanced channel may.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use bridle_e2e::{ServiceProcess, env};
use bridle_proto as pb;
use bridle_testkit::RedisServer;
use pb::manifests_client::ManifestsClient;
use pb::tools_client::ToolsClient;
use serde_json::json;

const TENANT: &str = "acme";

const CODE_TOOL: &str = r#"apiVersion: bridle.dev/v1
kind: Tool
metadata:
  name: py
spec:
  description: Runs python source.
  risk: mutating
  timeout: 60s
  parameters:
    type: object
    properties:
      code: {type: string}
    required: [code]
  code:
    language: python
    limits:
      memory: 128Mi
      output: 4Ki
"#;

/// Two tools replicas, A and B, sharing Redis, a label namespace and a workspace root.
/// (Fields drop in order: the replicas stop, then what a killed one left goes.)
struct Pair {
    a: ServiceProcess,
    b: ServiceProcess,
    ns: String,
    _leftovers: Leftovers,
    _redis: RedisServer,
    _dir: tempfile::TempDir,
    _root: tempfile::TempDir,
}

impl Pair {
    async fn start(extra: &[(&str, &str)]) -> Pair {
        bridle_testkit::docker::ensure_sandbox_image("python")
            .await
            .unwrap();
        let redis = RedisServer::start().await.unwrap();
        let prefix = bridle_testkit::unique("aff");
        let ns = format!("aff{}", bridle_testkit::unique("t").replace('-', ""));
        let root = tempfile::Builder::new()
            .prefix("bridle-aff")
            .tempdir()
            .unwrap();
        let root_s = root.path().display().to_string();
        let redis_url = redis.url();
        let mut pairs: Vec<(&str, &str)> = vec![
            ("redis_url", &redis_url),
            ("key_prefix", &prefix),
            // Nothing listens there: these calls resolve no secret.
            ("secrets_url", "http://127.0.0.1:9"),
            ("label_namespace", &ns),
            ("workspace_root", &root_s),
            // A killed replica's runs are taken over 2s after its last renewal.
            ("replica_lease", "2s"),
        ];
        pairs.extend_from_slice(extra);
        let env = env("tools", &pairs);
        let dir = tempfile::tempdir().unwrap();
        for d in ["a", "b"] {
            std::fs::create_dir_all(dir.path().join(d)).unwrap();
        }
        let a = ServiceProcess::start("bridle-tools", &env, &dir.path().join("a"))
            .await
            .unwrap();
        let b = ServiceProcess::start("bridle-tools", &env, &dir.path().join("b"))
            .await
            .unwrap();
        let mut m = ManifestsClient::connect(a.addr.clone()).await.unwrap();
        m.apply(pb::ApplyRequest {
            actor: None,
            documents: vec![pb::ManifestDocument {
                source: "py.yaml".into(),
                yaml: CODE_TOOL.into(),
                first_line: 1,
            }],
            dry_run: false,
            tenant: TENANT.into(),
        })
        .await
        .unwrap();
        Pair {
            a,
            b,
            _leftovers: Leftovers {
                ns: ns.clone(),
                root: root.path().to_path_buf(),
            },
            ns,
            _redis: redis,
            _dir: dir,
            _root: root,
        }
    }

    fn logs(&self) -> String {
        format!(
            "--- A:\n{}\n--- B:\n{}",
            self.a.log_tail(30),
            self.b.log_tail(30)
        )
    }
}

/// A killed replica's containers (stopped by their agents) and workspace mounts: removed at
/// the end of the test, as the survivor would after its orphan grace.
struct Leftovers {
    ns: String,
    root: std::path::PathBuf,
}

impl Drop for Leftovers {
    fn drop(&mut self) {
        for m in bridle_tools::workspace::mounts::mounts_under(&self.root) {
            let _ = bridle_tools::workspace::mounts::unmount(&m);
        }
        let out = std::process::Command::new("docker")
            .args([
                "ps",
                "-aq",
                "--filter",
                &format!("label={}.managed=true", self.ns),
            ])
            .output();
        if let Ok(o) = out {
            let ids: Vec<String> = String::from_utf8_lossy(&o.stdout)
                .split_whitespace()
                .map(str::to_string)
                .collect();
            if !ids.is_empty() {
                let _ = std::process::Command::new("docker")
                    .arg("rm")
                    .arg("-f")
                    .args(&ids)
                    .output();
            }
        }
    }
}

fn request(run: &str, code: &str, key: &str) -> pb::ExecuteRequest {
    pb::ExecuteRequest {
        scope: Some(pb::Scope {
            tenant: TENANT.into(),
            agent: "agent".into(),
            run_id: run.into(),
            ..Default::default()
        }),
        tool: "py".into(),
        arguments_json: json!({ "code": code }).to_string(),
        call_id: key.into(),
        idempotency_key: key.into(),
        ..Default::default()
    }
}

async fn execute(addr: &str, req: pb::ExecuteRequest) -> Result<pb::ToolResult, tonic::Status> {
    let mut c = ToolsClient::connect(addr.to_string()).await.unwrap();
    let r = tokio::time::timeout(Duration::from_secs(60), c.execute(req))
        .await
        .expect("the call did not end within 60s")?;
    Ok(r.into_inner().result.unwrap())
}

async fn call(addr: &str, run: &str, code: &str, key: &str) -> pb::ToolResult {
    execute(addr, request(run, code, key))
        .await
        .unwrap_or_else(|s| panic!("call {key}: {s:?}"))
}

async fn end_run(addr: &str, run: &str) -> u32 {
    let mut c = ToolsClient::connect(addr.to_string()).await.unwrap();
    c.end_run(pb::EndRunRequest {
        scope: Some(pb::Scope {
            tenant: TENANT.into(),
            run_id: run.into(),
            ..Default::default()
        }),
    })
    .await
    .unwrap()
    .into_inner()
    .containers_removed
}

/// Containers of this test that are running.
async fn running(ns: &str) -> usize {
    let out = tokio::process::Command::new("docker")
        .args(["ps", "-q", "--filter", &format!("label={ns}.managed=true")])
        .output()
        .await
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .count()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_runs_calls_follow_its_replica_and_its_files_survive_the_replicas_death() {
    let mut p = Pair::start(&[]).await;
    let run = "run_follow";
    let first = call(
        &p.a.addr,
        run,
        "open('note.txt','w').write('kept')\nprint('wrote')",
        "c1",
    )
    .await;
    assert_eq!(first.stdout, "wrote\n", "{first:?}\n{}", p.logs());

    // B does not hold the run: it forwards the call to A, where the file and sandbox are.
    let second = call(&p.b.addr, run, "print(open('note.txt').read())", "c2").await;
    assert_eq!(second.stdout, "kept\n", "{second:?}\n{}", p.logs());
    assert_eq!(
        second.sandbox_id, first.sandbox_id,
        "the call ran in the run's sandbox on A"
    );

    // A dies without draining. B takes the run over and restores its workspace from the
    // snapshot taken after the last completed call.
    p.a.kill().await;
    let third = call(&p.b.addr, run, "print(open('note.txt').read())", "c3").await;
    assert_eq!(third.stdout, "kept\n", "{third:?}\n{}", p.logs());
    assert_ne!(third.sandbox_id, first.sandbox_id, "a new sandbox, on B");
    assert!(!third.output.contains("not carried over"), "{third:?}");

    // A write on B is carried by B's own snapshots from now on.
    let fourth = call(
        &p.b.addr,
        run,
        "open('note.txt','a').write('+b')\nprint(open('note.txt').read())",
        "c4",
    )
    .await;
    assert_eq!(fourth.stdout, "kept+b\n", "{fourth:?}");
    // B's sandbox, and (by its labels) the one A's agent stopped when A died.
    let removed = end_run(&p.b.addr, run).await;
    assert!((1..=2).contains(&removed), "{removed}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_workspace_over_the_snapshot_cap_is_reported_when_its_run_moves() {
    let mut p = Pair::start(&[("workspace_snapshot_max", "1Mi")]).await;
    let run = "run_big";
    let first = call(
        &p.a.addr,
        run,
        "open('big.bin','wb').write(b'x' * (2 << 20))\nprint('wrote')",
        "c1",
    )
    .await;
    assert_eq!(first.stdout, "wrote\n", "{first:?}\n{}", p.logs());
    p.a.kill().await;
    let second = call(&p.b.addr, run, "import os\nprint(os.listdir('.'))", "c2").await;
    assert_eq!(second.stdout, "[]\n", "{second:?}\n{}", p.logs());
    assert!(
        second.output.starts_with("[workspace not carried over:")
            && second
                .output
                .contains("larger than the 1Mi a snapshot may hold")
            && second.output.contains("workspace_snapshot_max"),
        "the run is told plainly: {:?}",
        second.output
    );
    // Told once: the run's next call has nothing to add.
    let third = call(&p.b.addr, run, "print('again')", "c3").await;
    assert_eq!(third.output, "again\n", "{third:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn end_run_through_another_replica_ends_the_run_where_it_lives() {
    let p = Pair::start(&[]).await;
    let run = "run_end";
    let first = call(
        &p.a.addr,
        run,
        "open('f','w').write('1')\nprint('ok')",
        "c1",
    )
    .await;
    assert_eq!(first.stdout, "ok\n", "{first:?}\n{}", p.logs());
    assert_eq!(running(&p.ns).await, 1);

    assert_eq!(end_run(&p.b.addr, run).await, 1, "{}", p.logs());
    // A ended it: its sandbox and workspace are gone, and neither replica runs it again.
    for addr in [&p.a.addr, &p.b.addr] {
        let e = execute(addr, request(run, "print(1)", "c2"))
            .await
            .unwrap_err();
        assert_eq!(e.code(), tonic::Code::FailedPrecondition, "{e:?}");
        assert_eq!(
            e.message(),
            "run 'run_end' has ended; its sandboxes and workspace are gone"
        );
    }
    assert_eq!(running(&p.ns).await, 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_call_cut_short_by_its_replicas_death_is_retried_at_once_elsewhere() {
    let mut p = Pair::start(&[]).await;
    let run = "run_retry";
    let a = p.a.addr.clone();
    let ns = p.ns.clone();
    let cut_short = execute(&a, request(run, "import time\ntime.sleep(50)", "k1"));
    let killer = async {
        bridle_testkit::wait_for("the call to run on A", Duration::from_secs(60), || {
            let ns = ns.clone();
            async move { (running(&ns).await > 0).then_some(()) }
        })
        .await
        .unwrap();
        tokio::time::sleep(Duration::from_secs(1)).await;
        p.a.kill().await;
    };
    let (cut, ()) = tokio::join!(cut_short, killer);
    assert!(cut.is_err(), "the caller saw A die");

    // The retry under the same idempotency key does not wait for the dead call's marker
    // (it would until the tool's timeout and more, past `execute`'s 60s): B takes the call
    // over and runs it.
    let retried = execute(&p.b.addr, request(run, "print('second try')", "k1"))
        .await
        .unwrap_or_else(|s| panic!("{s:?}\n{}", p.logs()));
    assert_eq!(retried.stdout, "second try\n", "{retried:?}");
}
