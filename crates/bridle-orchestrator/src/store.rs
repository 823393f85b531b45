//! Runs in Redis: the state hash, the event stream, the tenant index, idempotency keys, and
//! (through `WorkQueue`) the work stream partitions.
//!
//! A run's state and its events share the hash tag `{<run id>}`, so a checkpoint — write the new
//! state, append its events, bump the version — is one Lua script: atomic, and fenced by the
//! version the writer loaded, so two workers can never both advance a run. The checkpoint that
//! ends a run also sets both keys' expiry (the retention), unless the run is still held (see
//! `RunState::held_by`); so an ended run never lives on without a TTL by accident. A checkpoint
//! that appends events publishes the run's id on the events channel, which wakes the run's
//! watchers (`crate::events`); it costs no round trip.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use bridle_core::redis_util::RedisConn;
use prost::Message as _;
use redis::streams::StreamRangeReply;

use bridle_core::redis_util::Keys;
use bridle_proto as pb;

use bridle_core::ids::{RunId, TenantId};

use crate::Error;
use crate::queue::WorkQueue;
use crate::state::RunState;

const CREATE: &str = r"
if redis.call('EXISTS', KEYS[1]) == 1 then return redis.error_reply('EXISTS run already exists') end
redis.call('HSET', KEYS[1], 'state', ARGV[1], 'version', 1, 'offset', 1)
redis.call('XADD', KEYS[2], '0-1', 'e', ARGV[2])
return 1
";

const CHECKPOINT: &str = r"
local v = redis.call('HGET', KEYS[1], 'version')
if not v then return redis.error_reply('NORUN run does not exist') end
if v ~= ARGV[1] then return redis.error_reply('FENCED version is ' .. v) end
local off = tonumber(redis.call('HGET', KEYS[1], 'offset') or '0')
for i = 6, #ARGV do
  off = off + 1
  redis.call('XADD', KEYS[2], '0-' .. off, 'e', ARGV[i])
end
local nv = tonumber(v) + 1
redis.call('HSET', KEYS[1], 'state', ARGV[2], 'version', nv, 'offset', off)
if #ARGV >= 6 then redis.call('PUBLISH', ARGV[4], ARGV[5]) end
local ttl = tonumber(ARGV[3])
if ttl > 0 then
  redis.call('PEXPIRE', KEYS[1], ttl)
  redis.call('PEXPIRE', KEYS[2], ttl)
end
return {nv, off}
";

/// Deletes an idempotency key if it still names this run. DEL needs no memory, so this works
/// when Redis is out of memory too.
const RELEASE_IDEMPOTENCY: &str = r"
local v = redis.call('GET', KEYS[1])
if v == ARGV[1] or v == 'pending:' .. ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
";

/// Marks an idempotency key's run as wholly created (written, indexed, queued).
const CONFIRM_IDEMPOTENCY: &str = r"
if redis.call('GET', KEYS[1]) == 'pending:' .. ARGV[1] then
  return redis.call('SET', KEYS[1], ARGV[1], 'KEEPTTL')
end
return 0
";

/// Who holds a StartRun idempotency key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IdempotencyHolder {
    pub run_id: RunId,
    /// The run's creation was not confirmed: the request creating it is still at work, or it
    /// died (or lost Redis) before the run was written, indexed and queued.
    pub pending: bool,
}

impl IdempotencyHolder {
    /// The key's value: the run's id, after `pending:` until the run is wholly created.
    fn parse(v: &str) -> Result<Self, Error> {
        let (id, pending) = match v.strip_prefix("pending:") {
            Some(id) => (id, true),
            None => (v, false),
        };
        let run_id = RunId::parse(id)
            .map_err(|e| Error::Corrupt(id.to_string(), format!("idempotency key: run id {e}")))?;
        Ok(Self { run_id, pending })
    }
}

/// A run id read from an index, or None (logged) when it is not one: stored data only ever
/// held checked ids, and one damaged entry must not hide the others.
fn indexed_run_id(id: &str) -> Option<RunId> {
    RunId::parse(id)
        .inspect_err(|e| tracing::error!(entry = %bridle_core::redact::quote(id), "run index entry skipped: run id {e}"))
        .ok()
}

/// A loaded run: its state plus the version and last event offset it was read at.
#[derive(Clone, Debug)]
pub struct Loaded {
    pub state: RunState,
    pub version: u64,
    pub offset: u64,
}

