//! Calls in a Docker sandbox without an agent: `docker exec` of the tool's argv as the
//! sandbox user, with the arguments on stdin and the output captured under its caps, within
//! the wall-clock limit. A call that overruns has its whole sandbox removed (an exec cannot be
//! killed by itself through the API, and whatever it started must die with it).

use bollard::Docker;
use bollard::container::LogOutput;
use bollard::exec::{CreateExecOptions, StartExecOptions, StartExecResults};
use futures::StreamExt as _;
use tokio::io::AsyncWriteExt as _;
use tokio::time::Instant;

use super::super::backend::{ExecError, ExecOutcome, ExecRequest};
use super::super::engine::{Engine, OP_TIMEOUT, is_not_found};
use super::super::output::Capture;
use super::remove::remove_now;
use super::state::{alive, oom_since};
use crate::Error;
use crate::user::SANDBOX_USER;

/// Runs `req` with `docker exec` in container `id`.
pub(super) async fn exec(
    engine: &Engine,
    docker: &Docker,
    id: &str,
    req: ExecRequest,
) -> Result<ExecOutcome, ExecError> {
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
        remove_now(docker, id).await;
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
    let vanished = vanished || (exit_code == 137 && !alive(docker, id).await);
    let oom_killed = exit_code == 137 && !vanished && oom_since(docker, id, since).await;
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
