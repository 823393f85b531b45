//! One call in a started sandbox: through its agent when it has one ([`super::agent`]), else
//! `docker exec` of the tool's argv as the sandbox user, with the arguments on stdin and the
//! output captured under its caps, within the wall-clock limit. A `docker exec` call that
//! overruns has its whole sandbox removed (an exec cannot be killed by itself through the
//! API, and whatever it started must die with it). OOM kills are read from the engine's
//! events, since an exec's OOM does not mark the container.

use std::time::Duration;

use bollard::container::LogOutput;
use bollard::exec::{CreateExecOptions, StartExecOptions, StartExecResults};
use bollard::query_parameters::EventsOptionsBuilder;
use futures::StreamExt as _;
use tokio::io::AsyncWriteExt as _;
use tokio::time::Instant;

use super::config::SANDBOX_USER;
use super::container::Sandbox;
use super::engine::{Engine, OP_TIMEOUT, is_not_found};
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
    /// nobody looked yet (a `docker exec` call: the lease asks the engine).
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

pub async fn exec(
    engine: &Engine,
    sandbox: &Sandbox,
    req: ExecRequest,
) -> Result<ExecOutcome, ExecError> {
    if let Some(done) = super::agent::call(sandbox, &req).await {
        return done;
    }
    let docker = &sandbox.docker;
    let id = &sandbox.id;
    let env: Vec<String> = req.env.iter().map(|(k, v)| format!("{k}={v}")).collect();
    let created = tokio::time::timeout(
        OP_TIMEOUT,
        docker.create_exec(
            id,
            CreateExecOptions::<String> {
                cmd: Some(req.argv.clone()),
                env: Some(env),
                user: Some(SANDBOX_USER.into()),
                working_dir: req.workdir.clone(),
                attach_stdin: Some(req.stdin.is_some()),
                attach_stdout: Some(true),
                attach_stderr: Some(true),
                tty: Some(false),
                ..Default::default()
            },
        ),
    )
    .await
    .map_err(|_| engine.timed_out("create an exec"))?;
    let created = match created {
        Ok(c) => c,
        // 404: gone; 409: not running.
        Err(bollard::errors::Error::DockerResponseServerError {
            status_code: 404 | 409,
            ..
        }) => return Err(ExecError::SandboxGone),
        Err(e) => return Err(engine.error("start a call in a sandbox", e).into()),
    };
    let since = std::time::SystemTime::now();
    let started = Instant::now();
    let deadline = started + req.timeout;
    let attached = tokio::time::timeout(
        OP_TIMEOUT,
        docker.start_exec(
            &created.id,
            Some(StartExecOptions {
                detach: false,
                tty: false,
                output_capacity: Some(64 * 1024),
            }),
        ),
    )
    .await
    .map_err(|_| engine.timed_out("start an exec"))?;
    let (mut output, mut input) = match attached {
        Ok(StartExecResults::Attached { output, input }) => (output, input),
        Ok(StartExecResults::Detached) => {
            return Err(Error::Core(bridle_core::Error::internal("exec started detached")).into());
        }
        Err(bollard::errors::Error::DockerResponseServerError {
            status_code: 404 | 409,
            ..
        }) => return Err(ExecError::SandboxGone),
        Err(e) => return Err(engine.error("start a call in a sandbox", e).into()),
    };
    let mut stdout = Capture::new(req.output_bytes, req.slack);
    let mut stderr = Capture::new(req.output_bytes, req.slack);
    let stdin = req.stdin;
    let io = async {
        let write = async {
            if let Some(bytes) = stdin {
                // A tool that exits without reading its stdin closes the pipe: not an error.
                if let Err(e) = input.write_all(&bytes).await {
                    tracing::debug!(error = %e, "stdin not fully written");
                }
                let _ = input.shutdown().await;
            }
        };
        let read = async {
            while let Some(item) = output.next().await {
                match item {
                    Ok(LogOutput::StdOut { message }) | Ok(LogOutput::Console { message }) => {
                        stdout.push(&message)
                    }
                    Ok(LogOutput::StdErr { message }) => stderr.push(&message),
                    Ok(LogOutput::StdIn { .. }) => {}
                    Err(e) => {
                        tracing::debug!(error = %e, "reading a call's output ended");
                        break;
                    }
                }
            }
        };
        futures::join!(write, read);
    };
    let finished = tokio::time::timeout_at(deadline, io).await.is_ok();
    let duration = started.elapsed();
    if !finished {
        // Everything the call started dies with the sandbox; the caller discards it.
        super::guard::remove_now(docker, id).await;
        return Ok(ExecOutcome {
            exit_code: -1,
            stdout,
            stderr,
            duration,
            timed_out: true,
            oom_killed: false,
            vanished: false,
            sandbox_stopped: None,
            left_processes: None,
        });
    }
    let inspected = tokio::time::timeout(OP_TIMEOUT, docker.inspect_exec(&created.id))
        .await
        .map_err(|_| engine.timed_out("inspect an exec"))?;
    let (exit_code, vanished) = match inspected {
        Ok(i) if i.running == Some(true) => (-1, true),
        Ok(i) => match i.exit_code {
            Some(c) => (
                c.clamp(i64::from(i32::MIN), i64::from(i32::MAX)) as i32,
                false,
            ),
            None => (-1, true),
        },
        Err(e) if is_not_found(&e) => (-1, true),
        Err(e) => return Err(engine.error("inspect a call in a sandbox", e).into()),
    };
    // The output also ends when the run's sandbox is removed by EndRun: check it is alive.
    let vanished = vanished || (exit_code == 137 && !alive(sandbox).await);
    let oom_killed = exit_code == 137 && !vanished && oom_since(sandbox, since).await;
    Ok(ExecOutcome {
        exit_code: if vanished { -1 } else { exit_code },
        stdout,
        stderr,
        duration,
        timed_out: false,
        oom_killed,
        vanished,
        sandbox_stopped: None,
        left_processes: None,
    })
}

