use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};

use bridle_core::config::{self, ServerOptions};

/// The longest `approval_retention` accepted.
const MAX_RETENTION: Duration = Duration::from_secs(100 * 365 * 24 * 3600);

/// Options of the approvals service (`BRIDLE_APPROVALS_*` env, or keys in its config file).
#[derive(Clone, Debug, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(default)]
pub struct Options {
    #[serde(flatten)]
    pub server: ServerOptions,
    /// Redis holding approvals, their indexes, the event stream and the audit trail.
    pub redis_url: String,
    /// Prefix of every key this deployment writes.
    pub key_prefix: String,
    /// How long a pending approval lives when the request does not say.
    #[serde(with = "humantime_serde")]
    #[schemars(with = "String")]
    pub approval_ttl: Duration,
    /// How often the expiry sweeper looks for pending approvals past their expiry.
    #[serde(with = "humantime_serde")]
    #[schemars(with = "String")]
    pub sweep_interval: Duration,
    /// Audit entries older than this are dropped from the trail (by their stream id's time);
    /// export them first (`bridle audit export`) if they must be kept longer.
    #[serde(with = "humantime_serde")]
    #[schemars(with = "String")]
    pub audit_retention: Duration,
    /// How long an approval is kept once it is final (approved, denied or expired): its
    /// record and call binding then expire, its index entries and its Watch events are
    /// dropped. Pending approvals are never dropped (they expire by `approval_ttl` first).
    #[serde(with = "humantime_serde")]
    #[schemars(with = "String")]
    pub approval_retention: Duration,
    /// The web inbox (`[inbox]`, `BRIDLE_APPROVALS_INBOX__LISTEN`, ...).
    pub inbox: InboxOptions,
    /// The webhook posted for every new pending approval (`[webhook]`,
    /// `BRIDLE_APPROVALS_WEBHOOK__URL`, ...).
    pub webhook: WebhookOptions,
}

/// The web inbox: server-rendered pages on a second (HTTP) listener.
#[derive(Clone, Debug, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(default)]
pub struct InboxOptions {
    /// Address of the inbox; unset = no inbox. Port 0 picks a free port.
    pub listen: Option<SocketAddr>,
    /// Write the inbox's bound address here once listening (for supervisors and tests).
    pub addr_file: Option<PathBuf>,
    /// The inbox as people reach it ("https://approvals.example.com"), for links in webhook
    /// messages.
    pub public_url: Option<String>,
    /// Mark cookies `Secure` (set this when the inbox is served over HTTPS, as it must be
    /// anywhere but a developer's machine).
    pub secure_cookies: bool,
    /// How long a login lasts.
    #[serde(with = "humantime_serde")]
    #[schemars(with = "String")]
    pub session_ttl: Duration,
    /// How long a client has to send a request's headers, counted from when its connection
    /// opened or its previous response was sent (so idle kept-alive connections close too);
    /// then the connection is closed without an answer.
    #[serde(with = "humantime_serde")]
    #[schemars(with = "String")]
    pub header_read_timeout: Duration,
    /// How long a client has to send a request's body once its headers are in; then it gets
    /// 408 and the connection is closed.
    #[serde(with = "humantime_serde")]
    #[schemars(with = "String")]
    pub body_read_timeout: Duration,
    /// Largest request body accepted (413 past it); the inbox's forms need a few KiB.
    pub max_body_bytes: usize,
    /// People log in with their identity provider (OpenID Connect authorization code flow with
    /// PKCE) instead of pasting an API key. Unset: API keys only.
    pub oidc_login: Option<OidcLogin>,
}

/// The inbox's OIDC login: which issuer, and the client the inbox is registered as there (a
/// public client; its redirect URI is `<public_url>/login/oidc/callback`, or the inbox's own
/// address when `public_url` is unset).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct OidcLogin {
    /// The issuer: one of the server's `oidc` issuers, whose `audiences` include `client_id`
    /// (the ID token it gives is checked as any of its tokens).
    pub issuer: String,
    /// The client id the inbox is registered with at the issuer.
    pub client_id: String,
    /// Scopes asked for; `openid` must be one.
    #[serde(default = "default_oidc_scopes")]
    pub scopes: Vec<String>,
}

fn default_oidc_scopes() -> Vec<String> {
    ["openid", "profile", "email"].map(String::from).to_vec()
}

impl Default for InboxOptions {
    fn default() -> Self {
        Self {
            listen: None,
            addr_file: None,
            public_url: None,
            secure_cookies: false,
            session_ttl: Duration::from_secs(8 * 3600),
            header_read_timeout: Duration::from_secs(10),
            body_read_timeout: Duration::from_secs(10),
            max_body_bytes: 64 * 1024,
            oidc_login: None,
        }
    }
}

