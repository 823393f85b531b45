//! The sandbox's limits, observed from inside a running tool.

use bridle_proto::ToolErrorKind;
use serde_json::json;

use crate::helpers::{Harness, On, python_tool};

const PROBE: &str = r#"
import os, socket
def attempt(what, f):
    try:
        f()
        print(what, "ok")
    except OSError as e:
        print(what, "refused", e.errno)
print("ids", os.getuid(), os.getgid())
attempt("write-root", lambda: open("/probe", "w").write("x"))
attempt("write-tmp", lambda: open("/tmp/probe", "w").write("x"))
attempt("write-workspace", lambda: open("/workspace/probe", "w").write("x"))
# A UDP connect sends no packet: it only asks for a route, which a network-less sandbox lacks.
attempt("route", lambda: socket.socket(socket.AF_INET, socket.SOCK_DGRAM).connect(("192.0.2.1", 9)))
print("interfaces", ",".join(sorted(os.listdir("/sys/class/net"))))
for line in open("/proc/self/status"):
    if line.startswith(("CapEff:", "CapPrm:", "CapBnd:", "NoNewPrivs:")):
        print(line.split()[0], line.split()[1])
print("pid1", open("/proc/1/cmdline").read().split("\0")[0])
import ctypes
print("nnp-prctl", ctypes.CDLL(None).prctl(39, 0, 0, 0, 0))  # PR_GET_NO_NEW_PRIVS
for line in open("/proc/self/mounts"):
    f = line.split()
    if f[1] == "/":
        print("root-options", f[3].split(",")[0])
"#;

async fn a_tool_runs_unprivileged_without_network_on_a_read_only_root(on: On) {
    let h = Harness::start_on(on).await;
    h.apply(&python_tool("py", "")).await;
    let r = h.python(PROBE).await;
    assert_eq!(r.exit_code, 0, "{r:?}");
    let lines: Vec<&str> = r.stdout.lines().collect();
    let has = |l: &str| lines.contains(&l);
    assert!(has("ids 65534 65534"), "{}", r.stdout);
    assert!(has("root-options ro"), "{}", r.stdout);
    // gVisor checks the permission before the read-only mount: EACCES, where Linux says EROFS.
    let refused = if on == On::Runsc {
        has("write-root refused 13") || has("write-root refused 30")
    } else {
        has("write-root refused 30")
    };
    assert!(refused, "root must be read-only: {}", r.stdout);
    assert!(has("write-tmp ok"), "{}", r.stdout);
    assert!(has("write-workspace ok"), "{}", r.stdout);
    // No route: ENETUNREACH from Linux, EHOSTUNREACH from gVisor's network-less stack.
    assert!(
        has("route refused 101") || (on == On::Runsc && has("route refused 113")),
        "no network: {}",
        r.stdout
    );
    assert!(has("interfaces lo"), "{}", r.stdout);
    assert!(has("CapEff: 0000000000000000"), "{}", r.stdout);
    assert!(has("CapPrm: 0000000000000000"), "{}", r.stdout);
    assert!(has("CapBnd: 0000000000000000"), "{}", r.stdout);
    assert!(has("nnp-prctl 1"), "no new privileges: {}", r.stdout);
    if on != On::Runsc {
        // gVisor's /proc does not show the flag; the prctl above asks its kernel.
        assert!(has("NoNewPrivs: 1"), "{}", r.stdout);
    }
    assert!(
        !has("pid1 python3"),
        "an init process must be PID 1: {}",
        r.stdout
    );
    h.stop().await;
}

async fn a_tool_that_runs_too_long_is_killed_and_removed(on: On) {
    let h = Harness::start_on(on).await;
    h.apply(&python_tool("py", "")).await;
    let mut req = h.request(
        "py",
        json!({"code": "print('started', flush=True)\nwhile True: pass"}),
    );
    req.timeout = Some(prost_types::Duration {
        seconds: 3,
        nanos: 0,
    });
    let r = h.execute(req).await.unwrap().result.unwrap();
    assert!(r.timed_out, "{r:?}");
    assert!(r.is_error);
    assert_eq!(r.error_kind, ToolErrorKind::TimedOut as i32);
    assert_eq!(r.exit_code, -1);
    assert_eq!(r.timeout_limit, bridle_proto::TimeoutLimit::Caller as i32);
    assert!(
        r.output.ends_with(
            "[timed out after 3.0s, the caller's limit on any tool call: the process was killed]"
        ),
        "{}",
        r.output
    );
    assert!(
        h.containers().await.is_empty(),
        "no container may be left behind"
    );
    h.stop().await;
}

async fn a_memory_hog_is_oom_killed(on: On) {
    let h = Harness::start_on(on).await;
    h.apply(&python_tool("hog", "")).await;
    let mut req = h.request(
        "hog",
        json!({"code": "x = b'x' * (512 * 1024 * 1024)\nprint(len(x))"}),
    );
    req.timeout = Some(prost_types::Duration {
        seconds: 60,
        nanos: 0,
    });
    let r = h.execute(req).await.unwrap().result.unwrap();
    assert!(r.oom_killed, "{r:?}");
    assert!(r.is_error);
    assert_eq!(r.error_kind, ToolErrorKind::OomKilled as i32);
    assert_ne!(r.exit_code, 0);
    assert!(
        r.output.ends_with("[killed: out of memory (limit 64Mi)]"),
        "{}",
        r.output
    );
    assert!(
        h.containers().await.is_empty(),
        "a sandbox whose call was OOM-killed is not used again"
    );
    h.stop().await;
}

crate::under_each_runtime!(
    a_tool_runs_unprivileged_without_network_on_a_read_only_root,
    a_tool_that_runs_too_long_is_killed_and_removed,
    a_memory_hog_is_oom_killed,
);
crate::on_rootless_engine!(
    a_tool_runs_unprivileged_without_network_on_a_read_only_root,
    a_tool_that_runs_too_long_is_killed_and_removed,
);
crate::in_the_tools_pod!(
    a_tool_runs_unprivileged_without_network_on_a_read_only_root,
    a_tool_that_runs_too_long_is_killed_and_removed,
);
