//! One tool call as a Cedar request: principal = the agent, action = `call`, resource = the
//! tool, context = the normalised arguments and the run's facts.
//!
//! Arguments are built as Cedar values directly, never through Cedar's JSON entity format: in
//! that format an object with an `__entity` or `__extn` key becomes an entity reference or an
//! extension value, and the arguments are written by the model (attacker-controlled).

use std::collections::HashSet;
use std::str::FromStr;

use bridle_proto::RiskClass;
use cedar_policy::{
    Context, Entities, Entity, EntityId, EntityTypeName, EntityUid, Request, RestrictedExpression,
};
use serde_json::Value;

use super::compile::Reads;
use super::schema;
use crate::canonical::{MAX_DEPTH, canonical_json};
use crate::policy::PolicyInput;

/// The name of a risk class in policies (`resource.risk == "destructive"`), as manifests
/// spell it.
pub fn risk_name(risk: i32) -> &'static str {
    match RiskClass::try_from(risk) {
        Ok(RiskClass::ReadOnly) => "read_only",
        Ok(RiskClass::Mutating) => "mutating",
        Ok(RiskClass::Destructive) => "destructive",
        Ok(RiskClass::Unspecified) | Err(_) => "unspecified",
    }
}

/// A JSON value as a Cedar value. JSON has things Cedar has not: `null` is left out (an
/// object member that is null is absent, so `has` is false; a null array item is dropped),
/// arrays become sets (Cedar has no lists: order and duplicates are lost), and numbers that
/// are not 64-bit integers become strings of their JSON text. A value nested deeper than
/// [`MAX_DEPTH`] is an error (the walk recurses once per level).
pub fn cedar_value(v: &Value) -> Result<Option<RestrictedExpression>, String> {
    value_at(v, 0)
}

/// `depth`: the arrays and objects around `v`.
fn value_at(v: &Value, depth: usize) -> Result<Option<RestrictedExpression>, String> {
    if matches!(v, Value::Array(_) | Value::Object(_)) && depth >= MAX_DEPTH {
        return Err(format!("the arguments nest deeper than {MAX_DEPTH} levels"));
    }
    Ok(Some(match v {
        Value::Null => return Ok(None),
        Value::Bool(b) => RestrictedExpression::new_bool(*b),
        Value::Number(n) => match n.as_i64() {
            Some(i) => RestrictedExpression::new_long(i),
            None => RestrictedExpression::new_string(n.to_string()),
        },
        Value::String(s) => RestrictedExpression::new_string(s.clone()),
        Value::Array(items) => {
            let mut set = Vec::with_capacity(items.len());
            for item in items {
                set.extend(value_at(item, depth + 1)?);
            }
            RestrictedExpression::new_set(set)
        }
        Value::Object(map) => return record(map, depth),
    }))
}

/// `depth`: the arrays and objects around `map`.
fn record(
    map: &serde_json::Map<String, Value>,
    depth: usize,
) -> Result<Option<RestrictedExpression>, String> {
    let mut fields = Vec::with_capacity(map.len());
    for (k, v) in map {
        if let Some(c) = value_at(v, depth + 1)? {
            fields.push((k.clone(), c));
        }
    }
    // serde_json maps hold each key once, so the only construction error cannot happen; a
    // None here is treated as "no arguments" by the caller all the same.
    Ok(RestrictedExpression::new_record(fields).ok())
}

/// The arguments as policies see them.
pub struct Arguments {
    /// The object's members, or an empty record when the arguments are not a JSON object.
    pub record: RestrictedExpression,
    /// Canonical JSON (sorted keys, no whitespace), or the raw text when it is not JSON.
    pub json: String,
    /// True when the arguments are a JSON object.
    pub valid: bool,
}

/// The arguments in the forms `reads` asks for (the others empty). An error: arguments too
/// deep to walk (never from JSON text; see [`MAX_DEPTH`]).
pub fn arguments(raw: &str, reads: Reads) -> Result<Arguments, String> {
    let parsed: Option<Value> = if reads.arguments || reads.valid {
        serde_json::from_str(raw).ok()
    } else {
        None
    };
    let json = if reads.json {
        canonical_json(raw).unwrap_or_else(|| raw.to_string())
    } else {
        String::new()
    };
    let valid = matches!(parsed, Some(Value::Object(_)));
    let record = match parsed.as_ref() {
        Some(Value::Object(map)) if reads.arguments => record(map, 0)?,
        _ => None,
    };
    let record = record
        .or_else(|| RestrictedExpression::new_record(Vec::new()).ok())
        // An empty record always builds; a string keeps the request well-formed regardless.
        .unwrap_or_else(|| RestrictedExpression::new_string(String::new()));
    Ok(Arguments {
        record,
        json,
        valid,
    })
}

