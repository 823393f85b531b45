//! Support for the cross-service end-to-end tests: the five service binaries started as
//! separate processes against a real Redis and a real OpenBao, each on a free port it picks
//! itself (reported through `--addr-file`), with its log kept for the test's failure message.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::Context as _;
use tokio::process::{Child, Command};

/// One running service binary.
pub struct ServiceProcess {
    pub name: String,
    pub addr: String,
    pub log: PathBuf,
    child: Child,
}

impl ServiceProcess {
    /// Starts `binary` with `env`, waits for it to report its address, and returns it.
    pub async fn start(binary: &str, env: &[(String, String)], dir: &Path) -> anyhow::Result<Self> {
        Self::start_as(binary, env, dir, None).await
    }

    /// The same, as `user` (uid, gid) when given: with no capability and no supplementary
    /// group, as a container that runs as that user. The binary is copied into `dir` first
    /// (the build's folder may be closed to that user), and `dir` is given to it.
    pub async fn start_as(
        binary: &str,
        env: &[(String, String)],
        dir: &Path,
        user: Option<(u32, u32)>,
    ) -> anyhow::Result<Self> {
        let mut bin = bridle_testkit::paths::binary(binary)?;
        if let Some((uid, gid)) = user {
            let copy = dir.join(binary);
            std::fs::copy(&bin, &copy).with_context(|| format!("copying {}", bin.display()))?;
            std::os::unix::fs::chown(dir, Some(uid), Some(gid))?;
            bin = copy;
        }
        let addr_file = dir.join(format!("{binary}.addr"));
        let log = dir.join(format!("{binary}.log"));
        let _ = std::fs::remove_file(&addr_file);
        let logf = std::fs::File::create(&log)?;
        let mut cmd = Command::new(&bin);
        if let Some((uid, gid)) = user {
            // Setting them drops root's supplementary groups too; a uid other than 0 holds
            // no capability after the switch.
            cmd.uid(uid).gid(gid);
        }
        cmd.arg("--listen")
            .arg("127.0.0.1:0")
            .arg("--addr-file")
            .arg(&addr_file)
            .env("BRIDLE_LOG_FORMAT", "json")
            .env("BRIDLE_LOG", "info")
            // Loopback services for one test: auth off unless the test's `env` turns it on
            // (the services' own default is `keys`).
            .env("BRIDLE_AUTH", "off")
            .stdout(Stdio::from(logf.try_clone()?))
            .stderr(Stdio::from(logf))
            .kill_on_drop(true);
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd
            .spawn()
            .with_context(|| format!("spawning {}", bin.display()))?;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(a) = std::fs::read_to_string(&addr_file)
                && !a.trim().is_empty()
            {
                return Ok(Self {
                    name: binary.to_string(),
                    addr: format!("http://{}", a.trim()),
                    log,
                    child,
                });
            }
            if let Ok(Some(status)) = child.try_wait() {
                anyhow::bail!("{binary} exited at start ({status}):\n{}", tail(&log, 40));
            }
            if tokio::time::Instant::now() > deadline {
                anyhow::bail!(
                    "{binary} did not report its address within 30s:\n{}",
                    tail(&log, 40)
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Sends SIGKILL (a crash, no draining).
    pub async fn kill(&mut self) {
        let _ = self.child.kill().await;
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    pub fn log_tail(&self, n: usize) -> String {
        tail(&self.log, n)
    }
}

/// A test that ends (passing or failing) stops its services as an operator would, with
/// SIGTERM, so the tool service removes its sandboxes and warm pool; a process that does not
/// stop within 10s is killed. (A plain kill-on-drop leaked the warm containers of every test.)
impl Drop for ServiceProcess {
    fn drop(&mut self) {
        let Some(pid) = self.child.id() else { return };
        let term = std::process::Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        if term.is_ok_and(|s| s.success()) {
            let deadline = std::time::Instant::now() + Duration::from_secs(10);
            while std::time::Instant::now() < deadline {
                if !matches!(self.child.try_wait(), Ok(None)) {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        // kill_on_drop sends SIGKILL when the child handle goes.
    }
}

pub fn tail(path: &Path, n: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// `BRIDLE_<SERVICE>_<KEY>=value` pairs.
pub fn env(service: &str, pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| {
            (
                format!("BRIDLE_{}_{}", service.to_uppercase(), k.to_uppercase()),
                v.to_string(),
            )
        })
        .collect()
}
