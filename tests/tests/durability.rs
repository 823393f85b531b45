//! Runs survive crashes: two orchestrator processes share the work; one is killed with SIGKILL
//! at different moments, and every run still finishes exactly once. Redis restarted (with its
//! AOF) mid-run: the run resumes.

#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

mod support;

use std::time::Duration;

use bridle_proto as pb;
use bridle_proto::run_event::Kind;
use bridle_testkit::mock_openai::Reply;
use support::{Harness, Options, follow, kind_name};

fn two_orchestrators() -> Options {
    Options {
        orchestrators: 2,
        // A dead worker's task is taken over after 2s without a heartbeat.
        orchestrator_env: vec![("claim_idle".into(), "2s".into())],
        ..Default::default()
    }
}

fn finished(events: &[pb::RunEvent]) -> Vec<&pb::RunFinished> {
    events
        .iter()
        .filter_map(|e| match &e.kind {
            Some(Kind::RunFinished(f)) => Some(f),
            _ => None,
        })
        .collect()
}

async fn wait_for_requests(h: &Harness, n: usize) {
    bridle_testkit::wait_for(
        "the model call to be in flight",
        Duration::from_secs(30),
        || async { (h.mock.requests().len() >= n).then_some(()) },
    )
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", h.logs()));
}

#[tokio::test(flavor = "multi_thread")]
async fn killing_the_worker_during_a_model_call_loses_nothing() {
    let mut h = Harness::start_with(two_orchestrators()).await.unwrap();
    h.apply("m.yaml", &h.manifests_yaml()).await.unwrap();

    // The first model call hangs long enough to kill its worker; the retry gets the same answer.
    h.mock.enqueue(Reply::Delay(
        Duration::from_secs(30),
        Box::new(Reply::tool_calls(&[(
            "c1",
            "python",
            r#"{"code":"print(7)"}"#,
        )])),
    ));
    h.mock.enqueue(Reply::tool_calls(&[(
        "c1",
        "python",
        r#"{"code":"print(7)"}"#,
    )]));
    h.mock.enqueue(Reply::text("seven"));
    let run = h.start_run("analyst", "go").await;
    wait_for_requests(&h, 1).await;
    let victim = h.holder_index().await.expect("someone holds the task");
    h.orchestrators[victim].kill().await;

    let events = follow(&h, &run, Duration::from_secs(90), |_| async {})
        .await
        .unwrap();
    let fin = finished(&events);
    assert_eq!(
        fin.len(),
        1,
        "exactly one end: {:?}",
        events.iter().map(kind_name).collect::<Vec<_>>()
    );
    assert_eq!(
        fin[0].status,
        pb::RunStatus::Succeeded as i32,
        "{}",
        h.logs()
    );
    assert_eq!(fin[0].output, "seven");
    let ran = events
        .iter()
        .filter(|e| matches!(&e.kind, Some(Kind::ToolFinished(t)) if !t.replayed))
        .count();
    assert_eq!(ran, 1, "the tool ran once");
    // The interrupted step was redone from its checkpoint: its model call was made again.
    assert_eq!(h.mock.requests().len(), 3);
}

