//! A client generated from `proto/` in another language works against the real services: the
//! Python program `examples/clients/python/governed_run.py` generates its stubs with
//! grpcio-tools, then against `bridle dev` (the quickstart applied) starts a run, streams its
//! events, approves its approval, sees it succeed, and reads a bad manifest's structured error
//! (google.rpc ErrorInfo and BadRequest) field by field. The test fails if the program does.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::PathBuf;

use tokio::process::Command;

mod dev_support;

use dev_support::Dev;

/// The venv `scripts/install-deps.sh` makes with grpcio-tools, grpcio-status and
/// googleapis-common-protos (`BRIDLE_GRPC_VENV` moves it).
fn grpc_python() -> PathBuf {
    let venv = std::env::var_os("BRIDLE_GRPC_VENV").map_or_else(
        || {
            PathBuf::from(std::env::var_os("HOME").expect("HOME is set"))
                .join(".cache/bridle/grpc-venv")
        },
        PathBuf::from,
    );
    let python = venv.join("bin/python");
    assert!(
        python.exists(),
        "{} is missing: run `bash scripts/install-deps.sh` (it makes the venv with grpcio-tools, \
         grpcio-status and googleapis-common-protos that this test needs)",
        python.display()
    );
    python
}

/// `http://127.0.0.1:7070` -> `127.0.0.1:7070`, as grpcio names a target.
fn target(endpoint: &serde_json::Value) -> String {
    let url = endpoint.as_str().unwrap();
    url.split_once("://")
        .map_or(url, |(_, rest)| rest)
        .to_string()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_generated_python_client_runs_approves_and_reads_structured_errors() {
    let python = grpc_python();
    bridle_testkit::docker::ensure_sandbox_image("python")
        .await
        .unwrap();
    // This checkout's, from this test's own build: a shared target directory may hold a
    // testkit built in another checkout, whose root would name that one.
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    let dev = Dev::start(&[]).await;

    let q = root.join("examples/quickstart");
    let out = dev
        .cmd()
        .args(["apply", "-f"])
        .arg(q.join("tools.yaml"))
        .arg("-f")
        .arg(q.join("agent.yaml"))
        .arg("-f")
        .arg(q.join("routes/scripted.yaml"))
        .output()
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "bridle apply: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );

    let out = Command::new(&python)
        .arg(root.join("examples/clients/python/governed_run.py"))
        .arg("--proto")
        .arg(root.join("proto"))
        .arg("--orchestrator")
        .arg(target(&dev.endpoints["orchestrator"]))
        .arg("--approvals")
        .arg(target(&dev.endpoints["approvals"]))
        .arg("--approver")
        .arg("carol")
        .kill_on_drop(true)
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(
        out.status.success(),
        "the Python client failed ({:?}):\n{stdout}\n{stderr}\n{}",
        out.status,
        dev.log()
    );
    for want in [
        "generated Python stubs for",
        "event 1 run_created",
        "approved apr_",
        "as carol",
        "run finished: RUN_STATUS_SUCCEEDED",
        "bad manifest: MANIFEST_INVALID agents/broken.yaml#2:15 spec.budget.maxStep: ",
        "\nok\n",
    ] {
        assert!(stdout.contains(want), "missing {want:?} in:\n{stdout}");
    }
}
