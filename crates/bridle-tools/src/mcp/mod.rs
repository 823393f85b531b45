//! MCP tools: a Tool manifest with an `mcp` block stands for an MCP server; its tools are
//! discovered (`tools/list`) and exposed as `<prefix>__<tool>` with the server's schemas and
//! descriptions, and a risk class from the tool's annotations (`readOnlyHint` -> read_only,
//! `destructiveHint: false` -> mutating, otherwise destructive as the MCP spec's defaults
//! say; a tool without annotations gets the manifest's `risk`, else destructive, the spec's
//! default; `riskOverrides` win).
//!
//! Servers: `stdio` runs in a sandbox container per run (like any sandbox: warm pool, the
//! run's workspace at /workspace, egress allowlist, removed at EndRun); `local` is a process
//! the service's configuration names (manifests cannot name host commands), one per tenant;
//! `url` is a streamable-HTTP server, one session per tenant and tool (per call when its
//! headers hold secrets, which are resolved for each call's scope); with `oauth`, its requests
//! carry the tenant's access token from the MCP authorization flow (`oauth.rs`).

pub mod client;
mod content;
mod expose;
pub mod oauth;

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bridle_core::manifest::{McpTool, Risk, Tool};
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

pub use expose::{Exposed, SEPARATOR};

/// A local MCP server the operator configured (`mcp_local_servers` option).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct LocalServer {
    pub command: Vec<String>,
    pub env: BTreeMap<String, String>,
    /// Resource limits of the server and everything it starts (`setrlimit`, applied by
    /// util-linux's `prlimit` as it executes the command).
    pub limits: LocalLimits,
}

/// A local server's resource limits; each applies to the server and is inherited by what it
/// starts. Unset = not limited.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct LocalLimits {
    /// Open file descriptors per process (RLIMIT_NOFILE).
    pub open_files: Option<u64>,
    /// Largest file a process may write, in bytes (RLIMIT_FSIZE).
    pub file_size_bytes: Option<u64>,
    /// Address space per process, in bytes (RLIMIT_AS). Not set by default: runtimes reserve
    /// far more address space than they use (V8 reserves 4 GiB at start).
    pub memory_bytes: Option<u64>,
    /// CPU time per process, in seconds (RLIMIT_CPU; SIGKILL past it). Not set by default: a
    /// long-lived server adds CPU time for as long as it serves.
    pub cpu_seconds: Option<u64>,
}

impl Default for LocalLimits {
    fn default() -> Self {
        LocalLimits {
            open_files: Some(1024),
            file_size_bytes: Some(1 << 30),
            memory_bytes: None,
            cpu_seconds: None,
        }
    }
}

impl LocalLimits {
    /// `prlimit` arguments that set these limits (soft and hard alike), or none.
    pub fn prlimit_args(&self) -> Vec<String> {
        [
            ("nofile", self.open_files),
            ("fsize", self.file_size_bytes),
            ("as", self.memory_bytes),
            ("cpu", self.cpu_seconds),
        ]
        .into_iter()
        .filter_map(|(name, v)| v.map(|v| format!("--{name}={v}:{v}")))
        .collect()
    }
}

/// Sessions shared across calls, and what each server exposes.
///
/// Each server has its own slot and lock: connecting to one (which may take up to the
/// initialize timeout) never holds up calls to another. A server that failed to start is
/// remembered with its reason and not tried again before its back-off (5 s, doubling to 5
/// min) is over: calls meanwhile get that reason at once instead of waiting for it again.
pub struct Mcp {
    pub local: BTreeMap<String, LocalServer>,
    slots: Mutex<HashMap<String, Arc<tokio::sync::Mutex<Slot>>>>,
    catalog: Mutex<HashMap<String, Listed>>,
    /// How sessions are opened (handler, initialize timeout).
    pub connect: client::Connect,
    /// How long a server's tool list is used before it is read again.
    lists_ttl: Duration,
}

#[derive(Default)]
struct Slot {
    session: Option<Arc<client::Client>>,
    /// A local server's process group, killed with the session.
    process: Option<client::LocalProcess>,
    failed: Option<Failed>,
}

struct Failed {
    why: String,
    count: u32,
    until: Instant,
}

struct Listed {
    at: Instant,
    generation: u64,
    tools: Arc<Vec<Exposed>>,
}

/// The wait before trying a failed server again, after `count` failures in a row.
fn backoff(count: u32) -> Duration {
    (Duration::from_secs(5) * 2u32.saturating_pow(count.saturating_sub(1).min(10)))
        .min(Duration::from_secs(300))
}

/// What a shared session's connection made.
pub type Connected = (client::Client, Option<client::LocalProcess>);

impl Mcp {
    pub fn new(
        local: BTreeMap<String, LocalServer>,
        init_timeout: Duration,
        lists_ttl: Duration,
    ) -> Self {
        Self {
            local,
            slots: Mutex::default(),
            catalog: Mutex::default(),
            connect: client::Connect {
                handler: client::Handler::default(),
                init_timeout,
            },
            lists_ttl,
        }
    }

