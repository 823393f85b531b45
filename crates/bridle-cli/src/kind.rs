//! The kinds `get`, `describe` and `delete` take: every manifest kind, and runs, approvals,
//! API keys and model routes (with their prices), each by any of its usual spellings.

use crate::output::usage;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// A manifest kind, as written in manifests ("Agent", "ModelRoute").
    Manifest(&'static str),
    Run,
    Approval,
    Key,
    Model,
}

/// Every kind with the words that name it (singular, plural, short); the first is canonical.
const NAMES: &[(Kind, &[&str])] = &[
    (Kind::Manifest("Agent"), &["agent", "agents"]),
    (Kind::Manifest("Tool"), &["tool", "tools"]),
    (
        Kind::Manifest("ModelRoute"),
        &["modelroute", "modelroutes", "route", "routes"],
    ),
    (Kind::Manifest("Policy"), &["policy", "policies"]),
    (
        Kind::Manifest("SecretBinding"),
        &["secretbinding", "secretbindings", "binding", "bindings"],
    ),
    (Kind::Manifest("Budget"), &["budget", "budgets"]),
    (Kind::Run, &["run", "runs"]),
    (Kind::Approval, &["approval", "approvals"]),
    (Kind::Key, &["key", "keys", "apikey", "apikeys"]),
    (Kind::Model, &["model", "models"]),
];

impl Kind {
    /// Case-insensitive; `-` and `_` ignored ("model-route", "Secret_Binding").
    pub fn parse(s: &str) -> anyhow::Result<Kind> {
        let norm: String = s
            .chars()
            .filter(|c| *c != '-' && *c != '_')
            .flat_map(char::to_lowercase)
            .collect();
        NAMES
            .iter()
            .find(|(_, words)| words.contains(&norm.as_str()))
            .map(|(k, _)| *k)
            .ok_or_else(|| {
                usage(format!(
                    "'{s}' is not a kind; kinds: {}",
                    NAMES
                        .iter()
                        .map(|(_, w)| w[0])
                        .collect::<Vec<_>>()
                        .join(", ")
                ))
            })
    }

    /// How `-o name` and messages write the kind: a manifest's own kind, else "Run",
    /// "Approval", "Key", "Model".
    pub fn title(self) -> &'static str {
        match self {
            Kind::Manifest(k) => k,
            Kind::Run => "Run",
            Kind::Approval => "Approval",
            Kind::Key => "Key",
            Kind::Model => "Model",
        }
    }

    /// How `bridle get` names every object of the kind ("agents", "modelroutes", "keys").
    pub fn listed(self) -> &'static str {
        NAMES
            .iter()
            .find(|(k, _)| *k == self)
            .and_then(|(_, w)| w.get(1))
            .copied()
            .unwrap_or("")
    }

    /// The kind in a sentence, plural ("agents", "policies").
    pub fn plural(self) -> String {
        match self.word() {
            "policy" => "policies".into(),
            "API key" => "API keys".into(),
            w => format!("{w}s"),
        }
    }

    /// The kind in a sentence ("agent", "model route", "API key").
    pub fn word(self) -> &'static str {
        match self {
            Kind::Manifest("Agent") => "agent",
            Kind::Manifest("Tool") => "tool",
            Kind::Manifest("ModelRoute") => "model route",
            Kind::Manifest("Policy") => "policy",
            Kind::Manifest("SecretBinding") => "secret binding",
            Kind::Manifest("Budget") => "budget",
            Kind::Manifest(_) => "manifest",
            Kind::Run => "run",
            Kind::Approval => "approval",
            Kind::Key => "API key",
            Kind::Model => "model route",
        }
    }
}

/// `KIND NAME`, or `KIND/NAME` in one word (as `-o name` prints it).
pub fn target(kind: &str, name: Option<String>) -> anyhow::Result<(Kind, Option<String>)> {
    match (kind.split_once('/'), name) {
        (Some((k, n)), None) if !n.is_empty() => Ok((Kind::parse(k)?, Some(n.to_string()))),
        (Some(_), Some(extra)) => Err(usage(format!(
            "'{kind}' already names one object; '{extra}' is one too many"
        ))),
        (Some(_), None) => Err(usage(format!("'{kind}' names no object after the '/'"))),
        (None, name) => Ok((Kind::parse(kind)?, name)),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn kinds_are_read_in_their_usual_spellings() {
        assert_eq!(
            Kind::parse("ModelRoute").unwrap(),
            Kind::Manifest("ModelRoute")
        );
        assert_eq!(
            Kind::parse("model-routes").unwrap(),
            Kind::Manifest("ModelRoute")
        );
        assert_eq!(Kind::parse("policies").unwrap(), Kind::Manifest("Policy"));
        assert_eq!(Kind::parse("apikey").unwrap(), Kind::Key);
        let e = Kind::parse("agnet").unwrap_err().to_string();
        assert!(
            e.contains("'agnet' is not a kind; kinds: agent, tool"),
            "{e}"
        );
        assert_eq!(
            target("Agent/a", None).unwrap(),
            (Kind::Manifest("Agent"), Some("a".into()))
        );
        assert!(target("Agent/a", Some("b".into())).is_err());
    }
}
