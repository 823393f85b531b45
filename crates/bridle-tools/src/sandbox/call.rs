//! One exec-style call (the `container` and `code` kinds) around a leased sandbox: the
//! call's secret files and egress allowlist go in, the command runs, the files it wrote are
//! listed, and the sandbox goes back to the run (or is destroyed when the call timed out, was
//! OOM-killed, or left processes behind, as its agent or else the engine tells).

use std::sync::Arc;

use bridle_core::Shutdown;
use bridle_proto::Scope;

use super::backend::{ExecError, ExecOutcome, ExecRequest};
use super::exec::exec;
use super::profile::Profile;
use super::runs::Sandboxes;
use crate::Error;
use crate::egress::Allowlist;
use crate::workspace::Snapshot;

pub struct ExecCall {
    pub tool: String,
    pub profile: Arc<Profile>,
    pub warm: usize,
    pub request: ExecRequest,
    /// (file name, value) under /run/secrets, for this call only.
    pub secret_files: Vec<(String, String)>,
    pub allow: Option<Arc<Allowlist>>,
    /// Size of the run's workspace, if this call makes it.
    pub quota: u64,
    /// Every value the run resolved so far: a workspace holding one is not snapshotted.
    pub values: bridle_core::redact::Redactor,
}

pub struct CallResult {
    pub outcome: ExecOutcome,
    pub files_written: Vec<String>,
    pub sandbox_id: String,
    /// Why the egress proxy refused what the call tried to reach, each reason once.
    pub egress_refused: Vec<String>,
    /// What the run must be told before the call's output (its workspace was lost).
    pub notice: Option<String>,
}

impl Sandboxes {
    pub async fn exec_call(
        &self,
        scope: &Scope,
        call: ExecCall,
        cleanup: &Shutdown,
    ) -> Result<CallResult, Error> {
        let ExecCall {
            tool,
            profile,
            warm,
            request,
            secret_files,
            allow,
            quota,
            values,
        } = call;
        let mut request = Some(request);
        // A warm sandbox may have died while it waited: one retry on a fresh one.
        for attempt in 0..2 {
            let mut lease = match self.lease(scope, &profile, warm, vec![], quota).await {
                Ok(l) => l,
                // EndRun came while this call was getting its sandbox: cancelled.
                Err(Error::EndedWhileStarting(_)) => return Ok(ended_by_end_run(String::new())),
                // EndRun came between a first sandbox vanishing under this call and the retry.
                Err(Error::RunEnded(_)) if attempt > 0 => {
                    return Ok(ended_by_end_run(String::new()));
                }
                Err(e) => return Err(e),
            };
            let (Some(sb), Some(ws)) = (lease.sandbox(), lease.workspace()) else {
                return Err(Error::Core(bridle_core::Error::internal(
                    "lease without a sandbox",
                )));
            };
            let before = Snapshot::take(ws.clone()).await;
            sb.slot.write_secrets(secret_files.clone()).await?;
            if let (Some(g), Some(a)) = (&sb.gate, &allow) {
                g.open(a.clone(), &tool);
            }
            let req = match request.take() {
                Some(r) => r,
                None => return Err(Error::Core(bridle_core::Error::internal("request reused"))),
            };
            let kept = clone_request(&req);
            let span = tracing::info_span!(
                "run_in_sandbox",
                "otel.kind" = "internal",
                "bridle.sandbox.id" = %sb.short,
            );
            let r = tracing::Instrument::instrument(exec(sb, req), span).await;
            let egress_refused = sb.gate.as_ref().map(|g| g.close()).unwrap_or_default();
            sb.slot.clear_secrets().await;
            let sandbox_id = sb.short.clone();
            match r {
                Ok(mut outcome) => {
                    if lease.run_ended() && !outcome.timed_out {
                        // Killed by EndRun, whatever the exit status says.
                        outcome.vanished = true;
                        outcome.oom_killed = false;
                        outcome.exit_code = -1;
                    }
                    let after = Snapshot::take(ws.clone()).await;
                    let notice = lease.take_notice();
                    // Before the result leaves (and is stored for replays): a completed call's
                    // files are in the snapshot another replica would carry the run on with.
                    if lease.in_run()
                        && !lease.run_ended()
                        && (lease.snapshot_stale() || !after.unchanged_since(&before))
                    {
                        let span = tracing::info_span!("save_workspace", "otel.kind" = "internal");
                        let saved = tracing::Instrument::instrument(
                            self.snapshots
                                .save(&scope.tenant, &scope.run_id, ws, values.clone()),
                            span,
                        )
                        .await;
                        if let Err(e) = &saved {
                            tracing::warn!(run = %scope.run_id, error = %e, "cannot store the run's workspace snapshot; retried after its next call");
                        }
                        lease.set_snapshot_stale(saved.is_err());
                    }
                    let reusable = !(outcome.timed_out
                        || outcome.oom_killed
                        || outcome.vanished
                        || outcome.left_processes == Some(true));
                    if reusable && outcome.left_processes == Some(false) {
                        // The agent saw nothing left running: no need to ask the engine.
                        lease.release_clean().await;
                    } else if reusable {
                        // The answer does not wait for the sandbox's check; the run's next
                        // call does.
                        cleanup.spawn(lease.release(true));
                    } else {
                        lease.release(false).await;
                    }
                    return Ok(CallResult {
                        outcome,
                        files_written: after.written_since(&before),
                        sandbox_id,
                        egress_refused,
                        notice,
                    });
                }
                // EndRun removed the sandbox under the call (the agent's connection dropped
                // before any exit status): the call was cancelled, not lost.
                Err(ExecError::SandboxGone) if lease.run_ended() => {
                    lease.release(false).await;
                    return Ok(ended_by_end_run(sandbox_id));
                }
                Err(ExecError::SandboxGone) if attempt == 0 => {
                    tracing::info!(sandbox = %sandbox_id, "sandbox was gone; retrying the call on a new one");
                    lease.release(false).await;
                    request = Some(kept);
                }
                Err(ExecError::SandboxGone) => {
                    lease.release(false).await;
                    return Err(Error::Core(bridle_core::Error::internal(
                        "the sandbox stopped before the call could start, twice",
                    )));
                }
                Err(ExecError::Other(e)) => {
                    lease.release(false).await;
                    return Err(e);
                }
            }
        }
        Err(Error::Core(bridle_core::Error::internal(
            "unreachable retry",
        )))
    }
}

/// The outcome of a call whose run ended under it (reported as cancelled).
fn ended_by_end_run(sandbox_id: String) -> CallResult {
    CallResult {
        outcome: ExecOutcome {
            exit_code: -1,
            stdout: super::output::Capture::new(0, 0),
            stderr: super::output::Capture::new(0, 0),
            duration: std::time::Duration::ZERO,
            timed_out: false,
            oom_killed: false,
            vanished: true,
            sandbox_stopped: None,
            left_processes: None,
        },
        files_written: vec![],
        sandbox_id,
        egress_refused: vec![],
        notice: None,
    }
}

fn clone_request(r: &ExecRequest) -> ExecRequest {
    ExecRequest {
        argv: r.argv.clone(),
        env: r.env.clone(),
        workdir: r.workdir.clone(),
        stdin: r.stdin.clone(),
        timeout: r.timeout,
        output_bytes: r.output_bytes,
        slack: r.slack,
    }
}