/// A Slack-compatible webhook for new pending approvals.
#[derive(Clone, Debug, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(default)]
pub struct WebhookOptions {
    /// Where to POST; unset = no webhook. A secret (Slack's URLs are bearer tokens): never
    /// logged or written back.
    #[serde(skip_serializing)]
    #[schemars(with = "Option<String>")]
    pub url: Option<SecretString>,
    /// Deadline of one delivery attempt.
    #[serde(with = "humantime_serde")]
    #[schemars(with = "String")]
    pub timeout: Duration,
    /// Attempts per approval before it is given up (logged).
    pub max_attempts: u32,
    /// Wait before the second attempt; doubles each time, up to `max_backoff`.
    #[serde(with = "humantime_serde")]
    #[schemars(with = "String")]
    pub backoff: Duration,
    #[serde(with = "humantime_serde")]
    #[schemars(with = "String")]
    pub max_backoff: Duration,
    /// Put the call's arguments (truncated) in the message. They may hold data that should not
    /// go to chat; turn this off and approvers follow the link to the inbox.
    pub include_arguments: bool,
}

impl Default for WebhookOptions {
    fn default() -> Self {
        Self {
            url: None,
            timeout: Duration::from_secs(10),
            max_attempts: 8,
            backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(60),
            include_arguments: true,
        }
    }
}

impl Default for Options {
    fn default() -> Self {
        Self {
            server: ServerOptions::with_port(50054),
            redis_url: "redis://127.0.0.1:6379".into(),
            key_prefix: "bridle".into(),
            approval_ttl: Duration::from_secs(3600),
            sweep_interval: Duration::from_secs(5),
            audit_retention: Duration::from_secs(90 * 24 * 3600),
            approval_retention: Duration::from_secs(7 * 24 * 3600),
            inbox: InboxOptions::default(),
            webhook: WebhookOptions::default(),
        }
    }
}

impl config::Options for Options {
    const SERVICE: &'static str = "approvals";

    fn server(&self) -> &bridle_core::config::ServerOptions {
        &self.server
    }

