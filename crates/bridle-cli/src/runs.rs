//! `bridle runs list` and `bridle runs show RUN`.

use std::process::ExitCode;

use bridle_proto as pb;
use futures::StreamExt as _;

use crate::conn::{ConnArgs, status};
use crate::{out, render};

#[derive(clap::Subcommand)]
pub enum RunsCommand {
    /// Recent runs, newest first.
    List {
        /// Only runs of this agent.
        #[arg(long)]
        agent: Option<String>,
        /// How many.
        #[arg(long, default_value_t = 20)]
        limit: u32,
    },
    /// A run's timeline: its steps, model calls, policy decisions, approvals and tool calls,
    /// with durations, tokens and cost.
    Show { run: String },
    /// Follow a run live until it ends.
    Watch { run: String },
    /// Cancel a run.
    Cancel {
        run: String,
        #[arg(long, default_value = "")]
        reason: String,
    },
}

pub async fn runs(conn: &ConnArgs, c: RunsCommand) -> anyhow::Result<ExitCode> {
    let mut client = conn.orchestrator().await?;
    match c {
        RunsCommand::List { agent, limit } => {
            let resp = client
                .list_runs(pb::ListRunsRequest {
                    tenant: conn.tenant.clone(),
                    agent: agent.unwrap_or_default(),
                    status: 0,
                    page_size: limit,
                    page_token: String::new(),
                })
                .await
                .map_err(|s| status("listing runs", s))?
                .into_inner();
            if resp.runs.is_empty() {
                out::err("no runs yet");
            }
            for r in resp.runs {
                let when = r
                    .created_at
                    .as_ref()
                    .and_then(|t| time::OffsetDateTime::from_unix_timestamp(t.seconds).ok())
                    .and_then(|t| {
                        t.format(&time::format_description::well_known::Rfc3339)
                            .ok()
                    })
                    .unwrap_or_default();
                out::line(&format!(
                    "{}  {:<18} {:<18} {}  steps {}  {}  {}{}{}",
                    r.id,
                    r.agent,
                    render::status(r.status),
                    when,
                    r.step,
                    render::tokens(r.usage.as_ref()),
                    render::cost(r.cost.as_ref()),
                    if r.scripted { "  [scripted]" } else { "" },
                    if r.tool_call.is_empty() {
                        String::new()
                    } else {
                        format!("  [call {}]", r.tool_call)
                    }
                ));
            }
            Ok(ExitCode::SUCCESS)
        }
        RunsCommand::Show { run } => {
            let r = client
                .get_run(pb::GetRunRequest {
                    run_id: run.clone(),
                })
                .await
                .map_err(|s| status("reading the run", s))?
                .into_inner();
            out::line(&format!(
                "run {}  agent {}  {}{}  {}",
                r.id,
                r.agent,
                render::status(r.status),
                if r.end_reason != 0 {
                    format!(" ({})", render::reason(r.end_reason))
                } else {
                    String::new()
                },
                if r.scripted {
                    "[scripted: answers replayed from a script, not a model]"
                } else {
                    ""
                }
            ));
            out::line(&format!("input: {}", r.input));
            if let Some(by) = r.started_by.as_ref().filter(|a| !a.id.is_empty()) {
                out::line(&format!(
                    "started by: {}{}",
                    render::actor(by),
                    if r.end_user.is_empty() {
                        String::new()
                    } else {
                        format!(", for end user {}", r.end_user)
                    }
                ));
            }
            if let Some(by) = &r.cancelled_by {
                out::line(&format!("cancelled by: {}", render::actor(by)));
            }
            out::line("");
            let mut stream = client
                .watch_run(pb::WatchRunRequest {
                    run_id: run,
                    from_offset: 0,
                    follow: false,
                })
                .await
                .map_err(|s| status("reading the run's events", s))?
                .into_inner();
            while let Some(ev) = stream.next().await {
                let ev = ev.map_err(|s| status("reading the run's events", s))?;
                for l in render::event(&ev) {
                    out::line(&l);
                }
            }
            if r.status != pb::RunStatus::Succeeded as i32
                && r.status != pb::RunStatus::Failed as i32
                && r.status != pb::RunStatus::Cancelled as i32
            {
                out::line(&format!(
                    "(run is {}; `bridle runs watch {}` follows it)",
                    render::status(r.status),
                    r.id
                ));
            }
            Ok(ExitCode::SUCCESS)
        }
        RunsCommand::Watch { run } => crate::run::watch(conn, &run).await,
        RunsCommand::Cancel { run, reason } => {
            let r = client
                .cancel_run(pb::CancelRunRequest {
                    run_id: run,
                    reason,
                })
                .await
                .map_err(|s| status("cancelling the run", s))?
                .into_inner();
            out::line(&format!("{} {}", r.id, render::status(r.status)));
            Ok(ExitCode::SUCCESS)
        }
    }
}
