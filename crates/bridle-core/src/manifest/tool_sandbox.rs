//! The sandboxed tool kinds (`container`, `code`, and the sandbox of an `mcp` stdio server):
//! what runs, its limits, its secrets, its warm pool and its egress allowlist.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::super::Problems;
use super::super::credentials::SecretRef;
use super::check_placeholders;
use super::remote::EgressRule;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ContainerTool {
    /// Container image the command runs in (built or pulled where the tools service runs).
    pub image: String,
    /// argv; `{{name}}` in an element is replaced by the argument `name` (strings as they are,
    /// anything else as JSON). No shell is involved.
    pub command: Vec<String>,
    /// Environment; values may be `secret://name` references, resolved per call.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, String>,
    /// Files under /run/secrets (file name -> `secret://name`), present during a call only.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub secret_files: BTreeMap<String, String>,
    /// Working directory inside the container (default `/workspace`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workdir: Option<String>,
    /// Memory, CPU, process, file and output limits of the sandbox.
    #[serde(default)]
    pub limits: ContainerLimits,
    /// OCI runtime (for example "runsc"); default the engine's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runtime: Option<String>,
    /// Send the arguments object as JSON on stdin (default true).
    #[serde(default = "yes")]
    pub stdin: bool,
    #[serde(default, skip_serializing_if = "PoolSettings::is_default")]
    pub pool: PoolSettings,
    /// Hosts the tool may reach through the egress proxy ("api.github.com", "*.pypi.org",
    /// "10.0.0.5:8080"); empty = no network at all.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub egress: Vec<String>,
    /// Credentials the egress proxy adds to this tool's HTTPS requests for one destination
    /// each: the sandbox never holds them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub credentials: Vec<CredentialBinding>,
}

/// Languages of `code` tools.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Language {
    Python,
    Bash,
}

