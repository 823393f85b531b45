//! One call in a started sandbox: through its agent when it has one ([`super::agent`]), else
//! through its backend ([`super::backend::Backend::exec`]: `docker exec` for Docker), and
//! what a call asks for and how it ended, whichever ran it.

use std::time::Duration;

use super::container::Sandbox;
use super::output::Capture;
use crate::Error;

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

/// Runs `req` in `sandbox`: through its agent, else through its backend.
pub async fn exec(sandbox: &Sandbox, req: ExecRequest) -> Result<ExecOutcome, ExecError> {
    if let Some(done) = super::agent::call(sandbox, &req).await {
        return done;
    }
    sandbox.backend.exec(&sandbox.id, req).await
}
