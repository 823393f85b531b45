//! The `SecretBinding` kind: a secret's name mapped to where it lives in Vault/OpenBao, and
//! the scopes allowed to resolve it. Owned by the secrets service.
//!
//! ```yaml
//! kind: SecretBinding
//! metadata: {name: openai-api-key}          # what `secret://openai-api-key` means
//! spec:
//!   path: bridle/openai                     # KV v2 (the default engine), under the broker's mount
//!   key: value
//!   grants:
//!     - {agent: "*", provider: main/openai} # the router, for that route target
//! ---
//! kind: SecretBinding
//! metadata: {name: db-password}
//! spec:
//!   engine: dynamic                         # any engine that returns a lease, one per run
//!   path: database/creds/readonly           # the whole API path (GET, or POST with a body)
//!   key: password
//!   grants:
//!     - {agent: analyst, tool: psql}        # the tools service, for that tool
//! ```

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::Problems;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct SecretBindingSpec {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub description: String,
    /// Where the value comes from: a KV v2 entry (default) or a dynamic engine read.
    #[serde(default, skip_serializing_if = "Engine::is_kv2")]
    pub engine: Engine,
    /// KV v2: the secret's path under its mount. Dynamic: the whole API path below `/v1/`
    /// (`database/creds/readonly`, `pki/issue/web`).
    pub path: String,
    /// Field of the secret (or of the dynamic response's data) holding the value.
    #[serde(default = "default_key")]
    pub key: String,
    /// KV v2 mount (default: the broker's `kv_mount`). Not used by dynamic bindings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mount: Option<String>,
    /// Dynamic only: how to read (GET by default; POST for engines that issue on a write,
    /// like `pki/issue/<role>`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<DynamicMethod>,
    /// Dynamic only, with POST: the request body (parameters, never credentials).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub body: BTreeMap<String, serde_json::Value>,
    /// Who may resolve it. No grant, no resolution.
    #[serde(default)]
    pub grants: Vec<Grant>,
    /// KV only: how long one run may use the value, from its first resolution in the run
    /// ("15m"); later resolutions are refused, and the time a caller may keep it never runs
    /// past it. Static secrets otherwise live as long as the run; dynamic ones have leases.
    // A duration written as text ("30s", "5m").
    #[schemars(with = "Option<String>")]
    #[serde(
        default,
        with = "humantime_serde",
        skip_serializing_if = "Option::is_none"
    )]
    pub max_use_time: Option<std::time::Duration>,
}

#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize, schemars::JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Engine {
    /// A KV v2 entry, cached by the broker for its `cache_ttl`.
    #[default]
    Kv2,
    /// A read that may return a lease: one per run, renewed while the run lives, revoked when
    /// it ends.
    Dynamic,
}

impl Engine {
    pub fn is_kv2(&self) -> bool {
        *self == Engine::Kv2
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Engine::Kv2 => "kv2",
            Engine::Dynamic => "dynamic",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, schemars::JsonSchema)]
pub enum DynamicMethod {
    #[serde(rename = "GET", alias = "get")]
    Get,
    #[serde(rename = "POST", alias = "post", alias = "PUT", alias = "put")]
    Post,
}

impl DynamicMethod {
    pub fn as_str(self) -> &'static str {
        match self {
            DynamicMethod::Get => "GET",
            DynamicMethod::Post => "POST",
        }
    }
}

fn default_key() -> String {
    "value".into()
}

/// One scope allowed to resolve the secret: an agent ("*" = any agent of the tenant) using a
/// tool or a model provider target ("route/target").
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Grant {
    /// The agent ("*" = any agent of the tenant).
    #[serde(default = "any")]
    pub agent: String,
    /// The tool the agent's call uses.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool: Option<String>,
    /// The model provider target ("route/target").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider: Option<String>,
}

fn any() -> String {
    "*".into()
}

impl Grant {
    /// Whether this grant covers `agent` calling `tool` (tool scope) or `provider` (model
    /// scope). Exactly one of `tool` and `provider` is non-empty in a valid scope.
    pub fn allows(&self, agent: &str, tool: &str, provider: &str) -> bool {
        let agent_ok = self.agent == "*" || self.agent == agent;
        let target_ok = match (&self.tool, &self.provider) {
            (Some(t), None) => !tool.is_empty() && provider.is_empty() && t == tool,
            (None, Some(p)) => !provider.is_empty() && tool.is_empty() && p == provider,
            _ => false,
        };
        agent_ok && target_ok
    }
}

