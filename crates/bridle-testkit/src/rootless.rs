//! A rootless Docker-compatible engine for the sandbox tests and the call benchmark, started
//! (or found running) by `scripts/rootless-engine.sh` as an unprivileged user, and what the
//! tools service needs to use it.

use std::path::PathBuf;

use anyhow::{Context as _, bail};

pub struct RootlessEngine {
    /// Its socket ("unix:///run/bridle-rootless/dockerd/docker.sock").
    pub host: String,
    /// The host uid the sandbox user (65534) is in the engine's user namespace.
    pub sandbox_uid: u32,
    /// The engine user's group.
    pub gid: u32,
    /// A shared mount the engine's namespace follows: workspaces go below it.
    pub shared: PathBuf,
    /// The limits the engine says it cannot enforce (`docker info`), by the tools service's
    /// names (memory, swap, cpu, pids).
    pub unenforced: Vec<String>,
}

/// Starts (or finds running) the rootless engine `kind` ("dockerd" or "podman").
pub async fn start(kind: &str) -> anyhow::Result<RootlessEngine> {
    let script = crate::paths::workspace_root().join("scripts/rootless-engine.sh");
    let out = tokio::process::Command::new("bash")
        .arg(&script)
        .arg("start")
        .env("BRIDLE_ROOTLESS_ENGINE", kind)
        .output()
        .await
        .with_context(|| format!("running {}", script.display()))?;
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    if !out.status.success() {
        bail!(
            "{} start ({kind}) failed: {}",
            script.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let after = |prefix: &str| -> anyhow::Result<String> {
        stdout
            .lines()
            .find_map(|l| l.strip_prefix(prefix))
            .map(str::to_string)
            .with_context(|| {
                format!(
                    "no '{prefix}' in what {} printed: {stdout}",
                    script.display()
                )
            })
    };
    let first_word = |s: String| s.split_whitespace().next().unwrap_or_default().to_string();
    let host = after("export DOCKER_HOST=")?;
    let sandbox_uid = first_word(after("# sandbox uid 65534 is host uid ")?)
        .parse()
        .context("the sandbox's host uid")?;
    let shared = PathBuf::from(first_word(after("# put workspace_root / TMPDIR below ")?));
    let id = tokio::process::Command::new("id")
        .args(["-g", "bridle-rootless"])
        .output()
        .await?;
    let gid = String::from_utf8_lossy(&id.stdout)
        .trim()
        .parse()
        .context("the engine user's group")?;
    let unenforced = enforces(&host)
        .await?
        .into_iter()
        .filter(|(_, ok)| !ok)
        .map(|(n, _)| n.to_string())
        .collect();
    Ok(RootlessEngine {
        host,
        sandbox_uid,
        gid,
        shared,
        unenforced,
    })
}

/// What the engine at `host` says it enforces (`docker info`), by limit.
pub async fn enforces(host: &str) -> anyhow::Result<Vec<(&'static str, bool)>> {
    let out = tokio::process::Command::new("docker")
        .args(["-H", host, "info", "--format", "{{json .}}"])
        .output()
        .await?;
    if !out.status.success() {
        bail!(
            "docker -H {host} info: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let info: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    Ok([
        ("memory", "MemoryLimit"),
        ("swap", "SwapLimit"),
        ("cpu", "CpuCfsQuota"),
        ("pids", "PidsLimit"),
    ]
    .into_iter()
    .map(|(name, key)| (name, info[key].as_bool() != Some(false)))
    .collect())
}
