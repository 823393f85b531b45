//! Manifests: what users write (YAML, Kubernetes-style, `apiVersion: bridle.dev/v1`), parsed
//! into typed specs and validated with errors that name the file, the line, the field and what
//! is wrong. A manifest that holds a literal credential instead of a `secret://` reference is
//! rejected.
//!
//! Every service validates with this same code: the CLI before sending, the orchestrator for
//! the whole set, and each owning service before it stores its kinds.

mod agent;
mod binding;
mod budget;
mod credentials;
mod policy;
mod route;
mod tool;
mod types;
mod validate;

use std::fmt;

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::yaml::{self, Node};

pub use agent::*;
pub use binding::*;
pub use budget::*;
pub use credentials::{SECRET_SCHEME, SecretRef};
pub use policy::*;
pub use route::*;
pub use tool::*;
pub use types::*;

/// Problems found by validation: (dotted field path, message).
pub(crate) type Problems = Vec<(String, String)>;

/// Every kind, for messages.
pub const KINDS: &str = "Agent, Tool, ModelRoute, Policy, SecretBinding, Budget";

/// Every kind as manifests spell it, with its value in the contracts (`bridle.v1.ManifestKind`).
const KIND_VALUES: [(&str, bridle_proto::ManifestKind); 6] = [
    ("Agent", bridle_proto::ManifestKind::Agent),
    ("Tool", bridle_proto::ManifestKind::Tool),
    ("ModelRoute", bridle_proto::ManifestKind::ModelRoute),
    ("Policy", bridle_proto::ManifestKind::Policy),
    ("SecretBinding", bridle_proto::ManifestKind::SecretBinding),
    ("Budget", bridle_proto::ManifestKind::Budget),
];

/// A kind as the contracts carry it (`AppliedManifest.kind`, `StoredManifest.kind`); a name
/// that is not a kind is UNSPECIFIED.
pub fn kind_value(kind: &str) -> bridle_proto::ManifestKind {
    KIND_VALUES
        .iter()
        .find(|(k, _)| *k == kind)
        .map_or(bridle_proto::ManifestKind::Unspecified, |(_, v)| *v)
}

/// A `ManifestKind` as manifests spell it ("ModelRoute"); None for UNSPECIFIED and for a
/// number this build does not know.
pub fn kind_name(value: i32) -> Option<&'static str> {
    KIND_VALUES
        .iter()
        .find(|(_, v)| *v as i32 == value)
        .map(|(k, _)| *k)
}

/// The kind a request names in its field `field` (DeleteManifest, History): one of the six,
/// else INVALID_ARGUMENT naming the field and the kinds.
pub fn kind_in(field: &str, value: i32) -> Result<&'static str, crate::Error> {
    kind_name(value).ok_or_else(|| {
        crate::Error::InvalidArgument(format!(
            "{field}: {} is not a manifest kind; one of {KINDS}",
            match bridle_proto::ManifestKind::try_from(value) {
                Ok(bridle_proto::ManifestKind::Unspecified) => "MANIFEST_KIND_UNSPECIFIED".into(),
                _ => format!("value {value}"),
            }
        ))
    })
}

pub const API_VERSION: &str = "bridle.dev/v1";
pub const DEFAULT_TENANT: &str = "default";

/// One YAML document of a file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Document {
    /// "path/to/file.yaml" (with "#n" appended for the n-th document of a multi-document file).
    pub source: String,
    /// Line of the file the document starts at (1-based).
    pub first_line: u32,
    pub yaml: String,
}

/// Splits a multi-document YAML file on `---` lines, keeping where each document starts.
/// Documents holding only comments or whitespace are dropped.
pub fn split_documents(source: &str, text: &str) -> Vec<Document> {
    let mut docs = Vec::new();
    let mut current = String::new();
    let mut start = 1u32;
    let push = |current: &mut String, start: u32, docs: &mut Vec<Document>| {
        let meaningful = current
            .lines()
            .any(|l| !l.trim().is_empty() && !l.trim_start().starts_with('#'));
        if meaningful {
            docs.push(Document {
                source: source.to_string(),
                first_line: start,
                yaml: std::mem::take(current),
            });
        } else {
            current.clear();
        }
    };
    for (i, line) in text.lines().enumerate() {
        let lineno = u32::try_from(i).unwrap_or(u32::MAX).saturating_add(1);
        let t = line.trim_end();
        if t == "---" {
            push(&mut current, start, &mut docs);
            start = lineno.saturating_add(1);
            continue;
        }
        if let Some(rest) = t.strip_prefix("--- ").or_else(|| t.strip_prefix("---\t")) {
            // `--- {kind: Agent, ...}`: the document starts on the marker's line, its content
            // kept at its columns.
            push(&mut current, start, &mut docs);
            start = lineno;
            current.push_str("    ");
            current.push_str(rest);
            current.push('\n');
            continue;
        }
        if t == "..." {
            continue;
        }
        current.push_str(line);
        current.push('\n');
    }
    push(&mut current, start, &mut docs);
    if docs.len() > 1 {
        for (i, d) in docs.iter_mut().enumerate() {
            d.source = format!("{}#{}", d.source, i + 1);
        }
    }
    docs
}