/// How long what the store writes lives (ARCHITECTURE.md, "Redis keys", has the whole table).
#[derive(Clone, Debug)]
pub struct Lifetimes {
    /// An ended run's state and events, counted from its last checkpoint.
    pub retention: Duration,
    pub tenant_retention: BTreeMap<String, Duration>,
    /// A StartRun idempotency key.
    pub idempotency_ttl: Duration,
}

impl Lifetimes {
    pub fn from_options(o: &crate::Options) -> Self {
        Self {
            retention: o.retention,
            tenant_retention: o
                .tenant_retention
                .iter()
                .map(|(t, d)| (t.clone(), **d))
                .collect(),
            idempotency_ttl: o.idempotency_ttl,
        }
    }

    pub fn retention_of(&self, tenant: &str) -> Duration {
        self.tenant_retention
            .get(tenant)
            .copied()
            .unwrap_or(self.retention)
    }

    /// The shortest retention of any tenant: index entries older than this may point at
    /// expired runs.
    pub fn shortest_retention(&self) -> Duration {
        self.tenant_retention
            .values()
            .copied()
            .fold(self.retention, Duration::min)
    }
}

impl Default for Lifetimes {
    fn default() -> Self {
        Self::from_options(&crate::Options::default())
    }
}

#[derive(Clone)]
pub struct RunStore {
    conn: RedisConn,
    keys: Keys,
    lifetimes: Lifetimes,
    queue: WorkQueue,
    create: redis::Script,
    checkpoint: redis::Script,
}

impl RunStore {
    pub fn new(conn: RedisConn, keys: Keys, lifetimes: Lifetimes, partitions: usize) -> Self {
        Self {
            queue: WorkQueue::new(conn.clone(), keys.clone(), partitions),
            conn,
            keys,
            lifetimes,
            create: redis::Script::new(CREATE),
            checkpoint: redis::Script::new(CHECKPOINT),
        }
    }

    pub fn lifetimes(&self) -> &Lifetimes {
        &self.lifetimes
    }

    pub fn queue(&self) -> &WorkQueue {
        &self.queue
    }

    fn run_key(&self, id: &str) -> String {
        self.keys.key(&format!("run:{{{id}}}"))
    }

    fn events_key(&self, id: &str) -> String {
        self.keys.key(&format!("run:{{{id}}}:events"))
    }

    fn index_key(&self, tenant: &str) -> String {
        self.keys.key(&format!("runs:{{{tenant}}}"))
    }

    /// Set of the tenants that have an index, for the sweeper that prunes the indexes.
    fn tenants_key(&self) -> String {
        self.keys.key("runs:tenants")
    }

    fn idem_key(&self, tenant: &str, key: &str) -> String {
        // The user's key is hashed so any string is a safe key component.
        use sha2::Digest as _;
        let h = hex::encode(sha2::Sha256::digest(key.as_bytes()));
        self.keys.key(&format!("idem:{{{tenant}}}:{h}"))
    }

    /// Pub/sub channel on which run ids to cancel are published.
    pub fn cancel_channel(&self) -> String {
        self.keys.key("cancel")
    }

    /// Pub/sub channel on which a checkpoint that appends events publishes its run's id, for
    /// the processes' watchers (`crate::events`).
    pub fn events_channel(&self) -> String {
        self.keys.key("events")
    }

    /// Tells every orchestrator process to interrupt its work on the run.
    pub async fn publish_cancel(&self, run_id: &RunId) -> Result<(), Error> {
        let mut c = self.conn.clone();
        let _: i64 = redis::cmd("PUBLISH")
            .arg(self.cancel_channel())
            .arg(run_id)
            .query_async(&mut c)
            .await?;
        Ok(())
    }

    /// Claims an idempotency key for `run_id` (as pending, until [`Self::confirm_idempotency`]);
    /// returns who already holds it, if anyone.
    pub async fn claim_idempotency(
        &self,
        tenant: &TenantId,
        key: &str,
        run_id: &RunId,
    ) -> Result<Option<IdempotencyHolder>, Error> {
        let k = self.idem_key(tenant, key);
        let mut c = self.conn.clone();
        let set: Option<String> = redis::cmd("SET")
            .arg(&k)
            .arg(format!("pending:{run_id}"))
            .arg("NX")
            .arg("PX")
            .arg(self.lifetimes.idempotency_ttl.as_millis() as u64)
            .query_async(&mut c)
            .await?;
        if set.is_some() {
            return Ok(None);
        }
        self.idempotency_holder(tenant, key).await
    }

