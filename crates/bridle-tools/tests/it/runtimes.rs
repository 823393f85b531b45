//! Issue 19: the OCI runtime of sandboxes. The platform's default (`sandbox_runtime`), a
//! tenant bound to one (`sandbox_runtime_tenants`), and a runtime the engine lacks refused
//! at apply and at start, never replaced by a weaker one. (The hardening and hostile-code
//! suites run under runsc too: `runsc::` in hardening.rs, hostile.rs, execute.rs, quota.rs.)

use std::collections::BTreeMap;

use serde_json::json;

use crate::helpers::{Harness, On, Setup, TENANT, python_tool, refused_at_apply, try_start};

/// What the sandbox's kernel says it is: gVisor's Sentry answers as Linux 4.4.0, whatever
/// the host runs.
const KERNEL: &str = "print(open('/proc/version').read().split()[2])";

async fn runtime_of(h: &Harness, sandbox_id: &str) -> String {
    let out = tokio::process::Command::new("docker")
        .args(["inspect", "-f", "{{.HostConfig.Runtime}}", sandbox_id])
        .output()
        .await
        .unwrap();
    assert!(out.status.success(), "{out:?} ({})", h.ns);
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

#[tokio::test]
async fn the_default_runtime_runs_every_sandbox_whose_tool_names_none() {
    let h = Harness::start_on(On::Runsc).await;
    h.apply(&python_tool("py", "")).await;
    let r = h.call("run_rt", "py", json!({ "code": KERNEL })).await;
    assert_eq!(r.exit_code, 0, "{r:?}");
    assert_eq!(r.stdout, "4.4.0\n", "gVisor's kernel: {r:?}");
    assert_eq!(runtime_of(&h, &r.sandbox_id).await, "runsc");
    // A Tool naming the engine's own runc still gets it: the default is only a default.
    h.apply(&python_tool("plain", "    runtime: runc\n")).await;
    let r = h.call("run_rt", "plain", json!({ "code": KERNEL })).await;
    assert_ne!(r.stdout, "4.4.0\n", "{r:?}");
    assert_eq!(runtime_of(&h, &r.sandbox_id).await, "runc");
    h.stop().await;
}

#[tokio::test]
async fn a_bound_tenant_runs_under_its_runtime_and_cannot_name_another() {
    let mut tenants = BTreeMap::new();
    tenants.insert(TENANT.to_string(), "runsc".to_string());
    let h = Harness::start_with(Setup {
        runtime_tenants: tenants,
        ..Setup::default()
    })
    .await;
    let m = refused_at_apply(&h, &python_tool("weak", "    runtime: runc\n")).await;
    assert!(
        m.contains(
            "spec.container.runtime: 'runc' is not allowed for tenant 'acme': the platform runs its sandboxes under 'runsc'"
        ),
        "{m}"
    );
    h.apply(&python_tool("py", "")).await;
    let r = h.call("run_bound", "py", json!({ "code": KERNEL })).await;
    assert_eq!(r.stdout, "4.4.0\n", "{r:?}");
    assert_eq!(runtime_of(&h, &r.sandbox_id).await, "runsc");
    // Another tenant is not bound.
    h.apply_tenant("other", &python_tool("py", "")).await;
    let mut req = h.request_in("run_free", "py", json!({ "code": KERNEL }));
    req.scope.as_mut().unwrap().tenant = "other".into();
    let r = h.execute(req).await.unwrap().result.unwrap();
    assert_ne!(r.stdout, "4.4.0\n", "{r:?}");
    h.stop().await;
}

#[tokio::test]
async fn a_runtime_the_engine_lacks_is_refused_at_apply_naming_it() {
    let h = Harness::start().await;
    let m = refused_at_apply(&h, &python_tool("py", "    runtime: kata-nowhere\n")).await;
    assert!(m.contains("spec.container.runtime"), "{m}");
    assert!(
        m.contains("has no OCI runtime 'kata-nowhere' (it has: "),
        "{m}"
    );
    assert!(m.contains("runc"), "the engine's runtimes are listed: {m}");
    assert!(m.contains("never fall back to another runtime"), "{m}");
    h.stop().await;
}

#[tokio::test]
async fn a_service_whose_runtime_the_engine_lacks_refuses_to_start() {
    for (default, tenants) in [
        (Some("kata-nowhere".to_string()), BTreeMap::new()),
        (
            None,
            BTreeMap::from([("acme".to_string(), "kata-nowhere".to_string())]),
        ),
    ] {
        let err = try_start(|o| {
            o.sandbox_runtime = default.clone();
            o.sandbox_runtime_tenants = tenants.clone();
        })
        .await
        .expect_err("an engine without the runtime must stop the service");
        let m = err.to_string();
        let option = if default.is_some() {
            "sandbox_runtime: "
        } else {
            "sandbox_runtime_tenants.acme: "
        };
        assert!(m.contains(option), "{m}");
        assert!(m.contains("has no OCI runtime 'kata-nowhere'"), "{m}");
    }
}

#[tokio::test]
async fn a_warm_pool_under_gvisor_is_refused_at_apply_and_runs_get_their_workspace() {
    let h = Harness::start_on(On::Runsc).await;
    let m = refused_at_apply(&h, &python_tool("py", "    pool: {warm: 2}\n")).await;
    assert!(
        m.contains(
            "spec.container.pool.warm: a sandbox under runtime 'runsc' cannot be started ahead of its run"
        ),
        "{m}"
    );
    // Without a pool, a run's sandbox is made with its workspace, which its next sandbox
    // (after the first was discarded for a process left behind) finds again.
    h.apply(&python_tool("py", "")).await;
    let leave = "import subprocess\nopen('/workspace/kept.txt', 'w').write('x')\nsubprocess.Popen(['sleep', '300'])";
    let a = h.call("run_ws", "py", json!({ "code": leave })).await;
    assert_eq!(a.files_written, vec!["kept.txt".to_string()], "{a:?}");
    let b = h
        .call(
            "run_ws",
            "py",
            json!({ "code": "import os\nprint(os.listdir('/workspace'))" }),
        )
        .await;
    assert_ne!(
        a.sandbox_id, b.sandbox_id,
        "a sandbox with a leftover process is discarded"
    );
    assert_eq!(b.stdout, "['kept.txt']\n", "{b:?}");
    h.stop().await;
}
