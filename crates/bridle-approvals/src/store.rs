//! Approvals in Redis: every change is one Lua script (audit record, event, state, indexes),
//! so a change is all-or-nothing and a refused audit write stops it (fail closed).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use bridle_core::redis_util::RedisConn;
use bridle_core::redis_util::{self, Keys};
use bridle_core::timeutil::now_ms;
use bridle_proto::{Approval, ApprovalState};
use redis::{AsyncCommands, Script, ScriptInvocation};

use crate::Error;
use crate::keys::ApprovalKeys;
use crate::policy::Decision;
use crate::record::{self, APPROVED, DENIED, EXPIRED, NewApproval, PENDING, fmt_ms, lapsed};

struct Scripts {
    evaluate: Script,
    decide: Script,
    expire: Script,
    drop: Script,
}

impl Scripts {
    fn new() -> Self {
        let prelude = include_str!("lua/prelude.lua");
        let with = |body: &str| Script::new(&format!("{prelude}\n{body}"));
        Self {
            evaluate: with(include_str!("lua/evaluate.lua")),
            decide: with(include_str!("lua/decide.lua")),
            expire: with(include_str!("lua/expire.lua")),
            drop: Script::new(include_str!("lua/drop.lua")),
        }
    }
}

/// What recording an evaluation did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EvalOutcome {
    /// Allowed or denied; no approval involved.
    Decided,
    Created(String),
    /// The call already has this approval (same arguments).
    Existing(String),
    /// The call already has an approval, for other arguments.
    Conflict {
        id: String,
        stored_sha256: String,
    },
}

#[derive(Clone)]
pub struct Store {
    conn: RedisConn,
    url: String,
    keys: ApprovalKeys,
    scripts: Arc<Scripts>,
    /// How long a final approval is kept (`approval_retention`).
    retention: Duration,
}

/// Where one approval sits: what its call map key and its indexes are built from. These
/// fields never change once the approval is created.
struct Placement {
    tenant: String,
    run_id: String,
    step: u32,
    call_id: String,
}

/// The fields `Placement` is read from, in order.
const PLACEMENT_FIELDS: [&str; 4] = ["tenant", "run_id", "step", "call_id"];

impl Placement {
    fn from_fields(fields: Vec<Option<String>>) -> Option<Self> {
        let mut f = fields.into_iter();
        let mut next = || f.next().flatten();
        Some(Self {
            tenant: next()?,
            run_id: next()?,
            step: next()?.parse().ok()?,
            call_id: next()?,
        })
    }
}

/// When an approval event happened: a `created` event at the approval's creation, the others
/// at its decision (or expiry). The scripts write both times from the same clock reading as
/// the event, so the stream needs no time field of its own and ids stay dense offsets.
fn event_ms(fields: &HashMap<String, String>) -> Option<i64> {
    let field = match fields.get("kind").map(String::as_str) {
        Some("created") => "created_ms",
        _ => "decided_ms",
    };
    fields.get(field)?.parse().ok()
}

fn tag(reply: &[String]) -> &str {
    reply.first().map(String::as_str).unwrap_or("")
}

fn arg(reply: &[String], i: usize) -> &str {
    reply.get(i).map(String::as_str).unwrap_or("")
}

fn unexpected(script: &str, reply: &[String]) -> Error {
    Error::Core(bridle_core::Error::internal(format!(
        "{script} script answered {:?}",
        reply.first()
    )))
}

impl Store {
    pub async fn connect(url: &str, prefix: &str, retention: Duration) -> Result<Self, Error> {
        let conn = redis_util::connect(url).await?;
        Ok(Self {
            conn,
            url: url.to_string(),
            keys: ApprovalKeys::new(&Keys::new(prefix)),
            scripts: Arc::new(Scripts::new()),
            retention,
        })
    }

    fn retention_ms(&self) -> u64 {
        u64::try_from(self.retention.as_millis())
            .unwrap_or(u64::MAX)
            .max(1)
    }

    /// Where the approval sits, read from its hash; None when it is gone.
    async fn placement(&self, id: &str) -> Result<Option<Placement>, Error> {
        let fields: Vec<Option<String>> = redis::cmd("HMGET")
            .arg(self.keys.approval(id))
            .arg(&PLACEMENT_FIELDS[..])
            .query_async(&mut self.conn.clone())
            .await?;
        Ok(Placement::from_fields(fields))
    }

