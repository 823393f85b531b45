//! The connection to the Docker engine, made on first use.
//!
//! The service must start while Docker is down (HTTP and MCP tools need no Docker), so the
//! client is built and its API version negotiated lazily, and retried on the next call while
//! the engine cannot be reached.

use std::time::{Duration, Instant};

use bollard::Docker;
use tokio::sync::Mutex;

use crate::Error;
use crate::error::root_cause;

pub use super::backend::OP_TIMEOUT;

/// bollard's default on Unix (not exported by it).
const DEFAULT_HOST: &str = "unix:///var/run/docker.sock";

pub struct Engine {
    host: Option<String>,
    shown: String,
    client: Mutex<Option<Docker>>,
    /// The engine's runtimes as last read (`docker info`).
    known: std::sync::Mutex<Option<Runtimes>>,
}

/// The engine's OCI runtimes, which it uses when none is named, and when that was read.
#[derive(Clone)]
struct Runtimes {
    at: Instant,
    names: Vec<String>,
    default: Option<String>,
}

/// How long the engine's list of runtimes is trusted before it is read again (a runtime
/// registered later is seen at once anyway: a name missing from the list rereads it).
const RUNTIMES_TTL: Duration = Duration::from_secs(30);

impl Engine {
    /// `host` = the configured engine address; None = DOCKER_HOST, else the local socket.
    pub fn new(host: Option<String>) -> Self {
        let shown = host
            .clone()
            .or_else(|| std::env::var("DOCKER_HOST").ok().filter(|h| !h.is_empty()))
            .unwrap_or_else(|| DEFAULT_HOST.to_string());
        Self {
            host,
            shown,
            client: Mutex::new(None),
            known: std::sync::Mutex::new(None),
        }
    }

    /// Where the engine is, for messages ("unix:///var/run/docker.sock").
    pub fn shown(&self) -> &str {
        &self.shown
    }

    /// The connected, version-negotiated client.
    pub async fn client(&self) -> Result<Docker, Error> {
        let mut slot = self.client.lock().await;
        if let Some(d) = slot.as_ref() {
            return Ok(d.clone());
        }
        let unreachable = |reason: String| Error::DockerUnavailable {
            at: self.shown.clone(),
            reason,
        };
        let docker = match &self.host {
            Some(h) => Docker::connect_with_host(h),
            None => Docker::connect_with_defaults(),
        }
        .map_err(|e| unreachable(e.to_string()))?
        // Engine calls are bounded by our own timeouts; the client's must not cut a long
        // tool run's wait short.
        .with_timeout(Duration::from_secs(24 * 3600));
        let docker = tokio::time::timeout(Duration::from_secs(10), docker.negotiate_version())
            .await
            .map_err(|_| unreachable("no answer within 10s".into()))?
            .map_err(|e| unreachable(root_cause(&e)))?;
        *slot = Some(docker.clone());
        Ok(docker)
    }

    /// `docker info`, and the runtimes it lists (remembered for [`Self::known`]).
    async fn info(&self) -> Result<(bollard::models::SystemInfo, Runtimes), Error> {
        let docker = self.client().await?;
        let info = tokio::time::timeout(OP_TIMEOUT, docker.info())
            .await
            .map_err(|_| self.timed_out("report what it supports"))?
            .map_err(|e| self.error("report what it supports (docker info)", e))?;
        let mut names: Vec<String> = info
            .runtimes
            .iter()
            .flatten()
            .map(|(n, _)| n.clone())
            .collect();
        names.sort();
        let known = Runtimes {
            at: Instant::now(),
            names,
            default: info.default_runtime.clone(),
        };
        *self.known.lock().unwrap_or_else(|p| p.into_inner()) = Some(known.clone());
        Ok((info, known))
    }

    /// The engine's runtimes as last read, read again when older than 30 s or when `fresh`.
    async fn known(&self, fresh: bool) -> Result<Runtimes, Error> {
        let cached = self.known.lock().unwrap_or_else(|p| p.into_inner()).clone();
        match cached {
            Some(k) if !fresh && k.at.elapsed() < RUNTIMES_TTL => Ok(k),
            _ => Ok(self.info().await?.1),
        }
    }

    /// The engine's OCI runtimes (`docker info`), read again when older than 30 s or when
    /// `fresh`.
    pub async fn runtimes(&self, fresh: bool) -> Result<Vec<String>, Error> {
        Ok(self.known(fresh).await?.names)
    }

    /// The runtime the engine uses for a container that names none.
    pub async fn default_runtime(&self) -> Result<Option<String>, Error> {
        Ok(self.known(false).await?.default)
    }

    /// Ok when the engine has the runtime `name`; else the error names it and what the engine
    /// has. A sandbox is never started under another runtime in its place.
    pub async fn require_runtime(&self, name: &str) -> Result<(), Error> {
        if self.runtimes(false).await?.iter().any(|r| r == name) {
            return Ok(());
        }
        let have = self.runtimes(true).await?;
        if have.iter().any(|r| r == name) {
            return Ok(());
        }
        Err(Error::RuntimeMissing {
            runtime: name.to_string(),
            at: self.shown.clone(),
            have: have.join(", "),
        })
    }

