//! Approvals as stored in Redis (a hash of string fields, also copied into each event) and
//! their conversion to the protobuf message.

use std::collections::HashMap;

use bridle_core::timeutil::ts_from_ms;
use bridle_proto::{Approval, ApprovalState, RunFacts};

use crate::Error;

pub const PENDING: &str = "pending";
pub const APPROVED: &str = "approved";
pub const DENIED: &str = "denied";
pub const EXPIRED: &str = "expired";

pub fn state_name(s: ApprovalState) -> &'static str {
    match s {
        // UNSPECIFIED means "pending" wherever a caller may leave the state out (List).
        ApprovalState::Unspecified | ApprovalState::Pending => PENDING,
        ApprovalState::Approved => APPROVED,
        ApprovalState::Denied => DENIED,
        ApprovalState::Expired => EXPIRED,
    }
}

fn parse_state(s: &str) -> Option<ApprovalState> {
    match s {
        PENDING => Some(ApprovalState::Pending),
        APPROVED => Some(ApprovalState::Approved),
        DENIED => Some(ApprovalState::Denied),
        EXPIRED => Some(ApprovalState::Expired),
        _ => None,
    }
}

/// RFC 3339 time of a millisecond timestamp, for messages and the audit trail.
pub fn fmt_ms(ms: i64) -> String {
    ts_from_ms(ms).to_string()
}

/// The fields of a new pending approval, in the order they are written.
#[derive(Clone, Debug)]
pub struct NewApproval {
    pub id: String,
    pub tenant: String,
    pub agent: String,
    pub run_id: String,
    pub step: u32,
    pub call_id: String,
    pub tool: String,
    pub arguments_json: String,
    pub arguments_sha256: String,
    pub risk: i32,
    pub created_ms: i64,
    pub expires_ms: i64,
    pub policy_reason: String,
    /// The policies that required approval (`Verdict::policies`).
    pub policy_ids: Vec<String>,
    /// W3C `traceparent` of the span that asked (the run's policy check), so that every later
    /// call about this approval is linked to the run's trace (empty when the caller sent none).
    pub traceparent: String,
    /// The run's facts when the call was evaluated, for approvers (not in the Approval
    /// message; the inbox and the webhook read them from the stored fields).
    pub facts: RunFacts,
    /// Separation of duties (the tool's `approvers`), and who started the run.
    pub duties: Duties,
}

/// Who may decide an approval: the tool's `approvers`, and the run's starter.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Duties {
    pub groups: Vec<String>,
    /// Distinct approvals needed (at least 1).
    pub required: u32,
    pub not_the_starter: bool,
    /// The run's starter (a caller id).
    pub started_by: String,
}

impl NewApproval {
    pub fn fields(&self) -> Vec<(&'static str, String)> {
        vec![
            ("id", self.id.clone()),
            ("tenant", self.tenant.clone()),
            ("agent", self.agent.clone()),
            ("run_id", self.run_id.clone()),
            ("step", self.step.to_string()),
            ("call_id", self.call_id.clone()),
            ("tool", self.tool.clone()),
            ("arguments_json", self.arguments_json.clone()),
            ("arguments_sha256", self.arguments_sha256.clone()),
            ("risk", self.risk.to_string()),
            ("state", PENDING.to_string()),
            ("created_ms", self.created_ms.to_string()),
            ("expires_ms", self.expires_ms.to_string()),
            ("decided_ms", String::new()),
            ("decided_by", String::new()),
            ("reason", String::new()),
            ("policy_reason", self.policy_reason.clone()),
            // Policy ids are words without spaces.
            ("policy_ids", self.policy_ids.join(" ")),
            ("traceparent", self.traceparent.clone()),
            // Group names have no spaces (the manifest refuses them).
            ("approver_groups", self.duties.groups.join(" ")),
            (
                "approvals_required",
                self.duties.required.max(1).to_string(),
            ),
            (
                "not_the_starter",
                if self.duties.not_the_starter { "1" } else { "" }.to_string(),
            ),
            ("started_by", self.duties.started_by.clone()),
            ("approved_by", String::new()),
            ("tokens_so_far", self.facts.tokens_so_far.to_string()),
            (
                "cost_nano_usd",
                self.facts
                    .cost_so_far
                    .as_ref()
                    .map(|c| c.nano_usd.to_string())
                    .unwrap_or_default(),
            ),
            (
                "cost_known",
                self.facts
                    .cost_so_far
                    .as_ref()
                    .is_some_and(|c| c.known)
                    .to_string(),
            ),
        ]
    }
}