pub(super) async fn alive(sandbox: &Sandbox) -> bool {
    match tokio::time::timeout(
        OP_TIMEOUT,
        sandbox.docker.inspect_container(&sandbox.id, None),
    )
    .await
    {
        Ok(Ok(i)) => i.state.and_then(|s| s.running).unwrap_or(false),
        _ => false,
    }
}

/// Why a sandbox stopped answering during a call.
pub(super) enum Stopped {
    /// The engine killed it for memory.
    OutOfMemory,
    /// It stopped by itself, with this exit code.
    Exited(i64),
    /// It is gone (EndRun removed it), or still running, or the engine cannot tell.
    Other,
}

/// Why the sandbox stopped, once its state says so (waited for up to a second).
pub(super) async fn why_stopped(sandbox: &Sandbox) -> Stopped {
    for _ in 0..10 {
        let state = tokio::time::timeout(
            OP_TIMEOUT,
            sandbox.docker.inspect_container(&sandbox.id, None),
        )
        .await;
        let Ok(Ok(i)) = state else {
            return Stopped::Other;
        };
        let Some(s) = i.state else {
            return Stopped::Other;
        };
        if s.running != Some(true) {
            return match (s.oom_killed, s.exit_code) {
                (Some(true), _) => Stopped::OutOfMemory,
                (_, Some(code)) => Stopped::Exited(code),
                _ => Stopped::Other,
            };
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Stopped::Other
}

/// Whether the engine reported an OOM kill in the sandbox since the call started. The event
/// can trail the exit by a moment, so an absent one is looked for a few times.
pub(super) async fn oom_since(sandbox: &Sandbox, since: std::time::SystemTime) -> bool {
    let secs = |t: std::time::SystemTime| {
        t.duration_since(std::time::UNIX_EPOCH)
            .map(|d| format!("{}.{:09}", d.as_secs(), d.subsec_nanos()))
            .unwrap_or_default()
    };
    let filters = std::collections::HashMap::from([
        ("container".to_string(), vec![sandbox.id.clone()]),
        ("event".to_string(), vec!["oom".to_string()]),
    ]);
    for attempt in 0..4 {
        if attempt > 0 {
            tokio::time::sleep(Duration::from_millis(150)).await;
        }
        let opts = EventsOptionsBuilder::new()
            .since(&secs(since - Duration::from_secs(1)))
            .until(&secs(std::time::SystemTime::now()))
            .filters(&filters)
            .build();
        let found = tokio::time::timeout(
            Duration::from_secs(5),
            sandbox.docker.events(Some(opts)).next(),
        )
        .await;
        if let Ok(Some(Ok(_))) = found {
            return true;
        }
    }
    false
}
