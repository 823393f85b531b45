//! The `Agent` kind: what an agent may do and within which limits.

use std::collections::HashSet;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::Problems;
use crate::ids::{check_name, check_tool_name};

pub const DEFAULT_MAX_STEPS: u32 = 10;

/// Most stop sequences a model call may set, and the longest one in bytes (the router checks
/// every call against these; an Agent's `spec.model.stop` too).
pub const STOP_SEQUENCES_MAX: usize = 16;
pub const STOP_SEQUENCE_BYTES_MAX: usize = 1000;

/// The reasoning levels a model call may ask for (`reasoning_effort`), lowest first: the union
/// of OpenAI's and Anthropic's; each provider's target refuses the ones its API lacks.
pub const REASONING_EFFORTS: &[&str] =
    &["none", "minimal", "low", "medium", "high", "xhigh", "max"];

/// The smallest extended-thinking budget Anthropic's API takes, in tokens.
pub const THINKING_BUDGET_MIN: u32 = 1024;

/// Whether `p` is a nucleus-sampling share, above 0 and at most 1 (an Agent's `topP`, and
/// every model call's `top_p` in the router).
pub fn top_p_in_range(p: f32) -> bool {
    p.is_finite() && p > 0.0 && p <= 1.0
}

/// Whether `s` can be a stop sequence: 1 to [`STOP_SEQUENCE_BYTES_MAX`] bytes.
pub fn stop_sequence_fits(s: &str) -> bool {
    !s.is_empty() && s.len() <= STOP_SEQUENCE_BYTES_MAX
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct AgentSpec {
    /// What the agent is for, for people reading lists of agents.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub description: String,
    /// ModelRoute the agent's model calls go through.
    pub route: String,
    /// System prompt.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub instructions: String,
    /// Tools granted to the agent, by name. A tool not listed never runs for it.
    #[serde(default)]
    pub tools: Vec<String>,
    /// Which calls need a person's approval beyond the policy, and how long one waits.
    #[serde(default)]
    pub approval: ApprovalSpec,
    /// Limits on one run; a run that reaches one ends failed with the reason.
    #[serde(default)]
    pub budget: BudgetSpec,
    /// Sampling parameters sent with each model call.
    #[serde(default)]
    pub model: ModelParams,
    #[serde(default, skip_serializing_if = "WorkspaceSpec::is_default")]
    pub workspace: WorkspaceSpec,
}

/// The run's /workspace, shared by its sandboxed tools.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct WorkspaceSpec {
    /// Its size limit ("2Gi"); unset = the tools service's default (1Gi). With a Tool's
    /// `limits.workspace` also set, the smaller one applies; above the tools service's ceiling
    /// (`workspace_quota_max`) the Agent is refused at apply.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quota: Option<String>,
}

impl WorkspaceSpec {
    pub fn is_default(&self) -> bool {
        *self == Self::default()
    }

    /// The quota in bytes; None when unset or not a size (validation reports that).
    pub fn quota_bytes(&self) -> Option<u64> {
        self.quota
            .as_deref()
            .and_then(|q| super::parse_quota(q).ok())
    }
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ApprovalSpec {
    /// Tools that always need a human's approval for this agent (besides destructive ones).
    #[serde(default)]
    pub require: Vec<String>,
    /// How long a pending approval waits before it counts as denied (default 1h).
    // A duration written as text ("30s", "5m").
    #[schemars(with = "Option<String>")]
    #[serde(
        default,
        with = "humantime_serde",
        skip_serializing_if = "Option::is_none"
    )]
    pub ttl: Option<Duration>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct BudgetSpec {
    /// Model calls a run may make (default 10).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_steps: Option<u32>,
    /// Input plus output tokens over the whole run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_tokens: Option<u64>,
    /// US dollars over the whole run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_cost_usd: Option<f64>,
    // A duration written as text ("30s", "5m").
    #[schemars(with = "Option<String>")]
    #[serde(
        default,
        with = "humantime_serde",
        skip_serializing_if = "Option::is_none"
    )]
    /// Time from start to end of a run, approval waits included ("30m").
    pub max_wall_time: Option<Duration>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ModelParams {
    /// Sampling temperature (the provider's default when unset).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub temperature: Option<f32>,
    /// Cap on each reply's tokens (never more than the token budget has left).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_output_tokens: Option<u32>,
    /// Context window of the model in tokens; default: known per model, else 128,000.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub context_window: Option<u64>,
    /// Nucleus sampling, above 0 and at most 1 (the provider's default when unset).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub top_p: Option<f32>,
    /// Sequences at which the model stops writing: at most 16, each 1 to 1,000 bytes (OpenAI
    /// allows 4).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub stop: Vec<String>,
    /// A seed for repeatable sampling (OpenAI-compatible providers; an Anthropic target
    /// refuses a call with one, and the route fails over).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seed: Option<i64>,
    /// How much the model reasons before it answers: none, minimal, low, medium, high, xhigh
    /// or max (the provider's default when unset; a target whose API lacks the level refuses
    /// the call, and the route fails over).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reasoning_effort: Option<String>,
    /// Anthropic extended thinking: the most tokens the model may think for each call, at
    /// least 1,024 and below `maxOutputTokens` (an OpenAI target refuses a call with one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub thinking_budget_tokens: Option<u32>,
    /// Prompt caching: mark the tools, the instructions and the conversation so far as
    /// cacheable on every call (Anthropic's `cache_control` breakpoints; OpenAI caches prompt
    /// prefixes on its own). Cached input is billed at the model's cache prices.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub prompt_cache: bool,
}