    /// Identifies a server definition: a changed manifest is a new server.
    pub fn spec_key(tenant: &str, tool: &Tool, m: &McpTool) -> String {
        let mut h = Sha256::new();
        h.update(serde_json::to_string(m).unwrap_or_default().as_bytes());
        h.update(
            tool.spec
                .risk
                .map(Risk::as_str)
                .unwrap_or("unset")
                .as_bytes(),
        );
        format!(
            "{tenant}\0{}\0{}",
            tool.metadata.name,
            hex::encode(&h.finalize()[..8])
        )
    }

    fn generation(&self) -> u64 {
        self.connect.handler.lists.load(Ordering::SeqCst)
    }

    /// A server's tools as listed, while the list is fresh: younger than the TTL, and no
    /// server has said its list changed since.
    pub fn cached(&self, key: &str) -> Option<Arc<Vec<Exposed>>> {
        let generation = self.generation();
        self.catalog
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(key)
            .filter(|l| l.generation == generation && l.at.elapsed() < self.lists_ttl)
            .map(|l| l.tools.clone())
    }

    pub fn remember(&self, key: String, tools: Arc<Vec<Exposed>>) {
        let generation = self.generation();
        let mut c = self.catalog.lock().unwrap_or_else(|p| p.into_inner());
        if c.len() > 10_000 {
            c.clear();
        }
        c.insert(
            key,
            Listed {
                at: Instant::now(),
                generation,
                tools,
            },
        );
    }

    pub fn forget(&self, key: &str) {
        self.catalog
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(key);
    }

    fn slot(&self, key: &str) -> Arc<tokio::sync::Mutex<Slot>> {
        self.slots
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(key.to_string())
            .or_default()
            .clone()
    }

    /// A shared session, made by `connect` when there is none (and the server is not in its
    /// back-off after failing).
    pub async fn shared<F, Fut>(&self, key: &str, connect: F) -> Result<Arc<client::Client>, String>
    where
        F: FnOnce() -> Fut,
        Fut: std::future::Future<Output = Result<Connected, String>>,
    {
        let slot = self.slot(key);
        let mut s = slot.lock().await;
        if let Some(c) = &s.session
            && !c.is_closed()
        {
            return Ok(c.clone());
        }
        if let Some(f) = &s.failed
            && Instant::now() < f.until
        {
            return Err(format!(
                "{} (failed {} time(s) in a row; tried again in {})",
                f.why,
                f.count,
                bridle_core::timeutil::short_duration(f.until - Instant::now())
            ));
        }
        // A session that closed: its process group goes before a new one starts.
        s.session = None;
        s.process = None;
        match connect().await {
            Ok((c, process)) => {
                let c = Arc::new(c);
                s.failed = None;
                s.session = Some(c.clone());
                s.process = process;
                Ok(c)
            }
            Err(why) => {
                let count = s.failed.as_ref().map_or(0, |f| f.count) + 1;
                s.failed = Some(Failed {
                    why: why.clone(),
                    count,
                    until: Instant::now() + backoff(count),
                });
                Err(why)
            }
        }
    }

    /// The end of a shared local server's stderr, for a call's error.
    pub async fn stderr_of(&self, key: &str) -> Option<client::StderrTail> {
        let slot = self.slot(key);
        let s = slot.lock().await;
        s.process.as_ref().map(|p| p.stderr.clone())
    }

    /// Drops a shared session that failed, so the next call reconnects.
    pub async fn drop_shared(&self, key: &str) {
        let slot = self.slot(key);
        let mut s = slot.lock().await;
        s.session = None;
        s.process = None;
    }

    /// Closes every shared session (at shutdown): local processes are killed with their
    /// process groups.
    pub async fn close_all(&self) {
        let slots: Vec<Arc<tokio::sync::Mutex<Slot>>> = self
            .slots
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .drain()
            .map(|(_, s)| s)
            .collect();
        for slot in slots {
            let mut s = slot.lock().await;
            if let Some(c) = s.session.take()
                && let Ok(c) = Arc::try_unwrap(c)
            {
                let _ = tokio::time::timeout(Duration::from_secs(5), c.cancel()).await;
            }
            s.process = None;
        }
    }
}

pub use content::{result_text, server_error};
pub use expose::{expose, exposed_proto, split_exposed};

#[cfg(test)]
mod tests {
    use super::LocalLimits;

    #[test]
    fn limits_become_prlimit_arguments_soft_and_hard_alike() {
        assert_eq!(
            LocalLimits::default().prlimit_args(),
            ["--nofile=1024:1024", "--fsize=1073741824:1073741824"]
        );
        let all = LocalLimits {
            open_files: Some(64),
            file_size_bytes: None,
            memory_bytes: Some(1 << 30),
            cpu_seconds: Some(60),
        };
        assert_eq!(
            all.prlimit_args(),
            [
                "--nofile=64:64",
                "--as=1073741824:1073741824",
                "--cpu=60:60"
            ]
        );
        let none = LocalLimits {
            open_files: None,
            file_size_bytes: None,
            memory_bytes: None,
            cpu_seconds: None,
        };
        assert!(none.prlimit_args().is_empty());
    }
}