    /// Who holds an idempotency key now.
    pub async fn idempotency_holder(
        &self,
        tenant: &TenantId,
        key: &str,
    ) -> Result<Option<IdempotencyHolder>, Error> {
        let mut c = self.conn.clone();
        let v: Option<String> = redis::cmd("GET")
            .arg(self.idem_key(tenant, key))
            .query_async(&mut c)
            .await?;
        v.as_deref().map(IdempotencyHolder::parse).transpose()
    }

    /// Marks the key's run as wholly created. Best effort: a key left pending only makes a
    /// retry check the run (and finish its creation if it needs it).
    pub async fn confirm_idempotency(&self, tenant: &TenantId, key: &str, run_id: &RunId) {
        let mut c = self.conn.clone();
        let r: redis::RedisResult<redis::Value> = redis::Script::new(CONFIRM_IDEMPOTENCY)
            .key(self.idem_key(tenant, key))
            .arg(run_id)
            .invoke_async(&mut c)
            .await;
        if let Err(e) = r {
            tracing::warn!(
                run = %run_id,
                "cannot confirm the run's idempotency key: {e}"
            );
        }
    }

    /// Finishes the creation of a run written by a request that did not confirm it: indexes
    /// it and queues its first step again (its first task may never have been queued). Only
    /// for a run still queued at step 0.
    pub async fn finish_creation(&self, state: &RunState) -> Result<(), Error> {
        self.index_and_enqueue(state).await
    }

    /// Gives up an idempotency key claimed for `run_id` whose run was not created. Best
    /// effort: a key left behind expires with its TTL.
    pub async fn release_idempotency(&self, tenant: &TenantId, key: &str, run_id: &RunId) {
        let mut c = self.conn.clone();
        let r: redis::RedisResult<i64> = redis::Script::new(RELEASE_IDEMPOTENCY)
            .key(self.idem_key(tenant, key))
            .arg(run_id)
            .invoke_async(&mut c)
            .await;
        if let Err(e) = r {
            tracing::warn!(
                run = %run_id,
                "cannot release the idempotency key of a run that was not created: {e}"
            );
        }
    }

    /// Writes a new run with its first event, indexes it and queues its first step; or, when
    /// Redis refuses any of that (out of memory, say), leaves no part of it behind.
    pub async fn create(&self, state: &RunState, first_event: &pb::RunEvent) -> Result<(), Error> {
        let json = serde_json::to_string(state)
            .map_err(|e| Error::Corrupt(state.id.to_string(), e.to_string()))?;
        let mut c = self.conn.clone();
        let () = self
            .create
            .key(self.run_key(&state.id))
            .key(self.events_key(&state.id))
            .arg(json)
            .arg(first_event.encode_to_vec())
            .invoke_async(&mut c)
            .await
            .map(|_: i64| ())?;
        if let Err(e) = self.index_and_enqueue(state).await {
            self.discard(state).await;
            return Err(e);
        }
        Ok(())
    }

    async fn index_and_enqueue(&self, state: &RunState) -> Result<(), Error> {
        let mut c = self.conn.clone();
        // Two commands, not a pipeline: the index and the set of tenants are in different
        // slots, and a Redis Cluster client refuses a pipeline across nodes.
        let () = redis::cmd("ZADD")
            .arg(self.index_key(&state.tenant))
            .arg(state.created_ms)
            .arg(&state.id)
            .query_async(&mut c)
            .await
            .map(|_: i64| ())?;
        let () = redis::cmd("SADD")
            .arg(self.tenants_key())
            .arg(state.tenant.as_str())
            .query_async(&mut c)
            .await
            .map(|_: i64| ())?;
        self.enqueue(&state.id).await
    }