impl SecretBindingSpec {
    /// Whether any grant covers the scope.
    pub fn grants_to(&self, agent: &str, tool: &str, provider: &str) -> bool {
        self.grants.iter().any(|g| g.allows(agent, tool, provider))
    }
}

/// API paths that are not secrets engines: reading them would mint tokens or change Vault.
const NOT_ENGINES: &[&str] = &["sys", "auth", "identity", "cubbyhole"];

fn bad_path(p: &str) -> bool {
    p.trim().is_empty()
        || p.starts_with('/')
        || p.ends_with('/')
        || p.contains("//")
        || p.split('/').any(|seg| seg == ".." || seg == ".")
        || p.contains(['?', '#', ' '])
}

pub(super) fn validate(s: &SecretBindingSpec, out: &mut Problems) {
    if bad_path(&s.path) {
        out.push((
            "spec.path".into(),
            "must be a relative path without '..', '.', empty segments, spaces, '?' or '#'".into(),
        ));
    }
    if s.key.trim().is_empty() {
        out.push((
            "spec.key".into(),
            "must name the field holding the value".into(),
        ));
    }
    if s.max_use_time.is_some_and(|d| d.is_zero()) {
        out.push(("spec.maxUseTime".into(), "must be more than zero".into()));
    }
    if s.engine == Engine::Dynamic && s.max_use_time.is_some() {
        out.push((
            "spec.maxUseTime".into(),
            "is for static (kv2) secrets: a dynamic secret's lease already ends with its run (set the lease's TTL in Vault)".into(),
        ));
    }
    match s.engine {
        Engine::Kv2 => {
            if let Some(m) = &s.mount
                && (m.is_empty() || m.contains('/'))
            {
                out.push(("spec.mount".into(), "must be a single path segment".into()));
            }
            if s.method.is_some() {
                out.push((
                    "spec.method".into(),
                    "only dynamic bindings (engine: dynamic) take a method".into(),
                ));
            }
            if !s.body.is_empty() {
                out.push((
                    "spec.body".into(),
                    "only dynamic bindings (engine: dynamic) take a body".into(),
                ));
            }
        }
        Engine::Dynamic => {
            if s.mount.is_some() {
                out.push((
                    "spec.mount".into(),
                    "a dynamic binding's path is the whole API path (e.g. database/creds/readonly); leave mount out".into(),
                ));
            }
            let first = s.path.split('/').next().unwrap_or_default();
            if NOT_ENGINES.contains(&first) {
                out.push((
                    "spec.path".into(),
                    format!("'{first}/' is not a secrets engine; a dynamic binding reads from one (e.g. database/creds/readonly)"),
                ));
            } else if !s.path.contains('/') && !bad_path(&s.path) {
                out.push((
                    "spec.path".into(),
                    "must be the engine's mount and the path under it (e.g. database/creds/readonly)".into(),
                ));
            }
            if !s.body.is_empty() && s.method != Some(DynamicMethod::Post) {
                out.push(("spec.body".into(), "is sent only with method: POST".into()));
            }
        }
    }
    if s.grants.is_empty() {
        out.push((
            "spec.grants".into(),
            "must grant the secret to at least one scope (agent and tool or provider)".into(),
        ));
    }
    for (i, g) in s.grants.iter().enumerate() {
        match (&g.tool, &g.provider) {
            (Some(_), Some(_)) | (None, None) => out.push((
                format!("spec.grants[{i}]"),
                "must name exactly one of tool (for the tools service) or provider (\"route/target\", for the router)".into(),
            )),
            (Some(t), None) => {
                if let Err(e) = crate::ids::check_tool_name(t) {
                    out.push((format!("spec.grants[{i}].tool"), e));
                }
            }
            (None, Some(p)) => {
                let ok = p.split_once('/').is_some_and(|(r, t)| {
                    crate::ids::check_name(r).is_ok() && crate::ids::check_name(t).is_ok()
                });
                if !ok {
                    out.push((
                        format!("spec.grants[{i}].provider"),
                        format!("'{p}' is not \"route/target\" (a ModelRoute's name and one of its targets' names)"),
                    ));
                }
            }
        }
        if g.agent != "*"
            && let Err(e) = crate::ids::check_name(&g.agent)
        {
            out.push((format!("spec.grants[{i}].agent"), e));
        }
    }
}
