//! The `Tool` kind: what a tool is, how risky it is, and how it runs. Exactly one of four
//! blocks says how: `container` (a command in a hardened sandbox), `code` (python or bash
//! source run in a sandbox), `http` (one HTTP request) or `mcp` (the tools of an MCP server).
//! The sandbox kinds live in `tool_sandbox.rs`, the network kinds and egress rules in
//! `tool_remote.rs`.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::Problems;

#[path = "tool_model_code.rs"]
mod model_code;
#[path = "tool_remote.rs"]
mod remote;
#[path = "tool_sandbox.rs"]
mod sandbox;

pub use model_code::model_writes_program;

pub use remote::*;
pub use sandbox::*;

#[derive(
    Clone,
    Copy,
    Debug,
    Default,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Serialize,
    Deserialize,
    schemars::JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum Risk {
    ReadOnly,
    /// The default: a tool that does not say is assumed to change something.
    #[default]
    Mutating,
    Destructive,
}

impl ToolSpec {
    /// The tool's risk: as written, else `mutating` (see `risk` for `mcp` tools).
    pub fn risk_or_default(&self) -> Risk {
        self.risk.unwrap_or_default()
    }
}

impl Risk {
    pub fn as_str(self) -> &'static str {
        match self {
            Risk::ReadOnly => "read_only",
            Risk::Mutating => "mutating",
            Risk::Destructive => "destructive",
        }
    }
}

pub const DEFAULT_TOOL_TIMEOUT: Duration = Duration::from_secs(60);

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ToolSpec {
    /// Shown to the model; say what the tool does and returns. For `mcp` tools, the server's
    /// own descriptions are shown and this describes the server.
    pub description: String,
    /// How much a call can change: `read_only`, `mutating` (the default) or `destructive` (a
    /// person approves every call). For `mcp` tools: the risk of the server's tools that carry
    /// no annotations, `destructive` when unset (the MCP specification's default); a tool's
    /// own annotations, and `riskOverrides` above both, decide the others.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub risk: Option<Risk>,
    /// Free-form tags, for people and policies.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<String>,
    /// JSON Schema of the arguments object (default: an object with no constraints). Unused
    /// by `mcp` tools, whose servers publish their own.
    #[serde(default = "default_parameters")]
    pub parameters: serde_json::Value,
    /// Wall-clock limit of one call (default 60s).
    // A duration written as text ("30s", "5m").
    #[schemars(with = "Option<String>")]
    #[serde(
        default,
        with = "humantime_serde",
        skip_serializing_if = "Option::is_none"
    )]
    pub timeout: Option<Duration>,
    // The kind blocks are boxed: a manifest holds one, and `Manifest` stays small.
    /// A command run in a hardened container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container: Option<Box<ContainerTool>>,
    /// Python or bash source (one of the arguments) run in a hardened container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<Box<CodeTool>>,
    /// One HTTP request made by the tool service.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http: Option<Box<HttpTool>>,
    /// The tools of an MCP server, exposed as `<prefix>__<tool>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mcp: Option<Box<McpTool>>,
    /// Lets a tool whose program the model writes hold `secret://` references, knowing that
    /// such code can read them and send them back in forms redaction does not catch. Refused
    /// without it; logged with its reason when applied.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allow_secrets_with_model_code: Option<ModelCodeOptIn>,
    /// Separation of duties for this tool's approvals (when a call needs one): who may
    /// decide, how many distinct people must approve, and whether the run's starter may.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approvers: Option<Approvers>,
}

/// Who may decide the approvals of a tool's calls.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Approvers {
    /// Only members of one of these groups (a person's OIDC groups claim) may decide; empty:
    /// anyone with the approver role.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub groups: Vec<String>,
    /// How many distinct people must approve (1 to 10, default 1). One denial denies.
    #[serde(default = "one_approver")]
    pub count: u32,
    /// The person (or API key) that started the run may not decide its calls.
    #[serde(default)]
    pub not_the_starter: bool,
}

fn one_approver() -> u32 {
    1
}

/// Most approvals one call can require.
pub const MAX_APPROVERS: u32 = 10;

/// The opt-in of a tool that gives secrets to model-written code.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ModelCodeOptIn {
    /// Why this tool needs it (shown wherever the tool's secrets are listed, and logged).
    pub reason: String,
}

fn default_parameters() -> serde_json::Value {
    serde_json::json!({"type": "object"})
}

/// The tool kinds by the word manifests, Cedar policies and run state use, with their value in
/// the contracts (`bridle.v1.ToolKind`).
const TOOL_KINDS: [(&str, bridle_proto::ToolKind); 4] = [
    ("container", bridle_proto::ToolKind::Container),
    ("code", bridle_proto::ToolKind::Code),
    ("http", bridle_proto::ToolKind::Http),
    ("mcp", bridle_proto::ToolKind::Mcp),
];

/// A tool kind word ("container", "code", "http", "mcp") as `ToolSpec.kind` carries it; any
/// other word is UNSPECIFIED.
pub fn tool_kind_value(word: &str) -> bridle_proto::ToolKind {
    TOOL_KINDS
        .iter()
        .find(|(w, _)| *w == word)
        .map_or(bridle_proto::ToolKind::Unspecified, |(_, v)| *v)
}

/// `ToolSpec.kind` as its word: the inverse of [`tool_kind_value`]; empty for UNSPECIFIED and
/// for a number this build does not know.
pub fn tool_kind_word(value: i32) -> &'static str {
    TOOL_KINDS
        .iter()
        .find(|(_, v)| *v as i32 == value)
        .map_or("", |(w, _)| *w)
}

