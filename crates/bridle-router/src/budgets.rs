//! Spend budgets (the `Budget` kind) and the spend ledger, shared by every router replica
//! through Redis.
//!
//! **Reservations.** Before a call is sent, every budget of its tenant that counts it reserves
//! the call's worst-case cost: its input at one token per byte (no tokenizer makes a token of
//! less than a byte) plus `max_output_tokens` (set to the router's `budget_max_output_tokens`
//! when the caller left it unset) at the dearest priced target of the route. One Lua script
//! checks and reserves on all of them at once, with Redis's clock, so concurrent calls on any
//! replica cannot both take the last room. When the call ends its reservation is settled to
//! its real cost (nothing when it failed). A call whose reservation would not fit is refused
//! before anything is sent: RESOURCE_EXHAUSTED (HTTP 429 on the gateway) naming the budget and
//! when it has room again. A replica that dies between the two keeps its reservations counted
//! until their period ends: the error is on the side of spending less.
//!
//! **Windows.** A budget is one Redis hash per counted value (the tenant, or each person, end
//! user, key, agent or model), with one field per slot: the UTC day or month (calendar), or the
//! hour of the last 24 (rolling day) or the day of the last 30 (rolling month). Slots out of the
//! window are dropped as they are read.
//!
//! **Warnings.** When settling takes a budget past `warnAtPercent`, the script says so once per
//! period; the router then appends an event to `<prefix>:router:budget:events`, adds to the
//! `bridle.budget.warnings` metric and POSTs to the budget's `webhook`.
//!
//! **Ledger.** Every call with a known cost, budgets or not, adds its cost and a count to the
//! hour's ledger hash `<prefix>:router:spend:{<tenant>}:<YYYYMMDDHH>`, one field per
//! (person, end user, key, agent, model): `bridle spend` sums them, so its totals are the sum
//! of the calls' own costs to the nano-dollar.
//!
//! Keys of a tenant share its hash tag, so both scripts run on Redis Cluster.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bridle_core::Shutdown;
use bridle_core::error_details::{Quota, Refusal};
use bridle_core::manifest::{
    Budget, BudgetPer, BudgetPeriod, BudgetWindow, DEFAULT_TENANT, Manifest, ModelRoute,
};
use bridle_core::redis_util::{Keys, RedisConn};
use bridle_core::store::ManifestStore;
use bridle_proto::{CompleteRequest, CompleteResponse};

use crate::Error;
use crate::error::quote;
use crate::prices::Prices;
use crate::provider::model_of;

pub const KIND: &str = "Budget";

/// How long an hour of the ledger is kept.
pub const LEDGER_DAYS: u64 = 400;

const RESERVE: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1])
local amount = tonumber(ARGV[1])
local day = math.floor(now / 86400)
local hour = math.floor(now / 3600)
local function month(days)
  local z = days + 719468
  local era = math.floor(z / 146097)
  local doe = z - era * 146097
  local yoe = math.floor((doe - math.floor(doe / 1460) + math.floor(doe / 36524) - math.floor(doe / 146096)) / 365)
  local y = yoe + era * 400
  local doy = doe - (365 * yoe + math.floor(yoe / 4) - math.floor(yoe / 100))
  local mp = math.floor((5 * doy + 2) / 153)
  local m = mp < 10 and mp + 3 or mp - 9
  if m <= 2 then y = y + 1 end
  return y * 100 + m
end
-- slot: the field this call adds to; counted(f): whether field f is in the window; expiry(f):
-- when field f leaves the window (rolling windows only).
local function window(kind)
  if kind == 'dc' then
    local s = 'd' .. day
    return s, function(f) return f == s end, nil, 2 * 86400
  elseif kind == 'mc' then
    local s = 'm' .. month(day)
    return s, function(f) return f == s end, nil, 32 * 86400
  elseif kind == 'dr' then
    return 'h' .. hour, function(f)
      return string.sub(f, 1, 1) == 'h' and tonumber(string.sub(f, 2)) > hour - 24
    end, function(f) return (tonumber(string.sub(f, 2)) + 24) * 3600 end, 25 * 3600
  else
    return 'd' .. day, function(f)
      return string.sub(f, 1, 1) == 'd' and tonumber(string.sub(f, 2)) > day - 30
    end, function(f) return (tonumber(string.sub(f, 2)) + 30) * 86400 end, 31 * 86400
  end
