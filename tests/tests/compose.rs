//! The compose deployment, end to end: images built here (deploy/images/build.sh packages this
//! test run's binaries on a runtime base debootstrapped from Debian packages), `docker-compose
//! up` of docker-compose.yml (five services, Redis, OpenBao with its init job, the OTLP
//! collector, the quickstart apply job), the quickstart agent run through it with the host's
//! `bridle` CLI (approval included), then `docker-compose down -v`.
//!
//! Needs what scripts/install-deps.sh installs: a Docker engine, docker-compose, and debootstrap
//! (or the base images already built); and where / is not a shared mount (no systemd, as on the
//! CI machine), root, to make the sandboxes' folder one as docker-compose.yml asks. Without them
//! it fails saying what is missing: a test that cannot run its subject never passes. About four minutes from scratch (bases debootstrapped,
//! images built), most of it building images; CI runs it with the rest.
//! Every project it creates is removed on the way out, on failure too (a guard), and projects
//! left by a killed earlier run are removed before it starts.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod compose_support;

use std::process::Stdio;
use std::time::Duration;

use compose_support::{
    PROJECT_PREFIX, Stack, bridle, build_test_images, missing_prerequisite, reap_stale_projects,
    run, share_workspace,
};
use tokio::process::Command;

#[tokio::test(flavor = "multi_thread")]
async fn the_quickstart_runs_through_the_compose_stack() {
    if let Some(why) = missing_prerequisite() {
        panic!(
            "the compose test cannot run: {why}. Run scripts/install-deps.sh (it installs \
             docker-compose and debootstrap and checks that Docker answers)"
        );
    }
    let root = bridle_testkit::paths::workspace_root();
    let cli = bridle_testkit::paths::binary("bridle").unwrap();
    let bin_dir = cli.parent().unwrap().to_path_buf();
    build_test_images(&root, &bin_dir).await;

    reap_stale_projects(&root);
    let unique = bridle_testkit::unique("").replace('-', "");
    let project = format!("{PROJECT_PREFIX}{}x{}", std::process::id(), &unique[..10]);
    let namespace = format!("dev.bridle.ct{}", &unique[..10]);
    let fake_key = format!("sk-compose{unique}");
    let gid = {
        use std::os::unix::fs::MetadataExt as _;
        std::fs::metadata("/var/run/docker.sock").unwrap().gid()
    };
    let mut env: Vec<(String, String)> = [
        "orchestrator",
        "router",
        "tools",
        "approvals",
        "secrets",
        "cli",
    ]
    .iter()
    .map(|s| {
        (
            format!("BRIDLE_{}_IMAGE", s.to_uppercase()),
            format!("bridle/{s}:test"),
        )
    })
    .collect();
    env.extend([
        (
            "BRIDLE_ORCHESTRATOR_PORT".into(),
            bridle_testkit::ports::free_port().unwrap().to_string(),
        ),
        (
            "BRIDLE_ROUTER_GATEWAY_PORT".into(),
            bridle_testkit::ports::free_port().unwrap().to_string(),
        ),
        (
            "BRIDLE_APPROVALS_PORT".into(),
            bridle_testkit::ports::free_port().unwrap().to_string(),
        ),
        ("DOCKER_GID".into(), gid.to_string()),
        ("BRIDLE_TOOLS_LABEL_NAMESPACE".into(), namespace),
        (
            "BRIDLE_TOOLS_WORKSPACE".into(),
            format!("/tmp/{project}-tools"),
        ),
        // vault-init stores it; the scripted route never sends it anywhere.
        ("OPENAI_API_KEY".into(), fake_key.clone()),
    ]);
    // What docker-compose.yml's header asks of the host for the sandboxes' folder.
    let workspace = std::path::PathBuf::from(format!("/tmp/{project}-tools"));
    let stack = Stack {
        root: root.clone(),
        project,
        env,
    };
    share_workspace(&workspace).unwrap_or_else(|e| panic!("{e}"));

    // `up` returns once every health condition held and the one-shot jobs were started.
    stack
        .compose_ok(&["up", "-d"], Duration::from_secs(420))
        .await;
    for svc in [
        "redis",
        "openbao",
        "secrets",
        "approvals",
        "tools",
        "router",
        "orchestrator",
    ] {
        let health = stack.inspect(svc, "{{.State.Health.Status}}").await;
        assert_eq!(health, "healthy", "{svc}\n{}", stack.logs().await);
    }
    for job in ["vault-init", "quickstart"] {
        let state = bridle_testkit::wait_for(
            &format!("the {job} job to finish"),
            Duration::from_secs(120),
            || {
                let stack = &stack;
                async move {
                    let s = stack
                        .inspect(job, "{{.State.Status}} {{.State.ExitCode}}")
                        .await;
                    s.starts_with("exited").then_some(s)
                }
            },
        )
        .await
        .unwrap();
        assert_eq!(state, "exited 0", "{job}\n{}", stack.logs().await);
    }
    let applied = stack
        .compose_ok(
            &["logs", "--no-color", "quickstart"],
            Duration::from_secs(60),
        )
        .await;
    for want in [
        "Tool/python created",
        "ModelRoute/quickstart created",
        "Agent/data-analyst created",
    ] {
        assert!(applied.contains(want), "missing {want:?} in:\n{applied}");
    }
    // The init job wrote the example secret where the broker reads it.
    let stored = stack
        .compose_ok(
            &[
                "exec",
                "-T",
                "-e",
                "BAO_TOKEN=bridle-dev-root",
                "openbao",
                "bao",
                "kv",
                "get",
                "-mount=secret",
                "-field=value",
                "bridle/openai-api-key",
            ],
            Duration::from_secs(60),
        )
        .await;
    assert_eq!(stored.trim(), fake_key);

    // The quickstart, as a person does it from the host.
    let watch = bridle(&cli, &stack.env)
        .args([
            "run",
            "data-analyst",
            "--watch",
            "--input",
            "Average and best month? Then delete sales-2024-raw.",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let approval = bridle_testkit::wait_for("a pending approval", Duration::from_secs(120), || {
        let mut c = bridle(&cli, &stack.env);
        async move {
            let out = c.args(["approvals", "list"]).output().await.ok()?;
            String::from_utf8_lossy(&out.stdout)
                .lines()
                .find(|l| l.starts_with("apr_"))
                .and_then(|l| l.split_whitespace().next().map(str::to_string))
        }
    })
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    let (ok, out, err) = run(
        bridle(&cli, &stack.env).args([
            "approvals",
            "approve",
            &approval,
            "--reason",
            "archived",
            "--approver",
            "dana",
        ]),
        Duration::from_secs(60),
    )
    .await;
    assert!(ok && out.contains("approved by dana"), "{out}\n{err}");
    let watched = tokio::time::timeout(Duration::from_secs(180), watch.wait_with_output())
        .await
        .expect("the run finishes")
        .unwrap();
    let text = String::from_utf8_lossy(&watched.stdout).into_owned();
    assert!(
        watched.status.success(),
        "run --watch: {:?}\n{text}\n{}\n{}",
        watched.status,
        String::from_utf8_lossy(&watched.stderr),
        stack.logs().await
    );
    for want in [
        "average month: 162.00 thousand USD",
        "awaiting approval",
        "approved by dana",
        "dataset 'sales-2024-raw' deleted",
        "run succeeded (final answer)",
    ] {
        assert!(text.contains(want), "missing {want:?} in:\n{text}");
    }

    // Spans reached the collector over OTLP.
    let collector =
        bridle_testkit::wait_for("spans at the collector", Duration::from_secs(60), || {
            let stack = &stack;
            async move {
                let (_, out, _) = run(
                    stack
                        .compose()
                        .args(["logs", "--no-color", "otel-collector"]),
                    Duration::from_secs(60),
                )
                .await;
                out.contains("Received traces").then_some(())
            }
        })
        .await;
    assert!(collector.is_ok(), "{}", stack.logs().await);

    // Down removes everything the project made.
    let project = stack.project.clone();
    drop(stack);
    for kind in [
        &["ps", "-a"][..],
        &["network", "ls"][..],
        &["volume", "ls"][..],
    ] {
        let (_, out, _) = run(
            Command::new("docker").args(kind).args([
                "-q",
                "--filter",
                &format!("label=com.docker.compose.project={project}"),
            ]),
            Duration::from_secs(30),
        )
        .await;
        assert_eq!(out.trim(), "", "{kind:?} left behind by {project}");
    }
}
