//! The seam between sandboxes and what runs them. Every operation on the engine a sandbox
//! needs (create and start one, run a call in it when it has no agent, look at its state and
//! processes, remove it, find the service's sandboxes by label) goes through [`Backend`], so
//! the tool kinds, runs, pools and calls never name an engine. [`super::docker::DockerBackend`]
//! is the one implementation; another (a pod per sandbox through the Kubernetes API) would sit
//! beside it without touching its callers.
//!
//! A sandbox is named by the id its backend gave it. Its hardening is the backend's to
//! enforce: Docker's builds and verifies the container's configuration through
//! [`super::config::build`], and another backend needs its own equivalent.
//!
//! What a call asks for and how it ended ([`ExecRequest`], [`ExecOutcome`], [`ExecError`]) are
//! the backend's terms ([`Backend::exec`] takes and returns them), and the sandbox's agent
//! answers in the same ones. The guard that removes a sandbox through the backend that made it
//! ([`guard`]) is the backend's too: [`Backend::create`] hands it out.

pub mod guard;

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;

use super::config::SandboxSpec;
use super::output::Capture;
use super::profile::Profile;
use crate::Error;

pub use guard::{Cleanup, ContainerGuard};

/// Bound on one engine operation that should answer quickly (create, inspect, kill, remove).
pub const OP_TIMEOUT: Duration = Duration::from_secs(30);

/// Makes, runs calls in and removes sandboxes. Cheap to share: each sandbox keeps an
/// `Arc<dyn Backend>` to be removed through whatever made it.
#[tonic::async_trait]
pub trait Backend: Send + Sync {
    /// Creates and starts the sandbox of `spec` (its main process, environment, labels and
    /// slot mounts already decided), with the egress forwarder beside its main process when
    /// `profile.egress`, and its main process's stdio attached when `spec.stdin`. The
    /// sandbox is guarded from the moment it exists: a failure or a dropped future removes
    /// it. `at_start` in the failure says it was made but would not start (the caller may try
    /// again without the agent).
    async fn create(
        self: Arc<Self>,
        profile: &Profile,
        spec: SandboxSpec,
    ) -> Result<Created, Failed>;

    /// Runs one call in the sandbox `id` without an agent (a process started by the engine
    /// in the sandbox, as the sandbox user), killing the sandbox when it overruns.
    async fn exec(&self, id: &str, req: ExecRequest) -> Result<ExecOutcome, ExecError>;

    /// Whether the sandbox is running.
    async fn alive(&self, id: &str) -> bool;

    /// Why the sandbox stopped answering during a call, once its state says so.
    async fn why_stopped(&self, id: &str) -> Stopped;

    /// Whether the sandbox had a process killed for memory since `since`.
    async fn oom_since(&self, id: &str, since: SystemTime) -> bool;

    /// The processes running in the sandbox now; None when it cannot be looked at.
    async fn processes(&self, id: &str) -> Option<Vec<Process>>;

    /// Removes the sandbox now, killing whatever runs in it; true when it existed. Failures
    /// are logged: the caller has nothing better to do with them.
    async fn remove(&self, id: &str) -> bool;

    /// Removes every sandbox carrying all of `labels` (running or not); returns how many.
    async fn remove_labelled(&self, labels: &BTreeMap<String, String>) -> u32;

    /// Removes the sandboxes of other instances of this service (label namespace `ns`,
    /// instance label not `instance`) stopped for at least `grace`; returns how many.
    async fn sweep_orphans(&self, ns: &str, instance: &str, grace: Duration) -> u32;

    /// Whether the backend can run sandboxes under the OCI runtime `name`, when it can tell
    /// within a few seconds (None: it does not answer; the call will say so).
    async fn has_runtime(&self, name: &str) -> Option<Result<(), Error>>;
}

/// A started sandbox, as its backend returns it.
pub struct Created {
    pub id: String,
    /// Removes the sandbox when dropped still armed.
    pub guard: ContainerGuard,
    /// The main process's stdio, when the spec asked for it.
    pub stdio: Option<MainStdio>,
}

/// Why a create failed; `at_start` when the sandbox was made but would not start.
pub struct Failed {
    pub error: Error,
    pub at_start: bool,
}

/// Why a sandbox stopped answering during a call.
pub enum Stopped {
    /// The engine killed it for memory.
    OutOfMemory,
    /// It stopped by itself, with this exit code.
    Exited(i64),
    /// It is gone (EndRun removed it), or still running, or the engine cannot tell.
    Other,
}

/// One process in a sandbox.
#[derive(Debug)]
pub struct Process {
    /// Its pid on the host (or wherever the backend counts them).
    pub pid: String,
    /// Its command line ("sleep infinity").
    pub command: String,
}

/// Host pids of `processes`.
pub fn pids(processes: Vec<Process>) -> HashSet<String> {
    processes.into_iter().map(|p| p.pid).collect()
}

/// What a sandbox's main process wrote, by stream.
pub enum Chunk {
    Stdout(Bytes),
    Stderr(Bytes),
}

/// The attached stdio of a sandbox's main process (MCP stdio servers).
pub struct MainStdio {
    pub output:
        std::pin::Pin<Box<dyn futures::Stream<Item = Result<Chunk, std::io::Error>> + Send>>,
    pub input: std::pin::Pin<Box<dyn tokio::io::AsyncWrite + Send>>,
}

/// What to run in the sandbox.
#[derive(Debug)]
pub struct ExecRequest {
    pub argv: Vec<String>,
    pub env: Vec<(String, String)>,
    pub workdir: Option<String>,
    /// Written to stdin, which is then closed; None = no stdin.
    pub stdin: Option<Vec<u8>>,
    pub timeout: Duration,
    pub output_bytes: usize,
    /// Bytes kept past the cap so secrets at the cut are redacted whole.
    pub slack: usize,
}

/// How a call ended. Output is raw: the caller redacts it.
#[derive(Debug)]
pub struct ExecOutcome {
    /// -1 when killed for the timeout or removed.
    pub exit_code: i32,
    pub stdout: Capture,
    pub stderr: Capture,
    pub duration: Duration,
    pub timed_out: bool,
    pub oom_killed: bool,
    /// The sandbox was removed under the call (the run ended).
    pub vanished: bool,
    /// The sandbox itself stopped during the call, with this exit code (not removed, not out
    /// of memory): under gVisor, what a fork past `limits.pids` does to its kernel.
    pub sandbox_stopped: Option<i64>,
    /// Whether the call left processes running, as the sandbox's agent saw; None when
    /// nobody looked yet (a call through the backend: the lease asks it).
    pub left_processes: Option<bool>,
}

/// Why an exec could not start: the sandbox is dead (take another) or something else.
pub enum ExecError {
    SandboxGone,
    Other(Error),
}

impl From<Error> for ExecError {
    fn from(e: Error) -> Self {
        ExecError::Other(e)
    }
}
