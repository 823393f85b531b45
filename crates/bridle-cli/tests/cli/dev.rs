//! `bridle dev`'s own children (redis-server and bao) die with it, however it ends: here by
//! SIGKILL, which leaves it no chance to stop them itself.

use std::process::Stdio;
use std::time::Duration;

use crate::support::bridle;

/// One process as /proc shows it. The start time tells a process from a later one that got
/// the same pid.
#[derive(Debug, Clone, PartialEq)]
struct Proc {
    pid: u32,
    name: String,
    start: u64,
}

/// (parent pid, state, start time) of `pid`, from /proc/<pid>/stat.
fn stat(pid: u32) -> Option<(u32, char, u64)> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // "pid (comm) state ppid ..."; comm may hold spaces and parentheses, so read after the
    // last ')'. The start time is field 22, the 20th after comm.
    let rest: Vec<&str> = s.get(s.rfind(')')? + 1..)?.split_whitespace().collect();
    let state = rest.first()?.chars().next()?;
    Some((
        rest.get(1)?.parse().ok()?,
        state,
        rest.get(19)?.parse().ok()?,
    ))
}

/// The live children of `parent`, found by pid: other tests' Redis and bao servers are not
/// looked at.
fn children_of(parent: u32) -> Vec<Proc> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        if let Some((ppid, state, start)) = stat(pid)
            && ppid == parent
            && state != 'Z'
        {
            let name = std::fs::read_to_string(format!("/proc/{pid}/comm"))
                .unwrap_or_default()
                .trim()
                .to_string();
            out.push(Proc { pid, name, start });
        }
    }
    out
}

/// Still running: the same process (same start time), and not a zombie waiting to be reaped.
fn alive(p: &Proc) -> bool {
    stat(p.pid).is_some_and(|(_, state, start)| start == p.start && state != 'Z')
}

#[tokio::test(flavor = "multi_thread")]
async fn redis_and_bao_die_with_bridle_dev_when_it_is_killed() {
    let data = tempfile::tempdir().unwrap();
    let port = || bridle_testkit::ports::free_port().unwrap().to_string();
    let mut cmd = bridle();
    cmd.arg("dev")
        .arg("--data-dir")
        .arg(data.path())
        .args(["--redis-port", &port(), "--bao-port", &port()])
        .env("BRIDLE_LOG_FORMAT", "text")
        .env("BRIDLE_ROUTER_HTTP_LISTEN", "127.0.0.1:0")
        .env("BRIDLE_APPROVALS_INBOX__LISTEN", "127.0.0.1:0")
        .env("BRIDLE_ORCHESTRATOR_MCP__LISTEN", "127.0.0.1:0")
        .stdout(Stdio::null())
        .stderr(Stdio::from(
            std::fs::File::create(data.path().join("dev.out")).unwrap(),
        ));
    for svc in ["ORCHESTRATOR", "ROUTER", "TOOLS", "APPROVALS", "SECRETS"] {
        cmd.env(format!("BRIDLE_{svc}_LISTEN"), "127.0.0.1:0");
    }
    let mut dev = cmd.spawn().unwrap();
    let pid = dev.id().unwrap();
    let log = || std::fs::read_to_string(data.path().join("dev.out")).unwrap_or_default();
    let state = data.path().join("dev.json");
    bridle_testkit::wait_for("bridle dev to be ready", Duration::from_secs(90), || {
        let ready = state.exists();
        async move { ready.then_some(()) }
    })
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", log()));

    let children = children_of(pid);
    let mut names: Vec<&str> = children.iter().map(|p| p.name.as_str()).collect();
    names.sort();
    assert_eq!(names, ["bao", "redis-server"], "{children:?}\n{}", log());

    dev.start_kill().unwrap();
    dev.wait().await.unwrap();
    let gone = bridle_testkit::wait_for(
        "redis-server and bao to die with bridle dev",
        Duration::from_secs(20),
        || {
            let left = children.iter().any(alive);
            async move { (!left).then_some(()) }
        },
    )
    .await;
    if gone.is_err() {
        let left: Vec<Proc> = children.iter().filter(|p| alive(p)).cloned().collect();
        // Leave nothing running behind a failed test.
        for p in &left {
            let _ = std::process::Command::new("kill")
                .args(["-KILL", &p.pid.to_string()])
                .status();
        }
        panic!("still running after bridle dev was killed: {left:?}");
    }
}