    fn validate(&self) -> Vec<String> {
        let mut out = Vec::new();
        self.server.validate(&mut out);
        config::check_redis_url("redis_url", &self.redis_url, &mut out);
        if self.key_prefix.is_empty() {
            out.push("key_prefix: must not be empty".into());
        } else if self.key_prefix.contains(['{', '}']) {
            // The service places its own hash tag; a second one would move keys between slots.
            out.push("key_prefix: must not contain '{' or '}'".into());
        }
        if self.approval_ttl.is_zero() {
            out.push("approval_ttl: must be more than zero".into());
        }
        if let Some(o) = &self.inbox.oidc_login {
            let trusted = self.server.oidc.iter().find(|i| i.issuer == o.issuer);
            match trusted {
                None => out.push(format!(
                    "inbox.oidc_login.issuer: '{}' is not one of the `oidc` issuers, whose tokens the inbox would accept",
                    o.issuer
                )),
                Some(i) if !i.audiences.contains(&o.client_id) => out.push(format!(
                    "inbox.oidc_login.client_id: '{}' is not among the audiences of oidc issuer '{}': its ID tokens would be refused",
                    o.client_id, o.issuer
                )),
                Some(_) => {}
            }
            if o.client_id.is_empty() {
                out.push("inbox.oidc_login.client_id: must not be empty".into());
            }
            if !o.scopes.iter().any(|s| s == "openid") {
                out.push("inbox.oidc_login.scopes: must include openid".into());
            }
        }
        if self.sweep_interval.is_zero() {
            out.push("sweep_interval: must be more than zero".into());
        }
        if self.audit_retention < Duration::from_secs(1) {
            out.push("audit_retention: must be at least 1s".into());
        }
        // Redis expiries are milliseconds from now; past a century is a typo, not a policy.
        if self.approval_retention < Duration::from_secs(1)
            || self.approval_retention > MAX_RETENTION
        {
            out.push(format!(
                "approval_retention: must be at least 1s and at most 100 years (is {})",
                humantime::format_duration(self.approval_retention)
            ));
        }
        if let Some(u) = &self.inbox.public_url {
            config::check_url("inbox.public_url", u, &["http", "https"], &mut out);
        }
        if self.inbox.session_ttl.is_zero() {
            out.push("inbox.session_ttl: must be more than zero".into());
        }
        if self.inbox.header_read_timeout.is_zero() {
            out.push("inbox.header_read_timeout: must be more than zero".into());
        }
        if self.inbox.body_read_timeout.is_zero() {
            out.push("inbox.body_read_timeout: must be more than zero".into());
        }
        if self.inbox.max_body_bytes == 0 {
            out.push("inbox.max_body_bytes: must be more than zero".into());
        }
        if let Some(u) = &self.webhook.url {
            // Not config::check_url: its message quotes the value, and this one is a secret.
            match url::Url::parse(u.expose_secret()) {
                Ok(p) if matches!(p.scheme(), "http" | "https") => {}
                Ok(p) => out.push(format!(
                    "webhook.url: scheme '{}' is not one of http, https",
                    p.scheme()
                )),
                Err(e) => out.push(format!("webhook.url: not a URL ({e})")),
            }
        }
        if self.webhook.max_attempts == 0 {
            out.push("webhook.max_attempts: must be at least 1".into());
        }
        if self.webhook.timeout.is_zero() {
            out.push("webhook.timeout: must be more than zero".into());
        }
        if self.webhook.backoff.is_zero() || self.webhook.max_backoff < self.webhook.backoff {
            out.push(
                "webhook.backoff: must be more than zero and at most webhook.max_backoff".into(),
            );
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use bridle_core::config::Options as _;

    use super::*;

    /// The defaults, plus the internal token every keys-mode service needs (without it the
    /// only complaint is that one: see `the_defaults_need_a_service_identity`).
    fn known() -> Options {
        let mut o = Options::default();
        o.server.internal_token = Some("a-token-of-enough-length".to_string().into());
        o
    }

    #[test]
    fn an_inbox_oidc_login_needs_a_trusted_issuer_that_accepts_its_client() {
        let mut o = known();
        o.inbox.oidc_login = Some(OidcLogin {
            issuer: "https://login.example.com".into(),
            client_id: "bridle-inbox".into(),
            scopes: vec!["email".into()],
        });
        let problems = o.validate();
        assert!(
            problems.iter().any(|p| p.starts_with(
                "inbox.oidc_login.issuer: 'https://login.example.com' is not one of the `oidc` issuers"
            )),
            "{problems:?}"
        );
        assert!(
            problems.contains(&"inbox.oidc_login.scopes: must include openid".to_string()),
            "{problems:?}"
        );
        o.server.oidc = vec![bridle_core::oidc::OidcIssuer {
            issuer: "https://login.example.com".into(),
            audiences: vec!["bridle".into()],
            ..Default::default()
        }];
        let problems = o.validate();
        assert!(
            problems.iter().any(|p| p.starts_with(
                "inbox.oidc_login.client_id: 'bridle-inbox' is not among the audiences"
            )),
            "{problems:?}"
        );
        o.server.oidc[0].audiences.push("bridle-inbox".into());
        o.inbox.oidc_login.as_mut().unwrap().scopes = vec!["openid".into()];
        assert_eq!(o.validate(), Vec::<String>::new());
    }

    #[test]
    fn the_defaults_need_a_service_identity() {
        let problems = Options::default().validate();
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(
            problems[0].starts_with("auth: 'keys' (the default) needs"),
            "{problems:?}"
        );
    }

    #[test]
    fn defaults_are_valid() {
        let o = known();
        assert_eq!(o.server.listen.port(), 50054);
        assert_eq!(o.approval_ttl, Duration::from_secs(3600));
        assert_eq!(o.sweep_interval, Duration::from_secs(5));
        assert_eq!(o.approval_retention, Duration::from_secs(7 * 24 * 3600));
        assert!(o.validate().is_empty(), "{:?}", o.validate());
    }

    #[test]
    fn problems_name_their_key() {
        let o = Options {
            redis_url: "http://x".into(),
            key_prefix: "a{b}".into(),
            approval_ttl: Duration::ZERO,
            sweep_interval: Duration::ZERO,
            approval_retention: Duration::ZERO,
            webhook: WebhookOptions {
                url: Some(SecretString::from("ftp://hooks.example/T0KEN-SECRET")),
                max_attempts: 0,
                ..Default::default()
            },
            inbox: InboxOptions {
                header_read_timeout: Duration::ZERO,
                body_read_timeout: Duration::ZERO,
                max_body_bytes: 0,
                ..Default::default()
            },
            ..known()
        };
        let p = o.validate();
        for key in [
            "redis_url:",
            "key_prefix:",
            "approval_ttl:",
            "sweep_interval:",
            "approval_retention:",
            "webhook.url:",
            "webhook.max_attempts:",
            "inbox.header_read_timeout:",
            "inbox.body_read_timeout:",
            "inbox.max_body_bytes:",
        ] {
            assert!(
                p.iter().any(|m| m.starts_with(key)),
                "{key} missing from {p:?}"
            );
        }
        let centuries = Options {
            approval_retention: Duration::from_secs(200 * 365 * 24 * 3600),
            ..known()
        };
        assert!(
            centuries
                .validate()
                .iter()
                .any(|m| m.starts_with("approval_retention:")),
            "{:?}",
            centuries.validate()
        );
        assert!(
            !p.iter().any(|m| m.contains("T0KEN-SECRET")),
            "the webhook URL is a secret: {p:?}"
        );
    }
}
