//! The `Budget` kind: how many US dollars of model calls a tenant, or each of its people, end
//! users, API keys, agents or models, may spend per day or per month. Owned by the router, which
//! checks every call against the tenant's budgets before sending it (agent runs and the gateway
//! fronts alike).

use serde::{Deserialize, Serialize};

use super::Problems;

/// Whose spending a budget counts: one total for the tenant, or one total for each distinct
/// value of the dimension (each person, each end user, ...).
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize, schemars::JsonSchema,
)]
#[serde(rename_all = "camelCase")]
pub enum BudgetPer {
    /// All of the tenant's calls together.
    #[default]
    Tenant,
    /// Each person (OIDC subject) whose run or gateway call it is; calls with no person behind
    /// them (an API key's, a service's) are not counted by it.
    User,
    /// Each end user an application named (StartRun's `end_user`, OpenAI's `user`, Anthropic's
    /// `metadata.user_id`); calls naming none are not counted by it.
    EndUser,
    /// Each API key that started the run or made the gateway call.
    ApiKey,
    /// Each agent (the gateway's `x-bridle-agent` header, else the caller's name).
    Agent,
    /// Each model, as the route's target names it.
    Model,
}

impl BudgetPer {
    pub fn as_str(self) -> &'static str {
        match self {
            BudgetPer::Tenant => "tenant",
            BudgetPer::User => "user",
            BudgetPer::EndUser => "endUser",
            BudgetPer::ApiKey => "apiKey",
            BudgetPer::Agent => "agent",
            BudgetPer::Model => "model",
        }
    }
}

/// How long a budget's allowance lasts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum BudgetPeriod {
    Day,
    Month,
}

/// Where a period starts.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema,
)]
#[serde(rename_all = "camelCase")]
pub enum BudgetWindow {
    /// Calendar days and months in UTC: the allowance is whole again at midnight UTC, or on the
    /// first of the month.
    #[default]
    Calendar,
    /// The last 24 hours (counted by the hour) or the last 30 days (counted by the day).
    Rolling,
}

/// Calls a budget counts, when it should count only some: every field given must match.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct BudgetMatch {
    /// A person's id as runs record it (`oidc:<subject>`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end_user: Option<String>,
    /// An API key's id (`key_...`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_key: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent: Option<String>,
    /// A model as the route's target names it (`gpt-4o-mini`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct SpendBudgetSpec {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub description: String,
    /// US dollars allowed per period (for each value of `per`).
    pub usd: f64,
    pub period: BudgetPeriod,
    #[serde(default)]
    pub window: BudgetWindow,
    #[serde(default)]
    pub per: BudgetPer,
    /// Only calls matching all of these count against the budget.
    #[serde(default, rename = "match", skip_serializing_if = "is_default_match")]
    pub matching: BudgetMatch,
    /// Percent of `usd` at which a warning is raised once per period: an event on the router's
    /// budget stream, the `bridle.budget.warnings` metric and, when `webhook` is set, a POST to
    /// it (default 80; 0 for none).
    #[serde(default = "default_warn_at")]
    pub warn_at_percent: u8,
    /// An https (or loopback http) URL that receives a JSON POST when the warning is raised.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webhook: Option<String>,
}

fn is_default_match(m: &BudgetMatch) -> bool {
    *m == BudgetMatch::default()
}

fn default_warn_at() -> u8 {
    80
}

/// Largest budget accepted, in US dollars: far above any real one, and small enough that
/// nano-dollar sums cannot overflow.
pub const MAX_BUDGET_USD: f64 = 1_000_000_000.0;

impl SpendBudgetSpec {
    /// The allowance in nano-USD.
    pub fn nano_usd(&self) -> i64 {
        (self.usd * 1e9).round() as i64
    }
}

pub(super) fn validate(s: &SpendBudgetSpec, out: &mut Problems) {
    if !s.usd.is_finite() || s.usd <= 0.0 || s.usd > MAX_BUDGET_USD {
        out.push((
            "spec.usd".into(),
            format!("must be more than 0 and at most {MAX_BUDGET_USD} US dollars"),
        ));
    }
    if s.warn_at_percent > 100 {
        out.push((
            "spec.warnAtPercent".into(),
            "must be between 0 (no warning) and 100".into(),
        ));
    }
    if let Some(url) = &s.webhook {
        match url::Url::parse(url) {
            Ok(u) if crate::config::https_or_loopback(&u) => {}
            Ok(_) => out.push((
                "spec.webhook".into(),
                "must be an https URL (or http to a loopback address)".into(),
            )),
            Err(e) => out.push((
                "spec.webhook".into(),
                format!("'{}' is not a URL ({e})", crate::redact::quote(url)),
            )),
        }
    }
    let m = &s.matching;
    for (field, v) in [
        ("user", &m.user),
        ("endUser", &m.end_user),
        ("apiKey", &m.api_key),
        ("agent", &m.agent),
        ("model", &m.model),
    ] {
        if let Some(v) = v
            && (v.is_empty() || v.len() > 256 || v.chars().any(char::is_control))
        {
            out.push((
                format!("spec.match.{field}"),
                "must be 1 to 256 bytes without control characters".into(),
            ));
        }
    }
}
