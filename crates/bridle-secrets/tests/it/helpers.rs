//! A broker on a fresh Redis and a real OpenBao dev server; clients that say which service
//! they are; an OpenBao with a file audit device, to count the requests Vault really received.

use std::process::Stdio;
use std::time::Duration;

use bridle_core::Shutdown;
use bridle_core::client::{Outgoing, Traced};
use bridle_core::config::ServerOptions;
use bridle_proto::manifests_client::ManifestsClient;
use bridle_proto::secrets_client::SecretsClient;
use bridle_proto::{ApplyRequest, ManifestDocument, ResolveRequest, Scope};
use bridle_testkit::RedisServer;
use secrecy::SecretString;
use tokio::process::{Child, Command};

/// A bao dev server started with a config file holding a file audit device (OpenBao enables
/// audit devices only from config). Otherwise like `bridle_testkit::OpenBao`.
pub struct Bao {
    child: Option<Child>,
    port: u16,
    token: String,
    dir: tempfile::TempDir,
}

impl Bao {
    pub async fn start() -> Bao {
        let bin = bridle_testkit::bao::bao_binary().unwrap();
        for _ in 0..5 {
            let dir = tempfile::tempdir().unwrap();
            let port = bridle_testkit::ports::free_port().unwrap();
            let token = bridle_testkit::unique("root");
            let audit = dir.path().join("audit.log");
            let cfg = dir.path().join("audit.hcl");
            std::fs::write(
                &cfg,
                format!(
                    "audit \"file\" \"counted\" {{\n  options {{\n    file_path = \"{}\"\n  }}\n}}\n",
                    audit.display()
                ),
            )
            .unwrap();
            let child = Command::new(&bin)
                .arg("server")
                .arg("-dev")
                .arg(format!("-dev-listen-address=127.0.0.1:{port}"))
                .arg(format!("-dev-root-token-id={token}"))
                .arg("-dev-no-store-token")
                .arg(format!("-config={}", cfg.display()))
                .env("HOME", dir.path())
                .env_remove("BAO_ADDR")
                .env_remove("VAULT_ADDR")
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .kill_on_drop(true)
                .spawn()
                .unwrap();
            let mut bao = Bao {
                child: Some(child),
                port,
                token,
                dir,
            };
            let ready = bridle_testkit::bao::wait_until_ours(&bao.addr(), &bao.token).await;
            if ready.is_ok() {
                return bao;
            }
            bao.stop().await;
        }
        panic!("bao did not start");
    }

    pub fn addr(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn root_token(&self) -> &str {
        &self.token
    }

    /// Calls the HTTP API with the root token.
    pub async fn api(
        &self,
        method: &str,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> Result<serde_json::Value, String> {
        let url = format!("{}/v1/{path}", self.addr());
        let mut req = bridle_core::http_client::new()
            .request(method.parse().unwrap(), &url)
            .header("X-Vault-Token", &self.token);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.map_err(|e| e.to_string())?;
        let status = resp.status();
        let text = resp.text().await.unwrap_or_default();
        if !status.is_success() {
            return Err(format!("{method} {path}: {status}: {text}"));
        }
        Ok(serde_json::from_str(&text).unwrap_or(serde_json::Value::Null))
    }

    pub async fn put_kv(&self, path: &str, data: serde_json::Value) {
        self.api(
            "POST",
            &format!("secret/data/{path}"),
            Some(serde_json::json!({ "data": data })),
        )
        .await
        .unwrap();
    }

    /// Requests Vault received for `path` (as the audit log names them, e.g.
    /// "secret/data/x" or "auth/approle/login").
    pub fn requests(&self, path: &str) -> usize {
        self.audited(path, None)
    }

    /// Read requests for `path` (a KV write to the same path is not one).
    pub fn reads(&self, path: &str) -> usize {
        self.audited(path, Some("read"))
    }

    fn audited(&self, path: &str, operation: Option<&str>) -> usize {
        let text = std::fs::read_to_string(self.dir.path().join("audit.log")).unwrap_or_default();
        text.lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter(|v| v["type"] == "request" && v["request"]["path"] == path)
            .filter(|v| operation.is_none_or(|op| v["request"]["operation"] == op))
            .count()
    }

    pub async fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill().await;
        }
    }
}

impl Drop for Bao {
    fn drop(&mut self) {
        if let Some(c) = self.child.as_mut() {
            let _ = c.start_kill();
        }
    }
}

