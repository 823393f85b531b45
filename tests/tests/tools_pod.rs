//! The Helm chart's default tools pod, as close as this machine comes to a kubelet: the rootless
//! engine sidecar runs as a container with the securityContext the chart renders for it
//! (helm/tests/pod_engine.py translates each field to Docker's, and refuses any it cannot), and
//! the tools service binary runs as the chart's tools user (uid 65532, no capability, no
//! supplementary group) with the chart's settings for that engine. A run then works end to end:
//! its sandbox runs as the sandbox user, which is the tools uid on the host (so the service
//! owns what the run writes), its files carry across calls, and EndRun removes them, all
//! without a privilege anywhere but the engine's two capabilities.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::os::unix::fs::MetadataExt as _;
use std::time::Duration;

use bridle_e2e::{ServiceProcess, env};
use bridle_proto as pb;
use bridle_testkit::RedisServer;
use pb::manifests_client::ManifestsClient;
use pb::tools_client::ToolsClient;
use serde_json::json;

const TENANT: &str = "acme";

fn code_tool(warm: u32) -> String {
    format!(
        r#"apiVersion: bridle.dev/v1
kind: Tool
metadata:
  name: py{warm}
spec:
  description: Runs python source.
  risk: mutating
  timeout: 60s
  parameters:
    type: object
    properties:
      code: {{type: string}}
    required: [code]
  code:
    language: python
    pool: {{warm: {warm}}}
"#
    )
}

async fn apply(addr: &str, yaml: String) -> Result<(), tonic::Status> {
    let mut m = ManifestsClient::connect(addr.to_string()).await.unwrap();
    m.apply(pb::ApplyRequest {
        actor: None,
        documents: vec![pb::ManifestDocument {
            source: "tool.yaml".into(),
            yaml,
            first_line: 1,
        }],
        dry_run: false,
        tenant: TENANT.into(),
    })
    .await
    .map(|_| ())
}

fn scope(run: &str) -> pb::Scope {
    pb::Scope {
        tenant: TENANT.into(),
        agent: "agent".into(),
        run_id: run.into(),
        ..Default::default()
    }
}

async fn call(addr: &str, run: &str, code: &str, key: &str) -> pb::ToolResult {
    let mut c = ToolsClient::connect(addr.to_string()).await.unwrap();
    let req = pb::ExecuteRequest {
        scope: Some(scope(run)),
        tool: "py0".into(),
        arguments_json: json!({ "code": code }).to_string(),
        call_id: key.into(),
        idempotency_key: key.into(),
        ..Default::default()
    };
    tokio::time::timeout(Duration::from_secs(90), c.execute(req))
        .await
        .expect("the call did not end within 90s")
        .unwrap_or_else(|s| panic!("call {key}: {s:?}"))
        .into_inner()
        .result
        .unwrap()
}

