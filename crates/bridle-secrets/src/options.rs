use std::path::PathBuf;
use std::time::Duration;

use secrecy::SecretString;
use serde::{Deserialize, Serialize};

use bridle_core::config::{self, ServerOptions};

/// Where Kubernetes mounts a pod's ServiceAccount token.
pub const DEFAULT_KUBERNETES_TOKEN_FILE: &str =
    "/var/run/secrets/kubernetes.io/serviceaccount/token";

/// How the broker logs in to Vault.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum VaultAuth {
    /// A token given to it (`vault_token`, VAULT_TOKEN or BAO_TOKEN); renewed, never re-issued.
    #[default]
    Token,
    /// AppRole: `vault_approle_role_id` and a secret id (inline or from a file).
    Approle,
    /// Kubernetes: the pod's ServiceAccount JWT, as `vault_kubernetes_role`.
    Kubernetes,
}

impl VaultAuth {
    pub fn as_str(self) -> &'static str {
        match self {
            VaultAuth::Token => "token",
            VaultAuth::Approle => "approle",
            VaultAuth::Kubernetes => "kubernetes",
        }
    }
}

/// What a name without a SecretBinding resolves to.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Unbound {
    /// Nothing: NOT_FOUND (production).
    #[default]
    Deny,
    /// `<kv_mount>/<path_prefix>/<name>`, for any tool or provider scope of the right service
    /// (`bridle dev`, the quickstart, compose).
    Convention,
}

/// Options of the secrets broker (`BRIDLE_SECRETS_*` env, or `[...]` keys in its config file).
#[derive(Clone, Debug, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(default)]
pub struct Options {
    #[serde(flatten)]
    pub server: ServerOptions,
    /// Redis holding the SecretBinding manifests and the leases of each run.
    pub redis_url: String,
    pub key_prefix: String,
    /// Vault/OpenBao address.
    pub vault_addr: String,
    /// How the broker logs in: token, approle or kubernetes.
    pub vault_auth: VaultAuth,
    /// Token to authenticate with (or set VAULT_TOKEN / BAO_TOKEN), for `vault_auth = token`.
    #[serde(skip_serializing)]
    #[schemars(with = "Option<String>")]
    pub vault_token: Option<SecretString>,
    /// AppRole auth mount (`auth/<mount>/login`).
    pub vault_approle_mount: String,
    pub vault_approle_role_id: String,
    #[serde(skip_serializing)]
    #[schemars(with = "Option<String>")]
    pub vault_approle_secret_id: Option<SecretString>,
    /// A file holding the secret id (read at every login, so it can be rotated).
    pub vault_approle_secret_id_file: Option<PathBuf>,
    /// Kubernetes auth role and mount (`auth/<mount>/login`).
    pub vault_kubernetes_role: String,
    pub vault_kubernetes_mount: String,
    /// The ServiceAccount JWT (read at every login: projected tokens rotate).
    pub vault_kubernetes_token_file: PathBuf,
    /// Deadline of each request to Vault.
    #[serde(with = "humantime_serde")]
    #[schemars(with = "String")]
    pub vault_timeout: Duration,
    /// KV v2 mount of bindings that name none, and of unbound names under `convention`.
    pub kv_mount: String,
    /// Folder under the mount for `unbound = convention`: `<kv_mount>/<path_prefix>/<name>`.
    pub path_prefix: String,
    /// Folder under `kv_mount` where OAuth grants of remote MCP servers are kept, one entry per
    /// tenant and tool (`<kv_mount>/<grants_prefix>/<tenant>/<tool>`). The broker's Vault policy
    /// needs create, read, update and delete on it (data and metadata).
    pub grants_prefix: String,
    /// Field holding the value under `unbound = convention`.
    pub field: String,
    /// Names without a SecretBinding: `deny` (NOT_FOUND) or `convention`.
    pub unbound: Unbound,
    /// How long a KV value is served from memory before Vault is asked again (0 = every time).
    /// Leased values are served for their lease, renewed while their run lives.
    #[serde(with = "humantime_serde")]
    #[schemars(with = "String")]
    pub cache_ttl: Duration,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            server: ServerOptions::with_port(50055),
            redis_url: "redis://127.0.0.1:6379".into(),
            key_prefix: "bridle".into(),
            vault_addr: "http://127.0.0.1:8200".into(),
            vault_auth: VaultAuth::Token,
            vault_token: None,
            vault_approle_mount: "approle".into(),
            vault_approle_role_id: String::new(),
            vault_approle_secret_id: None,
            vault_approle_secret_id_file: None,
            vault_kubernetes_role: String::new(),
            vault_kubernetes_mount: "kubernetes".into(),
            vault_kubernetes_token_file: PathBuf::from(DEFAULT_KUBERNETES_TOKEN_FILE),
            vault_timeout: Duration::from_secs(10),
            kv_mount: "secret".into(),
            path_prefix: "bridle".into(),
            grants_prefix: "bridle-grants".into(),
            field: "value".into(),
            unbound: Unbound::Deny,
            cache_ttl: Duration::from_secs(60),
        }
    }
}

