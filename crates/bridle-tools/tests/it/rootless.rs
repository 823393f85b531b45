//! Issue 19 item 1: the service against engines that run without root, started here by
//! scripts/rootless-engine.sh as an unprivileged user. What the service decides at start must
//! match what the engine can do: an engine that cannot enforce the sandboxes' limits (rootless
//! on cgroup v1, as on this development machine) is refused, naming the limits and why; one
//! that can is used. Podman's Docker-compatible API is refused whatever the host.

use crate::helpers::try_start;

/// The rootless engine `kind`, started by scripts/rootless-engine.sh.
pub async fn rootless_engine(kind: &str) -> bridle_testkit::rootless::RootlessEngine {
    bridle_testkit::rootless::start(kind).await.unwrap()
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
    let started = try_start(|o| o.docker_host = Some(host.clone())).await;
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
}

#[tokio::test]
async fn podmans_docker_api_is_refused_naming_what_it_ignores() {
    let host = rootless_engine("podman").await.host;
    let m = try_start(|o| o.docker_host = Some(host.clone()))
        .await
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
}