impl Language {
    pub fn as_str(self) -> &'static str {
        match self {
            Language::Python => "python",
            Language::Bash => "bash",
        }
    }

    /// The locally built sandbox image of the language (deploy/sandbox/build.sh).
    pub fn default_image(self) -> String {
        format!("bridle-sandbox:{}", self.as_str())
    }

    /// The interpreter reading the program from stdin.
    pub fn argv(self) -> Vec<String> {
        match self {
            Language::Python => vec!["python3".into(), "-".into()],
            Language::Bash => vec!["bash".into(), "-s".into()],
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct CodeTool {
    pub language: Language,
    /// Default `bridle-sandbox:<language>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// The argument that holds the source (default "code"); the other arguments are in the
    /// `BRIDLE_ARGS` environment variable as JSON.
    #[serde(default = "default_code_argument")]
    pub argument: String,
    /// Environment; values may be `secret://name` references, resolved per call.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, String>,
    /// Files under /run/secrets (file name -> `secret://name`), present during a call only.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub secret_files: BTreeMap<String, String>,
    /// Memory, CPU, process, file and output limits of the sandbox.
    #[serde(default)]
    pub limits: ContainerLimits,
    /// OCI runtime (for example "runsc"); default the engine's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runtime: Option<String>,
    #[serde(default, skip_serializing_if = "PoolSettings::is_default")]
    pub pool: PoolSettings,
    /// Hosts the tool may reach through the egress proxy; empty = no network at all.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub egress: Vec<String>,
    /// Credentials the egress proxy adds to this tool's HTTPS requests for one destination
    /// each: the sandbox never holds them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub credentials: Vec<CredentialBinding>,
}

fn default_code_argument() -> String {
    "code".into()
}

impl CodeTool {
    pub fn image(&self) -> String {
        self.image
            .clone()
            .unwrap_or_else(|| self.language.default_image())
    }
}

/// Containers kept started ahead of demand for a tool's sandbox configuration. Each is used
/// by one run only and removed when the run ends.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct PoolSettings {
    /// How many to keep ready (default 0: every run's first call starts one).
    #[serde(default)]
    pub warm: u32,
}

impl PoolSettings {
    pub const MAX_WARM: u32 = 64;

    pub fn is_default(&self) -> bool {
        *self == Self::default()
    }
}

fn yes() -> bool {
    true
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ContainerLimits {
    /// Memory, with swap equal to it ("256Mi").
    #[serde(default = "default_memory")]
    pub memory: String,
    /// CPUs ("0.5" = half a core).
    #[serde(default = "default_cpus")]
    pub cpus: f64,
    /// Processes and threads the sandbox may run at once.
    #[serde(default = "default_pids")]
    pub pids: i64,
    /// Open files per process.
    #[serde(default = "default_nofile")]
    pub nofile: u64,
    /// Size of the writable /tmp.
    #[serde(default = "default_tmpfs")]
    pub tmpfs: String,
    /// Cap on each of stdout and stderr.
    #[serde(default = "default_output")]
    pub output: String,
    /// Quota of the run's /workspace ("512Mi"); unset = the tools service's default (1Gi).
    /// With the Agent's `spec.workspace.quota` also set, the smaller one applies.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workspace: Option<String>,
}

fn default_memory() -> String {
    "256Mi".into()
}
fn default_cpus() -> f64 {
    1.0
}
fn default_pids() -> i64 {
    128
}
fn default_nofile() -> u64 {
    256
}
fn default_tmpfs() -> String {
    "64Mi".into()
}
fn default_output() -> String {
    "64Ki".into()
}

impl Default for ContainerLimits {
    fn default() -> Self {
        Self {
            memory: default_memory(),
            cpus: default_cpus(),
            pids: default_pids(),
            nofile: default_nofile(),
            tmpfs: default_tmpfs(),
            output: default_output(),
            workspace: None,
        }
    }
}

/// Parses "256Mi", "1G", "64Ki", "1048576" into bytes.
pub fn parse_bytes(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: u64 = num.parse().map_err(|_| {
        format!(
            "'{}' is not a size (examples: 256Mi, 1Gi, 64Ki)",
            crate::redact::quote(s)
        )
    })?;
    let mult: u64 = match unit.trim() {
        "" | "B" => 1,
        "K" | "k" | "KB" => 1000,
        "Ki" | "KiB" => 1 << 10,
        "M" | "MB" => 1_000_000,
        "Mi" | "MiB" => 1 << 20,
        "G" | "GB" => 1_000_000_000,
        "Gi" | "GiB" => 1 << 30,
        other => {
            return Err(format!(
                "'{}' is not a size unit (Ki, Mi, Gi, K, M, G)",
                crate::redact::quote(other)
            ));
        }
    };
    n.checked_mul(mult)
        .ok_or_else(|| format!("'{}' is too large", crate::redact::quote(s)))
}

/// "1Gi", "8Mi", "1536Ki", or bytes: a size as manifests write it.
pub fn show_bytes(b: u64) -> String {
    for (unit, size) in [("Gi", 1u64 << 30), ("Mi", 1 << 20), ("Ki", 1 << 10)] {
        if b >= size && b.is_multiple_of(size) {
            return format!("{}{unit}", b / size);
        }
    }
    b.to_string()
}

/// The smallest workspace quota: a filesystem smaller than this has little room for files.
pub const MIN_WORKSPACE_QUOTA: u64 = 1 << 20;

/// Parses a workspace quota ("1Gi"), at least [`MIN_WORKSPACE_QUOTA`].
pub fn parse_quota(s: &str) -> Result<u64, String> {
    let b = parse_bytes(s)?;
    if b < MIN_WORKSPACE_QUOTA {
        return Err(format!(
            "'{s}' is less than the smallest workspace quota, 1Mi"
        ));
    }
    Ok(b)
}

/// The settings every sandboxed kind shares, borrowed for validation.
pub(super) struct SandboxFields<'a> {
    pub env: &'a BTreeMap<String, String>,
    pub secret_files: &'a BTreeMap<String, String>,
    pub limits: &'a ContainerLimits,
    pub runtime: Option<&'a str>,
    pub pool: &'a PoolSettings,
    pub egress: &'a [String],
    pub credentials: &'a [CredentialBinding],
}

/// A credential added at the egress boundary: the proxy terminates TLS for `host:port` (with a
/// certificate of the call's own authority, which the sandbox trusts), adds `header: format`
/// with `{}` replaced by the secret to requests whose path starts with `pathPrefix`, and
/// scrubs the value from the answers before the sandbox reads them.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct CredentialBinding {
    /// An exact host name (no wildcard, no address); it must be in the tool's `egress`.
    pub host: String,
    /// The destination's port (default 443).
    #[serde(default = "https_port")]
    pub port: u16,
    /// Only requests whose path starts with this get the credential (default: every path).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path_prefix: Option<String>,
    /// The header that carries it (default `Authorization`, unless `query` is set).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub header: Option<String>,
    /// A query parameter that carries it instead of a header (`api_key`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub query: Option<String>,
    /// The value with `{}` where the secret goes: "Bearer {}" for the default header,
    /// "{}" otherwise ("token {}", "{}").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub format: Option<String>,
    /// `secret://name`.
    pub secret: String,
}