/// One thing wrong with one manifest.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ManifestError {
    pub source: String,
    pub line: Option<u32>,
    /// "Agent 'data-analyst'" once known.
    pub subject: Option<String>,
    /// Dotted path of the field ("spec.budget.maxSteps"); empty for the whole document.
    pub field: String,
    pub message: String,
}

impl fmt::Display for ManifestError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.source)?;
        if let Some(l) = self.line {
            write!(f, ":{l}")?;
        }
        write!(f, ": ")?;
        if let Some(s) = &self.subject {
            write!(f, "{s}: ")?;
        }
        if !self.field.is_empty() {
            write!(f, "{}: ", self.field)?;
        }
        write!(f, "{}", self.message)
    }
}

/// Every error found in a set of manifests; nothing of the set was applied.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub struct ValidationErrors(pub Vec<ManifestError>);

impl fmt::Display for ValidationErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.0.len();
        write!(
            f,
            "{n} problem{} in manifests (nothing was applied):",
            if n == 1 { "" } else { "s" }
        )?;
        for e in &self.0 {
            write!(f, "\n  {e}")?;
        }
        Ok(())
    }
}

/// A parsed, validated manifest of any kind.
#[derive(Clone, Debug, PartialEq)]
pub enum Manifest {
    Agent(Agent),
    Tool(Tool),
    ModelRoute(ModelRoute),
    Policy(Policy),
    SecretBinding(SecretBinding),
    Budget(Budget),
}

/// The service that stores and serves a kind.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Owner {
    Orchestrator,
    Router,
    Tools,
    Approvals,
    Secrets,
}

impl Owner {
    pub fn as_str(self) -> &'static str {
        match self {
            Owner::Orchestrator => "orchestrator",
            Owner::Router => "router",
            Owner::Tools => "tools",
            Owner::Approvals => "approvals",
            Owner::Secrets => "secrets",
        }
    }
}

impl Manifest {
    pub fn kind(&self) -> &'static str {
        match self {
            Manifest::Agent(_) => "Agent",
            Manifest::Tool(_) => "Tool",
            Manifest::ModelRoute(_) => "ModelRoute",
            Manifest::Policy(_) => "Policy",
            Manifest::SecretBinding(_) => "SecretBinding",
            Manifest::Budget(_) => "Budget",
        }
    }

    pub fn metadata(&self) -> &Metadata {
        match self {
            Manifest::Agent(m) => &m.metadata,
            Manifest::Tool(m) => &m.metadata,
            Manifest::ModelRoute(m) => &m.metadata,
            Manifest::Policy(m) => &m.metadata,
            Manifest::SecretBinding(m) => &m.metadata,
            Manifest::Budget(m) => &m.metadata,
        }
    }

    /// Sets or clears `metadata.tenant` (the CLI clears a tenant it only defaulted, so the
    /// server fills in the caller's).
    pub fn set_tenant(&mut self, tenant: Option<String>) {
        self.metadata_mut().tenant = tenant;
    }

    pub(crate) fn metadata_mut(&mut self) -> &mut Metadata {
        match self {
            Manifest::Agent(m) => &mut m.metadata,
            Manifest::Tool(m) => &mut m.metadata,
            Manifest::ModelRoute(m) => &mut m.metadata,
            Manifest::Policy(m) => &mut m.metadata,
            Manifest::SecretBinding(m) => &mut m.metadata,
            Manifest::Budget(m) => &mut m.metadata,
        }
    }

    pub fn name(&self) -> &str {
        &self.metadata().name
    }

    pub fn tenant(&self) -> &str {
        self.metadata().tenant.as_deref().unwrap_or(DEFAULT_TENANT)
    }

    pub fn owner(&self) -> Owner {
        match self {
            Manifest::Agent(_) => Owner::Orchestrator,
            Manifest::Tool(_) => Owner::Tools,
            Manifest::ModelRoute(_) => Owner::Router,
            Manifest::Policy(_) => Owner::Approvals,
            Manifest::SecretBinding(_) => Owner::Secrets,
            Manifest::Budget(_) => Owner::Router,
        }
    }

    /// Canonical JSON of the manifest, as stored.
    pub fn to_json(&self) -> serde_json::Result<String> {
        match self {
            Manifest::Agent(m) => serde_json::to_string(m),
            Manifest::Tool(m) => serde_json::to_string(m),
            Manifest::ModelRoute(m) => serde_json::to_string(m),
            Manifest::Policy(m) => serde_json::to_string(m),
            Manifest::SecretBinding(m) => serde_json::to_string(m),
            Manifest::Budget(m) => serde_json::to_string(m),
        }
    }

    /// Canonical YAML of the manifest, for listings.
    pub fn to_yaml(&self) -> String {
        let r = match self {
            Manifest::Agent(m) => yaml::to_string(m),
            Manifest::Tool(m) => yaml::to_string(m),
            Manifest::ModelRoute(m) => yaml::to_string(m),
            Manifest::Policy(m) => yaml::to_string(m),
            Manifest::SecretBinding(m) => yaml::to_string(m),
            Manifest::Budget(m) => yaml::to_string(m),
        };
        r.unwrap_or_else(|e| format!("# cannot render: {e}\n"))
    }
}

