//! The `Policy` kind: tool-call policy in Cedar, owned by the approvals service.
//!
//! Here only the shape is checked (this crate does not link Cedar); the approvals service
//! parses the Cedar text and validates it against its schema when the policy is applied, and
//! reports problems at their line of the manifest file with [`cedar_line`].

use serde::{Deserialize, Serialize};

use super::Problems;

/// Longest Cedar text one manifest may hold. Policies are evaluated on every tool call of the
/// tenant; a bigger set belongs in several manifests, each reviewed on its own.
pub const MAX_CEDAR_BYTES: usize = 256 * 1024;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct PolicySpec {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub description: String,
    /// Cedar policies (one or more statements).
    pub cedar: String,
}

pub(super) fn validate(s: &PolicySpec, out: &mut Problems) {
    if s.cedar.trim().is_empty() {
        out.push((
            "spec.cedar".into(),
            "must hold at least one Cedar policy".into(),
        ));
    } else if s.cedar.len() > MAX_CEDAR_BYTES {
        out.push((
            "spec.cedar".into(),
            format!(
                "is {} bytes; at most {MAX_CEDAR_BYTES} (split it into several Policy manifests)",
                s.cedar.len()
            ),
        ));
    }
}

/// The line of the manifest file holding line `cedar_line` (1-based) of `spec.cedar`, for a
/// document that starts at `first_line` of its file. None when the document carries no line
/// numbers (`first_line` 0: canonical YAML re-rendered by the CLI) or the field is not found.
///
/// A literal block (`cedar: |`) keeps its lines, so the mapping is exact; a folded block
/// (`cedar: >`) does not, so the field's own line is given; an inline value starts on the
/// field's line.
pub fn cedar_line(first_line: u32, yaml: &str, cedar_line: u32) -> Option<u32> {
    let key_line = super::locate_field(first_line, yaml, "spec.cedar")?;
    let text = yaml
        .lines()
        .nth(usize::try_from(key_line.checked_sub(first_line)?).ok()?)?;
    let value = text
        .trim_start()
        .trim_start_matches("\"cedar\":")
        .trim_start_matches("cedar:")
        .trim_start();
    let within = cedar_line.max(1);
    if value.starts_with('|') || value.is_empty() || value.starts_with('#') {
        // A literal block, or a plain scalar continued on the following lines.
        key_line.checked_add(within)
    } else if value.starts_with('>') {
        Some(key_line)
    } else {
        key_line.checked_add(within - 1)
    }
}