/// Redis and OpenBao for one test, and a broker's options on them.
pub struct Env {
    pub redis: RedisServer,
    pub bao: Bao,
    pub prefix: String,
}

impl Env {
    pub async fn start() -> Env {
        let (redis, bao) = tokio::join!(RedisServer::start(), Bao::start());
        Env {
            redis: redis.unwrap(),
            bao,
            prefix: bridle_testkit::unique("s"),
        }
    }

    /// Token auth with the root token, bindings only (`unbound = deny`).
    pub fn options(&self) -> bridle_secrets::Options {
        bridle_secrets::Options {
            server: ServerOptions::unauthenticated(0),
            redis_url: self.redis.url(),
            key_prefix: self.prefix.clone(),
            vault_addr: self.bao.addr(),
            vault_token: Some(SecretString::from(self.bao.root_token().to_string())),
            path_prefix: self.prefix.clone(),
            ..Default::default()
        }
    }
}

pub struct Broker {
    pub addr: String,
    pub shutdown: Shutdown,
    /// What its callers present: the internal token when the broker has one.
    callers: ServerOptions,
}

impl Broker {
    pub async fn start(opts: bridle_secrets::Options) -> Broker {
        Self::start_with_clock(opts, bridle_secrets::Clock::system()).await
    }

    /// A broker whose cached values expire by `clock` (a test's manual one).
    pub async fn start_with_clock(
        opts: bridle_secrets::Options,
        clock: bridle_secrets::Clock,
    ) -> Broker {
        let shutdown = Shutdown::new();
        let callers = ServerOptions {
            internal_token: opts.server.internal_token.clone(),
            ..ServerOptions::unauthenticated(0)
        };
        let addr = bridle_secrets::start_with_clock(opts, shutdown.clone(), clock)
            .await
            .unwrap();
        Broker {
            addr: format!("http://{addr}"),
            shutdown,
            callers,
        }
    }

    fn channel(&self, service: &str) -> Traced {
        bridle_core::client::traced(
            "secrets",
            &self.addr,
            Duration::from_secs(30),
            Outgoing::new(service, &self.callers),
        )
        .unwrap()
    }

    /// A Secrets client that says it is `service` (with the internal token when auth is on).
    pub fn client(&self, service: &str) -> SecretsClient<Traced> {
        SecretsClient::new(self.channel(service))
    }

    /// A client that says nothing about itself.
    pub async fn anonymous(&self) -> SecretsClient<tonic::transport::Channel> {
        SecretsClient::connect(self.addr.clone()).await.unwrap()
    }

    /// Applies SecretBinding YAML (one or more documents) for `tenant`, as the orchestrator.
    pub async fn apply(&self, tenant: &str, yaml: &str) {
        let mut m = ManifestsClient::new(self.channel("orchestrator"));
        let docs = bridle_core::manifest::split_documents("test.yaml", yaml)
            .into_iter()
            .map(|d| ManifestDocument {
                source: d.source,
                first_line: d.first_line,
                yaml: d.yaml,
            })
            .collect();
        m.apply(ApplyRequest {
            actor: None,
            documents: docs,
            tenant: tenant.into(),
            dry_run: false,
        })
        .await
        .unwrap();
    }

    pub async fn stop(self) {
        self.shutdown.drain(Duration::from_secs(5)).await;
    }
}

/// A tool-call scope.
pub fn tool_scope(tenant: &str, agent: &str, tool: &str, run: &str) -> Scope {
    Scope {
        tenant: tenant.into(),
        agent: agent.into(),
        run_id: run.into(),
        tool: tool.into(),
        provider: String::new(),
    }
}

/// A model-call scope.
pub fn provider_scope(tenant: &str, agent: &str, provider: &str) -> Scope {
    Scope {
        tenant: tenant.into(),
        agent: agent.into(),
        provider: provider.into(),
        ..Default::default()
    }
}

pub fn req(scope: Scope, names: &[&str]) -> ResolveRequest {
    ResolveRequest {
        scope: Some(scope),
        names: names.iter().map(|s| s.to_string()).collect(),
        refresh: false,
    }
}

/// A SecretBinding document.
pub fn binding(name: &str, spec: &str) -> String {
    format!(
        "apiVersion: bridle.dev/v1\nkind: SecretBinding\nmetadata: {{name: {name}}}\nspec:\n{spec}\n---\n"
    )
}