end
local slots = {}
for i = 1, #KEYS do
  local limit = tonumber(ARGV[2 * i])
  local slot, counted, expiry = window(ARGV[2 * i + 1])
  local all = redis.call('HGETALL', KEYS[i])
  local sum, live = 0, {}
  for j = 1, #all, 2 do
    local f = all[j]
    if f ~= 'w' then
      if counted(f) then
        local v = tonumber(all[j + 1])
        sum = sum + v
        table.insert(live, {f, v})
      else
        redis.call('HDEL', KEYS[i], f)
      end
    end
  end
  if sum + amount > limit then
    local wait = -1
    if expiry then
      table.sort(live, function(a, b) return expiry(a[1]) < expiry(b[1]) end)
      local need = sum + amount - limit
      for _, e in ipairs(live) do
        need = need - e[2]
        if need <= 0 then wait = expiry(e[1]) - now break end
      end
    end
    return {i, sum, now, wait}
  end
  slots[i] = slot
end
for i = 1, #KEYS do
  local _, _, _, ttl = window(ARGV[2 * i + 1])
  redis.call('HINCRBY', KEYS[i], slots[i], amount)
  redis.call('EXPIRE', KEYS[i], ttl)
end
local out = {0, 0, now, 0}
for i = 1, #KEYS do table.insert(out, slots[i]) end
return out
"#;

/// KEYS: the budget hashes, then the ledger hash. ARGV: the ledger field, the call's cost (-1:
/// answered, at no known price; 0: nothing to add) and the ledger's TTL, then per budget: slot, delta, warning level (0: none), and whether its
/// window rolls ('r') or not ('c').
const SETTLE: &str = r#"
local n = #KEYS - 1
local cost = tonumber(ARGV[2])
if cost ~= 0 then
  local ledger = KEYS[n + 1]
  if cost > 0 then
    redis.call('HINCRBY', ledger, 'c:' .. ARGV[1], cost)
    redis.call('HINCRBY', ledger, 'n:' .. ARGV[1], 1)
  else
    redis.call('HINCRBY', ledger, 'u:' .. ARGV[1], 1)
  end
  redis.call('EXPIRE', ledger, tonumber(ARGV[3]))
end
local crossed = {}
for i = 1, n do
  local b = 3 + (i - 1) * 4
  local slot, delta, warn, kind = ARGV[b + 1], tonumber(ARGV[b + 2]), tonumber(ARGV[b + 3]), ARGV[b + 4]
  if delta ~= 0 then redis.call('HINCRBY', KEYS[i], slot, delta) end
  if warn > 0 then
    local all = redis.call('HGETALL', KEYS[i])
    local sum, flag = 0, nil
    for j = 1, #all, 2 do
      if all[j] == 'w' then flag = all[j + 1] else sum = sum + tonumber(all[j + 1]) end
    end
    -- A calendar period warns once; a rolling window again once it fell back below the level.
    local period = kind == 'r' and 'r' or slot
    if sum >= warn then
      if flag ~= period then
        redis.call('HSET', KEYS[i], 'w', period)
        table.insert(crossed, i)
        table.insert(crossed, sum)
      end
    elseif kind == 'r' and flag then
      redis.call('HDEL', KEYS[i], 'w')
    end
  end
end
return crossed
"#;

/// The dimensions of a call that budgets and the ledger count it by.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Facts {
    pub tenant: String,
    /// A person's id (`oidc:<subject>`), when a person is behind the call.
    pub user: String,
    pub end_user: String,
    /// An API key's id, when a key is behind the call.
    pub api_key: String,
    pub agent: String,
}

