//! `bridle spend`: what the tenant spent on models (agent runs and gateway calls alike), from
//! the router's hourly spend ledger, grouped by person, end user, API key, agent or model.

#![allow(
    clippy::needless_update,
    reason = "requests end in ..Default::default(), so a field added to a request (a page token) needs no change here"
)]

use std::process::ExitCode;

use bridle_proto as pb;

use crate::conn::{ConnArgs, status};
use crate::models::{table, usd};
use crate::out;
use crate::output::Format;

#[derive(clap::Args, Debug)]
pub struct SpendArgs {
    /// Group by these, in order (comma-separated): user, end_user, api_key, agent, model.
    /// None: one total.
    #[arg(long, value_delimiter = ',')]
    pub by: Vec<String>,
    /// From the start of the hour this long ago until now (at most 400 days).
    #[arg(long, default_value = "24h", value_parser = humantime::parse_duration)]
    pub since: std::time::Duration,
}

/// The lines that show a report: a header, a row per group (dearest first), and the total.
pub fn render(r: &pb::GetSpendResponse) -> Vec<String> {
    let from = humantime::format_rfc3339_seconds(
        std::time::UNIX_EPOCH + std::time::Duration::from_secs(r.from_unix.max(0).unsigned_abs()),
    );
    let mut rows: Vec<Vec<String>> = Vec::new();
    let mut head: Vec<String> = r.by.iter().map(|b| b.to_uppercase()).collect();
    head.extend(["COST".to_string(), "CALLS".to_string()]);
    rows.push(head);
    for row in &r.rows {
        let mut cells: Vec<String> = row
            .values
            .iter()
            .map(|v| {
                if v.is_empty() {
                    "(none)".to_string()
                } else {
                    v.clone()
                }
            })
            .collect();
        cells.extend([usd(row.nano_usd), row.calls.to_string()]);
        rows.push(cells);
    }
    let mut total = vec![String::new(); r.by.len()];
    if let Some(first) = total.first_mut() {
        *first = "total".into();
    }
    total.extend([usd(r.total_nano_usd), r.calls.to_string()]);
    if r.by.is_empty() {
        rows[0].insert(0, String::new());
        total.insert(0, "total".into());
    }
    rows.push(total);
    let mut lines = table(&rows);
    lines.push(format!("since {from} (UTC), from the spend ledger"));
    if r.unpriced_calls > 0 {
        lines.push(format!(
            "{} more call(s) were answered by models with no known price, and are in no total \
             (`bridle models` lists them)",
            r.unpriced_calls
        ));
    }
    lines
}

pub async fn spend(conn: &ConnArgs, format: Format, a: SpendArgs) -> anyhow::Result<ExitCode> {
    crate::output::check_report(format, "spend")?;
    let mut client = conn.orchestrator().await?;
    let resp = client
        .get_spend(pb::GetSpendRequest {
            tenant: conn.tenant.clone(),
            since: Some(bridle_core::timeutil::pb_duration(a.since)),
            by: a.by,
            ..Default::default()
        })
        .await
        .map_err(|s| status("reading the spend ledger", s))?
        .into_inner();
    if crate::output::report(format, "GetSpendResponse", &resp)? {
        return Ok(ExitCode::SUCCESS);
    }
    for l in render(&resp) {
        out::line(&l);
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_report_shows_its_groups_and_total() {
        let r = pb::GetSpendResponse {
            by: vec!["user".into()],
            rows: vec![
                pb::SpendRow {
                    values: vec!["oidc:alice".into()],
                    nano_usd: 12_400_000_000,
                    calls: 311,
                    unpriced_calls: 0,
                },
                pb::SpendRow {
                    values: vec![String::new()],
                    nano_usd: 800_000_000,
                    calls: 20,
                    unpriced_calls: 2,
                },
            ],
            total_nano_usd: 13_200_000_000,
            calls: 331,
            unpriced_calls: 2,
            from_unix: 1_796_583_600,
        };
        assert_eq!(
            render(&r),
            [
                "USER        COST    CALLS",
                "oidc:alice  $12.40  311",
                "(none)      $0.80   20",
                "total       $13.20  331",
                "since 2026-12-06T19:00:00Z (UTC), from the spend ledger",
                "2 more call(s) were answered by models with no known price, and are in no total (`bridle models` lists them)",
            ]
        );
    }
}