    /// Removes a run that `create` wrote only in part: a run without its task would stay
    /// queued for ever. DEL and ZREM need no memory, so this works when Redis is full. (Should
    /// the task have been queued after all, a worker finds no run and drops it.)
    async fn discard(&self, state: &RunState) {
        let mut c = self.conn.clone();
        let r: redis::RedisResult<()> = async {
            let _: i64 = redis::cmd("DEL")
                .arg(self.run_key(&state.id))
                .arg(self.events_key(&state.id))
                .query_async(&mut c)
                .await?;
            let _: i64 = redis::cmd("ZREM")
                .arg(self.index_key(&state.tenant))
                .arg(&state.id)
                .query_async(&mut c)
                .await?;
            Ok(())
        }
        .await;
        if let Err(e) = r {
            tracing::warn!(run = %state.id, "cannot remove a run that was created only in part: {e}");
        }
    }

    /// Queues a step of the run for any worker.
    pub async fn enqueue(&self, run_id: &RunId) -> Result<(), Error> {
        self.queue.enqueue(run_id).await
    }

    /// The expiry a checkpoint of `state` sets: the tenant's retention once the run has ended
    /// and nothing holds it, else none.
    fn expiry_ms(&self, state: &RunState) -> u64 {
        if state.status.is_terminal() && state.held_by.is_empty() {
            let d = self.lifetimes.retention_of(&state.tenant);
            u64::try_from(d.as_millis()).unwrap_or(u64::MAX).max(1)
        } else {
            0
        }
    }

    pub async fn load(&self, id: &RunId) -> Result<Option<Loaded>, Error> {
        let mut c = self.conn.clone();
        let (state, version, offset): (Option<String>, Option<u64>, Option<u64>) =
            redis::cmd("HMGET")
                .arg(self.run_key(id))
                .arg("state")
                .arg("version")
                .arg("offset")
                .query_async(&mut c)
                .await?;
        let Some(json) = state else { return Ok(None) };
        let state: RunState = serde_json::from_str(&json)
            .map_err(|e| Error::Corrupt(id.to_string(), e.to_string()))?;
        Ok(Some(Loaded {
            state,
            version: version.unwrap_or(0),
            offset: offset.unwrap_or(0),
        }))
    }

    pub async fn load_required(&self, id: &RunId) -> Result<Loaded, Error> {
        self.load(id)
            .await?
            .ok_or_else(|| Error::UnknownRun(id.clone()))
    }

    /// Writes `state` and appends `events` if the run is still at `version`. Returns the new
    /// version and last offset; `Error::Fenced` when another writer got there first.
    pub async fn checkpoint(
        &self,
        state: &RunState,
        version: u64,
        events: &[pb::RunEvent],
    ) -> Result<(u64, u64), Error> {
        let json = serde_json::to_string(state)
            .map_err(|e| Error::Corrupt(state.id.to_string(), e.to_string()))?;
        let mut inv = self.checkpoint.key(self.run_key(&state.id));
        inv.key(self.events_key(&state.id))
            .arg(version)
            .arg(json)
            .arg(self.expiry_ms(state))
            .arg(self.events_channel())
            .arg(&state.id);
        for e in events {
            inv.arg(e.encode_to_vec());
        }
        let mut c = self.conn.clone();
        match inv.invoke_async::<(u64, u64)>(&mut c).await {
            Ok(r) => Ok(r),
            Err(e) if e.code() == Some("FENCED") => Err(Error::Fenced(state.id.clone())),
            Err(e) if e.code() == Some("NORUN") => Err(Error::UnknownRun(state.id.clone())),
            Err(e) => Err(e.into()),
        }
    }

    /// Events with offset > `after`, at most `count`.
    pub async fn events_after(
        &self,
        id: &RunId,
        after: u64,
        count: usize,
    ) -> Result<Vec<pb::RunEvent>, Error> {
        let mut c = self.conn.clone();
        let reply: StreamRangeReply = redis::cmd("XRANGE")
            .arg(self.events_key(id))
            .arg(format!("0-{}", after.saturating_add(1)))
            .arg("+")
            .arg("COUNT")
            .arg(count)
            .query_async(&mut c)
            .await?;
        reply.ids.iter().map(|sid| decode_event(id, sid)).collect()
    }

    /// Where this deployment's approval listeners stand in the approvals service's event
    /// stream: the offset of the last event handled (0: none yet).
    pub async fn approval_offset(&self) -> Result<u64, Error> {
        let mut c = self.conn.clone();
        let v: Option<u64> = redis::cmd("GET")
            .arg(self.approval_offset_key())
            .query_async(&mut c)
            .await?;
        Ok(v.unwrap_or(0))
    }

