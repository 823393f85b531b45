//! Exposing a server's tools: names under the prefix, schemas, risk from annotations.

use bridle_core::ids::check_tool_name;
use bridle_core::manifest::{McpTool, Risk, Tool};
use bridle_proto::ToolSpec;
use serde_json::Value;

use crate::registry::{approver_rule, risk_class};

pub const SEPARATOR: &str = "__";

/// One server tool as the model and the policy engine see it.
#[derive(Clone, Debug, PartialEq)]
pub struct Exposed {
    /// `<prefix>__<tool>`.
    pub name: String,
    /// The server's own name for it.
    pub server_name: String,
    pub description: String,
    pub schema: Value,
    pub risk: Risk,
    /// Where `risk` came from (`ToolSpec.risk_source`).
    pub risk_source: &'static str,
}

/// A tool of an MCP server as the model and the policy engine see it. It lives with the
/// servers, not in [`crate::registry`]: the registry knows Tools and nothing of MCP (the OAuth
/// flows read Tools from it, so it sits below this module).
pub fn exposed_proto(t: &Tool, e: &Exposed) -> ToolSpec {
    ToolSpec {
        name: e.name.clone(),
        description: e.description.clone(),
        parameters_json_schema: e.schema.to_string(),
        risk: risk_class(e.risk) as i32,
        tags: t.spec.tags.clone(),
        kind: bridle_proto::ToolKind::Mcp as i32,
        risk_source: e.risk_source.into(),
        approvers: approver_rule(t),
        // Not held to a strict schema: a Tool's need not meet a provider's strict subset.
        strict: false,
        // Set per call by the orchestrator (an Agent's promptCache).
        cache_breakpoint: false,
    }
}

/// The risk class of a server tool, and where it came from. The manifest's `riskOverrides`
/// win; then the tool's annotations, read with the MCP specification's defaults
/// (`readOnlyHint` false, `destructiveHint` true); a tool without annotations gets the
/// Tool's `risk` when it has one, else destructive (the specification's default: a server
/// that says nothing about a tool may have it delete things).
pub fn risk_of(
    annotations: Option<&rmcp::model::ToolAnnotations>,
    manifest: Option<Risk>,
    override_: Option<Risk>,
) -> (Risk, &'static str) {
    if let Some(r) = override_ {
        return (r, "riskOverrides");
    }
    match annotations {
        None => match manifest {
            Some(r) => (r, "manifest"),
            None => (Risk::Destructive, "mcp-default"),
        },
        Some(a) if a.read_only_hint == Some(true) => (Risk::ReadOnly, "annotations"),
        Some(a) if a.destructive_hint == Some(false) => (Risk::Mutating, "annotations"),
        Some(_) => (Risk::Destructive, "annotations"),
    }
}

/// The server tool's name as a Bridle tool name (lowercase, '-' and '_' only).
fn sanitize(name: &str) -> String {
    name.chars()
        .map(|c| {
            let c = c.to_ascii_lowercase();
            if c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// The exposed tools of a server's `tools/list` answer. Tools whose names cannot be exposed
/// (too long, or colliding once sanitized) are left out with a warning.
pub fn expose(
    prefix: &str,
    m: &McpTool,
    manifest_risk: Option<Risk>,
    tools: Vec<rmcp::model::Tool>,
) -> Vec<Exposed> {
    let mut out: Vec<Exposed> = Vec::new();
    for t in tools {
        let server_name = t.name.to_string();
        if !m.include.is_empty() && !m.include.contains(&server_name) {
            continue;
        }
        let name = format!("{prefix}{SEPARATOR}{}", sanitize(&server_name));
        if check_tool_name(&name).is_err() || out.iter().any(|e| e.name == name) {
            tracing::warn!(tool = %server_name, exposed = %name, "MCP tool cannot be exposed under this name; left out");
            continue;
        }
        let mut schema = Value::Object((*t.input_schema).clone());
        if schema.get("type").is_none()
            && let Value::Object(o) = &mut schema
        {
            o.insert("type".into(), Value::String("object".into()));
        }
        let (risk, risk_source) = risk_of(
            t.annotations.as_ref(),
            manifest_risk,
            m.risk_overrides.get(&server_name).copied(),
        );
        out.push(Exposed {
            name,
            risk,
            risk_source,
            description: t
                .description
                .map(|d| d.to_string())
                .or(t.title)
                .unwrap_or_default(),
            schema,
            server_name,
        });
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    out
}

/// `time__get_current_time` -> ("time", "get_current_time").
pub fn split_exposed(name: &str) -> Option<(&str, &str)> {
    name.split_once(SEPARATOR)
}

#[cfg(test)]
mod tests {
    use rmcp::model::ToolAnnotations;

    use super::*;

    fn ann(ro: Option<bool>, de: Option<bool>) -> ToolAnnotations {
        let mut a = ToolAnnotations::default();
        a.read_only_hint = ro;
        a.destructive_hint = de;
        a
    }

    #[test]
    fn annotations_map_to_risk_classes_with_the_specifications_defaults() {
        let r = |a: Option<ToolAnnotations>, m: Option<Risk>, o: Option<Risk>| {
            risk_of(a.as_ref(), m, o)
        };
        // No annotations and no risk on the Tool: destructive, as the specification says.
        assert_eq!(r(None, None, None), (Risk::Destructive, "mcp-default"));
        // The Tool's risk covers the server's unannotated tools.
        assert_eq!(
            r(None, Some(Risk::ReadOnly), None),
            (Risk::ReadOnly, "manifest")
        );
        let m = Some(Risk::Mutating);
        assert_eq!(
            r(Some(ann(Some(true), None)), m, None),
            (Risk::ReadOnly, "annotations")
        );
        assert_eq!(
            r(Some(ann(Some(true), Some(true))), m, None),
            (Risk::ReadOnly, "annotations")
        );
        assert_eq!(
            r(Some(ann(None, Some(false))), m, None),
            (Risk::Mutating, "annotations")
        );
        assert_eq!(
            r(Some(ann(None, Some(true))), m, None),
            (Risk::Destructive, "annotations")
        );
        // Annotations that leave both hints out: the specification's defaults.
        assert_eq!(
            r(Some(ann(None, None)), m, None),
            (Risk::Destructive, "annotations")
        );
        assert_eq!(
            r(Some(ann(Some(true), None)), m, Some(Risk::Destructive)),
            (Risk::Destructive, "riskOverrides"),
            "the manifest's override wins over the server's hint"
        );
    }

    #[test]
    fn names_are_sanitized_and_split() {
        assert_eq!(sanitize("Get.Current-Time"), "get_current-time");
        assert_eq!(
            split_exposed("time__get_current_time"),
            Some(("time", "get_current_time"))
        );
        assert_eq!(split_exposed("plain"), None);
    }
}
