//! Requests-per-minute and tokens-per-minute limits, per tenant and per agent, shared by every
//! router replica through Redis.
//!
//! Each limit is a token bucket holding a minute's allowance that refills continuously (so a
//! limit of 60 rpm admits a burst of 60, then one a second). All buckets of a call are checked
//! and taken by one Lua script, atomically, with Redis's own clock: replicas never race each
//! other, and their clocks do not matter. A call is admitted when every request bucket holds a
//! request and every token bucket is not empty; its tokens (input + output) are taken when it
//! finishes, so the call that empties a token bucket may overdraw it, and later calls wait for
//! the debt to refill. A refused call is told how long to wait.
//!
//! Keys: `<prefix>:router:limits:{<tenant>}:<scope>`, a hash with the request bucket (`rl`,
//! `rt`: level, time) and the token bucket (`tl`, `tt`). Every key of a call shares the tenant's
//! hash tag, so the script runs on Redis Cluster. Keys expire once their buckets are full.

use std::time::Duration;

use bridle_core::error_details::{Quota, Refusal};
use bridle_core::manifest::{ModelRoute, Rate};
use bridle_core::redis_util::Keys;
use bridle_core::redis_util::RedisConn;

use crate::Error;
use crate::error::quote;

const SCRIPT: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local period = 60000
local take = ARGV[1] == 'take'
local n = (#ARGV - 1) / 4
local worst, worst_at = 0, 0
local state = {}
for j = 0, n - 1 do
  local b = 2 + j * 4
  local key = KEYS[tonumber(ARGV[b])]
  local f = ARGV[b + 1]
  local cap = tonumber(ARGV[b + 2])
  local cost = tonumber(ARGV[b + 3])
  local v = redis.call('HMGET', key, f .. 'l', f .. 't')
  local level, ts = tonumber(v[1]), tonumber(v[2])
  if level == nil or ts == nil then level, ts = cap, now end
  local rate = cap / period
  if now > ts then level = math.min(cap, level + (now - ts) * rate) end
  state[j] = {key, f, level, rate, cap, cost}
  if take then
    local short
    if cost > 0 then short = cost - level else short = 1e-6 - level end
    if short > 0 then
      local wait = math.ceil(short / rate)
      if wait > worst then worst, worst_at = wait, j + 1 end
    end
  end
end
if worst > 0 then return {worst, worst_at} end
for j = 0, n - 1 do
  local s = state[j]
  local level = s[3] - s[6]
  redis.call('HSET', s[1], s[2] .. 'l', level, s[2] .. 't', now)
  local full = math.ceil((s[5] - level) / s[4]) + 1000
  if redis.call('PTTL', s[1]) < full then redis.call('PEXPIRE', s[1], full) end
end
return {0, 0}
"#;

/// Limits from the router's options, applied to every call of a tenant / an agent.
#[derive(Clone, Copy, Debug, Default)]
pub struct Defaults {
    pub per_tenant: Rate,
    pub per_agent: Rate,
}

/// One bucket of a call: which key, request or token bucket, the minute's allowance, and who
/// it limits (for the refusal message).
#[derive(Clone, Debug)]
pub struct Bucket {
    key: usize,
    tokens: bool,
    per_minute: u64,
    who: String,
    /// The limit for a program (google.rpc.QuotaFailure): what it counts against
    /// (`tenant:acme/agent:writer`) and which limit (`per_agent`).
    subject: String,
    id: &'static str,
}

/// The buckets one call goes through.
#[derive(Clone, Debug, Default)]
pub struct Plan {
    keys: Vec<String>,
    buckets: Vec<Bucket>,
}

impl Plan {
    pub fn is_empty(&self) -> bool {
        self.buckets.is_empty()
    }

    fn counts_tokens(&self) -> bool {
        self.buckets.iter().any(|b| b.tokens)
    }

    fn add(
        &mut self,
        key: String,
        rate: &Rate,
        who: String,
        (subject, id): (String, &'static str),
    ) {
        if rate.rpm.is_none() && rate.tpm.is_none() {
            return;
        }
        self.keys.push(key);
        let k = self.keys.len();
        for (tokens, limit) in [(false, rate.rpm), (true, rate.tpm)] {
            if let Some(per_minute) = limit {
                self.buckets.push(Bucket {
                    key: k,
                    tokens,
                    per_minute,
                    who: who.clone(),
                    subject: subject.clone(),
                    id,
                });
            }
        }
    }
}

pub struct Limiter {
    conn: RedisConn,
    base: String,
    defaults: Defaults,
    script: redis::Script,
}

impl Limiter {
    pub fn new(conn: RedisConn, keys: &Keys, defaults: Defaults) -> Self {
        Self {
            conn,
            base: keys.key("router:limits"),
            defaults,
            script: redis::Script::new(SCRIPT),
        }
    }

    /// The buckets of a call by `agent` of `tenant` through `route` (agent limits apply only
    /// when the call names its agent).
    pub fn plan(&self, tenant: &str, agent: &str, route: &ModelRoute) -> Plan {
        let mut p = Plan::default();
        let base = format!("{}:{{{tenant}}}", self.base);
        let name = &route.metadata.name;
        // For the messages only: the keys hold the whole names.
        let (t, a) = (quote(tenant), quote(agent));
        p.add(
            format!("{base}:tenant"),
            &self.defaults.per_tenant,
            format!("tenant '{t}'"),
            (format!("tenant:{t}"), "per_tenant"),
        );
        if let Some(r) = &route.spec.limits.per_tenant {
            p.add(
                format!("{base}:route:{name}:tenant"),
                r,
                format!("tenant '{t}' through route '{name}'"),
                (format!("tenant:{t}/route:{name}"), "route_per_tenant"),
            );
        }
        if !agent.is_empty() {
            p.add(
                format!("{base}:agent:{agent}"),
                &self.defaults.per_agent,
                format!("agent '{a}' of tenant '{t}'"),
                (format!("tenant:{t}/agent:{a}"), "per_agent"),
            );
            if let Some(r) = &route.spec.limits.per_agent {
                p.add(
                    format!("{base}:route:{name}:agent:{agent}"),
                    r,
                    format!("agent '{a}' of tenant '{t}' through route '{name}'"),
                    (
                        format!("tenant:{t}/agent:{a}/route:{name}"),
                        "route_per_agent",
                    ),
                );
            }
        }
        p
    }

    /// Admits the call or says how long to wait.
    pub async fn admit(&self, plan: &Plan) -> Result<(), Error> {
        if plan.is_empty() {
            return Ok(());
        }
        let mut inv = self.script.prepare_invoke();
        for k in &plan.keys {
            inv.key(k);
        }
        inv.arg("take");
        for b in &plan.buckets {
            let (field, cost) = if b.tokens { ("t", 0) } else { ("r", 1) };
            inv.arg(b.key).arg(field).arg(b.per_minute).arg(cost);
        }
        let mut conn = self.conn.clone();
        let (wait_ms, which): (u64, usize) = inv.invoke_async(&mut conn).await.map_err(|e| {
            bridle_core::Error::from(e)
                .doing("the model was not called (its rate limits could not be counted)")
        })?;
        if wait_ms == 0 {
            return Ok(());
        }
        let b = which
            .checked_sub(1)
            .and_then(|i| plan.buckets.get(i))
            .ok_or_else(|| bridle_core::Error::internal("the limit script named no bucket"))?;
        let what = if b.tokens { "tokens" } else { "requests" };
        let message = format!(
            "rate limit: {} may use {} {what} per minute",
            b.who, b.per_minute
        );
        Err(Error::RateLimited {
            refusal: Refusal::RateLimited,
            quota: Box::new(Quota {
                subject: b.subject.clone(),
                description: message.clone(),
                metric: format!("{what}_per_minute"),
                id: b.id.to_string(),
                value: i64::try_from(b.per_minute).unwrap_or(i64::MAX),
            }),
            message,
            retry_after: Duration::from_millis(wait_ms),
        })
    }

    /// Takes a finished call's tokens from its token buckets.
    pub async fn spend(&self, plan: &Plan, tokens: u64) -> Result<(), Error> {
        if tokens == 0 || !plan.counts_tokens() {
            return Ok(());
        }
        let mut inv = self.script.prepare_invoke();
        for k in &plan.keys {
            inv.key(k);
        }
        inv.arg("spend");
        for b in plan.buckets.iter().filter(|b| b.tokens) {
            inv.arg(b.key).arg("t").arg(b.per_minute).arg(tokens);
        }
        let mut conn = self.conn.clone();
        let _: (u64, usize) = inv
            .invoke_async(&mut conn)
            .await
            .map_err(bridle_core::Error::from)?;
        Ok(())
    }
}