    /// Whether the engine has the runtime `name`, when it can be told within a few seconds
    /// (None: the engine does not answer; the call will say so).
    pub async fn has_runtime(&self, name: &str) -> Option<Result<(), Error>> {
        match tokio::time::timeout(Duration::from_secs(3), self.require_runtime(name)).await {
            Ok(Err(e @ Error::RuntimeMissing { .. })) => Some(Err(e)),
            Ok(Ok(())) => Some(Ok(())),
            Ok(Err(_)) | Err(_) => None,
        }
    }

    /// What every sandbox's hardening needs that this engine says it cannot do (`docker
    /// info`: memory, swap, CPU and pids limits), with why when the engine is rootless on
    /// cgroup v1. Empty when it can do all of it.
    pub async fn hardening_gaps(&self) -> Result<Gaps, Error> {
        Ok(Gaps::of(&self.info().await?.0))
    }

    /// Classifies an engine error of operation `op` ("create the container for tool 'x'").
    pub fn error(&self, op: &str, e: bollard::errors::Error) -> Error {
        use bollard::errors::Error as B;
        match e {
            B::DockerResponseServerError {
                status_code,
                message,
            } => Error::DockerRefused {
                op: op.to_string(),
                message: format!("{message} (HTTP {status_code})"),
            },
            B::RequestTimeoutError
            | B::IOError { .. }
            | B::HyperResponseError { .. }
            | B::HyperLegacyError { .. }
            | B::SocketNotFoundError(_) => Error::DockerUnavailable {
                at: self.shown.clone(),
                reason: root_cause(&e),
            },
            other => Error::Core(bridle_core::Error::internal(format!(
                "docker: {op}: {other}"
            ))),
        }
    }

    pub fn timed_out(&self, op: &str) -> Error {
        Error::DockerUnavailable {
            at: self.shown.clone(),
            reason: format!("no answer within {}s to {op}", OP_TIMEOUT.as_secs()),
        }
    }
}

/// True for the engine's answer to a container or image that does not exist.
pub fn is_not_found(e: &bollard::errors::Error) -> bool {
    matches!(
        e,
        bollard::errors::Error::DockerResponseServerError {
            status_code: 404,
            ..
        }
    )
}

/// The limits an engine cannot enforce, by the names of `sandbox_limits_unenforced`.
#[derive(Debug, Default, PartialEq)]
pub struct Gaps {
    pub missing: Vec<&'static str>,
    pub rootless: bool,
    pub cgroup_v1: bool,
}

/// The limits a sandbox has, by the names `sandbox_limits_unenforced` takes.
pub const LIMITS: &[&str] = &["memory", "swap", "cpu", "pids"];

impl Gaps {
    pub fn of(info: &bollard::models::SystemInfo) -> Self {
        let no = |v: Option<bool>| v == Some(false);
        let mut missing = Vec::new();
        for (name, v) in [
            ("memory", info.memory_limit),
            ("swap", info.swap_limit),
            ("cpu", info.cpu_cfs_quota),
            ("pids", info.pids_limit),
        ] {
            if no(v) {
                missing.push(name);
            }
        }
        let rootless = info
            .security_options
            .iter()
            .flatten()
            .any(|o| o.split(',').any(|kv| kv == "name=rootless"));
        let cgroup_v1 = matches!(
            info.cgroup_version,
            Some(bollard::models::SystemInfoCgroupVersionEnum::_1)
        );
        Self {
            missing,
            rootless,
            cgroup_v1,
        }
    }

    /// Why the engine cannot, in a sentence.
    pub fn why(&self) -> &'static str {
        match (self.rootless, self.cgroup_v1) {
            (true, true) => {
                "the engine runs rootless on cgroup v1, where an unprivileged engine cannot use cgroups (it needs cgroup v2 with the controllers delegated to its user)"
            }
            (true, false) => {
                "the engine runs rootless and its user was not delegated these cgroup v2 controllers (systemd: Delegate=cpu cpuset io memory pids for user@.service)"
            }
            (false, _) => "the engine's host lacks these cgroup controllers",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(json: serde_json::Value) -> bollard::models::SystemInfo {
        serde_json::from_value(json).unwrap()
    }

    #[test]
    fn a_rootless_engine_on_cgroup_v1_lacks_every_limit_and_says_why() {
        // What rootless dockerd 20.10 answers on this development machine.
        let g = Gaps::of(&info(serde_json::json!({
            "SecurityOptions": ["name=seccomp,profile=default", "name=rootless"],
            "CgroupVersion": "1",
            "MemoryLimit": false, "SwapLimit": false, "CpuCfsQuota": false, "PidsLimit": false
        })));
        assert_eq!(g.missing, vec!["memory", "swap", "cpu", "pids"]);
        assert!(g.rootless && g.cgroup_v1);
        assert!(g.why().starts_with("the engine runs rootless on cgroup v1"));
    }

    #[test]
    fn a_rootful_engine_with_its_controllers_lacks_nothing() {
        let g = Gaps::of(&info(serde_json::json!({
            "SecurityOptions": ["name=seccomp,profile=default"],
            "CgroupVersion": "1",
            "MemoryLimit": true, "SwapLimit": true, "CpuCfsQuota": true, "PidsLimit": true
        })));
        assert!(g.missing.is_empty() && !g.rootless);
        // An engine that says nothing of a limit is not taken to lack it.
        assert!(Gaps::of(&info(serde_json::json!({}))).missing.is_empty());
    }
}