impl Options {
    /// The configured token, else VAULT_TOKEN, else BAO_TOKEN.
    pub fn token(&self) -> Option<SecretString> {
        self.vault_token.clone().or_else(|| {
            std::env::var("VAULT_TOKEN")
                .or_else(|_| std::env::var("BAO_TOKEN"))
                .ok()
                .filter(|t| !t.is_empty())
                .map(SecretString::from)
        })
    }
}

fn check_mount(key: &str, v: &str, out: &mut Vec<String>) {
    if v.is_empty() || v.starts_with('/') || v.ends_with('/') || v.contains("..") {
        out.push(format!(
            "{key}: must be an auth mount path like 'approle' or 'k8s/prod'"
        ));
    }
}

impl config::Options for Options {
    const SERVICE: &'static str = "secrets";

    fn server(&self) -> &bridle_core::config::ServerOptions {
        &self.server
    }

    fn validate(&self) -> Vec<String> {
        let mut out = Vec::new();
        self.server.validate(&mut out);
        config::check_redis_url("redis_url", &self.redis_url, &mut out);
        if self.key_prefix.is_empty() || self.key_prefix.contains(['{', '}']) {
            out.push("key_prefix: must be non-empty and without '{' or '}'".into());
        }
        config::check_url("vault_addr", &self.vault_addr, &["http", "https"], &mut out);
        match self.vault_auth {
            VaultAuth::Token => {
                if self.token().is_none() {
                    out.push(
                        "vault_token: not set (BRIDLE_SECRETS_VAULT_TOKEN, VAULT_TOKEN or BAO_TOKEN), and vault_auth is token"
                            .into(),
                    );
                }
            }
            VaultAuth::Approle => {
                check_mount("vault_approle_mount", &self.vault_approle_mount, &mut out);
                if self.vault_approle_role_id.trim().is_empty() {
                    out.push("vault_approle_role_id: required with vault_auth = approle".into());
                }
                match (
                    &self.vault_approle_secret_id,
                    &self.vault_approle_secret_id_file,
                ) {
                    (None, None) => out.push(
                        "vault_approle_secret_id: set it or vault_approle_secret_id_file with vault_auth = approle"
                            .into(),
                    ),
                    (Some(_), Some(_)) => out.push(
                        "vault_approle_secret_id_file: set either it or vault_approle_secret_id, not both"
                            .into(),
                    ),
                    _ => {}
                }
            }
            VaultAuth::Kubernetes => {
                check_mount(
                    "vault_kubernetes_mount",
                    &self.vault_kubernetes_mount,
                    &mut out,
                );
                if self.vault_kubernetes_role.trim().is_empty() {
                    out.push("vault_kubernetes_role: required with vault_auth = kubernetes".into());
                }
                if self.vault_kubernetes_token_file.as_os_str().is_empty() {
                    out.push(
                        "vault_kubernetes_token_file: must name the ServiceAccount token file"
                            .into(),
                    );
                }
            }
        }
        if self.vault_timeout.is_zero() {
            out.push("vault_timeout: must be more than zero".into());
        }
        for (k, v) in [("kv_mount", &self.kv_mount), ("field", &self.field)] {
            if v.is_empty() || v.contains('/') {
                out.push(format!("{k}: must be a single non-empty path segment"));
            }
        }
        if self.grants_prefix.is_empty()
            || self.grants_prefix.starts_with('/')
            || self.grants_prefix.ends_with('/')
            || self.grants_prefix.contains("..")
        {
            out.push(
                "grants_prefix: must be a non-empty folder path without a leading or trailing '/'"
                    .into(),
            );
        }
        if self.path_prefix.starts_with('/') || self.path_prefix.ends_with('/') {
            out.push("path_prefix: must not start or end with '/'".into());
        }
        out
    }
}

#[cfg(test)]
mod tests;
