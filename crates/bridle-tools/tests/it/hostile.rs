//! Hostile code against the real engine: what it tries must fail, and the service must come
//! out of it unharmed. (No network, read-only root, capabilities, OOM and busy-loop timeouts
//! are in hardening.rs.)

use serde_json::json;

use crate::helpers::{Harness, On, TENANT, eventually, python_tool};

async fn a_fork_bomb_is_stopped_at_the_pids_limit_and_its_sandbox_discarded(on: On) {
    let h = Harness::start_on(on).await;
    h.apply(&python_tool("py", "      pids: 40\n")).await;
    let bomb = r#"
import os, time
kids = 0
try:
    while True:
        if os.fork() == 0:
            time.sleep(120)
            os._exit(0)
        kids += 1
except OSError as e:
    print("stopped", kids, e.errno, flush=True)
"#;
    let r = h.call("run_bomb", "py", json!({ "code": bomb })).await;
    if on == On::Runsc {
        // gVisor's kernel runs the forks on host threads the limit counts: at the limit it
        // cannot start another and stops, sandbox and all (the call is told so).
        assert!(r.is_error, "{r:?}");
        assert!(
            r.output
                .contains("[killed: the sandbox itself stopped during the call (exit code "),
            "{r:?}"
        );
    } else {
        let words: Vec<&str> = r.stdout.split_whitespace().collect();
        assert_eq!(words.first(), Some(&"stopped"), "{r:?}");
        let kids: u32 = words[1].parse().unwrap();
        assert!(kids < 40, "forks must stop below the pids limit: {kids}");
        assert_eq!(words[2], "11", "EAGAIN: {r:?}");
    }
    // The children outlived the call: the sandbox is not used again.
    let first = r.sandbox_id.clone();
    let again = h
        .call("run_bomb", "py", json!({ "code": "print('fine')" }))
        .await;
    assert_eq!(again.stdout, "fine\n", "{again:?}");
    assert_ne!(
        again.sandbox_id, first,
        "a sandbox with leftover processes is discarded"
    );
    let (ns, host) = (h.ns.clone(), h.docker_host.clone());
    eventually("the bomb's sandbox to be removed", 60, || {
        let (ns, first, host) = (ns.clone(), first.clone(), host.clone());
        async move {
            let out = crate::helpers::docker_cli(host.as_deref())
                .args(["ps", "-aq", "--filter", &format!("label={ns}.managed=true")])
                .output()
                .await
                .ok()?;
            (!String::from_utf8_lossy(&out.stdout).contains(&first)).then_some(())
        }
    })
    .await;
    h.stop().await;
}

async fn an_endless_sleep_is_killed_at_the_timeout(on: On) {
    let h = Harness::start_on(on).await;
    h.apply(&python_tool("py", "")).await;
    let mut req = h.request_in(
        "run_sleep",
        "py",
        json!({"code": "import time\ntime.sleep(3600)"}),
    );
    req.timeout = Some(prost_types::Duration {
        seconds: 2,
        nanos: 0,
    });
    let r = h.execute(req).await.unwrap().result.unwrap();
    assert!(r.timed_out && r.is_error, "{r:?}");
    assert!(h.containers().await.is_empty(), "its sandbox is removed");
    h.stop().await;
}

const NO_SOCKET: &str = r#"
import os, stat
found = []
for root, dirs, files in os.walk("/", onerror=lambda e: None):
    if root.startswith(("/proc", "/sys", "/dev")):
        dirs[:] = []
        continue
    for f in files + dirs:
        p = os.path.join(root, f)
        try:
            if stat.S_ISSOCK(os.lstat(p).st_mode) or "docker.sock" in f:
                found.append(p)
        except OSError:
            pass
print("sockets", found)
print("docker_host", os.environ.get("DOCKER_HOST"))
"#;

async fn no_docker_socket_is_inside(on: On) {
    let h = Harness::start_on(on).await;
    h.apply(&python_tool("py", "")).await;
    let r = h.call("run_sock", "py", json!({ "code": NO_SOCKET })).await;
    assert_eq!(r.stdout, "sockets []\ndocker_host None\n", "{r:?}");
    h.stop().await;
}

const LEAVE: &str = r#"
import os, subprocess
open("/workspace/mine.txt", "w").write("run a")
open("/tmp/mine.txt", "w").write("run a")
subprocess.Popen(["sleep", "300"])
print(open("/etc/hostname").read().strip())
"#;

const LOOK: &str = r#"
import os
print("workspace", sorted(os.listdir("/workspace")))
print("tmp", sorted(os.listdir("/tmp")))
procs = []
for p in os.listdir("/proc"):
    if p.isdigit():
        try:
            procs.append(open(f"/proc/{p}/cmdline").read().replace("\0", " ").strip())
        except OSError:
            pass
print("sleepers", [p for p in procs if p.startswith("sleep 300")])
"#;

async fn nothing_of_one_run_is_visible_to_another(on: On) {
    let h = Harness::start_on(on).await;
    h.apply(&python_tool("py", "")).await;
    h.apply_tenant("other", &python_tool("py", "")).await;
    let a = h.call("run_a", "py", json!({ "code": LEAVE })).await;
    assert_eq!(a.exit_code, 0, "{a:?}");
    assert_eq!(a.files_written, vec!["mine.txt".to_string()]);

    let b = h.call("run_b", "py", json!({ "code": LOOK })).await;
    assert_eq!(b.stdout, "workspace []\ntmp []\nsleepers []\n", "{b:?}");
    assert_ne!(a.sandbox_id, b.sandbox_id);

    // The same run id in another tenant is another run.
    let mut req = h.request_in("run_a", "py", json!({ "code": LOOK }));
    req.scope.as_mut().unwrap().tenant = "other".into();
    let c = h.execute(req).await.unwrap().result.unwrap();
    assert_eq!(c.stdout, "workspace []\ntmp []\nsleepers []\n", "{c:?}");

    // And run a itself still has its file (in a new sandbox: the sleeper got the old one
    // discarded).
    let a2 = h.call("run_a", "py", json!({ "code": LOOK })).await;
    assert!(a2.stdout.starts_with("workspace ['mine.txt']\n"), "{a2:?}");
    assert!(a2.stdout.ends_with("sleepers []\n"), "{a2:?}");
    assert_eq!(TENANT, "acme");
    h.stop().await;
}

crate::under_each_runtime!(
    a_fork_bomb_is_stopped_at_the_pids_limit_and_its_sandbox_discarded,
    an_endless_sleep_is_killed_at_the_timeout,
    no_docker_socket_is_inside,
    nothing_of_one_run_is_visible_to_another,
);
crate::on_rootless_engine!(
    an_endless_sleep_is_killed_at_the_timeout,
    no_docker_socket_is_inside,
    nothing_of_one_run_is_visible_to_another,
);
crate::in_the_tools_pod!(
    an_endless_sleep_is_killed_at_the_timeout,
    no_docker_socket_is_inside,
    nothing_of_one_run_is_visible_to_another,
);