    pub async fn set_approval_offset(&self, offset: u64) -> Result<(), Error> {
        let mut c = self.conn.clone();
        let () = redis::cmd("SET")
            .arg(self.approval_offset_key())
            .arg(offset)
            .query_async(&mut c)
            .await?;
        Ok(())
    }

    fn approval_offset_key(&self) -> String {
        self.keys.key("orchestrator:{approvals}:offset")
    }

    fn woken_key(&self, run_id: &RunId, approval_id: &str) -> String {
        self.keys
            .key(&format!("run:{{{run_id}}}:woken:{approval_id}"))
    }

    /// Marks the run as woken for the approval's resolution; true for the first caller only,
    /// so every orchestrator's listener can see the event and one wakes the run.
    pub async fn mark_woken(&self, run_id: &RunId, approval_id: &str) -> Result<bool, Error> {
        let mut c = self.conn.clone();
        let first: Option<String> = redis::cmd("SET")
            .arg(self.woken_key(run_id, approval_id))
            .arg(1)
            .arg("NX")
            .arg("EX")
            .arg(24 * 3600)
            .query_async(&mut c)
            .await?;
        Ok(first.is_some())
    }

    /// Undoes `mark_woken` when waking failed, so a retry wakes the run. Best effort.
    pub async fn unmark_woken(&self, run_id: &RunId, approval_id: &str) {
        let mut c = self.conn.clone();
        let r: redis::RedisResult<i64> = redis::cmd("DEL")
            .arg(self.woken_key(run_id, approval_id))
            .query_async(&mut c)
            .await;
        if let Err(e) = r {
            tracing::warn!(
                run = %run_id,
                approval = approval_id,
                "cannot clear the wake marker: {e}"
            );
        }
    }

    /// Run ids of a tenant, newest first.
    pub async fn list_ids(
        &self,
        tenant: &TenantId,
        start: usize,
        count: usize,
    ) -> Result<Vec<RunId>, Error> {
        let mut c = self.conn.clone();
        let ids: Vec<String> = redis::cmd("ZREVRANGE")
            .arg(self.index_key(tenant))
            .arg(start)
            .arg(start + count.max(1) - 1)
            .query_async(&mut c)
            .await?;
        Ok(ids.iter().filter_map(|id| indexed_run_id(id)).collect())
    }

    /// Removes from the tenants' indexes the runs whose keys have expired, looking only at
    /// entries created longer ago than the shortest retention (younger runs cannot have
    /// expired). At most `batch` entries per tenant per call; returns how many were removed.
    pub async fn prune_indexes(&self, now_ms: i64, batch: usize) -> Result<usize, Error> {
        let mut c = self.conn.clone();
        let tenants: Vec<String> = redis::cmd("SMEMBERS")
            .arg(self.tenants_key())
            .query_async(&mut c)
            .await?;
        let before = now_ms.saturating_sub(
            i64::try_from(self.lifetimes.shortest_retention().as_millis()).unwrap_or(i64::MAX),
        );
        let mut removed = 0;
        for tenant in tenants {
            let index = self.index_key(&tenant);
            let ids: Vec<String> = redis::cmd("ZRANGEBYSCORE")
                .arg(&index)
                .arg("-inf")
                .arg(before)
                .arg("LIMIT")
                .arg(0)
                .arg(batch)
                .query_async(&mut c)
                .await?;
            if ids.is_empty() {
                continue;
            }
            // One EXISTS per run, each on its own: the runs live in different slots, and a
            // Redis Cluster client refuses a pipeline that spans nodes.
            let mut exists = Vec::with_capacity(ids.len());
            for id in &ids {
                let e: bool = redis::cmd("EXISTS")
                    .arg(self.run_key(id))
                    .query_async(&mut c)
                    .await?;
                exists.push(e);
            }
            let gone: Vec<&String> = ids
                .iter()
                .zip(exists)
                .filter_map(|(id, e)| (!e).then_some(id))
                .collect();
            if !gone.is_empty() {
                let n: usize = redis::cmd("ZREM")
                    .arg(&index)
                    .arg(&gone)
                    .query_async(&mut c)
                    .await?;
                removed += n;
            }
        }
        Ok(removed)
    }