    /// How many approvals wait for a decision (every tenant's).
    pub async fn pending_count(&self) -> Result<u64, Error> {
        let mut c = self.conn();
        Ok(redis::cmd("ZCARD")
            .arg(self.keys().expiring())
            .query_async(&mut c)
            .await?)
    }

    /// The shared connection, for the manifest store beside the approvals.
    pub fn conn(&self) -> RedisConn {
        self.conn.clone()
    }

    pub fn keys(&self) -> &ApprovalKeys {
        &self.keys
    }

    /// A connection of its own, for blocking reads that must not hold up the shared one.
    pub async fn dedicated_connection(
        &self,
        response_timeout: std::time::Duration,
    ) -> Result<RedisConn, Error> {
        Ok(redis_util::dedicated_connection(&self.url, response_timeout).await?)
    }

    fn audit_failed(&self, err: &str) -> Error {
        if bridle_core::error::redis_out_of_memory_text(err) {
            return Error::Core(bridle_core::Error::RedisOutOfMemory {
                doing: format!(
                    "the audit record was not appended to stream {}, so nothing was applied",
                    self.keys.audit()
                ),
            });
        }
        Error::AuditUnavailable(format!(
            "cannot append to stream {}: {err}",
            self.keys.audit()
        ))
    }

    /// Adds the KEYS of decide.lua / expire.lua (the transition layout in prelude.lua).
    fn transition_keys(&self, inv: &mut ScriptInvocation<'_>, id: &str, at: &Placement) {
        let k = &self.keys;
        let tenant = &at.tenant;
        inv.key(k.approval(id))
            .key(k.audit())
            .key(k.events())
            .key(k.events_seq())
            .key(k.index(tenant, PENDING))
            .key(k.index(tenant, APPROVED))
            .key(k.index(tenant, DENIED))
            .key(k.index(tenant, EXPIRED))
            .key(k.expiring())
            .key(k.call(tenant, &at.run_id, at.step, &at.call_id));
    }

    /// Audits one evaluation and, for REQUIRE_APPROVAL, binds the call to an approval: the one
    /// it already has, or `a` (created pending).
    pub async fn record_evaluation(
        &self,
        decision: Decision,
        reason: &str,
        a: &NewApproval,
    ) -> Result<EvalOutcome, Error> {
        let k = &self.keys;
        let mut inv = self.scripts.evaluate.prepare_invoke();
        inv.key(k.call(&a.tenant, &a.run_id, a.step, &a.call_id))
            .key(k.audit())
            .key(k.events())
            .key(k.events_seq())
            .key(k.approval(&a.id))
            .key(k.index(&a.tenant, PENDING))
            .key(k.run(&a.tenant, &a.run_id))
            .key(k.expiring())
            .arg(fmt_ms(a.created_ms))
            .arg(decision.as_str())
            .arg(reason);
        for (name, value) in a.fields() {
            inv.arg(name).arg(value);
        }
        let reply: Vec<String> = inv.invoke_async(&mut self.conn.clone()).await?;
        match tag(&reply) {
            "decided" => Ok(EvalOutcome::Decided),
            "created" => Ok(EvalOutcome::Created(arg(&reply, 1).to_string())),
            "existing" => Ok(EvalOutcome::Existing(arg(&reply, 1).to_string())),
            "conflict" => Ok(EvalOutcome::Conflict {
                id: arg(&reply, 1).to_string(),
                stored_sha256: arg(&reply, 2).to_string(),
            }),
            "audit_failed" => Err(self.audit_failed(arg(&reply, 1))),
            _ => Err(unexpected("evaluate", &reply)),
        }
    }

    /// The approval and the `traceparent` of the run's span that asked for it (for links),
    /// from the one read of its hash.
    async fn load_traced(&self, id: &str) -> Result<Option<(Approval, Option<String>)>, Error> {
        let fields: HashMap<String, String> =
            self.conn.clone().hgetall(self.keys.approval(id)).await?;
        if fields.is_empty() {
            return Ok(None);
        }
        let traceparent = fields.get("traceparent").filter(|t| !t.is_empty()).cloned();
        Ok(Some((record::from_fields(&fields)?, traceparent)))
    }

    async fn load_many(&self, ids: &[String]) -> Result<Vec<Approval>, Error> {
        if ids.is_empty() {
            return Ok(vec![]);
        }
        let mut pipe = redis::pipe();
        for id in ids {
            pipe.hgetall(self.keys.approval(id));
        }
        let all: Vec<HashMap<String, String>> = pipe.query_async(&mut self.conn.clone()).await?;
        // An index entry whose approval is gone is skipped, not an error: indexes are derived.
        all.iter()
            .filter(|f| !f.is_empty())
            .map(record::from_fields)
            .collect()
    }

