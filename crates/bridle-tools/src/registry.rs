//! The tools of each tenant, as stored by the Manifests service, and their compiled argument
//! validators.
//!
//! Manifests are read from Redis on every call (a change applies to the next call, on every
//! replica); compiling a JSON Schema is the costly part, so validators are cached by tool and
//! reused while the schema is unchanged. A new generation of the manifest with a different
//! schema replaces the entry.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use bridle_core::manifest::{self, Manifest, Risk, Tool};
use bridle_core::store::ManifestStore;
use bridle_proto::{RiskClass, ToolSpec};

use crate::Error;

/// Entries kept before the cache is cleared (tools deleted long ago should not pile up).
const MAX_CACHED: usize = 10_000;

struct Cached {
    schema: String,
    validator: Arc<jsonschema::Validator>,
}

pub struct Registry {
    store: ManifestStore,
    validators: Mutex<HashMap<(String, String), Cached>>,
}

impl Registry {
    pub fn new(store: ManifestStore) -> Self {
        Self {
            store,
            validators: Mutex::new(HashMap::new()),
        }
    }

    pub async fn get(&self, tenant: &str, name: &str) -> Result<Option<Tool>, Error> {
        match self.store.get("Tool", tenant, name).await? {
            Some(Manifest::Tool(t)) => Ok(Some(t)),
            Some(other) => Err(Error::Core(bridle_core::Error::internal(format!(
                "stored Tool/{tenant}/{name} decoded as a {}",
                other.kind()
            )))),
            None => Ok(None),
        }
    }

    /// Every tool of `tenant` when `names` is empty, else the named ones and the names missing.
    pub async fn list(
        &self,
        tenant: &str,
        names: &[String],
    ) -> Result<(Vec<Tool>, Vec<String>), Error> {
        if names.is_empty() {
            let tools = self
                .store
                .list(tenant, Some("Tool"))
                .await?
                .into_iter()
                .filter_map(|(m, _)| match m {
                    Manifest::Tool(t) => Some(t),
                    _ => None,
                })
                .collect();
            return Ok((tools, vec![]));
        }
        let mut tools = Vec::new();
        let mut missing = Vec::new();
        for n in names {
            match self.get(tenant, n).await? {
                Some(t) => tools.push(t),
                None => missing.push(n.clone()),
            }
        }
        Ok((tools, missing))
    }

    /// The compiled validator of a tool's parameters schema (`name` is the name the tool is
    /// called by: an MCP server's tools each have their own).
    pub fn validator(
        &self,
        tenant: &str,
        name: &str,
        parameters: &serde_json::Value,
    ) -> Result<Arc<jsonschema::Validator>, Error> {
        let schema = parameters.to_string();
        let key = (tenant.to_string(), name.to_string());
        let mut cache = self.validators.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(c) = cache.get(&key)
            && c.schema == schema
        {
            return Ok(c.validator.clone());
        }
        // Stored manifests were validated, schema included; failing here means the stored
        // text and this build's validator disagree.
        let validator =
            Arc::new(
                jsonschema::validator_for(parameters).map_err(|e| Error::BadTool {
                    tool: name.to_string(),
                    reason: format!("its parameters are not a valid JSON Schema: {e}"),
                })?,
            );
        if cache.len() >= MAX_CACHED {
            cache.clear();
        }
        cache.insert(
            key,
            Cached {
                schema,
                validator: validator.clone(),
            },
        );
        Ok(validator)
    }
}

/// A tool as the model and the policy engine see it.
pub fn spec_proto(t: &Tool) -> ToolSpec {
    ToolSpec {
        name: t.metadata.name.clone(),
        description: t.spec.description.clone(),
        parameters_json_schema: t.spec.parameters.to_string(),
        risk: risk_class(t.spec.risk_or_default()) as i32,
        tags: t.spec.tags.clone(),
        kind: bridle_core::manifest::tool_kind_value(t.spec.kind()) as i32,
        risk_source: if t.spec.risk.is_some() {
            "manifest"
        } else {
            "default"
        }
        .into(),
        approvers: approver_rule(t),
        // Not held to a strict schema: a Tool's need not meet a provider's strict subset.
        strict: false,
        // Set per call by the orchestrator (an Agent's promptCache).
        cache_breakpoint: false,
    }
}

/// The Tool's `approvers`, as its calls' approvals carry them.
pub fn approver_rule(t: &Tool) -> Option<bridle_proto::ApproverRule> {
    t.spec
        .approvers
        .as_ref()
        .map(|a| bridle_proto::ApproverRule {
            groups: a.groups.clone(),
            count: a.count,
            not_the_starter: a.not_the_starter,
        })
}

pub fn risk_class(r: Risk) -> RiskClass {
    match r {
        Risk::ReadOnly => RiskClass::ReadOnly,
        Risk::Mutating => RiskClass::Mutating,
        Risk::Destructive => RiskClass::Destructive,
    }
}

/// The tenant a stored Tool belongs to.
pub fn tool_tenant(t: &Tool) -> &str {
    t.metadata
        .tenant
        .as_deref()
        .unwrap_or(bridle_core::manifest::DEFAULT_TENANT)
}

pub fn tenant_or_default(t: &str) -> &str {
    if t.is_empty() {
        manifest::DEFAULT_TENANT
    } else {
        t
    }
}
