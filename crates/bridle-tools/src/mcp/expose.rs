//! Exposing a server's tools: names under the prefix, schemas, risk from annotations.

use bridle_core::ids::check_tool_name;
use bridle_core::manifest::{McpTool, Risk};
use serde_json::Value;

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
}

/// The risk class of a server tool. MCP's defaults: `readOnlyHint` false, `destructiveHint`
/// true; annotations are hints from the server, so an override in the manifest wins.
pub fn risk_of(
    annotations: Option<&rmcp::model::ToolAnnotations>,
    fallback: Risk,
    override_: Option<Risk>,
) -> Risk {
    if let Some(r) = override_ {
        return r;
    }
    match annotations {
        None => fallback,
        Some(a) if a.read_only_hint == Some(true) => Risk::ReadOnly,
        Some(a) if a.destructive_hint == Some(false) => Risk::Mutating,
        Some(_) => Risk::Destructive,
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
    fallback: Risk,
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
        out.push(Exposed {
            name,
            risk: risk_of(
                t.annotations.as_ref(),
                fallback,
                m.risk_overrides.get(&server_name).copied(),
            ),
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
    fn annotations_map_to_risk_classes() {
        let m = Risk::Mutating;
        assert_eq!(risk_of(None, m, None), Risk::Mutating);
        assert_eq!(
            risk_of(Some(&ann(Some(true), None)), m, None),
            Risk::ReadOnly
        );
        assert_eq!(
            risk_of(Some(&ann(Some(true), Some(true))), m, None),
            Risk::ReadOnly
        );
        assert_eq!(
            risk_of(Some(&ann(None, Some(false))), m, None),
            Risk::Mutating
        );
        assert_eq!(
            risk_of(Some(&ann(None, Some(true))), m, None),
            Risk::Destructive
        );
        assert_eq!(
            risk_of(Some(&ann(None, None)), m, None),
            Risk::Destructive,
            "MCP default"
        );
        assert_eq!(
            risk_of(Some(&ann(Some(true), None)), m, Some(Risk::Destructive)),
            Risk::Destructive,
            "the manifest wins over the server's hint"
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