/// Parses and validates one document. `default_tenant` fills an absent `metadata.tenant`.
/// How to parse: which tenant fills an absent `metadata.tenant`, and (in the CLI only) the
/// folder that `scriptFile` paths are relative to; when set, files are read and inlined.
#[derive(Clone, Debug)]
pub struct ParseOptions<'a> {
    pub default_tenant: &'a str,
    pub base_dir: Option<&'a std::path::Path>,
}

impl Default for ParseOptions<'_> {
    fn default() -> Self {
        Self {
            default_tenant: DEFAULT_TENANT,
            base_dir: None,
        }
    }
}

pub fn parse_document(
    doc: &Document,
    opts: &ParseOptions<'_>,
) -> Result<Manifest, Vec<ManifestError>> {
    let err =
        |line: Option<u32>, subject: Option<String>, field: &str, message: String| ManifestError {
            source: doc.source.clone(),
            line,
            subject,
            field: field.to_string(),
            message,
        };
    let node = Node::parse(&doc.yaml).map_err(|e| {
        vec![err(
            e.line.and_then(|l| file_line(doc.first_line, l)),
            None,
            "",
            format!("not valid YAML: {}", e.message),
        )]
    })?;
    let locate = |path: &str| line_of(doc, &node, path);
    if !matches!(node.value, yaml::Value::Map(_)) {
        return Err(vec![err(
            (doc.first_line > 0).then_some(doc.first_line),
            None,
            "",
            "a manifest must be a mapping with apiVersion, kind, metadata and spec".into(),
        )]);
    }
    let map = &node;
    let get_str = |k: &str| map.get(k).and_then(Node::as_str).map(str::to_string);
    let api = get_str("apiVersion");
    if api.as_deref() != Some(API_VERSION) {
        let found = api
            .map(|a| format!("'{}'", crate::redact::quote(&a)))
            .unwrap_or_else(|| "nothing".into());
        return Err(vec![err(
            locate("apiVersion"),
            None,
            "apiVersion",
            format!("must be '{API_VERSION}', found {found}"),
        )]);
    }
    let kind = get_str("kind").unwrap_or_default();
    let name = map
        .get("metadata")
        .and_then(|m| m.get("name"))
        .and_then(Node::as_str)
        .unwrap_or("")
        .to_string();
    let subject = Some(if name.is_empty() {
        kind.clone()
    } else {
        // The name is not checked yet: an error quotes it bounded, as it quotes any input.
        format!("{kind} '{}'", crate::redact::quote(&name))
    });

    let mut manifest = match kind.as_str() {
        "Agent" => deserialize::<Agent>(doc, &node, &subject).map(Manifest::Agent),
        "Tool" => deserialize::<Tool>(doc, &node, &subject).map(Manifest::Tool),
        "ModelRoute" => deserialize::<ModelRoute>(doc, &node, &subject).map(Manifest::ModelRoute),
        "Policy" => deserialize::<Policy>(doc, &node, &subject).map(Manifest::Policy),
        "SecretBinding" => {
            deserialize::<SecretBinding>(doc, &node, &subject).map(Manifest::SecretBinding)
        }
        "Budget" => deserialize::<Budget>(doc, &node, &subject).map(Manifest::Budget),
        "" => Err(vec![err(
            locate("kind"),
            None,
            "kind",
            format!("is missing; one of {KINDS}"),
        )]),
        other => Err(vec![err(
            locate("kind"),
            None,
            "kind",
            format!(
                "'{}' is not a kind Bridle knows; one of {KINDS}",
                crate::redact::quote(other)
            ),
        )]),
    }?;

    let mut problems: Vec<(String, String)> = Vec::new();
    credentials::check_document(&node, &mut problems);
    validate::check(&mut manifest, opts, &mut problems);
    // One problem per field: a literal key is not also "not a reference".
    let mut seen_fields = std::collections::HashSet::new();
    problems.retain(|(f, _)| seen_fields.insert(f.clone()));
    if problems.is_empty() {
        Ok(manifest)
    } else {
        Err(problems
            .into_iter()
            .map(|(field, message)| err(locate(&field), subject.clone(), &field, message))
            .collect())
    }
}