/// Every file below `dir`, with its owner. A file removed while the walk goes (EndRun's
/// removal, which a test waits for with this) is not there: it is skipped.
fn files_below(dir: &std::path::Path) -> Vec<(std::path::PathBuf, u32)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let Ok(m) = e.metadata() else { continue };
            if m.is_dir() {
                stack.push(e.path());
            } else {
                out.push((e.path(), m.uid()));
            }
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread")]
async fn a_run_works_in_the_charts_tools_pod_with_the_service_unprivileged() {
    let engine = bridle_testkit::pod_engine::start().await.unwrap();
    assert_eq!(
        engine.workspace_mode, "folder",
        "the chart's tools use workspace folders"
    );
    assert_eq!(
        engine.sandbox_host_uid, engine.tools_uid,
        "the chart maps the sandbox user to the tools uid"
    );
    let (uid, gid) = (engine.tools_uid, engine.tools_gid);
    assert_ne!(uid, 0, "the chart's tools container is not root");

    let redis = RedisServer::start().await.unwrap();
    // The workspaces volume, as the tools container sees it (the engine sees it at the same
    // path): a folder the tools user owns.
    let root = tempfile::Builder::new()
        .prefix("pod")
        .tempdir_in(&engine.workspace_parent)
        .unwrap();
    std::os::unix::fs::chown(root.path(), Some(uid), Some(gid)).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let ns = format!("pod{}", bridle_testkit::unique("t").replace('-', ""));
    let (redis_url, prefix) = (redis.url(), bridle_testkit::unique("pod"));
    let root_s = root.path().display().to_string();
    let host_uid = engine.sandbox_host_uid.to_string();
    let limits = format!("[{}]", engine.limits_unenforced.join(","));
    let env = env(
        "tools",
        &[
            ("redis_url", &redis_url),
            ("key_prefix", &prefix),
            // Nothing listens there: these calls resolve no secret.
            ("secrets_url", "http://127.0.0.1:9"),
            ("label_namespace", &ns),
            ("docker_host", &engine.host),
            ("workspace_root", &root_s),
            ("workspace_mode", &engine.workspace_mode),
            ("sandbox_host_uid", &host_uid),
            ("sandbox_limits_unenforced", &limits),
        ],
    );
    let tools = ServiceProcess::start_as("bridle-tools", &env, dir.path(), Some((uid, gid)))
        .await
        .unwrap();
    let addr = tools.addr.clone();
    let status = std::fs::read_to_string(format!("/proc/{}/status", tools.pid().unwrap())).unwrap();
    let line = |k: &str| {
        status
            .lines()
            .find(|l| l.starts_with(k))
            .unwrap_or_default()
            .to_string()
    };
    assert!(
        line("Uid:")
            .split_whitespace()
            .skip(1)
            .all(|u| u == uid.to_string()),
        "{status}"
    );
    assert_eq!(
        line("CapEff:"),
        "CapEff:\t0000000000000000",
        "no capability"
    );

    // No warm sandbox can see a run's folder: asking for one is refused, by name.
    let refused = apply(&addr, code_tool(2)).await.unwrap_err();
    assert!(
        refused.message().contains("spec.code.pool.warm")
            && refused.message().contains("workspace_mode: folder"),
        "{refused:?}"
    );
    apply(&addr, code_tool(0)).await.unwrap();

    let first = call(
        &addr,
        "run_pod",
        "import os, socket\n\
         open('notes.txt', 'w').write('kept')\n\
         os.makedirs('deep/er', exist_ok=True)\n\
         open('deep/er/x.txt', 'w').write('x')\n\
         os.chmod('deep', 0o700)\n\
         try:\n    open('/etc/probe', 'w')\n    print('root writable')\n\
         except OSError:\n    print('root read-only')\n\
         try:\n    socket.create_connection(('127.0.0.1', 9), timeout=2)\n    print('network')\n\
         except OSError:\n    print('no network')\n\
         print(os.getuid(), os.getcwd())",
        "k1",
    )
    .await;
    assert_eq!(
        first.stdout,
        "root read-only\nno network\n65534 /workspace\n",
        "{first:?}\n{}",
        tools.log_tail(20)
    );
    assert_eq!(first.files_written, vec!["deep/er/x.txt", "notes.txt"]);

    // On the host the run's files belong to the tools user: the sandbox user is that uid.
    let files = files_below(root.path());
    let notes = files
        .iter()
        .find(|(p, _)| p.ends_with("notes.txt"))
        .unwrap_or_else(|| panic!("notes.txt is not under {root_s}: {files:?}"));
    assert_eq!(notes.1, uid, "{files:?}");

    let second = call(&addr, "run_pod", "print(open('notes.txt').read())", "k2").await;
    assert_eq!(second.stdout, "kept\n", "{second:?}");

    // EndRun: the service, unprivileged, removes what the sandbox wrote (a folder it closed
    // to everyone but its owner included).
    let mut c = ToolsClient::connect(addr.clone()).await.unwrap();
    c.end_run(pb::EndRunRequest {
        scope: Some(scope("run_pod")),
    })
    .await
    .unwrap();
    bridle_testkit::wait_for(
        "the run's files to be removed",
        Duration::from_secs(30),
        || {
            let left = files_below(root.path());
            async move {
                left.iter()
                    .all(|(p, _)| !p.to_string_lossy().contains("/runs/"))
                    .then_some(())
            }
        },
    )
    .await
    .unwrap_or_else(|e| {
        panic!(
            "{e}: {:?}\n{}",
            files_below(root.path()),
            tools.log_tail(20)
        )
    });
    assert!(
        !tools
            .log_tail(200)
            .contains("cannot remove a run's workspace folder"),
        "{}",
        tools.log_tail(40)
    );
}
