//! A real redis-server per test, on a free loopback port, in a temporary folder.

use std::process::Stdio;
use std::time::Duration;

use anyhow::Context as _;
use tokio::process::{Child, Command};

pub struct RedisServer {
    child: Option<Child>,
    port: u16,
    dir: tempfile::TempDir,
    appendonly: bool,
    /// More `--<option> <value>` arguments (replication, cluster mode; see `redis_ha`).
    extra: Vec<String>,
}

impl RedisServer {
    /// Starts redis-server with persistence off.
    pub async fn start() -> anyhow::Result<Self> {
        Self::start_with(false).await
    }

    /// Starts redis-server; with `appendonly`, every write is fsynced to an AOF so a restart
    /// (see [`RedisServer::restart`]) keeps the data.
    pub async fn start_with(appendonly: bool) -> anyhow::Result<Self> {
        Self::start_args(appendonly, &[]).await
    }

    /// Starts redis-server with more arguments, e.g. `["--replicaof", "127.0.0.1", "6379"]`.
    /// `{port}` in an argument becomes the server's own port.
    pub async fn start_args(appendonly: bool, extra: &[&str]) -> anyhow::Result<Self> {
        let mut last = None;
        for _ in 0..5 {
            let port = crate::ports::free_port()?;
            let mut s = RedisServer {
                child: None,
                port,
                dir: tempfile::tempdir()?,
                appendonly,
                extra: extra
                    .iter()
                    .map(|a| a.replace("{port}", &port.to_string()))
                    .collect(),
            };
            match s.spawn().await {
                Ok(()) => return Ok(s),
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| anyhow::anyhow!("redis-server did not start")))
    }

    async fn spawn(&mut self) -> anyhow::Result<()> {
        let bin = crate::paths::program(
            "redis-server",
            &["/usr/bin/redis-server", "/usr/local/bin/redis-server"],
        )
        .context("redis-server is not installed (apt-get install redis-server)")?;
        let mut cmd = Command::new(bin);
        cmd.arg("--port")
            .arg(self.port.to_string())
            .arg("--bind")
            .arg("127.0.0.1")
            .arg("--dir")
            .arg(self.dir.path())
            .arg("--save")
            .arg("")
            .arg("--daemonize")
            .arg("no")
            .arg("--protected-mode")
            .arg("yes")
            .arg("--loglevel")
            .arg("warning");
        if self.appendonly {
            cmd.args(["--appendonly", "yes", "--appendfsync", "always"]);
        } else {
            cmd.args(["--appendonly", "no"]);
        }
        cmd.args(&self.extra);
        cmd.stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true);
        let mut child = cmd.spawn().context("spawning redis-server")?;
        let url = self.url();
        // Ready when the server on the port is this one (its folder is ours): a port from
        // free_port() may have gone to another test's server meanwhile, which answers too.
        let dir = self.dir.path().canonicalize()?;
        let ready = crate::wait_for(
            "redis-server to answer from its folder",
            Duration::from_secs(10),
            || {
                let url = url.clone();
                let dir = dir.clone();
                async move {
                    let client = ::redis::Client::open(url).ok()?;
                    let mut c = client.get_multiplexed_async_connection().await.ok()?;
                    let got: Vec<String> = ::redis::cmd("CONFIG")
                        .arg("GET")
                        .arg("dir")
                        .query_async(&mut c)
                        .await
                        .ok()?;
                    let theirs = std::path::Path::new(got.get(1)?).canonicalize().ok()?;
                    (theirs == dir).then_some(())
                }
            },
        );
        // A server that exits at start (its port taken) fails at once, not at the timeout.
        tokio::select! {
            r = ready => r?,
            status = child.wait() => anyhow::bail!(
                "redis-server exited at start ({}); port {} may be taken",
                status.map(|s| s.to_string()).unwrap_or_else(|e| e.to_string()),
                self.port
            ),
        }
        self.child = Some(child);
        Ok(())
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The server's folder (its config, AOF and cluster state live there).
    pub fn dir(&self) -> &std::path::Path {
        self.dir.path()
    }

    /// Kills the server (SIGKILL: no final save beyond what the AOF already holds).
    pub async fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill().await;
        }
    }

    /// Starts it again on the same port and folder.
    pub async fn restart(&mut self) -> anyhow::Result<()> {
        self.kill().await;
        let mut last = None;
        for _ in 0..20 {
            match self.spawn().await {
                Ok(()) => return Ok(()),
                Err(e) => last = Some(e),
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Err(last.unwrap_or_else(|| anyhow::anyhow!("redis-server did not restart")))
    }

    pub async fn client(&self) -> anyhow::Result<::redis::aio::MultiplexedConnection> {
        let c = ::redis::Client::open(self.url())?;
        Ok(c.get_multiplexed_async_connection().await?)
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        if let Some(c) = self.child.as_mut() {
            let _ = c.start_kill();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::RedisServer;

    #[tokio::test]
    async fn a_server_whose_port_is_taken_fails_instead_of_using_the_other() {
        let first = RedisServer::start().await.unwrap();
        let mut second = RedisServer {
            child: None,
            port: first.port(),
            dir: tempfile::tempdir().unwrap(),
            appendonly: false,
            extra: Vec::new(),
        };
        // Not the readiness timeout's message: the exit is seen as it happens.
        let e = second.spawn().await.unwrap_err();
        assert!(e.to_string().contains("may be taken"), "{e:#}");
    }
}
