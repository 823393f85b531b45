//! The `ModelRoute` kind: which models answer an agent, in what order, with which keys, at what
//! price and under which limits.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

mod checks;

pub(super) use checks::validate;

/// How a route orders its targets for one call. Whatever comes first, the others follow as
/// fallbacks in the same order.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum Strategy {
    /// Targets in order; the next one only when the previous failed.
    #[default]
    Fallback,
    /// A random order drawn by `weight`: a target of weight 3 comes first three times as often
    /// as one of weight 1; weight 0 is only a fallback.
    Weighted,
    /// The target with the lowest recent latency first (an EWMA kept by each router replica);
    /// targets not yet measured are tried first so every target gets measured.
    LeastLatency,
    /// The target with the lowest price first (input plus output price per million tokens);
    /// targets with no known price last.
    Cheapest,
}

impl Strategy {
    pub fn as_str(self) -> &'static str {
        match self {
            Strategy::Fallback => "fallback",
            Strategy::Weighted => "weighted",
            Strategy::LeastLatency => "least_latency",
            Strategy::Cheapest => "cheapest",
        }
    }

    /// As the contracts carry it (`ModelRouteInfo.strategy`).
    pub fn to_pb(self) -> bridle_proto::RouteStrategy {
        match self {
            Strategy::Fallback => bridle_proto::RouteStrategy::Fallback,
            Strategy::Weighted => bridle_proto::RouteStrategy::Weighted,
            Strategy::LeastLatency => bridle_proto::RouteStrategy::LeastLatency,
            Strategy::Cheapest => bridle_proto::RouteStrategy::Cheapest,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ProviderKind {
    /// OpenAI Chat Completions, or any compatible endpoint via baseUrl (Azure OpenAI with
    /// `azure`).
    Openai,
    /// Anthropic Messages.
    Anthropic,
    /// Replays assistant turns written in the manifest; labelled "scripted" wherever it shows.
    Scripted,
}

impl ProviderKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ProviderKind::Openai => "openai",
            ProviderKind::Anthropic => "anthropic",
            ProviderKind::Scripted => "scripted",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ModelRouteSpec {
    #[serde(default)]
    pub strategy: Strategy,
    /// Where calls go, in the order the strategy uses them.
    pub targets: Vec<Target>,
    /// Whole-call deadline across retries and failover (default 120s).
    // A duration written as text ("30s", "5m").
    #[schemars(with = "Option<String>")]
    #[serde(
        default,
        with = "humantime_serde",
        skip_serializing_if = "Option::is_none"
    )]
    pub timeout: Option<Duration>,
    /// Requests and tokens per minute through this route, shared by every router replica.
    #[serde(default, skip_serializing_if = "RouteLimits::is_empty")]
    pub limits: RouteLimits,
}

/// Limits of a route, counted per tenant and per agent (of a tenant).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RouteLimits {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub per_tenant: Option<Rate>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub per_agent: Option<Rate>,
}

impl RouteLimits {
    pub fn is_empty(&self) -> bool {
        self.per_tenant.is_none() && self.per_agent.is_none()
    }
}

/// Requests per minute and tokens (input + output) per minute; unset means no limit.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema,
)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Rate {
    /// Requests per minute.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rpm: Option<u64>,
    /// Tokens (input + output) per minute.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tpm: Option<u64>,
}

/// A target's own prices in US dollars per million tokens, replacing the router's table.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct PriceOverride {
    /// US dollars per million input tokens.
    pub input: f64,
    /// US dollars per million output tokens.
    pub output: f64,
    /// Input tokens read from the provider's prompt cache (default: the input price).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache_read: Option<f64>,
    /// Input tokens written to the prompt cache (default: the input price).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache_write: Option<f64>,
}

/// Largest price accepted, in dollars per million tokens: far above any model's, and small
/// enough that nano-dollar arithmetic cannot overflow.
pub const MAX_PRICE_USD_PER_MTOK: f64 = 1_000_000.0;

impl PriceOverride {
    /// (input, output, cache read, cache write) in nano-USD per million tokens.
    pub fn nano_usd(&self) -> (i64, i64, i64, i64) {
        let n = |usd: f64| (usd * 1e9).round() as i64;
        (
            n(self.input),
            n(self.output),
            n(self.cache_read.unwrap_or(self.input)),
            n(self.cache_write.unwrap_or(self.input)),
        )
    }
}

/// Azure OpenAI: `baseUrl` is the resource endpoint (`https://<resource>.openai.azure.com`);
/// calls go to `/openai/deployments/<deployment>/chat/completions?api-version=<apiVersion>`
/// with the key in an `api-key` header.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct AzureSettings {
    /// The Azure deployment name.
    pub deployment: String,
    /// The Azure `api-version` query parameter.
    #[serde(default = "default_azure_api_version")]
    pub api_version: String,
}

pub const DEFAULT_AZURE_API_VERSION: &str = "2024-10-21";

fn default_azure_api_version() -> String {
    DEFAULT_AZURE_API_VERSION.into()
}

/// Which of OpenAI's APIs a target of provider `openai` calls.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema,
)]
#[serde(rename_all = "kebab-case")]
pub enum OpenAiApi {
    /// `POST <baseUrl>/chat/completions`: OpenAI and every compatible server.
    #[default]
    ChatCompletions,
    /// `POST <baseUrl>/responses`: OpenAI's Responses API (stateless: nothing is stored).
    Responses,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Target {
    /// Unique within the route (default: the provider's name).
    #[serde(default)]
    pub name: String,
    /// `openai` (and compatible servers), `anthropic`, or `scripted` (offline replies).
    pub provider: ProviderKind,
    /// The provider's model name (not used by `scripted`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// The provider's API base URL (default: the provider's public one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base_url: Option<String>,
    /// `secret://name`; the router resolves it through the secrets broker.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_key: Option<String>,
    /// Extra request headers; values may be `secret://` references.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub headers: BTreeMap<String, String>,
    /// One try's deadline (default 60s).
    // A duration written as text ("30s", "5m").
    #[schemars(with = "Option<String>")]
    #[serde(
        default,
        with = "humantime_serde",
        skip_serializing_if = "Option::is_none"
    )]
    pub timeout: Option<Duration>,
    /// Strategy `weighted`: how often this target comes first, relative to the others
    /// (default 1; 0 = only as a fallback).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weight: Option<u32>,
    /// Prices of this target, replacing the router's price table (for fine-tunes, private
    /// deployments, negotiated rates, or models the table does not know).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub price: Option<PriceOverride>,
    /// Output cap sent when the request sets none (Anthropic requires one; default 4096).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_output_tokens: Option<u32>,
    /// Provider `openai` only: call an Azure OpenAI deployment.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub azure: Option<AzureSettings>,
    /// Provider `openai` only: `chat-completions` (default) or `responses`, OpenAI's
    /// Responses API (not with `azure`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api: Option<OpenAiApi>,
    /// Scripted provider: the assistant turns, replayed in order.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub script: Option<Vec<ScriptTurn>>,
    /// Scripted provider: a YAML file of turns, read by `bridle apply` (relative to the
    /// manifest) and sent inline as `script`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub script_file: Option<String>,
}

/// One assistant turn of a script. Turn n answers the conversation's n-th model call.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ScriptTurn {
    /// Text of the reply. `{{last_tool_output}}` is replaced by the latest tool result.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub text: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tool_calls: Vec<ScriptToolCall>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ScriptToolCall {
    pub name: String,
    #[serde(default = "empty_object")]
    pub arguments: serde_json::Value,
}

fn empty_object() -> serde_json::Value {
    serde_json::json!({})
}
