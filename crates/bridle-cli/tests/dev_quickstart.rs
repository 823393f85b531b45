//! The quickstart through the real `bridle` binary: `bridle dev` (which starts its own Redis and
//! OpenBao dev server), `bridle apply`, `bridle run --watch`, `bridle approvals approve`,
//! `bridle runs show`, then a graceful stop; its spans go over OTLP to a receiver in the test,
//! each under the `service.name` of the service that made it.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Stdio;
use std::time::Duration;

use tokio::process::Command;

mod dev_support;

use dev_support::Dev;

struct Cli<'a>(&'a Dev);

impl Cli<'_> {
    fn cmd(&self) -> Command {
        self.0.cmd()
    }

    async fn ok(&self, args: &[&str]) -> String {
        let out = self.cmd().args(args).output().await.unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout).to_string();
        assert!(
            out.status.success(),
            "bridle {args:?} failed: {}{}",
            stdout,
            String::from_utf8_lossy(&out.stderr)
        );
        stdout
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn quickstart_through_bridle_dev() {
    bridle_testkit::docker::ensure_sandbox_image("python")
        .await
        .unwrap();
    let root = bridle_testkit::paths::workspace_root();
    let otlp = bridle_testkit::otlp::OtlpReceiver::start().await.unwrap();
    let mut dev = Dev::start(&[
        ("OTEL_EXPORTER_OTLP_ENDPOINT", otlp.endpoint()),
        ("OTEL_BSP_SCHEDULE_DELAY", "100".into()),
        ("OTEL_BLRP_SCHEDULE_DELAY", "100".into()),
    ])
    .await;
    let cli = Cli(&dev);

    let q = root.join("examples/quickstart");
    let applied = cli
        .ok(&[
            "apply",
            "-f",
            q.join("tools.yaml").to_str().unwrap(),
            "-f",
            q.join("agent.yaml").to_str().unwrap(),
            "-f",
            q.join("routes/scripted.yaml").to_str().unwrap(),
        ])
        .await;
    assert!(applied.contains("Agent/data-analyst created"), "{applied}");
    assert!(applied.contains("Tool/python created"), "{applied}");
    assert!(
        applied.contains("ModelRoute/quickstart created"),
        "{applied}"
    );

    let run = cli
        .cmd()
        .args([
            "run",
            "data-analyst",
            "--watch",
            "--input",
            "Monthly sales ... average and best month? Then delete sales-2024-raw.",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();

    let approval = bridle_testkit::wait_for("a pending approval", Duration::from_secs(120), || {
        let cli = &cli;
        async move {
            let out = cli.cmd().args(["approvals", "list"]).output().await.ok()?;
            String::from_utf8_lossy(&out.stdout)
                .lines()
                .find(|l| l.starts_with("apr_"))
                .map(|l| l.split_whitespace().next().unwrap_or_default().to_string())
        }
    })
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", dev.log()));
    let approved = cli
        .ok(&[
            "approvals",
            "approve",
            &approval,
            "--reason",
            "archived elsewhere",
            "--approver",
            "carol",
        ])
        .await;
    assert!(approved.contains("approved by carol"), "{approved}");

    let out = tokio::time::timeout(Duration::from_secs(120), run.wait_with_output())
        .await
        .unwrap()
        .unwrap();
    let watched = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "run --watch exit {:?}:\n{watched}\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr),
        dev.log()
    );
    for want in [
        "scripted reply",
        "average month: 162.00 thousand USD",
        "best month: Dec with 205 thousand USD",
        "needs approval",
        "awaiting approval",
        "approved by carol",
        "dataset 'sales-2024-raw' deleted",
        "run succeeded (final answer)",
    ] {
        assert!(watched.contains(want), "missing {want:?} in:\n{watched}");
    }

    let listed = cli.ok(&["runs", "list"]).await;
    let run_id = listed.split_whitespace().next().unwrap().to_string();
    assert!(run_id.starts_with("run_"), "{listed}");
    assert!(
        listed.contains("succeeded") && listed.contains("[scripted]"),
        "{listed}"
    );
    let shown = cli.ok(&["runs", "show", &run_id]).await;
    for want in [
        "step 1",
        "step 2",
        "step 3",
        "tool    python ok (exit 0)",
        "approval apr_",
        "run succeeded",
    ] {
        assert!(shown.contains(want), "missing {want:?} in:\n{shown}");
    }

    // One process, five services: each span and log record under the service that made it.
    let expect = [
        ("invoke_agent data-analyst", "bridle-orchestrator"),
        ("bridle.v1.Orchestrator/StartRun", "bridle-orchestrator"),
        ("bridle.v1.Router/Complete", "bridle-router"),
        ("bridle.v1.Tools/Execute", "bridle-tools"),
        ("run_in_sandbox", "bridle-tools"),
        ("bridle.v1.Approvals/Evaluate", "bridle-approvals"),
        ("decide_approval delete-dataset", "bridle-approvals"),
        ("bridle.v1.Secrets/EndRun", "bridle-secrets"),
    ];
    let spans = bridle_testkit::wait_for("the services' spans", Duration::from_secs(30), || {
        let otlp = &otlp;
        async move {
            let s = otlp.spans();
            expect
                .iter()
                .all(|(n, _)| s.iter().any(|x| x.span.name == *n))
                .then_some(s)
        }
    })
    .await
    .unwrap_or_else(|e| {
        panic!(
            "{e}; got {:?}",
            otlp.spans()
                .iter()
                .map(|s| (s.service.clone(), s.span.name.clone()))
                .collect::<Vec<_>>()
        )
    });
    for (name, service) in expect {
        for s in spans.iter().filter(|s| s.span.name == name) {
            assert_eq!(s.service, service, "{name}");
            assert!(
                s.resource_attr("service.version")
                    .is_some_and(|v| v.contains('+'))
            );
        }
    }
    let decided = bridle_testkit::wait_for("the decision's log", Duration::from_secs(30), || {
        let otlp = &otlp;
        async move { otlp.logs().into_iter().find(|l| l.body() == "decided") }
    })
    .await
    .unwrap();
    assert_eq!(decided.service, "bridle-approvals");

    // Graceful stop: SIGTERM, then everything (children included) exits.
    let state = dev.data.path().join("dev.json");
    let pid = dev.child.id().unwrap().to_string();
    Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .await
        .unwrap();
    let status = tokio::time::timeout(Duration::from_secs(30), dev.child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(
        status.success(),
        "bridle dev exit {status:?}\n{}",
        dev.log()
    );
    assert!(!state.exists(), "dev.json is removed on stop");
}
