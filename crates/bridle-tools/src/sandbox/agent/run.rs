//! One call through a sandbox's agent.

use std::time::Duration;

use tokio::time::Instant;

use super::super::backend::{ExecError, ExecOutcome, ExecRequest, Stopped};
use super::super::output::Capture;
use super::{Conn, Link, State, Target, wire};

/// How long past the call's timeout the agent has to report (it kills the call's processes
/// first) before the sandbox is removed instead.
const REPORT_GRACE: Duration = Duration::from_secs(10);

/// Runs `req` through the agent at `link`, in `sandbox`; None when the sandbox turns out to
/// have no agent (the caller uses `docker exec`).
pub async fn call(
    link: &Link,
    sandbox: Target<'_>,
    req: &ExecRequest,
) -> Option<Result<ExecOutcome, ExecError>> {
    let mut state = link.state.lock().await;
    if let State::Waiting(listener) = &*state {
        let next = link.connect(listener, sandbox).await;
        // One connection per sandbox: nothing else may connect once the agent has (or once
        // there is no agent).
        *state = next;
        let _ = tokio::fs::remove_file(&link.path).await;
    }
    let State::Ready(conn) = &mut *state else {
        return None;
    };
    let r = run(conn, sandbox, req).await;
    if r.as_ref().map_or(true, |(_, lost)| *lost) {
        *state = State::Lost;
    }
    Some(r.map(|(outcome, _)| outcome))
}

/// The outcome, and whether the agent was lost on the way.
async fn run(
    conn: &mut Conn,
    sandbox: Target<'_>,
    req: &ExecRequest,
) -> Result<(ExecOutcome, bool), ExecError> {
    let keep = req.output_bytes.saturating_add(req.slack);
    let request = wire::Request {
        argv: &req.argv,
        env: &req.env,
        cwd: req.workdir.as_deref(),
        timeout_ms: u64::try_from(req.timeout.as_millis()).unwrap_or(u64::MAX),
        keep,
        stdin: req.stdin.is_some(),
    };
    let bytes = wire::encode_request(&request, req.stdin.as_deref()).map_err(|e| {
        ExecError::Other(crate::Error::Core(bridle_core::Error::internal(format!(
            "cannot send the call to the sandbox agent: {e}"
        ))))
    })?;
    let since = std::time::SystemTime::now();
    let started = Instant::now();
    if wire::write_all(&mut conn.w, &bytes).await.is_err() {
        // Nothing ran: the sandbox is dead or broken; the caller takes another.
        return Err(ExecError::SandboxGone);
    }
    let mut stdout = Capture::new(req.output_bytes, req.slack);
    let mut stderr = Capture::new(req.output_bytes, req.slack);
    let read = async {
        loop {
            match wire::read_frame(&mut conn.r).await? {
                (wire::STDOUT, b) => stdout.push(&b),
                (wire::STDERR, b) => stderr.push(&b),
                (wire::EXIT, b) => {
                    return serde_json::from_slice::<wire::Exit>(&b).map_err(std::io::Error::other);
                }
                (kind, _) => {
                    return Err(std::io::Error::other(format!(
                        "unexpected frame {kind} from the sandbox agent"
                    )));
                }
            }
        }
    };
    let ended = tokio::time::timeout_at(started + req.timeout + REPORT_GRACE, read).await;
    let duration = started.elapsed();
    let outcome = move |exit_code, timed_out, oom_killed, vanished, left| ExecOutcome {
        exit_code,
        stdout,
        stderr,
        duration,
        timed_out,
        oom_killed,
        vanished,
        sandbox_stopped: None,
        left_processes: Some(left),
    };
    let exit = match ended {
        Ok(Ok(exit)) => exit,
        Err(_) => {
            // The agent did not report (stopped, or flooded): the sandbox goes, and everything
            // in it.
            tracing::warn!(sandbox = %sandbox.short, "the sandbox agent did not report after the timeout; removing the sandbox");
            sandbox.backend.remove(sandbox.id).await;
            return Ok((outcome(-1, true, false, false, true), true));
        }
        Ok(Err(e)) => {
            // The engine killed the sandbox for memory: under gVisor its kernel goes, agent and
            // all (under runc only the tool's process is killed, and the agent reports it).
            match sandbox.backend.why_stopped(sandbox.id).await {
                Stopped::OutOfMemory => {
                    return Ok((outcome(137, false, true, false, true), true));
                }
                // The engine's OOM flag can trail the exit under gVisor (its OOM event comes
                // after the exit event); the event itself settles it.
                Stopped::Exited(137) if sandbox.backend.oom_since(sandbox.id, since).await => {
                    return Ok((outcome(137, false, true, false, true), true));
                }
                Stopped::Exited(code) => {
                    let mut o = outcome(-1, false, false, false, true);
                    o.sandbox_stopped = Some(code);
                    return Ok((o, true));
                }
                Stopped::Other => {}
            }
            // Removed by EndRun, or the agent died (killed by the tool's own code).
            let gone = !sandbox.backend.alive(sandbox.id).await;
            if !gone {
                tracing::warn!(sandbox = %sandbox.short, error = %e, "lost the sandbox agent during a call; the sandbox is discarded");
            }
            return Ok((outcome(-1, false, false, gone, true), true));
        }
    };
    let code = i32::try_from(exit.code).unwrap_or(-1);
    let oom_killed =
        !exit.timed_out && code == 137 && sandbox.backend.oom_since(sandbox.id, since).await;
    let exit_code = if exit.timed_out { -1 } else { code };
    let mut o = outcome(
        exit_code,
        exit.timed_out,
        oom_killed,
        false,
        exit.leftover > 0,
    );
    // Only what is kept was sent; the rest was counted, for the truncation marker.
    let (out, err) = (o.stdout.total(), o.stderr.total());
    o.stdout.skipped(exit.out.saturating_sub(out));
    o.stderr.skipped(exit.err.saturating_sub(err));
    Ok((o, false))
}