impl ToolSpec {
    pub fn kind(&self) -> &'static str {
        if self.container.is_some() {
            "container"
        } else if self.code.is_some() {
            "code"
        } else if self.http.is_some() {
            "http"
        } else if self.mcp.is_some() {
            "mcp"
        } else {
            "unknown"
        }
    }

    pub fn timeout(&self) -> Duration {
        self.timeout.unwrap_or(DEFAULT_TOOL_TIMEOUT)
    }
}

pub(super) fn validate(s: &ToolSpec, out: &mut Problems) {
    if let Some(a) = &s.approvers {
        if a.count == 0 || a.count > MAX_APPROVERS {
            out.push((
                "spec.approvers.count".into(),
                format!("must be 1 to {MAX_APPROVERS} (distinct people who must approve)"),
            ));
        }
        for (i, g) in a.groups.iter().enumerate() {
            if g.is_empty() || g.len() > 256 || g.chars().any(char::is_whitespace) {
                out.push((
                    format!("spec.approvers.groups[{i}]"),
                    "must be a group name: 1 to 256 characters, no spaces".into(),
                ));
            }
        }
    }
    if s.description.trim().is_empty() {
        out.push((
            "spec.description".into(),
            "must say what the tool does (the model reads it)".into(),
        ));
    }
    if s.timeout.is_some_and(|t| t.is_zero()) {
        out.push(("spec.timeout".into(), "must be more than zero".into()));
    }
    let mut properties: Option<Vec<String>> = None;
    match &s.parameters {
        serde_json::Value::Object(o) => {
            if o.get("type").and_then(|t| t.as_str()) != Some("object") {
                out.push((
                    "spec.parameters.type".into(),
                    "must be 'object' (tool arguments are a JSON object)".into(),
                ));
            }
            if let Err(e) = jsonschema::validator_for(&s.parameters) {
                out.push((
                    "spec.parameters".into(),
                    format!("is not a valid JSON Schema: {e}"),
                ));
            }
            properties = o
                .get("properties")
                .and_then(|p| p.as_object())
                .map(|p| p.keys().cloned().collect());
        }
        _ => out.push((
            "spec.parameters".into(),
            "must be a JSON Schema object".into(),
        )),
    }
    let set: Vec<&str> = [
        ("container", s.container.is_some()),
        ("code", s.code.is_some()),
        ("http", s.http.is_some()),
        ("mcp", s.mcp.is_some()),
    ]
    .into_iter()
    .filter_map(|(k, on)| on.then_some(k))
    .collect();
    match set.len() {
        0 => out.push((
            "spec".into(),
            "says nothing about how to run the tool: add one of 'container', 'code', 'http' or 'mcp'"
                .into(),
        )),
        1 => {}
        _ => out.push((
            "spec".into(),
            format!(
                "has {}; a tool runs one way only: keep one",
                set.join(" and ")
            ),
        )),
    }
    let props = properties.as_deref().unwrap_or(&[]);
    if let Some(c) = &s.container {
        sandbox::validate_container(c, props, out);
    }
    if let Some(c) = &s.code {
        sandbox::validate_code(c, props, out);
    }
    if let Some(h) = &s.http {
        remote::validate_http(h, props, out);
    }
    if let Some(m) = &s.mcp {
        remote::validate_mcp(m, out);
    }
    validate_model_code(s, out);
}

/// The `secret://` references of a tool's sandbox (its environment and secret files), as
/// (field, reference).
fn sandbox_secret_refs(s: &ToolSpec) -> Vec<(String, &str)> {
    let (p, env, files) = match (&s.container, &s.code) {
        (Some(c), _) => ("spec.container", &c.env, &c.secret_files),
        (_, Some(c)) => ("spec.code", &c.env, &c.secret_files),
        _ => return Vec::new(),
    };
    env.iter()
        .filter(|(_, v)| super::SecretRef::is_reference(v))
        .map(|(k, v)| (format!("{p}.env.{k}"), v.as_str()))
        .chain(
            files
                .iter()
                .map(|(k, v)| (format!("{p}.secretFiles.{k}"), v.as_str())),
        )
        .collect()
}

fn validate_model_code(s: &ToolSpec, out: &mut Problems) {
    if let Some(o) = &s.allow_secrets_with_model_code
        && o.reason.trim().is_empty()
    {
        out.push((
            "spec.allowSecretsWithModelCode.reason".into(),
            "must say why this tool gives secrets to code the model writes".into(),
        ));
    }
    if s.allow_secrets_with_model_code.is_some() {
        return;
    }
    let Some(why) = model_writes_program(s) else {
        return;
    };
    for (field, reference) in sandbox_secret_refs(s) {
        out.push((
            field,
            format!(
                "gives {reference} to code the model writes ({why}): such code can read the value and send it back in forms no redaction catches. Bind the credential at the egress boundary instead (credentials: [{{host, secret}}] on the tool: the proxy adds it, the code never holds it), give it to a tool with a fixed program (an http tool, or a command that takes its arguments as data), or opt in with spec.allowSecretsWithModelCode.reason"
            ),
        ));
    }
}

/// Names inside `{{...}}` in a command argument.
pub fn placeholders(arg: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = arg;
    while let Some(i) = rest.find("{{") {
        let after = &rest[i + 2..];
        match after.find("}}") {
            Some(j) => {
                out.push(after[..j].trim().to_string());
                rest = &after[j + 2..];
            }
            None => break,
        }
    }
    out
}

/// Pushes a problem for each `{{name}}` of `text` that is not a property of the schema.
fn check_placeholders(field: &str, text: &str, properties: &[String], out: &mut Problems) {
    for name in placeholders(text) {
        if !properties.iter().any(|p| p == &name) {
            let name = crate::redact::quote(&name);
            out.push((
                field.to_string(),
                format!("uses {{{{{name}}}}} but the parameters schema has no property '{name}'"),
            ));
        }
    }
}
