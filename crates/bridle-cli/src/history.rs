//! `bridle history KIND/NAME`: who changed a manifest, when, and to what.

use std::process::ExitCode;

use bridle_proto as pb;

use crate::conn::{ConnArgs, status};
use crate::out;
use crate::output::Format;

#[derive(clap::Args, Debug)]
pub struct HistoryArgs {
    /// The manifest, as KIND/NAME (`Agent/analyst`, `ModelRoute/main`).
    pub manifest: String,
    /// How many changes, newest first (at most 100 are kept per manifest).
    #[arg(long, default_value_t = 20)]
    pub limit: u32,
    /// Print each version's YAML under its change.
    #[arg(long)]
    pub yaml: bool,
}

/// KIND/NAME split, or a message saying what is wrong.
pub fn parse_target(s: &str) -> Result<(&str, &str), String> {
    match s.split_once('/') {
        Some((k, n)) if !k.is_empty() && !n.is_empty() && !n.contains('/') => Ok((k, n)),
        _ => Err(format!(
            "'{s}' is not KIND/NAME (for example Agent/analyst); kinds: {}",
            bridle_core::manifest::KINDS
        )),
    }
}

/// One line per change: when, what, by whom, and the generation it made.
pub fn render(changes: &[pb::ManifestChange], yaml: bool) -> Vec<String> {
    let mut lines = Vec::new();
    for c in changes {
        let at = humantime::format_rfc3339_millis(
            std::time::UNIX_EPOCH + std::time::Duration::from_millis(c.at_ms.max(0).unsigned_abs()),
        );
        let who = c.actor.as_ref().map_or("unknown".to_string(), |a| {
            match bridle_core::auth::actor_kind_word(a.kind) {
                "anonymous" | "" => "anonymous".to_string(),
                k => format!(
                    "{} '{}' ({})",
                    bridle_core::auth::kind_word(k),
                    a.name,
                    a.id
                ),
            }
        });
        let action = crate::words::manifest_action(c.action);
        let generation = if action == "deleted" {
            String::new()
        } else {
            format!(", generation {}", c.generation)
        };
        lines.push(format!("{at}  {action} by {who}{generation}"));
        if yaml && !c.yaml.is_empty() {
            lines.extend(c.yaml.lines().map(|l| format!("    {l}")));
        }
    }
    lines
}

pub async fn history(conn: &ConnArgs, format: Format, a: HistoryArgs) -> anyhow::Result<ExitCode> {
    crate::output::check_report(format, "history")?;
    // The kind in any of the spellings `get` takes ("agent", "Agent", "routes").
    let target = parse_target(&a.manifest).and_then(|(k, n)| match crate::kind::Kind::parse(k) {
        Ok(crate::kind::Kind::Manifest(k)) => Ok((k, n)),
        _ => Err(format!(
            "'{k}' is not a manifest kind; kinds: {}",
            bridle_core::manifest::KINDS
        )),
    });
    let (kind, name) = match target {
        Ok(t) => t,
        Err(e) => {
            out::err(&format!("bridle history: {e}"));
            return Ok(ExitCode::from(2));
        }
    };
    let mut client = conn.manifests().await?;
    let resp = client
        .history(pb::HistoryRequest {
            tenant: conn.tenant.clone(),
            kind: bridle_core::manifest::kind_value(kind) as i32,
            name: name.into(),
            limit: a.limit,
        })
        .await
        .map_err(|s| status("reading the manifest's history", s))?
        .into_inner();
    if crate::output::report(format, "HistoryResponse", &resp)? {
        return Ok(ExitCode::SUCCESS);
    }
    if resp.changes.is_empty() {
        out::err(&format!(
            "{kind} '{name}' has no recorded changes (never applied, or applied before histories were kept)"
        ));
        return Ok(ExitCode::from(1));
    }
    for l in render(&resp.changes, a.yaml) {
        out::line(&l);
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_are_kind_slash_name() {
        assert_eq!(parse_target("Agent/analyst"), Ok(("Agent", "analyst")));
        assert!(parse_target("analyst").is_err());
        assert!(parse_target("Agent/").is_err());
        assert!(parse_target("Agent/a/b").is_err());
    }

    #[test]
    fn changes_say_who_and_when() {
        let c = pb::ManifestChange {
            action: pb::ManifestAction::Updated as i32,
            generation: 3,
            actor: Some(pb::Actor {
                id: "key_01".into(),
                name: "ci".into(),
                kind: pb::ActorKind::ApiKey as i32,
            }),
            at_ms: 1_796_583_600_000,
            yaml: "kind: Agent\n".into(),
        };
        assert_eq!(
            render(&[c], true),
            [
                "2026-12-06T19:00:00.000Z  updated by API key 'ci' (key_01), generation 3",
                "    kind: Agent",
            ]
        );
    }
}
