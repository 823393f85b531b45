#![allow(dead_code, clippy::unwrap_used, clippy::panic)] // Test support, shared by several test crates (each uses part of it).

//! Starting the real `bridle dev` for a test: its own Redis and OpenBao dev server on free
//! ports, every listener on port 0, its log in the data folder.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use tokio::process::{Child, Command};

pub struct Dev {
    pub child: Child,
    pub data: tempfile::TempDir,
    pub bin: PathBuf,
    /// dev.json: the services' addresses.
    pub endpoints: serde_json::Value,
}

impl Dev {
    /// Starts `bridle dev` with `env` added, and waits until it is ready.
    pub async fn start(env: &[(&str, String)]) -> Dev {
        let bin = bridle_testkit::paths::binary("bridle").unwrap();
        let data = tempfile::tempdir().unwrap();
        let mut dev = Command::new(&bin);
        dev.arg("dev")
            .arg("--data-dir")
            .arg(data.path())
            .arg("--redis-port")
            .arg(bridle_testkit::ports::free_port().unwrap().to_string())
            .arg("--bao-port")
            .arg(bridle_testkit::ports::free_port().unwrap().to_string())
            .env("BRIDLE_LOG_FORMAT", "text")
            .env_remove("OPENAI_API_KEY")
            .env_remove("BRIDLE_REDIS_URL")
            .env_remove("BRIDLE_SECRETS_VAULT_ADDR")
            .stdout(Stdio::null())
            .stderr(Stdio::from(
                std::fs::File::create(data.path().join("dev.out")).unwrap(),
            ))
            .kill_on_drop(true);
        for svc in ["ORCHESTRATOR", "ROUTER", "TOOLS", "APPROVALS", "SECRETS"] {
            dev.env(format!("BRIDLE_{svc}_LISTEN"), "127.0.0.1:0");
        }
        dev.env("BRIDLE_ROUTER_HTTP_LISTEN", "127.0.0.1:0")
            .env("BRIDLE_APPROVALS_INBOX__LISTEN", "127.0.0.1:0")
            .env("BRIDLE_ORCHESTRATOR_MCP__LISTEN", "127.0.0.1:0");
        for (k, v) in env {
            dev.env(k, v);
        }
        let child = dev.spawn().unwrap();
        let state = data.path().join("dev.json");
        let endpoints: serde_json::Value =
            bridle_testkit::wait_for("bridle dev to be ready", Duration::from_secs(60), || {
                let state = state.clone();
                async move {
                    std::fs::read_to_string(&state)
                        .ok()
                        .and_then(|s| serde_json::from_str(&s).ok())
                }
            })
            .await
            .unwrap_or_else(|e| panic!("{e}\n{}", log(data.path())));
        Dev {
            child,
            data,
            bin,
            endpoints,
        }
    }

    /// `bridle` pointed at this harness.
    pub fn cmd(&self) -> Command {
        let mut c = Command::new(&self.bin);
        c.env(
            "BRIDLE_SERVER",
            self.endpoints["orchestrator"].as_str().unwrap(),
        )
        .env(
            "BRIDLE_APPROVALS_SERVER",
            self.endpoints["approvals"].as_str().unwrap(),
        )
        // No contexts from the developer's config file.
        .env("BRIDLE_CONFIG", self.data.path().join("no-config.toml"))
        .env_remove("BRIDLE_CONTEXT")
        .kill_on_drop(true);
        c
    }

    pub fn log(&self) -> String {
        log(self.data.path())
    }
}

pub fn log(dir: &Path) -> String {
    std::fs::read_to_string(dir.join("dev.out")).unwrap_or_default()
}