fn https_port() -> u16 {
    443
}

impl CredentialBinding {
    /// The header the credential goes in; None when it goes in the query.
    pub fn header_name(&self) -> Option<&str> {
        match (&self.header, &self.query) {
            (Some(h), _) => Some(h),
            (None, Some(_)) => None,
            (None, None) => Some("Authorization"),
        }
    }

    /// The value's format.
    pub fn format(&self) -> &str {
        match (&self.format, &self.header, &self.query) {
            (Some(f), _, _) => f,
            (None, None, None) => "Bearer {}",
            _ => "{}",
        }
    }

    /// True when a request for `host:port` with `path` gets this credential.
    pub fn applies(&self, host: &str, port: u16, path: &str) -> bool {
        self.port == port
            && self
                .host
                .eq_ignore_ascii_case(host.strip_suffix('.').unwrap_or(host))
            && self
                .path_prefix
                .as_deref()
                .is_none_or(|p| path.starts_with(p))
    }
}

fn validate_credentials(p: &str, s: &SandboxFields<'_>, out: &mut Problems) {
    let rules: Vec<EgressRule> = s
        .egress
        .iter()
        .filter_map(|e| EgressRule::parse(e).ok())
        .collect();
    for (i, c) in s.credentials.iter().enumerate() {
        let f = format!("{p}.credentials[{i}]");
        match EgressRule::parse(&c.host).map(|r| r.host) {
            Ok(super::remote::EgressHost::Exact(_)) if !c.host.contains(':') => {
                if !rules.iter().any(|r| r.allows(&c.host, c.port)) {
                    out.push((
                        format!("{f}.host"),
                        format!(
                            "'{}:{}' is not in this tool's egress list; add it there too",
                            c.host, c.port
                        ),
                    ));
                }
            }
            _ => out.push((
                format!("{f}.host"),
                format!(
                    "'{}' must be an exact host name (no wildcard, port or address)",
                    c.host
                ),
            )),
        }
        if c.port == 0 {
            out.push((format!("{f}.port"), "must be 1-65535".into()));
        }
        if let Some(pp) = &c.path_prefix
            && !pp.starts_with('/')
        {
            out.push((format!("{f}.pathPrefix"), "must start with '/'".into()));
        }
        if let Some(header) = &c.header {
            let h = header.to_ascii_lowercase();
            if header.is_empty()
                || !header
                    .chars()
                    .all(|ch| ch.is_ascii_alphanumeric() || "-_".contains(ch))
                || matches!(
                    h.as_str(),
                    "host" | "content-length" | "transfer-encoding" | "connection" | "upgrade"
                )
            {
                out.push((
                    format!("{f}.header"),
                    format!("'{header}' is not a header the proxy may set"),
                ));
            }
            if c.query.is_some() {
                out.push((
                    format!("{f}.query"),
                    "the credential goes in a header or in the query, not both".into(),
                ));
            }
        }
        if let Some(q) = &c.query
            && (q.is_empty()
                || !q
                    .chars()
                    .all(|ch| ch.is_ascii_alphanumeric() || "-_.".contains(ch)))
        {
            out.push((
                format!("{f}.query"),
                format!("'{q}' is not a query parameter name"),
            ));
        }
        let format = c.format();
        if format.matches("{}").count() != 1 || format.contains(['\r', '\n']) {
            out.push((
                format!("{f}.format"),
                "must hold '{}' (where the secret goes) exactly once, on one line".into(),
            ));
        }
        if !SecretRef::is_reference(&c.secret) {
            out.push((
                format!("{f}.secret"),
                "must be a secret://<name> reference".into(),
            ));
        } else if let Err(e) = SecretRef::parse(&c.secret) {
            out.push((format!("{f}.secret"), e));
        }
    }
}

