//! The Cedar schema every Policy is validated against: what a policy may name and how each
//! part of a tool call is typed. `docs` in ARCHITECTURE.md ("Policies in Cedar") shows it to
//! users; keep the two in step.

use std::sync::OnceLock;

use cedar_policy::{EntityUid, Schema};

use crate::Error;

/// Entity types and the one action, in Cedar schema syntax.
///
/// `context.arguments` is declared as an empty record: arguments are whatever JSON the model
/// produced, so their shape is not known here. Validation therefore does not check accesses
/// under `context.arguments` (see `compile::is_argument_access`); at run time a missing
/// argument is an evaluation error, which denies the call, so policies guard with `has`.
pub const SCHEMA: &str = r#"
namespace Bridle {
  entity Tenant;
  entity Agent in [Tenant] = {
    name: String,
    tenant: String,
  };
  entity Tool in [Tenant] = {
    name: String,
    risk: String,
    tags: Set<String>,
    kind: String,
  };
  action call appliesTo {
    principal: [Agent],
    resource: [Tool],
    context: {
      arguments: {},
      argumentsJson: String,
      argumentsValid: Bool,
      approvalRequired: Bool,
      runId: String,
      callId: String,
      step: Long,
      tokens: Long,
      costNanoUsd: Long,
      costKnown: Bool,
    },
  };
}
"#;

pub const AGENT_TYPE: &str = "Bridle::Agent";
pub const TOOL_TYPE: &str = "Bridle::Tool";
pub const TENANT_TYPE: &str = "Bridle::Tenant";
pub const ACTION_CALL: &str = r#"Bridle::Action::"call""#;

/// The schema, parsed once. It is a constant of this crate, so failing to parse it is a bug
/// that every policy test catches; it is reported (never a panic) all the same.
pub fn schema() -> Result<&'static Schema, Error> {
    static SCHEMA_CELL: OnceLock<Result<Schema, String>> = OnceLock::new();
    SCHEMA_CELL
        .get_or_init(|| {
            Schema::from_cedarschema_str(SCHEMA)
                .map(|(s, _warnings)| s)
                .map_err(|e| e.to_string())
        })
        .as_ref()
        .map_err(|e| Error::Policy(format!("the built-in Cedar schema does not parse: {e}")))
}

/// `Bridle::Action::"call"`.
pub fn call_action() -> Result<EntityUid, Error> {
    static UID: OnceLock<Result<EntityUid, String>> = OnceLock::new();
    UID.get_or_init(|| ACTION_CALL.parse().map_err(|e| format!("{e}")))
        .clone()
        .map_err(|e| Error::Policy(format!("the call action does not parse: {e}")))
}