/// Reads a stored approval (or an event's copy of one). A missing or malformed field is a
/// broken invariant, reported as internal with the approval and field named.
pub fn from_fields(f: &HashMap<String, String>) -> Result<Approval, Error> {
    let id = f.get("id").cloned().unwrap_or_default();
    let bad = |field: &str| {
        Error::Core(bridle_core::Error::internal(format!(
            "stored approval '{id}' has a missing or malformed field '{field}'"
        )))
    };
    let text = |field: &str| f.get(field).cloned().ok_or_else(|| bad(field));
    let ms = |field: &str| -> Result<Option<i64>, Error> {
        match f.get(field).map(String::as_str) {
            None | Some("") => Ok(None),
            Some(v) => v.parse().map(Some).map_err(|_| bad(field)),
        }
    };
    let required_ms = |field: &str| ms(field)?.ok_or_else(|| bad(field));
    let state = f
        .get("state")
        .and_then(|s| parse_state(s))
        .ok_or_else(|| bad("state"))?;
    Ok(Approval {
        id: text("id")?,
        tenant: text("tenant")?,
        agent: text("agent")?,
        run_id: text("run_id")?,
        step: text("step")?.parse().map_err(|_| bad("step"))?,
        call_id: text("call_id")?,
        tool: text("tool")?,
        arguments_json: text("arguments_json")?,
        arguments_sha256: text("arguments_sha256")?,
        risk: text("risk")?.parse().map_err(|_| bad("risk"))?,
        state: state as i32,
        created_at: Some(ts_from_ms(required_ms("created_ms")?)),
        expires_at: Some(ts_from_ms(required_ms("expires_ms")?)),
        decided_at: ms("decided_ms")?.map(ts_from_ms),
        decided_by: f.get("decided_by").cloned().unwrap_or_default(),
        reason: f.get("reason").cloned().unwrap_or_default(),
        policy_reason: f.get("policy_reason").cloned().unwrap_or_default(),
        policy_ids: f
            .get("policy_ids")
            .map(|v| v.split_whitespace().map(str::to_string).collect())
            .unwrap_or_default(),
        // Approvals stored before these were kept need one approval from anyone.
        approvals_required: f
            .get("approvals_required")
            .and_then(|v| v.parse().ok())
            .unwrap_or(1),
        approved_by: words(f, "approved_by"),
        approver_groups: words(f, "approver_groups"),
        not_the_starter: f.get("not_the_starter").map(String::as_str) == Some("1"),
    })
}

fn words(f: &HashMap<String, String>, field: &str) -> Vec<String> {
    f.get(field)
        .map(|v| v.split_whitespace().map(str::to_string).collect())
        .unwrap_or_default()
}

/// What approvers see of the run beside the call: stored with the approval, not part of the
/// Approval message. Missing fields (approvals stored before they were kept) read as unknown.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RunContext {
    pub tokens_so_far: Option<u64>,
    /// Nano-dollars, when known.
    pub cost_nano_usd: Option<i64>,
}

pub fn run_context(f: &HashMap<String, String>) -> RunContext {
    let known = f.get("cost_known").map(String::as_str) == Some("true");
    RunContext {
        tokens_so_far: f.get("tokens_so_far").and_then(|v| v.parse().ok()),
        cost_nano_usd: f
            .get("cost_nano_usd")
            .and_then(|v| v.parse().ok())
            .filter(|_| known),
    }
}

/// True when a pending approval's time is up (it counts as expired even before it is stored so).
pub fn lapsed(a: &Approval, now_ms: i64) -> bool {
    a.state == ApprovalState::Pending as i32
        && a.expires_at
            .as_ref()
            .is_some_and(|t| bridle_core::timeutil::ms_from_ts(t) <= now_ms)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn new_approvals_round_trip() {
        let n = NewApproval {
            id: "apr_01".into(),
            tenant: "t".into(),
            agent: "a".into(),
            run_id: "run_01".into(),
            step: 3,
            call_id: "call/1".into(),
            tool: "rm".into(),
            arguments_json: "{}".into(),
            arguments_sha256: "ab".into(),
            risk: 3,
            created_ms: 1_000,
            expires_ms: 2_000,
            policy_reason: "why".into(),
            policy_ids: vec!["guard.rm".into(), "agent.approval.require".into()],
            traceparent: "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01".into(),
            facts: RunFacts {
                step: 3,
                tokens_so_far: 1200,
                cost_so_far: Some(bridle_proto::Cost {
                    known: true,
                    nano_usd: 5_000,
                }),
            },
            duties: Duties {
                groups: vec!["sre".into(), "security".into()],
                required: 2,
                not_the_starter: true,
                started_by: "key_01".into(),
            },
        };
        let map: HashMap<String, String> = n
            .fields()
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect();
        let a = from_fields(&map).unwrap();
        assert_eq!(a.state, ApprovalState::Pending as i32);
        assert_eq!(a.step, 3);
        assert_eq!(a.decided_at, None);
        assert_eq!(a.policy_ids, ["guard.rm", "agent.approval.require"]);
        assert!(!lapsed(&a, 1_999));
        assert!(lapsed(&a, 2_000));
        assert_eq!(
            run_context(&map),
            RunContext {
                tokens_so_far: Some(1200),
                cost_nano_usd: Some(5_000)
            }
        );

        let mut broken = map.clone();
        broken.insert("state".into(), "maybe".into());
        let e = from_fields(&broken).unwrap_err();
        assert!(
            e.to_string().contains("'apr_01'") && e.to_string().contains("'state'"),
            "{e}"
        );
    }
}
