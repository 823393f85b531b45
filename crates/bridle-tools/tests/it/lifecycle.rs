//! Containers end with their run, with a cancelled call, and Docker being down does not stop
//! the service from starting.

use std::time::Duration;

use bridle_proto::{EndRunRequest, ListToolsRequest, Scope, ToolErrorKind};
use serde_json::json;

use crate::helpers::{Harness, Setup, TENANT, python_tool};

const FOREVER: &str = "import time\nwhile True: time.sleep(1)";

/// Waits until `n` of the test's containers run the FOREVER call (not merely exist: a warm
/// container can appear before the call has it).
async fn wait_for_containers(h: &Harness, n: usize) {
    let ns = h.ns.clone();
    bridle_testkit::wait_for(
        "the tool's call to run in its container",
        Duration::from_secs(60),
        || {
            let ns = ns.clone();
            async move {
                let out = tokio::process::Command::new("docker")
                    .args(["ps", "-q", "--filter", &format!("label={ns}.managed=true")])
                    .output()
                    .await
                    .ok()?;
                let mut running = 0;
                for id in String::from_utf8_lossy(&out.stdout).split_whitespace() {
                    let top = tokio::process::Command::new("docker")
                        .args(["top", id, "-eo", "pid,args"])
                        .output()
                        .await
                        .ok()?;
                    if String::from_utf8_lossy(&top.stdout).contains("time.sleep") {
                        running += 1;
                    }
                }
                (running >= n).then_some(())
            }
        },
    )
    .await
    .unwrap();
}

#[tokio::test]
async fn end_run_removes_the_runs_containers() {
    let h = Harness::start().await;
    h.apply(&python_tool("py", "")).await;
    let mut req = h.request("py", json!({ "code": FOREVER }));
    req.scope.as_mut().unwrap().run_id = "run_ending".into();
    let mut client = h.tools.clone();
    let call = h.shutdown.spawn(async move { client.execute(req).await });
    wait_for_containers(&h, 1).await;

    let end = |run: &str| EndRunRequest {
        scope: Some(Scope {
            tenant: TENANT.into(),
            run_id: run.into(),
            ..Default::default()
        }),
    };
    let other = h
        .tools
        .clone()
        .end_run(end("run_other"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        other.containers_removed, 0,
        "another run's containers are not touched"
    );
    let ended = h
        .tools
        .clone()
        .end_run(end("run_ending"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(ended.containers_removed, 1);

    let r = tokio::time::timeout(Duration::from_secs(60), call)
        .await
        .unwrap()
        .unwrap()
        .unwrap()
        .into_inner();
    let r = r.result.unwrap();
    assert!(r.is_error, "{r:?}");
    assert_eq!(r.error_kind, ToolErrorKind::Cancelled as i32, "{r:?}");
    assert!(h.containers().await.is_empty());
    h.stop().await;
}

#[tokio::test]
async fn a_cancelled_call_still_removes_its_container() {
    let h = Harness::start().await;
    h.apply(&python_tool("py", "")).await;
    let mut req = h.request("py", json!({ "code": FOREVER }));
    // Without the cancellation guard the container would live for the whole 10 minutes.
    req.timeout = Some(prost_types::Duration {
        seconds: 600,
        nanos: 0,
    });
    let mut client = h.tools.clone();
    let call = h.shutdown.spawn(async move { client.execute(req).await });
    wait_for_containers(&h, 1).await;
    // Dropping the client's future resets the HTTP/2 stream: the server drops the handler.
    call.abort();
    h.wait_no_containers().await;
    h.stop().await;
}

#[tokio::test]
async fn a_call_with_an_idempotency_key_outlives_its_caller_and_runs_once() {
    let h = Harness::start().await;
    h.apply(&python_tool("py", "")).await;
    // The side effect happens first, then the call takes a while: the caller gives up in
    // between, as an orchestrator that crashed would.
    let code = "import time\nopen('/workspace/effects.log', 'a').write('ran\\n')\ntime.sleep(2)\nprint('finished')";
    let mut req = h.request("py", json!({ "code": code }));
    req.idempotency_key = "run_1:1:call_1".into();
    let mut client = h.tools.clone();
    let first = req.clone();
    let call = h.shutdown.spawn(async move { client.execute(first).await });
    wait_for_containers(&h, 1).await;
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    call.abort();

    // The retry (a new caller, same key) gets the first call's result; nothing runs again.
    let again = h.execute(req).await.unwrap();
    let r = again.result.unwrap();
    assert!(again.replayed, "{r:?}");
    assert_eq!(r.stdout.trim(), "finished");
    let mut count = h.request(
        "py",
        json!({ "code": "print(open('/workspace/effects.log').read().count('ran'))" }),
    );
    count.call_id = "call_2".into();
    let n = h.execute(count).await.unwrap().result.unwrap();
    assert_eq!(n.stdout.trim(), "1", "the side effect happened once: {n:?}");
    h.stop().await;
}

#[tokio::test]
async fn with_docker_down_the_service_starts_and_container_calls_are_unavailable() {
    let h = Harness::start_with(Setup {
        docker_host: Some("unix:///nonexistent/bridle-test/docker.sock".into()),
        ..Setup::default()
    })
    .await;
    h.apply(&python_tool("py", "")).await;
    let listed = h
        .tools
        .clone()
        .list_tools(ListToolsRequest {
            tenant: TENANT.into(),
            names: vec![],
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(listed.tools.len(), 1);
    let e = h
        .execute(h.request("py", json!({ "code": "print(1)" })))
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::Unavailable);
    assert!(
        e.message().starts_with(
            "docker engine (unix:///nonexistent/bridle-test/docker.sock) is unreachable: "
        ),
        "{}",
        e.message()
    );
    h.stop().await;
}
