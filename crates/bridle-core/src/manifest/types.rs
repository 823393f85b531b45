//! The typed form of each kind. Field names are camelCase in YAML, unknown fields are errors
//! (a typo must not silently do nothing), and defaults are written here once.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Metadata {
    /// The manifest's name, unique per kind within a tenant (lowercase letters, digits and `-`).
    pub name: String,
    /// The tenant it belongs to (default: the caller's, or `default`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant: Option<String>,
    /// Free-form labels, kept with the manifest.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
}

macro_rules! envelope {
    ($name:ident, $spec:ty) => {
        #[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
        #[serde(deny_unknown_fields, rename_all = "camelCase")]
        pub struct $name {
            /// `bridle.dev/v1`.
            pub api_version: String,
            /// The kind's name, as the heading says.
            pub kind: String,
            /// Name, tenant and labels.
            pub metadata: Metadata,
            /// What the kind declares; its fields follow.
            pub spec: $spec,
        }
    };
}

envelope!(Agent, super::agent::AgentSpec);
envelope!(Tool, super::tool::ToolSpec);
envelope!(ModelRoute, super::route::ModelRouteSpec);
envelope!(Policy, super::policy::PolicySpec);
envelope!(SecretBinding, super::binding::SecretBindingSpec);
envelope!(Budget, super::budget::SpendBudgetSpec);
