//! How runs and their events read on a terminal: one line per event, indented under its step,
//! with what a person watching wants — durations, tokens, cost, tool results, approvals — and
//! the scripted provider always labelled as such.

use std::time::Duration;

use bridle_core::redact::preview;
use bridle_core::timeutil::{short_duration, std_duration};
use bridle_proto as pb;
use bridle_proto::run_event::Kind;

pub fn cost(c: Option<&pb::Cost>) -> String {
    match c {
        Some(c) if c.known => format!("${:.4}", c.nano_usd as f64 / 1e9),
        Some(_) => "cost unknown".into(),
        None => "cost unknown".into(),
    }
}

pub fn tokens(u: Option<&pb::Usage>) -> String {
    let u = u.cloned().unwrap_or_default();
    let mut s = format!(
        "{} tokens ({} in, {} out",
        u.input_tokens + u.output_tokens,
        u.input_tokens,
        u.output_tokens
    );
    if u.cache_read_tokens > 0 {
        s.push_str(&format!(", {} cached", u.cache_read_tokens));
    }
    s.push(')');
    s
}

pub fn dur(d: Option<&prost_types::Duration>) -> String {
    short_duration(std_duration(d).unwrap_or(Duration::ZERO))
}

pub fn status(s: i32) -> &'static str {
    match pb::RunStatus::try_from(s).unwrap_or(pb::RunStatus::Unspecified) {
        pb::RunStatus::Queued => "queued",
        pb::RunStatus::Running => "running",
        pb::RunStatus::AwaitingApproval => "awaiting approval",
        pb::RunStatus::Succeeded => "succeeded",
        pb::RunStatus::Failed => "failed",
        pb::RunStatus::Cancelled => "cancelled",
        pb::RunStatus::Unspecified => "unknown",
    }
}

pub fn reason(r: i32) -> &'static str {
    match pb::EndReason::try_from(r).unwrap_or(pb::EndReason::Unspecified) {
        pb::EndReason::FinalAnswer => "final answer",
        pb::EndReason::MaxSteps => "step budget",
        pb::EndReason::TokenBudget => "token budget",
        pb::EndReason::CostBudget => "cost budget",
        pb::EndReason::WallTime => "wall-time budget",
        pb::EndReason::Cancelled => "cancelled",
        pb::EndReason::Error => "error",
        pb::EndReason::DeadLetter => "dead letter",
        pb::EndReason::Unspecified => "",
    }
}

fn indent(text: &str, prefix: &str, max_lines: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    let mut out: Vec<String> = lines
        .iter()
        .take(max_lines)
        .map(|l| format!("{prefix}{}", preview(l, 160)))
        .collect();
    if lines.len() > max_lines {
        out.push(format!(
            "{prefix}… ({} more lines)",
            lines.len() - max_lines
        ));
    }
    out.join("\n")
}

