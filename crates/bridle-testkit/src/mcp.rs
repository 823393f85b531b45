//! The host Python venvs with the official `mcp` SDK and the published MCP servers the tests run
//! (`crates/bridle-tools/tests/fixtures/mcp-venv.sh` makes them once, under a lock shared by
//! every test process).

use std::path::PathBuf;

/// The venv `mcp-venv.sh <which>` makes: "" for the `mcp` SDK with `mcp-server-time` and
/// `mcp-server-fetch`, "sqlite" for `mcp-server-sqlite` (with the 1.x SDK).
pub async fn venv(which: &str) -> anyhow::Result<PathBuf> {
    let script =
        crate::paths::workspace_root().join("crates/bridle-tools/tests/fixtures/mcp-venv.sh");
    let out = tokio::process::Command::new("flock")
        .arg("/tmp/bridle-mcp-venv.lock")
        .arg("bash")
        .arg(script)
        .args((!which.is_empty()).then_some(which))
        .output()
        .await?;
    anyhow::ensure!(
        out.status.success(),
        "mcp-venv.sh {which} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8_lossy(&out.stdout).trim().into())
}
