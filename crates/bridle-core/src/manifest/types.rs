//! The typed form of each kind. Field names are camelCase in YAML, unknown fields are errors
//! (a typo must not silently do nothing), and defaults are written here once.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Metadata {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant: Option<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
}

macro_rules! envelope {
    ($name:ident, $spec:ty) => {
        #[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
        #[serde(deny_unknown_fields, rename_all = "camelCase")]
        pub struct $name {
            pub api_version: String,
            pub kind: String,
            pub metadata: Metadata,
            pub spec: $spec,
        }
    };
}

envelope!(Agent, super::agent::AgentSpec);
envelope!(Tool, super::tool::ToolSpec);
envelope!(ModelRoute, super::route::ModelRouteSpec);
envelope!(Policy, super::policy::PolicySpec);
envelope!(SecretBinding, super::binding::SecretBindingSpec);