    /// The approval; a pending one past its expiry is stored as expired first.
    pub async fn get(&self, id: &str) -> Result<Approval, Error> {
        Ok(self.get_traced(id).await?.0)
    }

    /// `get`, with the `traceparent` of the run's span that asked for the approval.
    pub async fn get_traced(&self, id: &str) -> Result<(Approval, Option<String>), Error> {
        let (a, traceparent) = self
            .load_traced(id)
            .await?
            .ok_or_else(|| Error::NotFound(id.to_string()))?;
        let now = now_ms();
        if !lapsed(&a, now) {
            return Ok((a, traceparent));
        }
        let at = Placement {
            tenant: a.tenant.clone(),
            run_id: a.run_id.clone(),
            step: a.step,
            call_id: a.call_id.clone(),
        };
        if let Err(e) = self.expire_one(id, &at, now).await {
            // Still reported as expired: an expired approval counts as denied either way.
            tracing::warn!(approval = id, "cannot store the expiry: {e}");
            return Ok((
                Approval {
                    state: ApprovalState::Expired as i32,
                    ..a
                },
                traceparent,
            ));
        }
        self.load_traced(id)
            .await?
            .ok_or_else(|| Error::NotFound(id.to_string()))
    }

    /// PENDING -> EXPIRED if its time is up. True when this call made the change.
    async fn expire_one(&self, id: &str, at: &Placement, now: i64) -> Result<bool, Error> {
        let mut inv = self.scripts.expire.prepare_invoke();
        self.transition_keys(&mut inv, id, at);
        inv.arg(fmt_ms(now))
            .arg(now)
            .arg(&at.tenant)
            .arg(id)
            .arg(self.retention_ms());
        let reply: Vec<String> = inv.invoke_async(&mut self.conn.clone()).await?;
        match tag(&reply) {
            "expired" => Ok(true),
            "not_found" | "not_pending" | "not_due" => Ok(false),
            "audit_failed" => Err(self.audit_failed(arg(&reply, 1))),
            _ => Err(unexpected("expire", &reply)),
        }
    }

    /// Expires up to `limit` pending approvals whose time is up; returns how many this
    /// replica expired (another replica may win some of them, which is fine).
    pub async fn expire_due(&self, limit: usize) -> Result<usize, Error> {
        let now = now_ms();
        let ids: Vec<String> = redis::cmd("ZRANGEBYSCORE")
            .arg(self.keys.expiring())
            .arg("-inf")
            .arg(now)
            .arg("LIMIT")
            .arg(0)
            .arg(limit)
            .query_async(&mut self.conn.clone())
            .await?;
        let mut expired = 0;
        for id in ids {
            match self.placement(&id).await? {
                Some(at) => expired += usize::from(self.expire_one(&id, &at, now).await?),
                None => {
                    let _: i64 = self.conn.clone().zrem(self.keys.expiring(), &id).await?;
                }
            }
        }
        Ok(expired)
    }

    /// The tenant an approval belongs to (None when there is no such approval). Reads nothing
    /// else and changes nothing (unlike `get`, which stores a lapsed approval as expired).
    pub async fn tenant_of(&self, id: &str) -> Result<Option<String>, Error> {
        Ok(self
            .conn
            .clone()
            .hget(self.keys.approval(id), "tenant")
            .await?)
    }

