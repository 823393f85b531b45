//! `bridle describe KIND NAME`: one object in detail. An agent with the tools a run of it
//! would get now, each tool's risk and where that risk came from; a run with its timeline;
//! a manifest with its canonical YAML; anything else field by field.

use std::process::ExitCode;

use bridle_proto as pb;

use bridle_core::redact::preview;

use crate::conn::{ConnArgs, status};
use crate::get;
use crate::kind::Kind;
use crate::output::{self, Format, Item, usage};
use crate::{out, render};
use futures::StreamExt as _;

#[derive(clap::Args)]
pub struct DescribeArgs {
    /// The kind: agent, tool, modelroute, policy, secretbinding, budget, run, approval, key,
    /// model (`KIND/NAME` in one word works too).
    pub kind: String,
    /// Its name (manifests, models) or id (runs, approvals, keys).
    pub name: Option<String>,
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

pub async fn describe(
    conn: &ConnArgs,
    format: Format,
    a: DescribeArgs,
) -> anyhow::Result<ExitCode> {
    let (kind, name) = crate::kind::target(&a.kind, a.name)?;
    let Some(name) = name else {
        return Err(usage(format!(
            "describe needs a name: bridle describe {} NAME (`bridle get {}` lists them)",
            a.kind,
            kind.listed()
        )));
    };
    match (kind, format) {
        (Kind::Manifest("Agent"), _) => agent(conn, format, &name).await,
        (Kind::Run, Format::Table | Format::Wide) => run(conn, &name).await,
        (Kind::Model, Format::Table | Format::Wide) => {
            let mut routes = get::list_models(conn).await?;
            routes.retain(|r| r.name == name);
            if routes.is_empty() {
                // The same message as `get model NAME`.
                get::fetch(conn, kind, Some(&name)).await?;
            }
            for l in crate::models::render(&routes) {
                out::line(&l);
            }
            Ok(ExitCode::SUCCESS)
        }
        (_, Format::Table | Format::Wide) => {
            let listing = get::fetch(conn, kind, Some(&name)).await?;
            for row in listing.rows {
                for l in human(kind, &row) {
                    out::line(&l);
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        // The machine formats print what `get KIND NAME` prints.
        _ => {
            get::print(
                format,
                get::fetch(conn, kind, Some(&name)).await?,
                true,
                kind,
            )?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// An object other than an agent or a run, for people: its fields, then (for a manifest) its
/// canonical YAML.
fn human(kind: Kind, row: &get::Row) -> Vec<String> {
    let v = &row.item.value;
    let mut lines = Vec::new();
    match kind {
        Kind::Manifest(k) => {
            let name = v.pointer("/metadata/name").and_then(|n| n.as_str());
            let tenant = v.pointer("/metadata/tenant").and_then(|n| n.as_str());
            lines.push(format!(
                "{k} {} (tenant {})",
                name.unwrap_or_default(),
                tenant.unwrap_or(bridle_core::manifest::DEFAULT_TENANT)
            ));
            lines.push("  manifest:".into());
            if let Some(y) = &row.item.yaml {
                lines.extend(y.lines().map(|l| format!("    {l}")));
            }
        }
        _ => {
            lines.push(row.item.name.clone());
            if let Some(o) = v.as_object() {
                let width = o.keys().map(String::len).max().unwrap_or(0);
                for (key, val) in o {
                    let text = match val {
                        serde_json::Value::String(s) => s.clone(),
                        other => other.to_string(),
                    };
                    lines.push(format!("  {key:<width$}  {}", preview(&text, 200)));
                }
            }
        }
    }
    lines
}

async fn agent(conn: &ConnArgs, format: Format, name: &str) -> anyhow::Result<ExitCode> {
    let mut client = conn.orchestrator().await?;
    let d = client
        .describe_agent(pb::DescribeAgentRequest {
            name: name.to_string(),
            tenant: conn.tenant.clone(),
        })
        .await
        .map_err(|s| status(&format!("describing agent '{name}'"), s))?
        .into_inner();
    if !matches!(format, Format::Table | Format::Wide) {
        let item = Item {
            name: format!("Agent/{name}"),
            value: output::proto_json("AgentDescription", &d)?,
            yaml: None,
        };
        output::print_items(format, &[item], true)?;
        return Ok(ExitCode::SUCCESS);
    }
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
            crate::words::tool_kind(t.kind),
            crate::words::risk(t.risk),
            if t.risk_source.is_empty() {
                "-"
            } else {
                &t.risk_source
            }
        ));
    }
    Ok(ExitCode::SUCCESS)
}

/// A run's header and its timeline (`runs show`).
pub async fn run(conn: &ConnArgs, run: &str) -> anyhow::Result<ExitCode> {
    let mut client = conn.orchestrator().await?;
    let run = run.to_string();
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