fn uid(type_name: &str, id: &str) -> Result<EntityUid, String> {
    let t = EntityTypeName::from_str(type_name).map_err(|e| format!("{type_name}: {e}"))?;
    Ok(EntityUid::from_type_name_and_id(t, EntityId::new(id)))
}

fn s(v: &str) -> RestrictedExpression {
    RestrictedExpression::new_string(v.to_string())
}

fn long_u64(v: u64) -> RestrictedExpression {
    RestrictedExpression::new_long(i64::try_from(v).unwrap_or(i64::MAX))
}

/// The Cedar request and the entities it refers to. Argument forms no policy reads (`reads`)
/// are left empty. An error here is a request Cedar cannot represent; the caller denies the
/// call.
pub fn build(input: &PolicyInput<'_>, reads: Reads) -> Result<(Request, Entities), String> {
    let tenant = uid(schema::TENANT_TYPE, input.tenant)?;
    let agent = uid(schema::AGENT_TYPE, input.agent)?;
    let tool = uid(schema::TOOL_TYPE, &input.tool.name)?;
    let parents = || HashSet::from([tenant.clone()]);
    let agent_entity = Entity::new(
        agent.clone(),
        [
            ("name".to_string(), s(input.agent)),
            ("tenant".to_string(), s(input.tenant)),
        ]
        .into(),
        parents(),
    )
    .map_err(|e| format!("agent entity: {e}"))?;
    let tool_entity = Entity::new(
        tool.clone(),
        [
            ("name".to_string(), s(&input.tool.name)),
            ("risk".to_string(), s(risk_name(input.tool.risk))),
            (
                "tags".to_string(),
                RestrictedExpression::new_set(input.tool.tags.iter().map(|t| s(t))),
            ),
            (
                "kind".to_string(),
                s(bridle_core::manifest::tool_kind_word(input.tool.kind)),
            ),
        ]
        .into(),
        parents(),
    )
    .map_err(|e| format!("tool entity: {e}"))?;
    let entities = Entities::from_entities(
        [
            agent_entity,
            tool_entity,
            Entity::new_no_attrs(tenant.clone(), HashSet::new()),
        ],
        None,
    )
    .map_err(|e| format!("entities: {e}"))?;

    let args = arguments(input.arguments_json, reads)?;
    let facts = input.facts;
    let cost = facts.and_then(|f| f.cost_so_far.as_ref());
    let tool_name = input.tool.name.as_str();
    let context = Context::from_pairs([
        ("arguments".to_string(), args.record),
        (
            "argumentsJson".to_string(),
            RestrictedExpression::new_string(args.json),
        ),
        (
            "argumentsValid".to_string(),
            RestrictedExpression::new_bool(args.valid),
        ),
        (
            "approvalRequired".to_string(),
            RestrictedExpression::new_bool(
                input.approval_required_tools.iter().any(|t| t == tool_name),
            ),
        ),
        ("runId".to_string(), s(input.run_id)),
        ("callId".to_string(), s(input.call_id)),
        (
            "step".to_string(),
            RestrictedExpression::new_long(i64::from(facts.map_or(input.step, |f| f.step))),
        ),
        (
            "tokens".to_string(),
            long_u64(facts.map_or(0, |f| f.tokens_so_far)),
        ),
        (
            "costNanoUsd".to_string(),
            RestrictedExpression::new_long(cost.map_or(0, |c| c.nano_usd)),
        ),
        (
            "costKnown".to_string(),
            RestrictedExpression::new_bool(cost.is_some_and(|c| c.known)),
        ),
    ])
    .map_err(|e| format!("context: {e}"))?;
    let action = schema::call_action().map_err(|e| e.to_string())?;
    let request =
        Request::new(agent, action, tool, context, None).map_err(|e| format!("request: {e}"))?;
    Ok((request, entities))
}