    /// Decides a pending approval, once; the decided approval, with the `traceparent` of the
    /// run's span that asked for it.
    pub async fn decide(
        &self,
        id: &str,
        approve: bool,
        approver: &crate::service::Decider,
        reason: &str,
        want_sha256: &str,
    ) -> Result<(Approval, Option<String>), Error> {
        let at = self
            .placement(id)
            .await?
            .ok_or_else(|| Error::NotFound(id.to_string()))?;
        let now = now_ms();
        let outcome = if approve { APPROVED } else { DENIED };
        let mut inv = self.scripts.decide.prepare_invoke();
        self.transition_keys(&mut inv, id, &at);
        inv.arg(fmt_ms(now))
            .arg(now)
            .arg(outcome)
            .arg(&approver.name)
            .arg(reason)
            .arg(want_sha256)
            .arg(&at.tenant)
            .arg(self.retention_ms())
            .arg(&approver.id)
            .arg(approver.groups.join(" "));
        let reply: Vec<String> = inv.invoke_async(&mut self.conn.clone()).await?;
        let ms = |i: usize| {
            arg(&reply, i)
                .parse::<i64>()
                .map(fmt_ms)
                .unwrap_or_else(|_| "?".into())
        };
        match tag(&reply) {
            "decided" => self
                .load_traced(id)
                .await?
                .ok_or_else(|| Error::NotFound(id.to_string())),
            "not_found" => Err(Error::NotFound(id.to_string())),
            "not_pending" => Err(Error::Refused(match arg(&reply, 1) {
                EXPIRED => format!(
                    "approval {id} expired at {}; it can no longer be decided",
                    ms(4)
                ),
                state => format!(
                    "approval {id} is already {state} by {} at {}",
                    arg(&reply, 2),
                    ms(3)
                ),
            })),
            "expired" => Err(Error::Refused(format!(
                "approval {id} expired at {}; it can no longer be decided",
                ms(1)
            ))),
            "args_changed" => Err(Error::Refused(format!(
                "the arguments of approval {id} changed: it binds to arguments with sha256 {}, \
                 the decision was made for {want_sha256}; review the call again",
                arg(&reply, 1)
            ))),
            "duty" => Err(Error::Duty(match arg(&reply, 1) {
                "starter" => format!(
                    "approval {id}: {} started the run, and this tool's approvals may not be decided by the run's starter (approvers.notTheStarter)",
                    approver.name
                ),
                "group" => format!(
                    "approval {id}: {} is not in a group that may decide this tool's approvals (approvers.groups)",
                    approver.name
                ),
                _ => format!(
                    "approval {id}: {} has approved it already; this tool needs approvals from distinct people (approvers.count)",
                    approver.name
                ),
            })),
            // Approved, and waiting for more approvals: the approval as it is now.
            "partial" => self
                .load_traced(id)
                .await?
                .ok_or_else(|| Error::NotFound(id.to_string())),
            "audit_failed" => Err(self.audit_failed(arg(&reply, 1))),
            // The tenant is never rewritten, so this is a broken invariant.
            _ => Err(unexpected("decide", &reply)),
        }
    }

    /// Drops, oldest first, up to `batch` Watch events that happened before `before_ms`,
    /// and with each final event (decided, expired) the approval it finalised (drop.lua).
    /// Returns how many events went.
    ///
    /// Event ids are dense offsets (`0-<n>`), not times, so `XTRIM MINID` cannot cut by age
    /// directly: this reads the oldest events, takes each one's time from the approval copy
    /// it carries (see `event_ms`), and trims up to the first event young enough to stay.
    /// Every step can be repeated (by another replica, or after a crash before the trim):
    /// dropping is idempotent and the trim only moves forward.
    pub async fn trim_events(&self, before_ms: i64, batch: usize) -> Result<usize, Error> {
        let entries: Vec<(String, HashMap<String, String>)> = redis::cmd("XRANGE")
            .arg(self.keys.events())
            .arg("-")
            .arg("+")
            .arg("COUNT")
            .arg(batch.max(1))
            .query_async(&mut self.conn.clone())
            .await?;
        let mut last = None;
        let mut dropped = 0;
        for (id, f) in &entries {
            let Some(offset) = crate::watch::offset_of(id) else {
                tracing::warn!(event = %id, "approval event id is not 0-<offset>; trimming stops there");
                break;
            };
            match event_ms(f) {
                Some(ms) if ms >= before_ms => break,
                Some(_) => {}
                // Unreadable: nothing can say how old it is; it goes with its neighbours.
                None => tracing::warn!(event = %id, "approval event without its time; trimmed"),
            }
            if matches!(
                f.get("kind").map(String::as_str),
                Some("decided" | "expired")
            ) {
                self.drop_final(id, f).await?;
            }
            last = Some(offset);
            dropped += 1;
        }
        if let Some(offset) = last {
            let _: u64 = redis::cmd("XTRIM")
                .arg(self.keys.events())
                .arg("MINID")
                .arg(format!("0-{}", offset.saturating_add(1)))
                .query_async(&mut self.conn.clone())
                .await?;
        }
        Ok(dropped)
    }