    /// Every run that waits on an approval: parked for one (awaiting approval), or ended and
    /// still held by one. For the approval listener when it learns that approval events it
    /// had not read were trimmed: it queues each of these so a worker asks the approvals
    /// service again. Reads the tenants' run indexes a page at a time, and the state only of
    /// runs without an expiry (an expiring run has ended and is held by nothing).
    pub async fn runs_waiting_on_approvals(&self) -> Result<BTreeSet<RunId>, Error> {
        const PAGE: usize = 500;
        let mut c = self.conn.clone();
        let tenants: Vec<String> = redis::cmd("SMEMBERS")
            .arg(self.tenants_key())
            .query_async(&mut c)
            .await?;
        let mut out = BTreeSet::new();
        for tenant in tenants {
            let index = self.index_key(&tenant);
            // ZSCAN, not pages by rank: the sweep removes entries meanwhile, which would shift
            // ranks, while ZSCAN returns every member present for the whole scan.
            let mut cursor = 0u64;
            loop {
                let (next, flat): (u64, Vec<String>) = redis::cmd("ZSCAN")
                    .arg(&index)
                    .arg(cursor)
                    .arg("COUNT")
                    .arg(PAGE)
                    .query_async(&mut c)
                    .await?;
                // Members and scores alternate.
                for id in flat.iter().step_by(2).filter_map(|id| indexed_run_id(id)) {
                    // One key at a time: runs live in different slots (see prune_indexes).
                    let ttl: i64 = redis::cmd("PTTL")
                        .arg(self.run_key(&id))
                        .query_async(&mut c)
                        .await?;
                    if ttl != -1 {
                        continue;
                    }
                    let Some(l) = self.load(&id).await? else {
                        continue;
                    };
                    let s = &l.state;
                    if s.status == crate::state::Status::AwaitingApproval
                        || (s.status.is_terminal() && !s.held_by.is_empty())
                    {
                        out.insert(id);
                    }
                }
                if next == 0 {
                    break;
                }
                cursor = next;
            }
        }
        Ok(out)
    }

    /// Drops dead letters older than the (default) retention: the runs they name are gone by
    /// then too.
    pub async fn trim_dead_letters(&self, now_ms: i64) -> Result<(), Error> {
        let min = now_ms.saturating_sub(
            i64::try_from(self.lifetimes.retention.as_millis()).unwrap_or(i64::MAX),
        );
        self.queue.trim_dead_letters(min).await
    }

    /// Takes the sweep for `period` if no other orchestrator has it; true when taken.
    pub async fn take_sweep(&self, period: Duration) -> Result<bool, Error> {
        let mut c = self.conn.clone();
        let taken: Option<String> = redis::cmd("SET")
            .arg(self.keys.key("runs:sweep"))
            .arg(1)
            .arg("NX")
            .arg("PX")
            .arg(period.as_millis().max(1) as u64)
            .query_async(&mut c)
            .await?;
        Ok(taken.is_some())
    }
}

/// Decodes a stream entry into an event, taking its offset from the entry id ("0-<offset>").
pub fn decode_event(run_id: &RunId, sid: &redis::streams::StreamId) -> Result<pb::RunEvent, Error> {
    let bytes: Vec<u8> = sid.get("e").ok_or_else(|| {
        Error::Corrupt(
            run_id.to_string(),
            format!("event {} has no payload", sid.id),
        )
    })?;
    let mut ev = pb::RunEvent::decode(bytes.as_slice())
        .map_err(|e| Error::Corrupt(run_id.to_string(), format!("event {}: {e}", sid.id)))?;
    ev.offset = sid
        .id
        .split_once('-')
        .and_then(|(_, n)| n.parse().ok())
        .unwrap_or(0);
    ev.run_id = run_id.to_string();
    Ok(ev)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::Lifetimes;

    #[test]
    fn a_tenant_keeps_its_own_retention_and_the_rest_the_default() {
        let day = Duration::from_secs(86_400);
        let l = Lifetimes {
            retention: 2 * day,
            tenant_retention: [("acme".to_string(), 30 * day)].into(),
            ..Lifetimes::default()
        };
        assert_eq!(l.retention_of("acme"), 30 * day);
        assert_eq!(l.retention_of("globex"), 2 * day);
        assert_eq!(l.shortest_retention(), 2 * day);
    }
}