impl Facts {
    pub fn of(req: &CompleteRequest) -> Self {
        let scope = req.scope.clone().unwrap_or_default();
        let caller = req.caller.clone().unwrap_or_default();
        let (user, api_key) = match bridle_core::auth::actor_kind_word(caller.kind) {
            "user" => (caller.id, String::new()),
            "api_key" => (String::new(), caller.id),
            _ => (String::new(), String::new()),
        };
        Self {
            tenant: scope.tenant,
            user,
            end_user: req.end_user.clone(),
            api_key,
            agent: scope.agent,
        }
    }

    /// The value of `per` for this call (and `model`), None when the call has none.
    fn value(&self, per: BudgetPer, model: &str) -> Option<String> {
        let v = match per {
            BudgetPer::Tenant => return Some(String::new()),
            BudgetPer::User => &self.user,
            BudgetPer::EndUser => &self.end_user,
            BudgetPer::ApiKey => &self.api_key,
            BudgetPer::Agent => &self.agent,
            BudgetPer::Model => model,
        };
        (!v.is_empty()).then(|| v.to_string())
    }

    /// Whether the budget counts this call to `model`.
    fn matches(&self, b: &Budget, model: &str) -> bool {
        let m = &b.spec.matching;
        let eq = |want: &Option<String>, have: &str| want.as_deref().is_none_or(|w| w == have);
        eq(&m.user, &self.user)
            && eq(&m.end_user, &self.end_user)
            && eq(&m.api_key, &self.api_key)
            && eq(&m.agent, &self.agent)
            && eq(&m.model, model)
    }
}

/// One budget hash a call reserved on.
#[derive(Clone, Debug)]
struct Hold {
    key: String,
    budget: Arc<Budget>,
    value: String,
    /// The model this hold counts, for a budget that names one (`per: model` or
    /// `match.model`): settled with the real cost only when that model answered.
    model: Option<String>,
    slot: String,
}

/// What a call reserved, to be settled when it ends.
#[derive(Debug, Default)]
pub struct Reservation {
    facts: Facts,
    holds: Vec<Hold>,
    amount: i64,
}

impl Reservation {
    /// Whether no budget counts the call.
    pub fn is_empty(&self) -> bool {
        self.holds.is_empty()
    }
}

/// (tenant) -> its budgets and when they were read.
type Cache = HashMap<String, (Arc<Vec<Arc<Budget>>>, Instant)>;

pub struct Budgets {
    store: ManifestStore,
    ttl: Duration,
    cache: Mutex<Cache>,
    conn: RedisConn,
    budget_base: String,
    ledger_base: String,
    events: String,
    reserve: redis::Script,
    settle: redis::Script,
    http: reqwest::Client,
    shutdown: Shutdown,
    default_max_output: u32,
}

