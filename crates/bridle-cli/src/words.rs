//! The words the CLI prints for the contracts' enums: a value's name without its enum's
//! prefix, in lower case (`MANIFEST_ACTION_UPDATED` → `updated`, `BREAKER_STATE_HALF_OPEN` →
//! `half_open`), as `-o table` and the run log show them. `-o json` and `-o yaml` print the
//! full names, as proto3 JSON does. A number this build does not know (a newer server) prints
//! as `unknown (N)`; the zero value as `unspecified`.

use bridle_proto as pb;

fn word(name: Option<&str>, prefix: &str, n: i32) -> String {
    match name {
        Some(name) => name.trim_start_matches(prefix).to_lowercase(),
        None => format!("unknown ({n})"),
    }
}

macro_rules! words {
    ($($(#[$doc:meta])* $f:ident: $enum:ident, $prefix:literal;)*) => {$(
        $(#[$doc])*
        pub fn $f(n: i32) -> String {
            word(pb::$enum::try_from(n).ok().map(|e| e.as_str_name()), $prefix, n)
        }
    )*};
}

words! {
    /// `ManifestAction`: created, updated, unchanged, deleted.
    manifest_action: ManifestAction, "MANIFEST_ACTION_";
    /// `ApprovalState`: pending, approved, denied, expired.
    approval_state: ApprovalState, "APPROVAL_STATE_";
    /// `RiskClass`: read_only, mutating, destructive.
    risk: RiskClass, "RISK_CLASS_";
    /// `BreakerState`: closed, open, half_open.
    breaker: BreakerState, "BREAKER_STATE_";
    /// `RouteStrategy`: fallback, weighted, least_latency, cheapest.
    strategy: RouteStrategy, "ROUTE_STRATEGY_";
    /// `ToolKind`: container, code, http, mcp.
    tool_kind: ToolKind, "TOOL_KIND_";
    /// `NoticeLevel`: info, warning.
    notice_level: NoticeLevel, "NOTICE_LEVEL_";
}

/// `ManifestKind` as manifests spell it (`ModelRoute`), or `unknown (N)`.
pub fn manifest_kind(n: i32) -> String {
    bridle_core::manifest::kind_name(n).map_or_else(|| format!("unknown ({n})"), str::to_string)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_print_as_their_words() {
        assert_eq!(breaker(pb::BreakerState::HalfOpen as i32), "half_open");
        assert_eq!(
            manifest_action(pb::ManifestAction::Unchanged as i32),
            "unchanged"
        );
        assert_eq!(strategy(0), "unspecified");
        assert_eq!(notice_level(99), "unknown (99)");
        assert_eq!(
            manifest_kind(pb::ManifestKind::ModelRoute as i32),
            "ModelRoute"
        );
        assert_eq!(manifest_kind(42), "unknown (42)");
    }
}
