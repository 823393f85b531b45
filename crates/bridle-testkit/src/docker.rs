//! The sandbox images tests run tools in, built locally from Debian packages by
//! `deploy/sandbox/build.sh` when missing (no registry can be reached here).

use std::process::Stdio;

use anyhow::Context as _;
use tokio::process::Command;

pub const PYTHON_IMAGE: &str = "bridle-sandbox:python";

/// True when the Docker engine answers.
pub async fn docker_available() -> bool {
    Command::new("docker")
        .args(["version", "--format", "{{.Server.Version}}"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .await
        .map(|s| s.success())
        .unwrap_or(false)
}

/// Makes sure `bridle-sandbox:<flavour>` exists, building it once (under a lock, so parallel
/// tests do not build it twice).
pub async fn ensure_sandbox_image(flavour: &str) -> anyhow::Result<String> {
    let image = format!("bridle-sandbox:{flavour}");
    if image_exists(&image).await {
        return Ok(image);
    }
    let script = crate::paths::workspace_root().join("deploy/sandbox/build.sh");
    let status = Command::new("flock")
        .arg("/tmp/bridle-sandbox-build.lock")
        .arg("bash")
        .arg(&script)
        .arg(flavour)
        .status()
        .await
        .with_context(|| format!("running {}", script.display()))?;
    if !status.success() || !image_exists(&image).await {
        anyhow::bail!(
            "building {image} with {} failed ({status})",
            script.display()
        );
    }
    Ok(image)
}

async fn image_exists(image: &str) -> bool {
    Command::new("docker")
        .args(["image", "inspect", image])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .await
        .map(|s| s.success())
        .unwrap_or(false)
}
