//! `bridle runs list` and `bridle runs show RUN`.

use std::process::ExitCode;

use bridle_proto as pb;

use crate::conn::{ConnArgs, status};
use crate::kind::Kind;
use crate::output::Format;
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
    /// Follow a run live until it ends; the exit status then says how it ended (0 succeeded,
    /// 1 failed, 3 cancelled). `-o json` prints each event as one line of JSON.
    Watch { run: String },
    /// Cancel a run.
    Cancel {
        run: String,
        #[arg(long, default_value = "")]
        reason: String,
    },
}

pub async fn runs(conn: &ConnArgs, format: Format, c: RunsCommand) -> anyhow::Result<ExitCode> {
    match (&c, format) {
        (
            RunsCommand::List { agent, limit },
            Format::Json | Format::Yaml | Format::Name | Format::Wide,
        ) => {
            let l = crate::get::list_runs(conn, agent.clone(), *limit).await?;
            crate::get::print(format, l, false, Kind::Run)?;
            return Ok(ExitCode::SUCCESS);
        }
        (RunsCommand::Show { run }, Format::Json | Format::Yaml | Format::Name) => {
            let l = crate::get::fetch(conn, Kind::Run, Some(run)).await?;
            crate::get::print(format, l, true, Kind::Run)?;
            return Ok(ExitCode::SUCCESS);
        }
        (RunsCommand::Watch { run }, _) => {
            return crate::run::watch(conn, run, crate::run::WatchFormat::of(format)?).await;
        }
        (RunsCommand::Cancel { .. }, f) if f != Format::Table => {
            return Err(crate::output::usage(
                "runs cancel prints no listing: -o/--output is for reading commands",
            ));
        }
        _ => {}
    }
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
        RunsCommand::Show { run } => crate::describe::run(conn, &run).await,
        RunsCommand::Watch { run } => {
            crate::run::watch(conn, &run, crate::run::WatchFormat::Text).await
        }
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