impl Budgets {
    pub fn new(
        store: ManifestStore,
        ttl: Duration,
        conn: RedisConn,
        keys: &Keys,
        http: reqwest::Client,
        shutdown: Shutdown,
        default_max_output: u32,
    ) -> Self {
        Self {
            store,
            ttl,
            cache: Mutex::new(HashMap::new()),
            conn,
            budget_base: keys.key("router:budget"),
            ledger_base: keys.key("router:spend"),
            events: keys.key("router:budget:events"),
            reserve: redis::Script::new(RESERVE),
            settle: redis::Script::new(SETTLE),
            http,
            shutdown,
            default_max_output,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Cache> {
        self.cache.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The budgets of `tenant`, read again after the route cache's TTL.
    async fn of(&self, tenant: &str) -> Result<Arc<Vec<Arc<Budget>>>, Error> {
        if !self.ttl.is_zero()
            && let Some((b, at)) = self.lock().get(tenant)
            && at.elapsed() < self.ttl
        {
            return Ok(b.clone());
        }
        let stored = self.store.list(tenant, Some(KIND)).await?;
        let budgets: Arc<Vec<Arc<Budget>>> = Arc::new(
            stored
                .into_iter()
                .filter_map(|(m, _)| match m {
                    Manifest::Budget(b) => Some(Arc::new(b)),
                    _ => None,
                })
                .collect(),
        );
        if !self.ttl.is_zero() {
            let mut cache = self.lock();
            if cache.len() >= 65_536 {
                cache.clear();
            }
            cache.insert(tenant.to_string(), (budgets.clone(), Instant::now()));
        }
        Ok(budgets)
    }

    /// Reserves the call's worst-case cost on every budget that counts it, or refuses it. A
    /// call that some budget counts is also made to skip unpriced targets and given a
    /// `max_output_tokens` when it had none, so that its worst case is known.
    pub async fn reserve(
        &self,
        req: &mut CompleteRequest,
        route: &ModelRoute,
        prices: &Prices,
    ) -> Result<Reservation, Error> {
        let facts = Facts::of(req);
        let budgets = self.of(&facts.tenant).await?;
        let models: Vec<&str> = {
            let mut m: Vec<&str> = route.spec.targets.iter().map(model_of).collect();
            m.sort_unstable();
            m.dedup();
            m
        };
        let mut holds = Vec::new();
        for b in budgets.iter() {
            let names_model = b.spec.per == BudgetPer::Model || b.spec.matching.model.is_some();
            let per_model: Vec<Option<&str>> = if names_model {
                models.iter().map(|m| Some(*m)).collect()
            } else {
                vec![None]
            };
            for model in per_model {
                let m = model.unwrap_or_default();
                // A budget that names no model has no `match.model`: any model matches.
                if !facts.matches(b, m) {
                    continue;
                }
                let Some(value) = facts.value(b.spec.per, m) else {
                    continue;
                };
                holds.push(Hold {
                    key: format!(
                        "{}:{{{}}}:{}:{}:{value}",
                        self.budget_base,
                        facts.tenant,
                        b.metadata.name,
                        b.spec.per.as_str()
                    ),
                    budget: b.clone(),
                    value,
                    model: model.map(str::to_string),
                    slot: String::new(),
                });
            }
        }
        if holds.is_empty() {
            return Ok(Reservation {
                facts,
                ..Default::default()
            });
        }
        req.require_price = true;
        let max_out = *req.max_output_tokens.get_or_insert(self.default_max_output);
        let amount = worst_case(req, route, max_out, prices).ok_or_else(|| {
            Error::Core(bridle_core::Error::FailedPrecondition(format!(
                "budget '{}' counts this call, but no target of route '{}' has a known price; declare `price` on its targets",
                holds[0].budget.metadata.name, route.metadata.name
            )))
        })?;
        let mut inv = self.reserve.prepare_invoke();
        for h in &holds {
            inv.key(&h.key);
        }
        inv.arg(amount);
        for h in &holds {
            let s = &h.budget.spec;
            let kind = match (s.period, s.window) {
                (BudgetPeriod::Day, BudgetWindow::Calendar) => "dc",
                (BudgetPeriod::Month, BudgetWindow::Calendar) => "mc",
                (BudgetPeriod::Day, BudgetWindow::Rolling) => "dr",
                (BudgetPeriod::Month, BudgetWindow::Rolling) => "mr",
            };
            inv.arg(s.nano_usd()).arg(kind);
        }
        let mut conn = self.conn.clone();
        let out: Vec<redis::Value> = inv.invoke_async(&mut conn).await.map_err(|e| {
            bridle_core::Error::from(e)
                .doing("the model was not called (its spend budgets could not be checked)")
        })?;
        let num = |i: usize| -> i64 {
            out.get(i)
                .and_then(|v| redis::from_redis_value::<i64>(v.clone()).ok())
                .unwrap_or(0)
        };
        let refused = num(0);
        if refused > 0 {
            let h = usize::try_from(refused - 1)
                .ok()
                .and_then(|i| holds.get(i))
                .ok_or_else(|| bridle_core::Error::internal("the budget script named no budget"))?;
            return Err(refusal(h, num(1), amount, num(2), num(3)));
        }
        for (i, h) in holds.iter_mut().enumerate() {
            h.slot = out
                .get(4 + i)
                .and_then(|v| redis::from_redis_value::<String>(v.clone()).ok())
                .unwrap_or_default();
        }
        Ok(Reservation {
            facts,
            holds,
            amount,
        })
    }

    /// Settles a reservation to the call's real cost (none when it failed) and writes the
    /// ledger. The call is over: a failure here is logged, never the caller's.
    pub async fn settle(
        &self,
        r: &Reservation,
        route: &ModelRoute,
        resp: Option<&CompleteResponse>,
    ) {
        let model = resp
            .map(|resp| {
                route
                    .spec
                    .targets
                    .iter()
                    .find(|t| t.name == resp.target)
                    .map(|t| model_of(t).to_string())
                    .unwrap_or_else(|| resp.model.clone())
            })
            .unwrap_or_default();
        // An answer at no known price is counted apart, so a report can say that its total
        // leaves calls out.
        let (cost, ledger_cost) = match resp.map(|r| r.cost.unwrap_or_default()) {
            Some(c) if c.known => (c.nano_usd, c.nano_usd),
            Some(_) => (0, -1),
            None => (0, 0),
        };
        if ledger_cost == 0 && r.holds.is_empty() {
            return;
        }
        let hour = hour_of(time::OffsetDateTime::now_utc().unix_timestamp());
        let ledger = format!("{}:{{{}}}:{hour}", self.ledger_base, r.facts.tenant);
        let field = serde_json::json!([
            r.facts.user,
            r.facts.end_user,
            r.facts.api_key,
            r.facts.agent,
            model
        ])
        .to_string();
        let mut inv = self.settle.prepare_invoke();
        for h in &r.holds {
            inv.key(&h.key);
        }
        inv.key(&ledger);
        inv.arg(&field).arg(ledger_cost).arg(LEDGER_DAYS * 86_400);
        for h in &r.holds {
            let charged = match &h.model {
                Some(m) if *m != model => 0,
                _ => cost,
            };
            let s = &h.budget.spec;
            let warn = i128::from(s.nano_usd()) * i128::from(s.warn_at_percent) / 100;
            let rolling = if s.window == BudgetWindow::Rolling {
                "r"
            } else {
                "c"
            };
            inv.arg(&h.slot)
                .arg(charged - r.amount)
                .arg(i64::try_from(warn).unwrap_or(i64::MAX))
                .arg(rolling);
        }
        let mut conn = self.conn.clone();
        match inv.invoke_async::<Vec<i64>>(&mut conn).await {
            Ok(crossed) => {
                for pair in crossed.chunks(2) {
                    if let [i, spent] = pair
                        && let Some(h) = usize::try_from(*i - 1).ok().and_then(|i| r.holds.get(i))
                    {
                        self.warn(&r.facts.tenant, h, *spent).await;
                    }
                }
            }
            Err(e) => {
                tracing::warn!(tenant = %r.facts.tenant, error = %e, "cannot settle a call's spend budgets and ledger: its reservation stays counted until the period ends");
            }
        }
    }

    /// A budget went past its warning level: an event, the metric and the webhook.
    async fn warn(&self, tenant: &str, h: &Hold, spent: i64) {
        let b = &h.budget;
        let limit = b.spec.nano_usd();
        tracing::warn!(tenant = %tenant, budget = %b.metadata.name, value = %quote(&h.value), spent_usd = %usd(spent), limit_usd = %usd(limit), "a spend budget passed its warning level");
        bridle_core::metrics::metrics().budget_warnings.add(
            1,
            &[
                opentelemetry::KeyValue::new("tenant", tenant.to_string()),
                opentelemetry::KeyValue::new("budget", b.metadata.name.clone()),
            ],
        );
        let event = serde_json::json!({
            "type": "budget.warning",
            "tenant": tenant,
            "budget": b.metadata.name,
            "per": b.spec.per.as_str(),
            "value": h.value,
            "spentNanoUsd": spent,
            "limitNanoUsd": limit,
            "warnAtPercent": b.spec.warn_at_percent,
            "at": rfc3339(time::OffsetDateTime::now_utc().unix_timestamp()),
        });
        let mut conn = self.conn.clone();
        let added: Result<String, _> = redis::cmd("XADD")
            .arg(&self.events)
            .arg("MAXLEN")
            .arg("~")
            .arg(10_000)
            .arg("*")
            .arg("event")
            .arg(event.to_string())
            .query_async(&mut conn)
            .await;
        if let Err(e) = added {
            tracing::warn!(error = %e, "cannot append a budget warning to the event stream");
        }
        if let Some(url) = b.spec.webhook.clone() {
            let http = self.http.clone();
            let name = b.metadata.name.clone();
            self.shutdown.spawn(async move {
                let sent = http
                    .post(&url)
                    .timeout(Duration::from_secs(10))
                    .json(&event)
                    .send()
                    .await
                    .and_then(reqwest::Response::error_for_status);
                if let Err(e) = sent {
                    tracing::warn!(budget = %name, error = %bridle_core::http_server::chain(&e), "a budget's webhook did not take its warning");
                }
            });
        }
    }

    /// Spend of `tenant` from the ledger, over the hours from the one holding `since` (Unix
    /// seconds) to the current one (at most [`LEDGER_DAYS`] back).
    pub async fn ledger(&self, tenant: &str, since: i64) -> Result<Vec<LedgerEntry>, Error> {
        let now = time::OffsetDateTime::now_utc().unix_timestamp();
        let oldest = now - i64::try_from(LEDGER_DAYS * 86_400).unwrap_or(i64::MAX);
        let mut hour = since.max(oldest).div_euclid(3600) * 3600;
        let mut pipe = redis::pipe();
        while hour <= now {
            pipe.hgetall(format!(
                "{}:{{{tenant}}}:{}",
                self.ledger_base,
                hour_of(hour)
            ));
            hour += 3600;
        }
        let mut conn = self.conn.clone();
        let hours: Vec<HashMap<String, i64>> = pipe
            .query_async(&mut conn)
            .await
            .map_err(bridle_core::Error::from)?;
        let mut by: HashMap<String, (i64, i64, i64)> = HashMap::new();
        for h in hours {
            for (f, v) in h {
                let (kind, dims) = f.split_at(f.len().min(2));
                let e = by.entry(dims.to_string()).or_default();
                match kind {
                    "c:" => e.0 += v,
                    "n:" => e.1 += v,
                    "u:" => e.2 += v,
                    _ => {}
                }
            }
        }
        Ok(by
            .into_iter()
            .filter_map(|(dims, (nano, calls, unpriced))| {
                let d: Vec<String> = serde_json::from_str(&dims).ok()?;
                let [user, end_user, api_key, agent, model] = <[String; 5]>::try_from(d).ok()?;
                Some(LedgerEntry {
                    user,
                    end_user,
                    api_key,
                    agent,
                    model,
                    nano_usd: nano,
                    calls,
                    unpriced_calls: unpriced,
                })
            })
            .collect())
    }
}

/// The ledger's total for one (person, end user, key, agent, model) over a time range.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LedgerEntry {
    pub user: String,
    pub end_user: String,
    pub api_key: String,
    pub agent: String,
    pub model: String,
    pub nano_usd: i64,
    pub calls: i64,
    /// Calls answered by a model at no known price: in no total.
    pub unpriced_calls: i64,
}

/// A ledger dimension `bridle spend` groups by.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dimension {
    User,
    EndUser,
    ApiKey,
    Agent,
    Model,
}

/// Each dimension and its name in a Spend request.
const NAMES: [(Dimension, &str); 5] = [
    (Dimension::User, "user"),
    (Dimension::EndUser, "end_user"),
    (Dimension::ApiKey, "api_key"),
    (Dimension::Agent, "agent"),
    (Dimension::Model, "model"),
];

impl Dimension {
    fn name(self) -> &'static str {
        NAMES
            .iter()
            .find(|(d, _)| *d == self)
            .map_or("", |(_, n)| n)
    }

