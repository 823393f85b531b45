//! Tool-call policy in Cedar: a tenant's `Policy` manifests compiled into one policy set and
//! evaluated per call.
//!
//! How Cedar's answer becomes Bridle's (ARCHITECTURE.md, "Policies in Cedar"):
//! - an evaluation error in any policy -> deny (logged with the policy id): a policy that
//!   cannot be evaluated might have been a forbid;
//! - a matching `forbid` -> deny;
//! - no matching `permit` -> deny (Cedar's default);
//! - matching permits, one of them annotated `@require_approval` -> require approval;
//! - otherwise -> allow.

pub mod compile;
pub mod input;
pub mod nesting;
pub mod schema;

use cedar_policy::{AuthorizationError, Authorizer, Decision as CedarDecision, Effect, PolicyId};

use crate::Error;
use crate::policy::{Decision, PolicyEngine, PolicyInput, Verdict};
pub use compile::{CedarProblem, Compiled, Reads, compile_all, compile_manifest};

pub struct CedarEngine {
    compiled: Compiled,
    authorizer: Authorizer,
}

impl CedarEngine {
    pub fn new(compiled: Compiled) -> Self {
        Self {
            compiled,
            authorizer: Authorizer::new(),
        }
    }

    /// Compiles `(manifest name, Cedar text)` pairs.
    pub fn from_manifests(manifests: &[(String, String)]) -> Result<Self, String> {
        compile_all(manifests).map(Self::new)
    }

    fn describe(&self, id: &PolicyId) -> String {
        let reason = self
            .compiled
            .meta
            .get(id)
            .and_then(|m| m.reason.as_deref())
            .filter(|r| !r.is_empty());
        match reason {
            Some(r) => format!("policy '{id}': {r}"),
            None => format!("policy '{id}'"),
        }
    }
}

impl PolicyEngine for CedarEngine {
    fn evaluate(&self, input: &PolicyInput<'_>) -> Result<Verdict, Error> {
        let tool = input.tool.name.as_str();
        let agent = input.agent;
        let deny = |reason: String, policies: Vec<String>| {
            Ok(Verdict {
                decision: Decision::Deny,
                reason,
                policies,
            })
        };
        let (request, entities) = match input::build(input, self.compiled.reads) {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(
                    tenant = input.tenant,
                    agent,
                    tool,
                    "cannot build the Cedar request: {e}"
                );
                return deny(
                    format!("call of tool '{tool}' cannot be put to the policy ({e}); denied"),
                    Vec::new(),
                );
            }
        };
        let response = self
            .authorizer
            .is_authorized(&request, &self.compiled.set, &entities);
        let diagnostics = response.diagnostics();
        let failed: Vec<String> = diagnostics
            .errors()
            .map(|e| failed_policy(e).to_string())
            .collect();
        if !failed.is_empty() {
            for e in diagnostics.errors() {
                tracing::warn!(
                    tenant = input.tenant,
                    agent,
                    tool,
                    run = input.run_id,
                    call = input.call_id,
                    policy = %failed_policy(e),
                    "policy evaluation error, call denied: {}",
                    scrub(&e.to_string())
                );
            }
            return deny(
                format!(
                    "policy {} could not be evaluated for this call (see the approvals service \
                     log); denied",
                    failed.join(", ")
                ),
                failed,
            );
        }
        let mut matched: Vec<&PolicyId> = diagnostics.reason().collect();
        matched.sort();
        let ids: Vec<String> = matched.iter().map(|id| id.to_string()).collect();
        match response.decision() {
            CedarDecision::Deny if matched.is_empty() => deny(
                format!("no policy permits agent '{agent}' to call tool '{tool}'"),
                Vec::new(),
            ),
            CedarDecision::Deny => {
                let why: Vec<String> = matched.iter().map(|id| self.describe(id)).collect();
                deny(format!("forbidden by {}", why.join("; ")), ids)
            }
            CedarDecision::Allow => {
                let gate = matched.iter().find(|id| {
                    self.compiled
                        .meta
                        .get(*id)
                        .is_some_and(|m| m.effect == Effect::Permit && m.approval.is_some())
                });
                Ok(match gate {
                    Some(id) => {
                        let note = self
                            .compiled
                            .meta
                            .get(*id)
                            .and_then(|m| m.approval.as_deref())
                            .filter(|a| !a.is_empty());
                        Verdict {
                            decision: Decision::RequireApproval,
                            reason: match note {
                                Some(n) => format!("policy '{id}' requires approval: {n}"),
                                None => format!("{} requires approval", self.describe(id)),
                            },
                            policies: vec![id.to_string()],
                        }
                    }
                    None => Verdict {
                        decision: Decision::Allow,
                        reason: format!(
                            "permitted by {}",
                            matched
                                .iter()
                                .map(|id| self.describe(id))
                                .collect::<Vec<_>>()
                                .join("; ")
                        ),
                        policies: ids,
                    },
                })
            }
        }
    }
}

fn failed_policy(e: &AuthorizationError) -> &PolicyId {
    match e {
        AuthorizationError::PolicyEvaluationError(p) => p.policy_id(),
    }
}

/// Cedar's evaluation errors mostly name an attribute or a type, but an overflow or an
/// extension-function error quotes the values involved, which may come from tool arguments:
/// those quotes are blanked, so arguments never reach the log.
fn scrub(message: &str) -> String {
    if !(message.contains("overflow") || message.contains("extension function")) {
        return message.to_string();
    }
    let mut out = String::with_capacity(message.len());
    for (i, part) in message.split('`').enumerate() {
        if i % 2 == 1 {
            out.push_str("`…`");
        } else {
            out.push_str(part);
        }
    }
    out
}

#[cfg(test)]
mod tests;
