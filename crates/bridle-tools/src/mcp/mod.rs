//! MCP tools: a Tool manifest with an `mcp` block stands for an MCP server; its tools are
//! discovered (`tools/list`) and exposed as `<prefix>__<tool>` with the server's schemas and
//! descriptions, and a risk class from the tool's annotations (`readOnlyHint` -> read_only,
//! `destructiveHint: false` -> mutating, otherwise destructive as the MCP spec's defaults
//! say; a tool without annotations gets the manifest's `risk`; `riskOverrides` win).
//!
//! Servers: `stdio` runs in a sandbox container per run (like any sandbox: warm pool, the
//! run's workspace at /workspace, egress allowlist, removed at EndRun); `local` is a process
//! the service's configuration names (manifests cannot name host commands), one per tenant;
//! `url` is a streamable-HTTP server, one session per tenant and tool (per call when its
//! headers hold secrets, which are resolved for each call's scope).

pub mod client;
mod content;
mod expose;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use bridle_core::manifest::{McpTool, Tool};
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

pub use expose::{Exposed, SEPARATOR};

/// A local MCP server the operator configured (`mcp_local_servers` option).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct LocalServer {
    pub command: Vec<String>,
    pub env: BTreeMap<String, String>,
}

/// Sessions shared across calls, and what each server exposes.
pub struct Mcp {
    pub local: BTreeMap<String, LocalServer>,
    shared: tokio::sync::Mutex<HashMap<String, Arc<client::Client>>>,
    catalog: Mutex<HashMap<String, Arc<Vec<Exposed>>>>,
}

impl Mcp {
    pub fn new(local: BTreeMap<String, LocalServer>) -> Self {
        Self {
            local,
            shared: tokio::sync::Mutex::default(),
            catalog: Mutex::default(),
        }
    }

    /// Identifies a server definition: a changed manifest is a new server.
    pub fn spec_key(tenant: &str, tool: &Tool, m: &McpTool) -> String {
        let mut h = Sha256::new();
        h.update(serde_json::to_string(m).unwrap_or_default().as_bytes());
        h.update(tool.spec.risk.as_str().as_bytes());
        format!(
            "{tenant}\0{}\0{}",
            tool.metadata.name,
            hex::encode(&h.finalize()[..8])
        )
    }

    pub fn cached(&self, key: &str) -> Option<Arc<Vec<Exposed>>> {
        self.catalog
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(key)
            .cloned()
    }

    pub fn remember(&self, key: String, tools: Arc<Vec<Exposed>>) {
        let mut c = self.catalog.lock().unwrap_or_else(|p| p.into_inner());
        if c.len() > 10_000 {
            c.clear();
        }
        c.insert(key, tools);
    }

    pub fn forget(&self, key: &str) {
        self.catalog
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(key);
    }

    /// A shared session, made by `connect` when there is none.
    pub async fn shared<F, Fut>(&self, key: &str, connect: F) -> Result<Arc<client::Client>, String>
    where
        F: FnOnce() -> Fut,
        Fut: std::future::Future<Output = Result<client::Client, String>>,
    {
        let mut s = self.shared.lock().await;
        if let Some(c) = s.get(key)
            && !c.is_closed()
        {
            return Ok(c.clone());
        }
        let c = Arc::new(connect().await?);
        s.insert(key.to_string(), c.clone());
        Ok(c)
    }

    /// Drops a shared session that failed, so the next call reconnects.
    pub async fn drop_shared(&self, key: &str) {
        self.shared.lock().await.remove(key);
    }

    /// Closes every shared session (at shutdown): local processes are killed.
    pub async fn close_all(&self) {
        let all: Vec<Arc<client::Client>> =
            self.shared.lock().await.drain().map(|(_, c)| c).collect();
        for c in all {
            if let Ok(c) = Arc::try_unwrap(c) {
                let _ = tokio::time::timeout(std::time::Duration::from_secs(5), c.cancel()).await;
            }
        }
    }
}

pub use content::{result_text, server_error};
pub use expose::{expose, split_exposed};
