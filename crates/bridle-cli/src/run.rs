//! `bridle run AGENT --input TEXT [--watch]`.

use std::process::ExitCode;
use std::time::Duration;

use bridle_proto as pb;
use bridle_proto::run_event::Kind;
use futures::StreamExt as _;

use crate::conn::{ConnArgs, status};
use crate::output::Format;
use crate::{out, render};

#[derive(clap::Args)]
pub struct RunArgs {
    /// The agent to run.
    pub agent: String,
    /// What to ask the agent.
    #[arg(long, short = 'i')]
    pub input: String,
    /// Follow the run live until it ends; the exit status then reflects how it ended
    /// (0 succeeded, 1 failed, 3 cancelled).
    #[arg(long, short = 'w')]
    pub watch: bool,
    /// Same key, same run: a retried `bridle run` does not start a second one.
    #[arg(long)]
    pub idempotency_key: Option<String>,
    /// Lower the agent's step budget for this run.
    #[arg(long)]
    pub max_steps: Option<u32>,
    /// The end user this run acts for (an application's own user id), recorded on the run.
    #[arg(long)]
    pub end_user: Option<String>,
}

pub async fn run(conn: &ConnArgs, a: RunArgs) -> anyhow::Result<ExitCode> {
    let mut client = conn.orchestrator().await?;
    let resp = client
        .start_run(pb::StartRunRequest {
            agent: a.agent.clone(),
            input: a.input.clone(),
            idempotency_key: a.idempotency_key.clone().unwrap_or_default(),
            budget: a.max_steps.map(|s| pb::Budget {
                max_steps: s,
                ..Default::default()
            }),
            labels: Default::default(),
            tenant: conn.tenant.clone(),
            tool_call: None,
            end_user: a.end_user.clone().unwrap_or_default(),
        })
        .await
        .map_err(|s| status("starting the run", s))?
        .into_inner();
    let run = resp.run.unwrap_or_default();
    if !resp.created {
        out::err(&format!(
            "idempotency key matched run {}; not starting another",
            run.id
        ));
    }
    if !a.watch {
        out::line(&run.id);
        return Ok(ExitCode::SUCCESS);
    }
    watch(conn, &run.id, WatchFormat::Text).await
}

/// How a watch prints events: for people, or one JSON object per line (a `RunEvent` in
/// canonical proto3 JSON).
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum WatchFormat {
    Text,
    JsonLines,
}

impl WatchFormat {
    pub fn of(f: Format) -> anyhow::Result<WatchFormat> {
        match f {
            Format::Table => Ok(WatchFormat::Text),
            Format::Json => Ok(WatchFormat::JsonLines),
            other => Err(crate::output::usage(format!(
                "a watch prints events as text or, with -o json, one JSON object per line; -o {} is not one of them",
                crate::output::name_of(other)
            ))),
        }
    }
}

/// Follows a run's events until it ends, reconnecting (from the last offset) when the
/// connection drops. Returns the exit status for how the run ended.
pub async fn watch(conn: &ConnArgs, run_id: &str, format: WatchFormat) -> anyhow::Result<ExitCode> {
    let mut after = 0u64;
    let mut failures = 0u32;
    loop {
        let mut client = match conn.orchestrator().await {
            Ok(c) => c,
            Err(e) if failures < 10 => {
                failures += 1;
                out::err(&format!("lost the orchestrator ({e:#}); retrying"));
                tokio::time::sleep(Duration::from_millis(500 * u64::from(failures))).await;
                continue;
            }
            Err(e) => return Err(e),
        };
        let stream = client
            .watch_run(pb::WatchRunRequest {
                run_id: run_id.to_string(),
                from_offset: after,
                follow: true,
            })
            .await;
        let mut stream = match stream {
            Ok(s) => s.into_inner(),
            Err(s) if s.code() == tonic::Code::Unavailable && failures < 10 => {
                failures += 1;
                tokio::time::sleep(Duration::from_millis(500 * u64::from(failures))).await;
                continue;
            }
            Err(s) => return Err(status("watching the run", s)),
        };
        while let Some(item) = stream.next().await {
            let ev = match item {
                Ok(ev) => ev,
                Err(s) => {
                    out::err(&format!(
                        "watch interrupted ({}); resuming from event {after}",
                        s.message()
                    ));
                    break;
                }
            };
            failures = 0;
            after = ev.offset;
            if format == WatchFormat::JsonLines {
                let v = crate::output::proto_json("RunEvent", &ev)?;
                out::line(&serde_json::to_string(&v)?);
            } else {
                for l in render::event(&ev) {
                    out::line(&l);
                }
            }
            if let Some(Kind::RunFinished(f)) = &ev.kind {
                return Ok(exit_for(f.status));
            }
        }
        failures += 1;
        if failures > 10 {
            anyhow::bail!(
                "gave up watching run {run_id} after repeated disconnects; `bridle runs show {run_id}` shows where it is"
            );
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

pub fn exit_for(status: i32) -> ExitCode {
    match pb::RunStatus::try_from(status).unwrap_or(pb::RunStatus::Unspecified) {
        pb::RunStatus::Succeeded => ExitCode::SUCCESS,
        pb::RunStatus::Cancelled => ExitCode::from(3),
        _ => ExitCode::from(1),
    }
}
