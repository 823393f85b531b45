//! The Helm chart's rootless engine sidecar, run on this machine's Docker engine with the
//! securityContext the chart renders for it (`helm/tests/pod_engine.py`, in the tools venv
//! that scripts/install-deps.sh makes), and what the chart gives the tools container to use it.

use std::path::PathBuf;

use anyhow::{Context as _, bail};

pub struct PodEngine {
    /// Its socket on this machine ("unix:///var/lib/bridle-pod/engine-socket/docker.sock").
    pub host: String,
    /// The tools container's uid and gid in the chart.
    pub tools_uid: u32,
    pub tools_gid: u32,
    /// The chart's tools settings for this engine: `workspace_mode`, `sandbox_host_uid`,
    /// `sandbox_limits_unenforced` (as the environment carries them).
    pub workspace_mode: String,
    pub sandbox_host_uid: u32,
    pub limits_unenforced: Vec<String>,
    /// The folder the engine sees at the same path: workspace roots go below it.
    pub workspace_parent: PathBuf,
}

/// Starts the pod engine (or finds it running), with the sandbox images copied into it.
pub async fn start() -> anyhow::Result<PodEngine> {
    let script = crate::paths::workspace_root().join("helm/tests/pod_engine.py");
    let python = crate::paths::tools_venv_python();
    let out = tokio::process::Command::new(&python)
        .arg(&script)
        .arg("start")
        .output()
        .await
        .with_context(|| format!("running {} {}", python.display(), script.display()))?;
    if !out.status.success() {
        bail!(
            "{} start failed: {}",
            script.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let v: serde_json::Value = serde_json::from_slice(&out.stdout)
        .with_context(|| format!("what {} printed", script.display()))?;
    let text = |k: &str| -> anyhow::Result<String> {
        v.pointer(k)
            .and_then(|x| x.as_str())
            .map(str::to_string)
            .with_context(|| format!("no {k} in {v}"))
    };
    let number = |k: &str| -> anyhow::Result<u32> {
        v.pointer(k)
            .and_then(|x| x.as_u64().or_else(|| x.as_str()?.parse().ok()))
            .and_then(|n| u32::try_from(n).ok())
            .with_context(|| format!("no number {k} in {v}"))
    };
    let limits = text("/tools_env/sandbox_limits_unenforced")?;
    Ok(PodEngine {
        host: text("/docker_host")?,
        tools_uid: number("/tools_uid")?,
        tools_gid: number("/tools_gid")?,
        workspace_mode: text("/tools_env/workspace_mode")?,
        sandbox_host_uid: number("/tools_env/sandbox_host_uid")?,
        limits_unenforced: limits
            .trim_matches(|c| c == '[' || c == ']')
            .split(',')
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
            .collect(),
        workspace_parent: PathBuf::from(text("/workspace_parent")?),
    })
}