    /// Drops the approval a final event (whose fields carry a copy of it) finalised.
    async fn drop_final(&self, event: &str, f: &HashMap<String, String>) -> Result<(), Error> {
        let get = |k: &str| f.get(k).map(String::as_str).unwrap_or("");
        let (id, tenant, run, state) = (get("id"), get("tenant"), get("run_id"), get("state"));
        let step = get("step").parse::<u32>().ok();
        let (Some(step), false) = (step, id.is_empty() || tenant.is_empty() || state.is_empty())
        else {
            tracing::warn!(
                event,
                "approval event without the approval it is about; nothing dropped"
            );
            return Ok(());
        };
        let k = &self.keys;
        let mut inv = self.scripts.drop.prepare_invoke();
        inv.key(k.approval(id))
            .key(k.call(tenant, run, step, get("call_id")))
            .key(k.index(tenant, state))
            .key(k.run(tenant, run))
            .arg(id);
        let _: String = inv.invoke_async(&mut self.conn.clone()).await?;
        Ok(())
    }

    /// The offset of the oldest event Watch can still deliver: the first kept one, or the
    /// next to be written when every event was trimmed (or none was ever written).
    pub async fn first_offset(conn: &mut RedisConn, keys: &ApprovalKeys) -> Result<u64, Error> {
        // One transaction: an event written between the two reads would otherwise be skipped.
        type First = Vec<(String, HashMap<String, String>)>;
        let (first, seq): (First, Option<u64>) = redis::pipe()
            .atomic()
            .cmd("XRANGE")
            .arg(keys.events())
            .arg("-")
            .arg("+")
            .arg("COUNT")
            .arg(1)
            .cmd("GET")
            .arg(keys.events_seq())
            .query_async(conn)
            .await?;
        Ok(first
            .first()
            .and_then(|(id, _)| crate::watch::offset_of(id))
            .unwrap_or_else(|| seq.unwrap_or(0).saturating_add(1)))
    }

    /// What approvers see of each approval's run (same order as `ids`; unknown when gone).
    pub async fn run_contexts(&self, ids: &[String]) -> Result<Vec<record::RunContext>, Error> {
        if ids.is_empty() {
            return Ok(vec![]);
        }
        let mut pipe = redis::pipe();
        for id in ids {
            pipe.hgetall(self.keys.approval(id));
        }
        let all: Vec<HashMap<String, String>> = pipe.query_async(&mut self.conn.clone()).await?;
        Ok(all.iter().map(record::run_context).collect())
    }

    /// Approvals of `tenant` in `state`, newest first; of one run when `run_id` is given.
    /// Approvals of `tenant` in `state` (of one run, when given), newest first: from position
    /// `offset` of the index, at most `limit`; and where the next page starts, when there may
    /// be more.
    pub async fn list(
        &self,
        tenant: &str,
        state: ApprovalState,
        run_id: Option<&str>,
        offset: usize,
        limit: usize,
    ) -> Result<(Vec<Approval>, Option<usize>), Error> {
        // The sweeper runs every few seconds; catching up here keeps "pending" honest.
        if let Err(e) = self.expire_due(100).await {
            tracing::warn!("cannot expire lapsed approvals before listing: {e}");
        }
        let now = now_ms();
        let want = state as i32;
        let fix = |mut a: Approval| {
            if lapsed(&a, now) {
                a.state = ApprovalState::Expired as i32;
            }
            a
        };
        match run_id {
            // A run has few approvals: read them all, filter by state, then take the page.
            Some(run) => {
                let ids: Vec<String> = self
                    .conn
                    .clone()
                    .zrevrange(self.keys.run(tenant, run), 0, -1)
                    .await?;
                let all: Vec<Approval> = self
                    .load_many(&ids)
                    .await?
                    .into_iter()
                    .map(fix)
                    .filter(|a| a.state == want)
                    .collect();
                let more = all.len() > offset.saturating_add(limit);
                let page = all.into_iter().skip(offset).take(limit).collect();
                Ok((page, more.then_some(offset.saturating_add(limit))))
            }
            // The state's index, by position: a page holds fewer when some lapsed meanwhile.
            None => {
                let key = self.keys.index(tenant, record::state_name(state));
                let start = isize::try_from(offset).unwrap_or(isize::MAX);
                let stop = start
                    .saturating_add(isize::try_from(limit).unwrap_or(isize::MAX))
                    .saturating_sub(1);
                let ids: Vec<String> = self.conn.clone().zrevrange(key, start, stop).await?;
                let full = ids.len() == limit;
                let page = self
                    .load_many(&ids)
                    .await?
                    .into_iter()
                    .map(fix)
                    .filter(|a| a.state == want)
                    .collect();
                Ok((page, full.then_some(offset.saturating_add(limit))))
            }
        }
    }
}
