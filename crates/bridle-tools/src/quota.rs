//! How large a run's `/workspace` may grow: the smaller of its Tool's `limits.workspace` and
//! its Agent's `spec.workspace.quota` where set, else this service's default; never above this
//! service's ceiling, which apply enforces (here for Tools, in the orchestrator for Agents) and
//! calls check again (the ceiling may have been lowered since).

use bridle_core::manifest::{
    ContainerLimits, Manifest, ManifestError, Tool, locate_field, parse_quota, show_bytes as show,
};

use crate::Error;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Quotas {
    pub default: u64,
    pub max: u64,
}

impl Quotas {
    /// The quota of a call of `tool` (whose sandbox settings are at `field`) for `agent`.
    pub fn for_call(
        &self,
        tool: &str,
        field: &str,
        limits: &ContainerLimits,
        agent: &str,
        agent_quota: Option<u64>,
    ) -> Result<u64, Error> {
        let tool_quota = match &limits.workspace {
            Some(w) => Some(parse_quota(w).map_err(|reason| Error::BadTool {
                tool: tool.to_string(),
                reason: format!("{field}.limits.workspace: {reason}"),
            })?),
            None => None,
        };
        let above = |what: String, asked: u64| Error::QuotaAboveCeiling {
            what,
            asked: show(asked),
            ceiling: show(self.max),
        };
        if let Some(q) = tool_quota.filter(|q| *q > self.max) {
            return Err(above(
                format!("tool '{tool}' ({field}.limits.workspace)"),
                q,
            ));
        }
        if let Some(q) = agent_quota.filter(|q| *q > self.max) {
            return Err(above(format!("agent '{agent}' (spec.workspace.quota)"), q));
        }
        Ok(match (tool_quota, agent_quota) {
            (Some(t), Some(a)) => t.min(a),
            (Some(q), None) | (None, Some(q)) => q,
            (None, None) => self.default,
        })
    }

    /// Apply's check of Tool manifests: a workspace quota above the ceiling, located in its
    /// document.
    pub fn check_tool(
        &self,
        t: &Tool,
        source: &str,
        first_line: u32,
        yaml: &str,
    ) -> Vec<ManifestError> {
        let s = &t.spec;
        let blocks = [
            ("spec.container", s.container.as_ref().map(|c| &c.limits)),
            ("spec.code", s.code.as_ref().map(|c| &c.limits)),
            (
                "spec.mcp.stdio",
                s.mcp
                    .as_ref()
                    .and_then(|m| m.stdio.as_ref())
                    .map(|m| &m.limits),
            ),
        ];
        blocks
            .into_iter()
            .filter_map(|(p, l)| {
                let asked = parse_quota(l?.workspace.as_deref()?).ok()?;
                let field = format!("{p}.limits.workspace");
                (asked > self.max).then(|| ManifestError {
                    source: source.to_string(),
                    line: locate_field(first_line, yaml, &field),
                    subject: Some(format!("Tool '{}'", t.metadata.name)),
                    message: format!(
                        "{} is above this tools service's ceiling of {} (its workspace_quota_max option); ask for less or raise the ceiling",
                        show(asked),
                        show(self.max)
                    ),
                    field,
                })
            })
            .collect()
    }
}

/// Checks every Tool of an apply against the ceiling.
pub fn check_manifests(
    q: &Quotas,
    manifests: &[Manifest],
    docs: &[bridle_proto::ManifestDocument],
) -> Vec<ManifestError> {
    manifests
        .iter()
        .zip(docs)
        .flat_map(|(m, d)| match m {
            Manifest::Tool(t) => q.check_tool(t, &d.source, d.first_line, &d.yaml),
            _ => vec![],
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const Q: Quotas = Quotas {
        default: 1 << 30,
        max: 4 << 30,
    };

    fn limits(w: Option<&str>) -> ContainerLimits {
        ContainerLimits {
            workspace: w.map(str::to_string),
            ..ContainerLimits::default()
        }
    }

    #[test]
    fn the_smaller_of_tool_and_agent_applies_else_the_default() {
        let q = |tool, agent| {
            Q.for_call("t", "spec.code", &limits(tool), "a", agent)
                .unwrap()
        };
        assert_eq!(q(None, None), 1 << 30);
        assert_eq!(q(Some("8Mi"), None), 8 << 20);
        assert_eq!(q(None, Some(2 << 30)), 2 << 30);
        assert_eq!(q(Some("3Gi"), Some(2 << 30)), 2 << 30);
        assert_eq!(q(Some("8Mi"), Some(2 << 30)), 8 << 20);
    }

    #[test]
    fn above_the_ceiling_is_refused_naming_it() {
        let e = Q
            .for_call("t", "spec.code", &limits(Some("5Gi")), "a", None)
            .unwrap_err();
        assert_eq!(
            e.to_string(),
            "tool 't' (spec.code.limits.workspace) asks for a workspace quota of 5Gi, above this tools service's ceiling of 4Gi (its workspace_quota_max option); ask for less or raise the ceiling"
        );
        let e = Q
            .for_call("t", "spec.code", &limits(None), "a", Some(5 << 30))
            .unwrap_err();
        assert!(
            e.to_string()
                .starts_with("agent 'a' (spec.workspace.quota) asks for a workspace quota of 5Gi"),
            "{e}"
        );
    }
}