pub(super) fn validate(s: &AgentSpec, out: &mut Problems) {
    if let Err(e) = check_name(&s.route) {
        out.push(("spec.route".into(), e));
    }
    let mut seen = HashSet::new();
    for (i, t) in s.tools.iter().enumerate() {
        if let Err(e) = check_tool_name(t) {
            out.push((format!("spec.tools[{i}]"), e));
        }
        if !seen.insert(t) {
            out.push((format!("spec.tools[{i}]"), format!("'{t}' is listed twice")));
        }
    }
    for (i, t) in s.approval.require.iter().enumerate() {
        if !s.tools.contains(t) {
            out.push((
                format!("spec.approval.require[{i}]"),
                format!("'{t}' is not one of the agent's tools ({})", list(&s.tools)),
            ));
        }
    }
    if s.approval.ttl.is_some_and(|t| t.is_zero()) {
        out.push(("spec.approval.ttl".into(), "must be more than zero".into()));
    }
    let b = &s.budget;
    if b.max_steps == Some(0) {
        out.push(("spec.budget.maxSteps".into(), "must be at least 1".into()));
    }
    if b.max_tokens == Some(0) {
        out.push(("spec.budget.maxTokens".into(), "must be at least 1".into()));
    }
    if let Some(c) = b.max_cost_usd
        && !(c.is_finite() && c > 0.0)
    {
        out.push((
            "spec.budget.maxCostUsd".into(),
            format!("must be a positive amount, not {c}"),
        ));
    }
    if b.max_wall_time.is_some_and(|t| t.is_zero()) {
        out.push((
            "spec.budget.maxWallTime".into(),
            "must be more than zero".into(),
        ));
    }
    if let Some(t) = s.model.temperature
        && !(0.0..=2.0).contains(&t)
    {
        out.push((
            "spec.model.temperature".into(),
            format!("must be between 0 and 2, not {t}"),
        ));
    }
    if let Some(p) = s.model.top_p
        && !top_p_in_range(p)
    {
        out.push((
            "spec.model.topP".into(),
            format!("must be above 0 and at most 1, not {p}"),
        ));
    }
    if s.model.stop.len() > STOP_SEQUENCES_MAX {
        out.push((
            "spec.model.stop".into(),
            format!(
                "at most {STOP_SEQUENCES_MAX} stop sequences, not {}",
                s.model.stop.len()
            ),
        ));
    }
    for (i, q) in s.model.stop.iter().enumerate() {
        if !stop_sequence_fits(q) {
            out.push((
                format!("spec.model.stop[{i}]"),
                format!("a stop sequence is 1 to {STOP_SEQUENCE_BYTES_MAX} bytes"),
            ));
        }
    }
    if let Some(e) = s
        .model
        .reasoning_effort
        .as_deref()
        .filter(|e| !REASONING_EFFORTS.contains(e))
    {
        out.push((
            "spec.model.reasoningEffort".into(),
            format!(
                "'{}' is not one of {}",
                crate::redact::preview(e, 40),
                REASONING_EFFORTS.join(", ")
            ),
        ));
    }
    if let Some(b) = s.model.thinking_budget_tokens {
        if b < THINKING_BUDGET_MIN {
            out.push((
                "spec.model.thinkingBudgetTokens".into(),
                format!("must be at least {THINKING_BUDGET_MIN}, not {b}"),
            ));
        } else if let Some(m) = s.model.max_output_tokens.filter(|m| b >= *m) {
            out.push((
                "spec.model.thinkingBudgetTokens".into(),
                format!("must be below maxOutputTokens ({m}), which counts the thinking too"),
            ));
        }
    }
    if s.model.context_window.is_some_and(|w| w < 1024) {
        out.push((
            "spec.model.contextWindow".into(),
            "must be at least 1024 tokens".into(),
        ));
    }
    if let Some(q) = &s.workspace.quota
        && let Err(e) = super::parse_quota(q)
    {
        out.push(("spec.workspace.quota".into(), e));
    }
    if s.model.max_output_tokens == Some(0) {
        out.push((
            "spec.model.maxOutputTokens".into(),
            "must be at least 1".into(),
        ));
    }
}

fn list(v: &[String]) -> String {
    if v.is_empty() {
        "none".into()
    } else {
        v.join(", ")
    }
}