    /// This dimension's value in a ledger entry.
    fn of(self, e: &LedgerEntry) -> &str {
        match self {
            Dimension::User => &e.user,
            Dimension::EndUser => &e.end_user,
            Dimension::ApiKey => &e.api_key,
            Dimension::Agent => &e.agent,
            Dimension::Model => &e.model,
        }
    }
}

/// The dimensions a Spend request names, each known and named once.
pub fn dimensions(by: &[String]) -> Result<Vec<Dimension>, Error> {
    let mut out = Vec::new();
    for b in by {
        let Some((d, _)) = NAMES.iter().find(|(_, n)| n == b) else {
            return Err(Error::InvalidRequest(format!(
                "by: '{}' is not a dimension of the spend ledger; one of {}",
                quote(b),
                NAMES.map(|(_, n)| n).join(", ")
            )));
        };
        if out.contains(d) {
            return Err(Error::InvalidRequest(format!("by: '{b}' is given twice")));
        }
        out.push(*d);
    }
    Ok(out)
}

/// The ledger's entries grouped by `by`, dearest first, with their total.
pub fn report(entries: &[LedgerEntry], by: &[Dimension], from: i64) -> bridle_proto::SpendResponse {
    let mut groups: HashMap<Vec<String>, (i64, i64, i64)> = HashMap::new();
    let (mut total, mut calls, mut unpriced) = (0i64, 0i64, 0i64);
    for e in entries {
        let key: Vec<String> = by.iter().map(|d| d.of(e).to_string()).collect();
        let g = groups.entry(key).or_default();
        g.0 += e.nano_usd;
        g.1 += e.calls;
        g.2 += e.unpriced_calls;
        total += e.nano_usd;
        calls += e.calls;
        unpriced += e.unpriced_calls;
    }
    let mut rows: Vec<bridle_proto::SpendRow> = groups
        .into_iter()
        .map(
            |(values, (nano_usd, calls, unpriced_calls))| bridle_proto::SpendRow {
                values,
                nano_usd,
                calls,
                unpriced_calls,
            },
        )
        .collect();
    rows.sort_by(|a, b| {
        b.nano_usd
            .cmp(&a.nano_usd)
            .then_with(|| a.values.cmp(&b.values))
    });
    bridle_proto::SpendResponse {
        by: by.iter().map(|d| d.name().to_string()).collect(),
        rows,
        total_nano_usd: total,
        calls,
        unpriced_calls: unpriced,
        from_unix: from.div_euclid(3600) * 3600,
    }
}

