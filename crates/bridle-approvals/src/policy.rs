//! Deciding whether a tool call may run. [`PolicyEngine`] is the seam: the built-in rules are
//! used for a tenant with no `Policy` manifests, Cedar (`crate::cedar`) for one with some.
//! [`decide`] wraps either in the rules no policy can change: a tool the agent was not granted
//! never runs, and a tool the agent lists under `approval.require` always needs a person.

use bridle_proto::{RiskClass, RunFacts, ToolSpec};

use crate::Error;

/// Everything a policy may look at, for one tool call.
#[derive(Clone, Copy, Debug)]
pub struct PolicyInput<'a> {
    pub tenant: &'a str,
    pub agent: &'a str,
    pub run_id: &'a str,
    pub step: u32,
    pub call_id: &'a str,
    pub tool: &'a ToolSpec,
    /// As the model produced them; possibly not JSON.
    pub arguments_json: &'a str,
    pub arguments_sha256: &'a str,
    pub facts: Option<&'a RunFacts>,
    pub granted_tools: &'a [String],
    pub approval_required_tools: &'a [String],
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    Allow,
    Deny,
    RequireApproval,
}

impl Decision {
    /// The name written to the audit trail.
    pub fn as_str(self) -> &'static str {
        match self {
            Decision::Allow => "allow",
            Decision::Deny => "deny",
            Decision::RequireApproval => "require_approval",
        }
    }

    pub fn to_proto(self) -> bridle_proto::PolicyDecision {
        match self {
            Decision::Allow => bridle_proto::PolicyDecision::Allow,
            Decision::Deny => bridle_proto::PolicyDecision::Deny,
            Decision::RequireApproval => bridle_proto::PolicyDecision::RequireApproval,
        }
    }
}

/// A decision and the sentence that explains it to the person reading the run or the audit.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Verdict {
    pub decision: Decision,
    pub reason: String,
    /// The policies that decided it: Cedar policy ids (`manifest.id`), or the name of the
    /// built-in rule (`builtin.*`, `agent.approval.require`), for spans and approvers.
    pub policies: Vec<String>,
}

/// The rule that denies a tool the agent was not granted, before any policy is asked.
pub const NOT_GRANTED: &str = "builtin.not_granted";
/// The agent's own `approval.require` list, which turns an allow into a human's decision.
pub const AGENT_REQUIRES_APPROVAL: &str = "agent.approval.require";

pub trait PolicyEngine: Send + Sync + 'static {
    /// Decides one call. An `Err` means "cannot decide": the service refuses the evaluation,
    /// so the call does not run.
    fn evaluate(&self, input: &PolicyInput<'_>) -> Result<Verdict, Error>;
}

/// Decides one call with `engine`, inside the fixed rules: not granted -> deny before any
/// policy is asked (default deny: an unknown tool is never granted); an allow for a tool the
/// agent requires approval for -> require approval. A policy can only make a call stricter
/// than the agent's manifest, never looser.
pub fn decide(engine: &dyn PolicyEngine, input: &PolicyInput<'_>) -> Result<Verdict, Error> {
    let tool = input.tool.name.as_str();
    let agent = input.agent;
    if !input.granted_tools.iter().any(|t| t == tool) {
        return Ok(Verdict {
            decision: Decision::Deny,
            reason: format!("tool '{tool}' is not granted to agent '{agent}'"),
            policies: vec![NOT_GRANTED.into()],
        });
    }
    let v = engine.evaluate(input)?;
    if v.decision == Decision::Allow && input.approval_required_tools.iter().any(|t| t == tool) {
        let mut policies = v.policies;
        policies.push(AGENT_REQUIRES_APPROVAL.into());
        return Ok(Verdict {
            decision: Decision::RequireApproval,
            reason: format!(
                "agent '{agent}' requires approval for every call of tool '{tool}' ({})",
                v.reason
            ),
            policies,
        });
    }
    Ok(v)
}

/// The walking-skeleton rules, in order: a tool the agent was not granted is denied (an unknown
/// tool never runs); a destructive tool, or one the agent lists under approval-required,
/// needs a human; anything else is allowed.
#[derive(Clone, Copy, Debug, Default)]
pub struct BuiltinRules;

impl PolicyEngine for BuiltinRules {
    fn evaluate(&self, input: &PolicyInput<'_>) -> Result<Verdict, Error> {
        let tool = input.tool.name.as_str();
        let agent = input.agent;
        let verdict = |decision, rule: &str, reason: String| {
            Ok(Verdict {
                decision,
                reason,
                policies: vec![rule.to_string()],
            })
        };
        if !input.granted_tools.iter().any(|t| t == tool) {
            return verdict(
                Decision::Deny,
                NOT_GRANTED,
                format!("tool '{tool}' is not granted to agent '{agent}'"),
            );
        }
        if input.tool.risk == RiskClass::Destructive as i32 {
            return verdict(
                Decision::RequireApproval,
                "builtin.destructive",
                format!("tool '{tool}' is destructive; a person must approve each call"),
            );
        }
        if input.approval_required_tools.iter().any(|t| t == tool) {
            return verdict(
                Decision::RequireApproval,
                AGENT_REQUIRES_APPROVAL,
                format!("agent '{agent}' requires approval for every call of tool '{tool}'"),
            );
        }
        verdict(
            Decision::Allow,
            "builtin.granted",
            format!("tool '{tool}' is granted to agent '{agent}'"),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decide(tool: &str, risk: RiskClass, granted: &[&str], gated: &[&str]) -> Verdict {
        let spec = ToolSpec {
            name: tool.into(),
            risk: risk as i32,
            ..Default::default()
        };
        let granted: Vec<String> = granted.iter().map(|s| s.to_string()).collect();
        let gated: Vec<String> = gated.iter().map(|s| s.to_string()).collect();
        let input = PolicyInput {
            tenant: "t",
            agent: "a",
            run_id: "run_x",
            step: 1,
            call_id: "c",
            tool: &spec,
            arguments_json: "{}",
            arguments_sha256: "",
            facts: None,
            granted_tools: &granted,
            approval_required_tools: &gated,
        };
        BuiltinRules.evaluate(&input).unwrap()
    }

    #[test]
    fn rules_apply_in_order() {
        let v = decide("rm", RiskClass::Destructive, &["ls"], &["rm"]);
        assert_eq!(
            v.decision,
            Decision::Deny,
            "not granted wins over everything"
        );
        assert_eq!(v.reason, "tool 'rm' is not granted to agent 'a'");
        assert_eq!(
            decide("rm", RiskClass::Destructive, &["rm"], &[]).decision,
            Decision::RequireApproval
        );
        assert_eq!(
            decide("mail", RiskClass::Mutating, &["mail"], &["mail"]).decision,
            Decision::RequireApproval
        );
        assert_eq!(
            decide("ls", RiskClass::ReadOnly, &["ls"], &["rm"]).decision,
            Decision::Allow
        );
        assert_eq!(
            decide("x", RiskClass::Unspecified, &[], &[]).decision,
            Decision::Deny
        );
    }
}