pub(super) fn validate_container(c: &ContainerTool, properties: &[String], out: &mut Problems) {
    let p = "spec.container";
    if c.image.trim().is_empty() {
        out.push((format!("{p}.image"), "must name an image".into()));
    }
    if c.command.is_empty() {
        out.push((
            format!("{p}.command"),
            "must have at least the program to run".into(),
        ));
    }
    for (i, arg) in c.command.iter().enumerate() {
        check_placeholders(&format!("{p}.command[{i}]"), arg, properties, out);
    }
    if let Some(w) = &c.workdir
        && !w.starts_with('/')
    {
        out.push((format!("{p}.workdir"), "must be an absolute path".into()));
    }
    validate_sandbox(
        p,
        &SandboxFields {
            env: &c.env,
            secret_files: &c.secret_files,
            limits: &c.limits,
            runtime: c.runtime.as_deref(),
            pool: &c.pool,
            egress: &c.egress,
            credentials: &c.credentials,
        },
        out,
    );
}

pub(super) fn validate_code(c: &CodeTool, properties: &[String], out: &mut Problems) {
    let p = "spec.code";
    if c.image.as_ref().is_some_and(|i| i.trim().is_empty()) {
        out.push((
            format!("{p}.image"),
            "must name an image (or be left out)".into(),
        ));
    }
    if !properties.iter().any(|x| x == &c.argument) {
        out.push((
            format!("{p}.argument"),
            format!(
                "'{}' must be a property of spec.parameters (it holds the source to run)",
                c.argument
            ),
        ));
    }
    validate_sandbox(
        p,
        &SandboxFields {
            env: &c.env,
            secret_files: &c.secret_files,
            limits: &c.limits,
            runtime: c.runtime.as_deref(),
            pool: &c.pool,
            egress: &c.egress,
            credentials: &c.credentials,
        },
        out,
    );
}

pub(super) fn validate_sandbox(p: &str, s: &SandboxFields<'_>, out: &mut Problems) {
    for (k, v) in s.env {
        if k.is_empty() || k.contains('=') || k.starts_with("BRIDLE_") {
            out.push((
                format!("{p}.env.{k}"),
                "is not an allowed variable name".into(),
            ));
        }
        if SecretRef::is_reference(v)
            && let Err(e) = SecretRef::parse(v)
        {
            out.push((format!("{p}.env.{k}"), e));
        }
    }
    for (name, v) in s.secret_files {
        if crate::ids::check_name(name).is_err() {
            out.push((
                format!("{p}.secretFiles.{name}"),
                "is not a file name (lowercase letters, digits, '-', '_', '.')".into(),
            ));
        }
        if !SecretRef::is_reference(v) {
            out.push((
                format!("{p}.secretFiles.{name}"),
                "must be a secret://<name> reference".into(),
            ));
        } else if let Err(e) = SecretRef::parse(v) {
            out.push((format!("{p}.secretFiles.{name}"), e));
        }
    }
    let l = s.limits;
    match parse_bytes(&l.memory) {
        Ok(b) if b < 6 * 1024 * 1024 => out.push((
            format!("{p}.limits.memory"),
            "must be at least 6Mi (Docker's minimum)".into(),
        )),
        Ok(_) => {}
        Err(e) => out.push((format!("{p}.limits.memory"), e)),
    }
    for (field, v) in [("tmpfs", &l.tmpfs), ("output", &l.output)] {
        if let Err(e) = parse_bytes(v) {
            out.push((format!("{p}.limits.{field}"), e));
        }
    }
    if let Some(w) = &l.workspace
        && let Err(e) = parse_quota(w)
    {
        out.push((format!("{p}.limits.workspace"), e));
    }
    if !(l.cpus.is_finite() && l.cpus > 0.0 && l.cpus <= 64.0) {
        out.push((
            format!("{p}.limits.cpus"),
            format!("must be between 0 and 64, not {}", l.cpus),
        ));
    }
    if l.pids < 1 {
        out.push((format!("{p}.limits.pids"), "must be at least 1".into()));
    }
    if l.nofile < 16 {
        out.push((format!("{p}.limits.nofile"), "must be at least 16".into()));
    }
    if let Some(r) = s.runtime
        && let Err(e) = crate::ids::check_runtime_name(r)
    {
        out.push((format!("{p}.runtime"), e));
    }
    if s.pool.warm > PoolSettings::MAX_WARM {
        out.push((
            format!("{p}.pool.warm"),
            format!("must be at most {}", PoolSettings::MAX_WARM),
        ));
    }
    for (i, e) in s.egress.iter().enumerate() {
        if let Err(m) = EgressRule::parse(e) {
            out.push((format!("{p}.egress[{i}]"), m));
        }
    }
    validate_credentials(p, s, out);
}