/// The worst case of a call in nano-USD: every byte of its messages and tools an input token,
/// and all of `max_out` written, at the dearest priced target of the route. None when no
/// target has a price.
fn worst_case(
    req: &CompleteRequest,
    route: &ModelRoute,
    max_out: u32,
    prices: &Prices,
) -> Option<i64> {
    let input_bytes: u64 = req
        .messages
        .iter()
        .map(|m| prost::Message::encoded_len(m) as u64 + 8)
        .chain(
            req.tools
                .iter()
                .map(|t| prost::Message::encoded_len(t) as u64),
        )
        .sum();
    route
        .spec
        .targets
        .iter()
        .filter_map(|t| prices.for_target(t, model_of(t)))
        .map(|p| {
            let input = i128::from(p.input.max(p.cache_write).max(p.cache_read));
            let micro =
                i128::from(input_bytes) * input + i128::from(max_out) * i128::from(p.output);
            i64::try_from((micro + 999_999) / 1_000_000).unwrap_or(i64::MAX)
        })
        .max()
}

/// US dollars of a nano-USD amount, to the cent or finer when small.
pub fn usd(nano: i64) -> String {
    let dollars = nano as f64 / 1e9;
    if dollars.abs() >= 1.0 || dollars == 0.0 {
        format!("${dollars:.2}")
    } else {
        format!("${dollars:.6}")
    }
}