#[tokio::test(flavor = "multi_thread")]
async fn killing_the_worker_during_a_tool_call_runs_the_tool_once() {
    let mut h = Harness::start_with(two_orchestrators()).await.unwrap();
    h.apply("m.yaml", &h.manifests_yaml()).await.unwrap();
    // The tool appends to a file in the run's workspace (a host folder mounted into the
    // sandbox), then takes a while; its worker is killed in between.
    let effect = r#"{"code": "import time\nopen('/workspace/effects.log', 'a').write('ran\\n')\ntime.sleep(4)\nprint('effect done')"}"#;
    let count = r#"{"code": "print(open('/workspace/effects.log').read().count('ran'))"}"#;
    h.mock
        .enqueue(Reply::tool_calls(&[("c1", "python", effect)]));
    h.mock
        .enqueue(Reply::tool_calls(&[("c2", "python", count)]));
    h.mock.enqueue(Reply::text("counted"));
    let run = h.start_run("analyst", "go").await;
    // Wait until the tool is running, then kill whoever holds the step.
    bridle_testkit::wait_for(
        "the tool call to start",
        Duration::from_secs(60),
        || async {
            let events = h
                .orchestrator()
                .await
                .get_run(pb::GetRunRequest {
                    run_id: run.clone(),
                })
                .await
                .ok()?
                .into_inner();
            // RunCreated, StepStarted, ModelCompleted, PolicyEvaluated, ToolStarted.
            (events.last_event_offset >= 5).then_some(())
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", h.logs()));
    // The tool writes its effect at once, then sleeps 4s: kill inside that window.
    tokio::time::sleep(Duration::from_millis(1500)).await;

    let victim = h.holder_index().await.expect("someone holds the task");
    h.orchestrators[victim].kill().await;

    let events = follow(&h, &run, Duration::from_secs(120), |_| async {})
        .await
        .unwrap();
    let fin = finished(&events);
    assert_eq!(fin.len(), 1);
    assert_eq!(
        fin[0].status,
        pb::RunStatus::Succeeded as i32,
        "{}",
        h.logs()
    );
    let outputs: Vec<(String, bool)> = events
        .iter()
        .filter_map(|e| match &e.kind {
            Some(Kind::ToolFinished(t)) => Some((t.output.trim().to_string(), t.replayed)),
            _ => None,
        })
        .collect();
    assert_eq!(outputs.len(), 2, "{outputs:?}");
    assert_eq!(outputs[0].0, "effect done");
    assert!(
        outputs[0].1,
        "the takeover got the first call's result, not a second run"
    );
    assert_eq!(outputs[1].0, "1", "the side effect happened exactly once");
}

#[tokio::test(flavor = "multi_thread")]
async fn killing_an_orchestrator_while_a_run_waits_for_approval_loses_nothing() {
    let mut h = Harness::start_with(two_orchestrators()).await.unwrap();
    h.apply("m.yaml", &h.manifests_yaml()).await.unwrap();
    h.mock.enqueue(Reply::tool_calls(&[(
        "d1",
        "delete-dataset",
        r#"{"dataset":"x"}"#,
    )]));
    h.mock.enqueue(Reply::text("deleted"));
    let run = h.start_run("analyst", "delete x").await;
    let approval = bridle_testkit::wait_for("the run to park", Duration::from_secs(60), || async {
        let r = h
            .orchestrator()
            .await
            .get_run(pb::GetRunRequest {
                run_id: run.clone(),
            })
            .await
            .ok()?
            .into_inner();
        (!r.pending_approval_id.is_empty()).then_some(r.pending_approval_id)
    })
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", h.logs()));
    // Both processes had the run at some point; kill the first (the watcher of approvals in
    // the survivor must wake the run).
    h.orchestrators[0].kill().await;
    h.approvals()
        .await
        .decide(pb::DecideRequest {
            id: approval,
            approve: true,
            approver: "ops".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    let events = follow(&h, &run, Duration::from_secs(90), |_| async {})
        .await
        .unwrap();
    let fin = finished(&events);
    assert_eq!(fin.len(), 1);
    assert_eq!(
        fin[0].status,
        pb::RunStatus::Succeeded as i32,
        "{}",
        h.logs()
    );
    let resolved = events
        .iter()
        .filter(|e| matches!(e.kind, Some(Kind::ApprovalResolved(_))))
        .count();
    assert_eq!(resolved, 1, "the decision was applied once");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_redis_restart_mid_run_is_survived() {
    let mut h = Harness::start_with(Options {
        appendonly: true,
        orchestrator_env: vec![("claim_idle".into(), "2s".into())],
        ..Default::default()
    })
    .await
    .unwrap();
    h.apply("m.yaml", &h.manifests_yaml()).await.unwrap();
    h.mock.enqueue(Reply::Delay(
        Duration::from_secs(3),
        Box::new(Reply::tool_calls(&[(
            "c1",
            "python",
            r#"{"code":"print(1+1)"}"#,
        )])),
    ));
    // Spare answers in case the step is redone after the restart.
    h.mock.enqueue(Reply::text("two"));
    h.mock.enqueue(Reply::text("two"));
    let run = h.start_run("analyst", "add").await;
    wait_for_requests(&h, 1).await;
    h.redis.restart().await.unwrap();
    let events = follow(&h, &run, Duration::from_secs(120), |_| async {})
        .await
        .unwrap();
    let fin = finished(&events);
    assert_eq!(fin.len(), 1);
    assert_eq!(
        fin[0].status,
        pb::RunStatus::Succeeded as i32,
        "{}",
        h.logs()
    );
    assert_eq!(fin[0].output, "two");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_watch_resumed_from_an_offset_misses_nothing_and_repeats_nothing() {
    let h = Harness::start().await.unwrap();
    h.apply("m.yaml", &h.manifests_yaml()).await.unwrap();
    h.mock.enqueue(Reply::tool_calls(&[(
        "c1",
        "python",
        r#"{"code":"print(1)"}"#,
    )]));
    h.mock.enqueue(Reply::text("one"));
    let run = h.start_run("analyst", "go").await;
    let all = follow(&h, &run, Duration::from_secs(60), |_| async {})
        .await
        .unwrap();
    // Resume from every offset: exactly the rest.
    use futures::StreamExt as _;
    for from in [0u64, 1, 3, all.len() as u64 - 1, all.len() as u64] {
        let mut s = h
            .orchestrator()
            .await
            .watch_run(pb::WatchRunRequest {
                run_id: run.clone(),
                from_offset: from,
                follow: true,
            })
            .await
            .unwrap()
            .into_inner();
        let mut got = Vec::new();
        while let Some(ev) = tokio::time::timeout(Duration::from_secs(10), s.next())
            .await
            .unwrap()
        {
            got.push(ev.unwrap().offset);
        }
        let want: Vec<u64> = ((from + 1)..=all.len() as u64).collect();
        assert_eq!(got, want, "from {from}");
    }
    let e = h
        .orchestrator()
        .await
        .watch_run(pb::WatchRunRequest {
            run_id: "run_00000000000000000000000000".into(),
            from_offset: 0,
            follow: true,
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::NotFound);
}

/// Sandbox containers of this test's tool service (its own label namespace): running ones, or
/// with `stopped_too` every one.
async fn sandboxes(ns: &str, stopped_too: bool) -> Vec<String> {
    let all = if stopped_too { "-aq" } else { "-q" };
    let out = tokio::process::Command::new("docker")
        .args(["ps", all, "--filter", &format!("label={ns}.managed=true")])
        .output()
        .await
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .map(str::to_string)
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_tool_service_killed_with_sigkill_leaves_no_sandbox_behind() {
    // Its own label namespace, so only this test's containers are counted.
    let ns = format!("kill{}", bridle_testkit::unique("t").replace('-', ""));
    // Its own workspace root too, so only this test's mounts and loop devices are counted.
    let root = tempfile::Builder::new()
        .prefix("bridle-kill")
        .tempdir()
        .unwrap();
    let root_s = root.path().to_string_lossy().into_owned();
    let mut h = Harness::start_with(Options {
        env_all: vec![
            ("BRIDLE_TOOLS_LABEL_NAMESPACE".into(), ns.clone()),
            ("BRIDLE_TOOLS_WORKSPACE_ROOT".into(), root_s.clone()),
        ],
        ..Default::default()
    })
    .await
    .unwrap();
    h.apply("m.yaml", &h.manifests_yaml()).await.unwrap();
    h.mock.enqueue(Reply::tool_calls(&[(
        "c1",
        "python",
        r#"{"code": "import time\ntime.sleep(600)"}"#,
    )]));
    let _run = h.start_run("analyst", "go").await;
    // The call is running in its sandbox.
    bridle_testkit::wait_for("the call to run", Duration::from_secs(60), || async {
        for id in sandboxes(&ns, false).await {
            let top = tokio::process::Command::new("docker")
                .args(["top", &id, "-eo", "pid,args"])
                .output()
                .await
                .ok()?;
            if String::from_utf8_lossy(&top.stdout).contains("time.sleep(600)") {
                return Some(());
            }
        }
        None
    })
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", h.logs()));
    assert!(!sandboxes(&ns, true).await.is_empty());

    // No draining, no cleanup: the service just dies. Its sandboxes' agents lose their
    // connection and end their containers.
    let tools = h
        .services
        .iter_mut()
        .find(|s| s.name == "bridle-tools")
        .unwrap();
    tools.kill().await;
    bridle_testkit::wait_for(
        "the killed service's sandboxes to stop",
        Duration::from_secs(60),
        || async { sandboxes(&ns, false).await.is_empty().then_some(()) },
    )
    .await
    .unwrap();

    // Its replacement (as Kubernetes or compose would start) removes them once they have been
    // stopped for `orphan_grace`.
    let env = bridle_e2e::env(
        "tools",
        &[
            ("redis_url", &h.redis.url()),
            ("key_prefix", &h.prefix),
            ("secrets_url", &h.services[0].addr),
            ("label_namespace", &ns),
            ("orphan_grace", "1s"),
            ("workspace_root", &root_s),
        ],
    );
    // The killed instance's run workspace is still mounted (mounts outlive their process).
    let killed_mounts = mounts_under(root.path());
    assert!(
        killed_mounts.len() >= 3 && !loops_under(root.path()).is_empty(),
        "{killed_mounts:?}"
    );
    tokio::time::sleep(Duration::from_secs(1)).await;
    std::fs::create_dir_all(h.dir.path().join("again")).unwrap();
    let again =
        bridle_e2e::ServiceProcess::start("bridle-tools", &env, &h.dir.path().join("again")).await;
    let _again = again.unwrap();
    bridle_testkit::wait_for(
        "the killed service's sandboxes to be removed",
        Duration::from_secs(60),
        || async { sandboxes(&ns, true).await.is_empty().then_some(()) },
    )
    .await
    .unwrap_or_else(|e| {
        panic!(
            "{e}: {:?}",
            futures::executor::block_on(sandboxes(&ns, true))
        )
    });
    // ... and its mounts, loop devices and images are released: what is left under the root
    // is the replacement's own folder (one mount: the folder itself) and its lock.
    bridle_testkit::wait_for(
        "the killed service's mounts and loop devices to be released",
        Duration::from_secs(60),
        || async {
            (mounts_under(root.path()).len() == 1
                && loops_under(root.path()).is_empty()
                && std::fs::read_dir(root.path()).ok()?.count() == 2)
                .then_some(())
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e}: {:?}", mounts_under(root.path())));
}

/// Mount points at or below `dir` (this test runs in the services' mount namespace).
fn mounts_under(dir: &std::path::Path) -> Vec<String> {
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    info.lines()
        .filter_map(|l| l.split(' ').nth(4))
        .filter(|p| std::path::Path::new(p).starts_with(dir))
        .map(str::to_string)
        .collect()
}

/// Loop devices backed by a file below `dir`.
fn loops_under(dir: &std::path::Path) -> Vec<String> {
    std::fs::read_dir("/sys/block")
        .unwrap()
        .flatten()
        .filter(|e| {
            std::fs::read_to_string(e.path().join("loop/backing_file"))
                .is_ok_and(|f| std::path::Path::new(f.trim_end()).starts_with(dir))
        })
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect()
}
