//! `bridle describe agent NAME`: an agent and the tools a run of it would get now, with each
//! tool's risk and where that risk came from.

use std::process::ExitCode;

use bridle_proto as pb;

use crate::conn::{ConnArgs, status};
use crate::out;

#[derive(clap::Subcommand)]
pub enum DescribeCommand {
    /// An agent: its route, budget and tools, each tool with its risk and where the risk came
    /// from (the manifest, an MCP server's annotations, riskOverrides, or MCP's default).
    Agent { name: String },
}

fn risk(r: i32) -> String {
    pb::RiskClass::try_from(r)
        .unwrap_or(pb::RiskClass::Unspecified)
        .as_str_name()
        .trim_start_matches("RISK_CLASS_")
        .to_lowercase()
}

fn budget(b: Option<&pb::Budget>) -> String {
    let Some(b) = b else {
        return "-".into();
    };
    let mut parts = vec![format!("{} steps", b.max_steps)];
    if b.max_tokens > 0 {
        parts.push(format!("{} tokens", b.max_tokens));
    }
    if b.max_cost_nano_usd > 0 {
        parts.push(format!("${:.4}", b.max_cost_nano_usd as f64 / 1e9));
    }
    if let Some(d) = &b.max_wall_time {
        let d = std::time::Duration::new(
            u64::try_from(d.seconds).unwrap_or(0),
            u32::try_from(d.nanos).unwrap_or(0),
        );
        parts.push(format!("{} wall time", humantime::format_duration(d)));
    }
    parts.join(", ")
}

pub async fn describe(conn: &ConnArgs, c: DescribeCommand) -> anyhow::Result<ExitCode> {
    let mut client = conn.orchestrator().await?;
    match c {
        DescribeCommand::Agent { name } => {
            let d = client
                .describe_agent(pb::DescribeAgentRequest {
                    name: name.clone(),
                    tenant: conn.tenant.clone(),
                })
                .await
                .map_err(|s| status(&format!("describing agent '{name}'"), s))?
                .into_inner();
            let a = d.agent.unwrap_or_default();
            out::line(&format!("Agent {} (tenant {})", a.name, a.tenant));
            if !a.description.is_empty() {
                out::line(&format!("  description: {}", a.description));
            }
            out::line(&format!("  route:       {}", a.route));
            out::line(&format!("  budget:      {}", budget(a.budget.as_ref())));
            if d.tools.is_empty() {
                out::line("  tools:       none");
                return Ok(ExitCode::SUCCESS);
            }
            let width = d
                .tools
                .iter()
                .map(|t| t.name.len())
                .max()
                .unwrap_or(4)
                .max(4);
            out::line("  tools:");
            out::line(&format!(
                "    {:<width$}  {:<10}  {:<11}  RISK FROM",
                "NAME", "KIND", "RISK"
            ));
            for t in &d.tools {
                out::line(&format!(
                    "    {:<width$}  {:<10}  {:<11}  {}",
                    t.name,
                    t.kind,
                    risk(t.risk),
                    if t.risk_source.is_empty() {
                        "-"
                    } else {
                        &t.risk_source
                    }
                ));
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}