/// The lines an event renders as (none for events that only matter to machines).
pub fn event(ev: &pb::RunEvent) -> Vec<String> {
    let Some(kind) = &ev.kind else { return vec![] };
    match kind {
        Kind::RunCreated(c) => {
            let b = c.budget.unwrap_or_default();
            vec![format!(
                "run {} of agent '{}' (tenant {}), up to {} steps",
                ev.run_id, c.agent, c.tenant, b.max_steps
            )]
        }
        Kind::StepStarted(_) => vec![format!("step {}", ev.step)],
        Kind::ModelCompleted(m) => {
            let who = if m.scripted {
                "scripted reply (replayed from the route's script, not a model)".to_string()
            } else {
                format!("{} {} via {}", m.provider, m.model, m.target)
            };
            let mut v = vec![if m.scripted {
                format!("  model   {who} · no tokens, no cost")
            } else {
                format!(
                    "  model   {who} · {} · {} · {}",
                    dur(m.latency.as_ref()),
                    tokens(m.usage.as_ref()),
                    cost(m.cost.as_ref())
                )
            }];
            if !m.text.trim().is_empty() {
                v.push(indent(m.text.trim(), "          │ ", 8));
            }
            for c in &m.tool_calls {
                v.push(format!(
                    "          → {}({})",
                    c.name,
                    preview(&c.arguments_json, 200)
                ));
            }
            v
        }
        Kind::PolicyEvaluated(p) => {
            let d = match pb::PolicyDecision::try_from(p.decision)
                .unwrap_or(pb::PolicyDecision::Unspecified)
            {
                pb::PolicyDecision::Allow => "allowed",
                pb::PolicyDecision::Deny => "denied",
                pb::PolicyDecision::RequireApproval => "needs approval",
                pb::PolicyDecision::Unspecified => "undecided",
            };
            let why = if p.reason.is_empty() {
                String::new()
            } else {
                format!(" ({})", p.reason)
            };
            vec![format!("  policy  {}: {d}{why}", p.tool)]
        }
        Kind::ApprovalRequested(a) => vec![format!(
            "  ⏸ awaiting approval {} for {} — approve with: bridle approvals approve {}   (or deny: bridle approvals deny {} --reason ...)",
            a.approval_id, a.tool, a.approval_id, a.approval_id
        )],
        Kind::ApprovalResolved(a) => {
            let by = if a.decided_by.is_empty() {
                String::new()
            } else {
                format!(" by {}", a.decided_by)
            };
            let why = if a.reason.is_empty() {
                String::new()
            } else {
                format!(": {}", a.reason)
            };
            vec![format!(
                "  approval {} {}{by}{why} (waited {})",
                a.approval_id,
                crate::words::approval_state(a.outcome),
                dur(a.waited.as_ref())
            )]
        }
        Kind::ToolStarted(t) => vec![format!("  tool    {} started", t.tool)],
        Kind::ToolFinished(t) => {
            let mark = if t.skipped {
                "not run".to_string()
            } else if t.timed_out {
                "timed out".to_string()
            } else if t.is_error {
                format!("failed (exit {})", t.exit_code)
            } else {
                format!("ok (exit {})", t.exit_code)
            };
            let mut extra = String::new();
            if t.replayed {
                extra.push_str(" · result replayed, not run again");
            }
            if t.truncated {
                extra.push_str(" · output truncated");
            }
            let timing = if t.skipped {
                String::new()
            } else {
                format!(" · {}", dur(t.duration.as_ref()))
            };
            let mut v = vec![format!("  tool    {} {mark}{timing}{extra}", t.tool)];
            if !t.output.trim().is_empty() {
                v.push(indent(t.output.trim_end(), "          │ ", 12));
            }
            v
        }
        Kind::StepFinished(s) => vec![format!(
            "  step {} done in {} · total {} · {}",
            ev.step,
            dur(s.duration.as_ref()),
            tokens(s.usage_total.as_ref()),
            cost(s.cost_total.as_ref())
        )],
        Kind::RunFinished(f) => {
            let mut v = vec![format!(
                "run {} ({}) in {} · {} step{} · {} · {}",
                status(f.status),
                reason(f.reason),
                dur(f.duration.as_ref()),
                f.steps,
                if f.steps == 1 { "" } else { "s" },
                tokens(f.usage.as_ref()),
                cost(f.cost.as_ref())
            )];
            if !f.error.is_empty() {
                v.push(format!("error: {}", f.error));
            }
            if !f.output.is_empty() {
                v.push("output:".into());
                v.push(indent(&f.output, "  ", 200));
            }
            v
        }
        Kind::ContextCompacted(c) => vec![format!(
            "  context compacted ({}): {} → {} tokens",
            c.method, c.tokens_before, c.tokens_after
        )],
        Kind::Notice(n) => vec![format!(
            "  {}: {}",
            crate::words::notice_level(n.level),
            n.message
        )],
    }
}

/// "API key 'ops' (key_01...)", "user 'alice@example.com' (oidc:u-123)", "anonymous".
pub fn actor(a: &pb::Actor) -> String {
    match bridle_core::auth::actor_kind_word(a.kind) {
        "anonymous" => "anonymous (auth off)".into(),
        k => format!(
            "{} '{}' ({})",
            bridle_core::auth::kind_word(k),
            a.name,
            a.id
        ),
    }
}
