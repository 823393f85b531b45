//! `bridle audit export --since TIME [--until TIME] [--after ID]`: the approvals audit trail as
//! JSON lines on stdout, for a SIEM. Like `keys bootstrap` it reads Redis directly (an export
//! is an operator's job, run where Redis is reachable). Each line carries its stream `id`; the
//! last one is also printed on stderr, and `--after` that id resumes where an export stopped.

use std::process::ExitCode;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context as _;
use bridle_approvals::audit::{AuditLog, EntryId};
use bridle_core::redis_util::Keys;

use crate::out;

/// Entries read per round trip.
const PAGE: usize = 500;

#[derive(clap::Subcommand)]
pub enum AuditCommand {
    /// Write audit entries as JSON lines, oldest first.
    Export {
        /// Start: an RFC 3339 time ("2026-12-01T00:00:00Z") or an age ("24h", "7d").
        #[arg(long)]
        since: String,
        /// End (exclusive), same forms; default: up to the newest entry.
        #[arg(long)]
        until: Option<String>,
        /// Resume after this entry id (the last id a previous export printed).
        #[arg(long)]
        after: Option<String>,
        #[arg(long, env = "BRIDLE_REDIS_URL")]
        redis_url: String,
        #[arg(long, env = "BRIDLE_KEY_PREFIX", default_value = "bridle")]
        key_prefix: String,
    },
}

/// Milliseconds since the epoch of an RFC 3339 time or of `now - age`.
fn parse_time(flag: &str, s: &str, now: SystemTime) -> anyhow::Result<u64> {
    let t = match humantime::parse_rfc3339_weak(s) {
        Ok(t) => t,
        Err(_) => match humantime::parse_duration(s) {
            Ok(age) => now.checked_sub(age).unwrap_or(UNIX_EPOCH),
            Err(_) => anyhow::bail!(
                "{flag}: '{s}' is neither a time (2026-12-01T00:00:00Z) nor an age (24h, 7d)"
            ),
        },
    };
    let ms = t
        .duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_millis();
    Ok(u64::try_from(ms).unwrap_or(u64::MAX))
}

pub async fn audit(c: AuditCommand) -> anyhow::Result<ExitCode> {
    let AuditCommand::Export {
        since,
        until,
        after,
        redis_url,
        key_prefix,
    } = c;
    let now = SystemTime::now();
    let since_ms = parse_time("--since", &since, now)?;
    let until_ms = until
        .as_deref()
        .map(|u| parse_time("--until", u, now))
        .transpose()?;
    let mut after = after
        .as_deref()
        .map(EntryId::parse)
        .transpose()
        .map_err(|e| anyhow::anyhow!("--after: {e}"))?;
    let redis = bridle_core::redis_util::connect(&redis_url).await?;
    let log = AuditLog::new(redis, &Keys::new(&key_prefix));
    let mut written = 0u64;
    loop {
        let page = log
            .read(since_ms, after, until_ms, PAGE)
            .await
            .map_err(|e| anyhow::anyhow!("reading the audit trail: {e}"))?;
        for e in &page {
            out::line(&serde_json::to_string(e).context("encoding an audit entry")?);
            after = Some(EntryId::parse(&e.id).map_err(|m| anyhow::anyhow!("{m}"))?);
            written += 1;
        }
        if page.len() < PAGE {
            break;
        }
    }
    match after {
        Some(last) if written > 0 => out::err(&format!(
            "exported {written} audit entries; last id {last} (resume with --after {last})"
        )),
        _ => out::err("no audit entries in that window"),
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_rfc3339_or_ages_and_anything_else_is_named() {
        let now = UNIX_EPOCH + Duration::from_secs(1_000_000);
        assert_eq!(
            parse_time("--since", "1970-01-01T00:00:10Z", now).unwrap(),
            10_000
        );
        assert_eq!(
            parse_time("--since", "1h", now).unwrap(),
            (1_000_000 - 3600) * 1000
        );
        let e = parse_time("--until", "tomorrow", now)
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("--until: 'tomorrow' is neither"), "{e}");
    }
}