fn refusal(h: &Hold, spent: i64, amount: i64, now: i64, wait: i64) -> Error {
    let b = &h.budget;
    let s = &b.spec;
    let whose = match s.per {
        BudgetPer::Tenant => String::new(),
        per => format!(" for {} '{}'", per.as_str(), quote(&h.value)),
    };
    let period = match (s.period, s.window) {
        (BudgetPeriod::Day, BudgetWindow::Calendar) => "per day (UTC)",
        (BudgetPeriod::Month, BudgetWindow::Calendar) => "per month (UTC)",
        (BudgetPeriod::Day, BudgetWindow::Rolling) => "per rolling 24 hours",
        (BudgetPeriod::Month, BudgetWindow::Rolling) => "per rolling 30 days",
    };
    let reset = match (s.period, s.window) {
        (BudgetPeriod::Day, BudgetWindow::Calendar) => (now.div_euclid(86_400) + 1) * 86_400,
        (BudgetPeriod::Month, BudgetWindow::Calendar) => next_month(now),
        _ if wait > 0 => now + wait,
        _ => now,
    };
    let retry = Duration::from_secs(u64::try_from(reset - now).unwrap_or(0).max(1));
    let when = if amount > s.nano_usd() {
        format!(
            "this call alone may cost up to {}, more than the whole budget: lower its max_output_tokens or its input",
            usd(amount)
        )
    } else if s.window == BudgetWindow::Rolling && wait <= 0 {
        "it has room again as the window moves on".to_string()
    } else {
        format!("it has room again at {}", rfc3339(reset))
    };
    let message = format!(
        "spend budget '{}'{whose} ({} {period}) would be exceeded: {} is spent or reserved by calls in flight, and this call reserves up to {}; {when}",
        b.metadata.name,
        usd(s.nano_usd()),
        usd(spent),
        usd(amount),
    );
    let mut subject = format!(
        "tenant:{}/budget:{}",
        quote(b.metadata.tenant.as_deref().unwrap_or(DEFAULT_TENANT)),
        b.metadata.name
    );
    if s.per != BudgetPer::Tenant {
        subject.push_str(&format!("/{}:{}", s.per.as_str(), quote(&h.value)));
    }
    Error::RateLimited {
        refusal: Refusal::BudgetExceeded,
        quota: Box::new(Quota {
            subject,
            description: message.clone(),
            metric: "spend_nano_usd".into(),
            id: b.metadata.name.clone(),
            value: s.nano_usd(),
        }),
        message,
        retry_after: retry,
    }
}

