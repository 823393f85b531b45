//! `bridle approvals list | approve ID | deny ID --reason TEXT`.

use std::process::ExitCode;

use bridle_core::redact::preview;
use bridle_proto as pb;

use crate::conn::{ConnArgs, status};
use crate::kind::Kind;
use crate::out;
use crate::output::Format;

#[derive(clap::Subcommand)]
pub enum ApprovalsCommand {
    /// Pending approvals (or those of a run).
    List {
        #[arg(long)]
        run: Option<String>,
    },
    /// Approve one pending call.
    Approve {
        id: String,
        #[arg(long, default_value = "")]
        reason: String,
        /// Who approves (defaults to $USER).
        #[arg(long)]
        approver: Option<String>,
    },
    /// Deny one pending call; the reason is given to the model.
    Deny {
        id: String,
        #[arg(long)]
        reason: String,
        #[arg(long)]
        approver: Option<String>,
    },
}

fn whoami(a: Option<String>) -> String {
    a.or_else(|| std::env::var("USER").ok())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "cli".into())
}

pub async fn approvals(
    conn: &ConnArgs,
    format: Format,
    c: ApprovalsCommand,
) -> anyhow::Result<ExitCode> {
    match (&c, format) {
        (_, Format::Table) => {}
        (ApprovalsCommand::List { run }, _) => {
            let l = crate::get::list_approvals(conn, run.clone()).await?;
            crate::get::print(format, l, false, Kind::Approval)?;
            return Ok(ExitCode::SUCCESS);
        }
        _ => {
            return Err(crate::output::usage(
                "approvals approve/deny print no listing: -o/--output is for reading commands",
            ));
        }
    }
    let mut client = conn.approvals().await?;
    match c {
        ApprovalsCommand::List { run } => {
            let approvals = crate::get::pending_approvals(conn, run).await?;
            if approvals.is_empty() {
                out::err("no pending approvals");
            }
            for a in approvals {
                out::line(&format!(
                    "{}  run {}  agent {}  tool {}  args {}",
                    a.id,
                    a.run_id,
                    a.agent,
                    a.tool,
                    preview(&a.arguments_json, 120)
                ));
            }
            Ok(ExitCode::SUCCESS)
        }
        ApprovalsCommand::Approve {
            id,
            reason,
            approver,
        } => decide(&mut client, id, true, reason, whoami(approver)).await,
        ApprovalsCommand::Deny {
            id,
            reason,
            approver,
        } => decide(&mut client, id, false, reason, whoami(approver)).await,
    }
}

async fn decide(
    client: &mut bridle_proto::approvals_client::ApprovalsClient<crate::conn::Ch>,
    id: String,
    approve: bool,
    reason: String,
    approver: String,
) -> anyhow::Result<ExitCode> {
    let a = client
        .decide(pb::DecideRequest {
            id,
            approve,
            reason,
            arguments_sha256: String::new(),
            approver,
        })
        .await
        .map_err(|s| status(if approve { "approving" } else { "denying" }, s))?
        .into_inner();
    if a.state == pb::ApprovalState::Pending as i32 {
        // The tool needs approvals from several people (its `approvers.count`).
        out::line(&format!(
            "{}: approval {} of {} added; the run waits for {} more (approved by {})",
            a.id,
            a.approved_by.len(),
            a.approvals_required,
            a.approvals_required
                .saturating_sub(u32::try_from(a.approved_by.len()).unwrap_or(u32::MAX)),
            a.approved_by.join(", ")
        ));
        return Ok(ExitCode::SUCCESS);
    }
    out::line(&format!(
        "{} {} by {} (run {} resumes)",
        a.id,
        if approve { "approved" } else { "denied" },
        a.decided_by,
        a.run_id
    ));
    Ok(ExitCode::SUCCESS)
}
