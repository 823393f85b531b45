//! Issue 19 item 1: the service against engines that run without root, started here by
//! scripts/rootless-engine.sh as an unprivileged user. What the service decides at start must
//! match what the engine can do: an engine that cannot enforce the sandboxes' limits (rootless
//! on cgroup v1, as on this development machine) is refused, naming the limits and why; one
//! that can is used. Podman's Docker-compatible API is refused whatever the host.

use bridle_core::Shutdown;
use bridle_core::config::ServerOptions;

/// A rootless engine started by scripts/rootless-engine.sh, and what the tools service needs
/// to use it.
pub struct RootlessEngine {
    pub host: String,
    /// The host uid the sandbox user (65534) is in the engine's user namespace.
    pub sandbox_uid: u32,
    /// The engine user's group.
    pub gid: u32,
    /// A shared mount the engine's namespace follows: workspaces go below it.
    pub shared: std::path::PathBuf,
    /// The limits the engine says it cannot enforce.
    pub unenforced: Vec<String>,
}

/// Starts (or finds running) the rootless engine `kind` (dockerd or podman).
pub async fn rootless_engine(kind: &str) -> RootlessEngine {
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../scripts/rootless-engine.sh"
    );
    let out = tokio::process::Command::new("bash")
        .args([script, "start"])
        .env("BRIDLE_ROOTLESS_ENGINE", kind)
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "{script} start ({kind}) failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let after = |prefix: &str| -> String {
        stdout
            .lines()
            .find_map(|l| l.strip_prefix(prefix))
            .unwrap_or_else(|| panic!("no '{prefix}' from {script}: {stdout}"))
            .to_string()
    };
    let host = after("export DOCKER_HOST=");
    let sandbox_uid = after("# sandbox uid 65534 is host uid ")
        .split_whitespace()
        .next()
        .unwrap()
        .parse()
        .unwrap();
    let shared = after("# put workspace_root / TMPDIR below ")
        .split_whitespace()
        .next()
        .unwrap()
        .into();
    let id = std::process::Command::new("id")
        .args(["-g", "bridle-rootless"])
        .output()
        .unwrap();
    let gid = String::from_utf8_lossy(&id.stdout).trim().parse().unwrap();
    let unenforced = enforces(&host)
        .await
        .into_iter()
        .filter(|(_, ok)| !ok)
        .map(|(n, _)| n.to_string())
        .collect();
    RootlessEngine {
        host,
        sandbox_uid,
        gid,
        shared,
        unenforced,
    }
}

/// What the engine at `host` says it enforces (`docker info`).
async fn enforces(host: &str) -> Vec<(&'static str, bool)> {
    let out = tokio::process::Command::new("docker")
        .args(["-H", host, "info", "--format", "{{json .}}"])
        .output()
        .await
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let info: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    [
        ("memory", "MemoryLimit"),
        ("swap", "SwapLimit"),
        ("cpu", "CpuCfsQuota"),
        ("pids", "PidsLimit"),
    ]
    .into_iter()
    .map(|(name, key)| (name, info[key].as_bool() != Some(false)))
    .collect()
}

async fn start_on(host: &str) -> (Result<std::net::SocketAddr, bridle_core::Error>, Shutdown) {
    let redis = bridle_testkit::RedisServer::start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let opts = bridle_tools::Options {
        server: ServerOptions::with_port(0),
        redis_url: redis.url(),
        key_prefix: bridle_testkit::unique("tools"),
        label_namespace: bridle_testkit::unique("t"),
        workspace_root: Some(dir.path().to_path_buf()),
        docker_host: Some(host.to_string()),
        ..Default::default()
    };
    let shutdown = Shutdown::new();
    let started = bridle_tools::start(opts, shutdown.clone()).await;
    (started, shutdown)
}

#[tokio::test]
async fn a_rootless_engine_is_used_only_when_it_enforces_every_limit() {
    let host = rootless_engine("dockerd").await.host;
    let supported = enforces(&host).await;
    let missing: Vec<&str> = supported
        .iter()
        .filter(|(_, ok)| !ok)
        .map(|(n, _)| *n)
        .collect();
    let (started, shutdown) = start_on(&host).await;
    if missing.is_empty() {
        started.expect("an engine that enforces every limit is used");
    } else {
        let m = started
            .expect_err("an engine that cannot enforce the limits must stop the service")
            .to_string();
        assert!(
            m.contains(&format!(
                "cannot enforce the sandboxes' {} limits",
                missing.join(", ")
            )),
            "{m}"
        );
        assert!(m.contains(&host), "the engine is named: {m}");
        assert!(m.contains("rootless"), "and why: {m}");
    }
    shutdown.trigger();
}

#[tokio::test]
async fn podmans_docker_api_is_refused_naming_what_it_ignores() {
    let host = rootless_engine("podman").await.host;
    let (started, shutdown) = start_on(&host).await;
    let m = started
        .expect_err("Podman's API must stop the service")
        .to_string();
    assert!(
        m.contains(&format!("the engine at {host} is Podman ")),
        "{m}"
    );
    assert!(
        m.contains("ignores a container's runtime and ulimits"),
        "{m}"
    );
    shutdown.trigger();
}
