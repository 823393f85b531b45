//! What the service checks of its engine when it starts (when the engine answers: the service
//! starts while it is down, and each sandbox's creation checks its runtime again). It refuses
//! to start on an engine that cannot harden sandboxes as `config::build` asks, rather than run
//! hostile code with less than it promises:
//! - an engine that cannot enforce the memory, swap, CPU or pids limits (a rootless engine on
//!   cgroup v1, or without the cgroup v2 controllers delegated to its user; it would accept the
//!   limits and apply none);
//! - Podman's Docker-compatible API, which ignores a container's runtime and ulimits (a Tool
//!   asking for gVisor would run under runc, and without its open-file limit, silently);
//! - an engine whose default runtime does not share the host's mounts, when `sandbox_runtime`
//!   does not name one (the service must know the runtime of every sandbox);
//! - a runtime the options name that the engine does not have.

use super::engine::{Engine, OP_TIMEOUT};
use super::runtime::{Runtimes, shares_host_mounts};
use crate::Error;

/// `accepted`: the limits the platform accepts the engine not enforcing
/// (`sandbox_limits_unenforced`).
pub async fn at_start(
    engine: &Engine,
    runtimes: &Runtimes,
    accepted: &[String],
) -> Result<(), bridle_core::Error> {
    let refuse = |m: String| Err(bridle_core::Error::Config(m));
    let at = engine.shown();
    if let Some(version) = podman_version(engine).await {
        return refuse(format!(
            "the engine at {at} is Podman {version}, whose Docker-compatible API ignores a container's runtime and ulimits (a sandbox would run under runc, without its open-file limit, and nothing would say so); run the sandboxes on Docker, rootful or rootless (scripts/rootless-engine.sh)"
        ));
    }
    match engine.hardening_gaps().await {
        Ok(g) if g.missing.iter().any(|m| !accepted.iter().any(|a| a == m)) => {
            return refuse(format!(
                "the engine at {at} cannot enforce the sandboxes' {} limits: {}; every sandbox runs code a model wrote, so this service does not start without them (unless sandbox_limits_unenforced lists each)",
                g.missing.join(", "),
                g.why()
            ));
        }
        Ok(g) if !g.missing.is_empty() => tracing::warn!(
            engine = at,
            "sandboxes run WITHOUT their {} limits, as sandbox_limits_unenforced accepts: {}",
            g.missing.join(", "),
            g.why()
        ),
        Ok(_) => {}
        Err(e) => tracing::warn!("cannot read what the engine supports: {e}"),
    }
    match engine.default_runtime().await {
        Ok(Some(d)) if !runtimes.has_default() && !shares_host_mounts(Some(&d)) => {
            return refuse(format!(
                "the engine at {at} runs containers under '{d}' by default, which this service cannot see when a Tool names no runtime; name it instead (sandbox_runtime: {d}) and leave the engine's default-runtime at runc"
            ));
        }
        Ok(_) => {}
        Err(e) => tracing::warn!("cannot read the engine's default runtime: {e}"),
    }
    for (option, rt) in runtimes.configured() {
        match engine.require_runtime(rt).await {
            Ok(()) => {}
            Err(e @ Error::RuntimeMissing { .. }) => return refuse(format!("{option}: {e}")),
            Err(e) => tracing::warn!(option, runtime = rt, "cannot check the runtime: {e}"),
        }
    }
    Ok(())
}

/// Podman's version, when the engine is Podman (its `/version` names a "Podman Engine").
async fn podman_version(engine: &Engine) -> Option<String> {
    let docker = engine.client().await.ok()?;
    let v = tokio::time::timeout(OP_TIMEOUT, docker.version())
        .await
        .ok()?
        .ok()?;
    v.components
        .into_iter()
        .flatten()
        .find(|c| c.name.to_ascii_lowercase().contains("podman"))
        .map(|c| c.version)
}
