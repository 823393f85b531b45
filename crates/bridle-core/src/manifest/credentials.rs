//! Keeping credentials out of manifests: credential-looking fields must hold `secret://`
//! references, and no string anywhere may look like a known key format.

use std::sync::LazyLock;

use regex::Regex;

use crate::yaml::{Node, Value};

pub const SECRET_SCHEME: &str = "secret://";

/// A reference to a secret the broker resolves ("secret://openai-api-key").
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct SecretRef(String);

impl SecretRef {
    /// Parses "secret://name" (or a bare name).
    pub fn parse(s: &str) -> Result<Self, String> {
        let name = s.strip_prefix(SECRET_SCHEME).unwrap_or(s);
        crate::ids::check_name(name).map_err(|e| format!("secret name {e}"))?;
        Ok(SecretRef(name.to_string()))
    }

    pub fn is_reference(s: &str) -> bool {
        s.starts_with(SECRET_SCHEME)
    }

    pub fn name(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for SecretRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{SECRET_SCHEME}{}", self.0)
    }
}

struct KeyFormat {
    what: &'static str,
    re: Regex,
}

static KEY_FORMATS: LazyLock<Vec<KeyFormat>> = LazyLock::new(|| {
    [
        (
            "an OpenAI API key",
            r"\bsk-(proj-|svcacct-|admin-)?[A-Za-z0-9_\-]{20,}",
        ),
        ("an Anthropic API key", r"\bsk-ant-[A-Za-z0-9_\-]{20,}"),
        ("an AWS access key id", r"\b(AKIA|ASIA)[0-9A-Z]{16}\b"),
        (
            "a GitHub token",
            r"\b(ghp|gho|ghu|ghs|ghr)_[A-Za-z0-9]{36,}",
        ),
        ("a GitHub token", r"\bgithub_pat_[A-Za-z0-9_]{40,}"),
        ("a Slack token", r"\bxox[abprs]-[A-Za-z0-9\-]{10,}"),
        ("a Google API key", r"\bAIza[0-9A-Za-z_\-]{35}"),
        ("a private key", r"-----BEGIN [A-Z ]*PRIVATE KEY-----"),
        ("a Vault token", r"\bhv[sbr]\.[A-Za-z0-9_\-]{20,}"),
    ]
    .into_iter()
    .filter_map(|(what, re)| Regex::new(re).ok().map(|re| KeyFormat { what, re }))
    .collect()
});

/// Field names whose values are credentials and so must be references.
fn is_credential_field(key: &str) -> bool {
    let k: String = key
        .chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .collect::<String>()
        .to_ascii_lowercase();
    const EXACT: &[&str] = &[
        "apikey",
        "token",
        "password",
        "passwd",
        "secret",
        "authorization",
        "accesskey",
        "secretkey",
        "privatekey",
        "clientsecret",
        "bearer",
        "credentials",
        "xapikey",
    ];
    EXACT.contains(&k.as_str())
        || k.ends_with("apikey")
        || k.ends_with("secret")
        || k.ends_with("password")
        || k.ends_with("token")
        || k.ends_with("accesskey")
        || k.ends_with("privatekey")
}

/// Finds a known key format in `s`.
pub fn looks_like_key(s: &str) -> Option<&'static str> {
    KEY_FORMATS
        .iter()
        .find(|k| k.re.is_match(s))
        .map(|k| k.what)
}

/// Walks the whole document; pushes (field, message) for each literal credential.
pub(super) fn check_document(v: &Node, out: &mut Vec<(String, String)>) {
    walk(v, String::new(), None, out);
}

fn walk(v: &Node, path: String, key: Option<&str>, out: &mut Vec<(String, String)>) {
    match &v.value {
        Value::Map(m) => {
            for (k, child) in m {
                let k = k.as_str().unwrap_or_default();
                let p = if path.is_empty() {
                    k.to_string()
                } else {
                    format!("{path}.{k}")
                };
                walk(child, p, Some(k), out);
            }
        }
        Value::Seq(s) => {
            for (i, child) in s.iter().enumerate() {
                walk(child, format!("{path}[{i}]"), key, out);
            }
        }
        Value::Str(s) => {
            if let Some(what) = looks_like_key(s) {
                out.push((
                    path,
                    format!(
                        "holds what looks like {what}; store it in Vault/OpenBao and write a \
                         secret://<name> reference instead"
                    ),
                ));
            } else if key.is_some_and(is_credential_field)
                && !s.is_empty()
                && !SecretRef::is_reference(s)
            {
                out.push((
                    path,
                    "is a credential field and must be a secret://<name> reference, not a \
                     literal value"
                        .into(),
                ));
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_formats() {
        assert!(looks_like_key("sk-proj-abcdefghijklmnopqrstuvwxyz012345").is_some());
        assert!(looks_like_key("AKIAIOSFODNN7EXAMPLE").is_some());
        assert!(looks_like_key("xoxb-123456789012-abcdef").is_some());
        assert!(looks_like_key("use the sk-learn library").is_none());
        assert!(looks_like_key("secret://openai").is_none());
    }

    #[test]
    fn credential_fields() {
        for k in [
            "apiKey",
            "api_key",
            "OPENAI_API_KEY",
            "token",
            "GITHUB_TOKEN",
            "password",
            "Authorization",
            "clientSecret",
        ] {
            assert!(is_credential_field(k), "{k}");
        }
        for k in [
            "maxTokens",
            "maxOutputTokens",
            "model",
            "name",
            "tokens",
            "keyword",
        ] {
            assert!(!is_credential_field(k), "{k}");
        }
    }

    #[test]
    fn refs() {
        assert_eq!(
            SecretRef::parse("secret://openai-key").unwrap().name(),
            "openai-key"
        );
        assert!(SecretRef::parse("secret://Bad Name").is_err());
    }
}