/// The ledger hour (`YYYYMMDDHH`, UTC) holding Unix second `t`.
fn hour_of(t: i64) -> String {
    let t = utc(t);
    format!(
        "{:04}{:02}{:02}{:02}",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour()
    )
}

/// Unix second `t` in RFC 3339 (UTC, whole seconds).
fn rfc3339(t: i64) -> String {
    let t = utc(t);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}Z",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second()
    )
}

fn utc(t: i64) -> time::OffsetDateTime {
    time::OffsetDateTime::from_unix_timestamp(t).unwrap_or(time::OffsetDateTime::UNIX_EPOCH)
}

/// The first second of the UTC month after the one holding Unix second `t`.
fn next_month(t: i64) -> i64 {
    let d = utc(t).date();
    let (y, m) = match d.month() {
        time::Month::December => (d.year() + 1, time::Month::January),
        m => (d.year(), m.next()),
    };
    time::Date::from_calendar_date(y, m, 1)
        .map(|d| d.midnight().assume_utc().unix_timestamp())
        .unwrap_or(t)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn calendar_resets_are_the_first_of_the_next_utc_month() {
        // 2026-12-31T13:14:15Z, 2026-02-10T00:00:00Z
        assert_eq!(rfc3339(next_month(1_798_722_855)), "2027-01-01T00:00:00Z");
        assert_eq!(rfc3339(next_month(1_770_681_600)), "2026-03-01T00:00:00Z");
        assert_eq!(hour_of(1_798_722_855), "2026123113");
    }

    #[test]
    fn usd_shows_cents_or_small_amounts() {
        assert_eq!(usd(25_000_000_000), "$25.00");
        assert_eq!(usd(1_500_000), "$0.001500");
        assert_eq!(usd(0), "$0.00");
    }
}