/// Parses and validates every document; all errors of all documents, or all manifests.
/// Duplicate (kind, tenant, name) within the set is an error.
pub fn parse_all(
    docs: &[Document],
    opts: &ParseOptions<'_>,
) -> Result<Vec<Manifest>, ValidationErrors> {
    let mut out = Vec::new();
    let mut errors = Vec::new();
    let mut seen = std::collections::HashMap::new();
    for d in docs {
        match parse_document(d, opts) {
            Ok(m) => {
                let key = (m.kind(), m.tenant().to_string(), m.name().to_string());
                if let Some(first) = seen.insert(key, d.source.clone()) {
                    errors.push(ManifestError {
                        source: d.source.clone(),
                        line: locate_field(d.first_line, &d.yaml, "metadata.name"),
                        subject: Some(format!("{} '{}'", m.kind(), m.name())),
                        field: "metadata.name".into(),
                        message: format!("defined twice (first in {first})"),
                    });
                }
                out.push(m);
            }
            Err(mut e) => errors.append(&mut e),
        }
    }
    if errors.is_empty() {
        Ok(out)
    } else {
        Err(ValidationErrors(errors))
    }
}

fn deserialize<T: DeserializeOwned + Send>(
    doc: &Document,
    node: &Node,
    subject: &Option<String>,
) -> Result<T, Vec<ManifestError>> {
    yaml::from_str::<T>(&doc.yaml).map_err(|e| {
        let line = e
            .line
            .and_then(|l| file_line(doc.first_line, l))
            .or_else(|| line_of(doc, node, &e.path));
        // A path holds the document's own keys: an unknown one may be any length.
        let field = crate::redact::quote(&e.path);
        vec![ManifestError {
            source: doc.source.clone(),
            line,
            subject: subject.clone(),
            field,
            message: e.message,
        }]
    })
}

/// Line of the file where the field at a dotted path ("spec.targets[1].apiKey") is written, in
/// any YAML style (block or flow, quoted keys, aliases: where the alias is).
fn line_of(doc: &Document, node: &Node, path: &str) -> Option<u32> {
    let (line, _column) = node.locate(path)?;
    file_line(doc.first_line, line)
}

/// The line of the file holding line `line` (1-based) of a document that starts at
/// `first_line`. None when the document carries no line numbers (`first_line` 0) or the sum
/// does not fit: `first_line` arrives over the wire, so it is never trusted to add up.
pub(crate) fn file_line(first_line: u32, line: usize) -> Option<u32> {
    if first_line == 0 {
        return None;
    }
    u32::try_from(line.checked_sub(1)?)
        .ok()
        .and_then(|l| first_line.checked_add(l))
}

/// Decodes a stored manifest (canonical JSON) of a known kind.
pub fn from_json(kind: &str, json: &str) -> Result<Manifest, String> {
    let r = match kind {
        "Agent" => serde_json::from_str(json).map(Manifest::Agent),
        "Tool" => serde_json::from_str(json).map(Manifest::Tool),
        "ModelRoute" => serde_json::from_str(json).map(Manifest::ModelRoute),
        "Policy" => serde_json::from_str(json).map(Manifest::Policy),
        "SecretBinding" => serde_json::from_str(json).map(Manifest::SecretBinding),
        "Budget" => serde_json::from_str(json).map(Manifest::Budget),
        other => return Err(format!("unknown kind {other}")),
    };
    r.map_err(|e| format!("stored {kind} does not decode: {e}"))
}

#[cfg(test)]
mod tests;

/// Line of a dotted field path ("spec.tools[1]") in a document's text, when known.
pub fn locate_field(first_line: u32, yaml: &str, field: &str) -> Option<u32> {
    if first_line == 0 {
        return None;
    }
    let (line, _column) = Node::parse(yaml).ok()?.locate(field)?;
    file_line(first_line, line)
}
