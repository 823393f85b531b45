//! Issue 19 item 1: the service against engines that run without root, started here by
//! scripts/rootless-engine.sh as an unprivileged user. What the service decides at start must
//! match what the engine can do: an engine that cannot enforce the sandboxes' limits (rootless
//! on cgroup v1, as on this development machine) is refused, naming the limits and why; one
//! that can is used. Podman's Docker-compatible API is refused whatever the host.

use bridle_core::Shutdown;
use bridle_core::config::ServerOptions;

/// The rootless engine `kind`, started by scripts/rootless-engine.sh.
pub async fn rootless_engine(kind: &str) -> bridle_testkit::rootless::RootlessEngine {
    bridle_testkit::rootless::start(kind).await.unwrap()
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
    let supported = bridle_testkit::rootless::enforces(&host).await.unwrap();
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
