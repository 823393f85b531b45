//! Runs in Redis: the state hash, the event stream, the tenant index, idempotency keys and the
//! work stream.
//!
//! A run's state and its events share the hash tag `{<run id>}`, so a checkpoint — write the new
//! state, append its events, bump the version — is one Lua script: atomic, and fenced by the
//! version the writer loaded, so two workers can never both advance a run.

use bridle_core::redis_util::RedisConn;
use prost::Message as _;
use redis::streams::StreamRangeReply;

use bridle_core::redis_util::Keys;
use bridle_proto as pb;

use crate::Error;
use crate::state::RunState;

/// Consumer group of the work stream.
pub const GROUP: &str = "workers";

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
for i = 3, #ARGV do
  off = off + 1
  redis.call('XADD', KEYS[2], '0-' .. off, 'e', ARGV[i])
end
local nv = tonumber(v) + 1
redis.call('HSET', KEYS[1], 'state', ARGV[2], 'version', nv, 'offset', off)
return {nv, off}
";

/// A loaded run: its state plus the version and last event offset it was read at.
#[derive(Clone, Debug)]
pub struct Loaded {
    pub state: RunState,
    pub version: u64,
    pub offset: u64,
}

#[derive(Clone)]
pub struct RunStore {
    conn: RedisConn,
    keys: Keys,
    create: redis::Script,
    checkpoint: redis::Script,
}

impl RunStore {
    pub fn new(conn: RedisConn, keys: Keys) -> Self {
        Self {
            conn,
            keys,
            create: redis::Script::new(CREATE),
            checkpoint: redis::Script::new(CHECKPOINT),
        }
    }

    pub fn keys(&self) -> &Keys {
        &self.keys
    }

    pub fn conn(&self) -> RedisConn {
        self.conn.clone()
    }

    fn run_key(&self, id: &str) -> String {
        self.keys.key(&format!("run:{{{id}}}"))
    }

    pub fn events_key(&self, id: &str) -> String {
        self.keys.key(&format!("run:{{{id}}}:events"))
    }

    fn index_key(&self, tenant: &str) -> String {
        self.keys.key(&format!("runs:{{{tenant}}}"))
    }

    fn idem_key(&self, tenant: &str, key: &str) -> String {
        // The user's key is hashed so any string is a safe key component.
        use sha2::Digest as _;
        let h = hex::encode(sha2::Sha256::digest(key.as_bytes()));
        self.keys.key(&format!("idem:{{{tenant}}}:{h}"))
    }

    pub fn work_key(&self) -> String {
        self.keys.key("work:{steps}")
    }

    /// Pub/sub channel on which run ids to cancel are published.
    pub fn cancel_channel(&self) -> String {
        self.keys.key("cancel")
    }

    /// Tells every orchestrator process to interrupt its work on the run.
    pub async fn publish_cancel(&self, run_id: &str) -> Result<(), Error> {
        let mut c = self.conn.clone();
        let _: i64 = redis::cmd("PUBLISH")
            .arg(self.cancel_channel())
            .arg(run_id)
            .query_async(&mut c)
            .await?;
        Ok(())
    }

    pub fn dead_key(&self) -> String {
        self.keys.key("work:{steps}:dead")
    }

    /// Claims an idempotency key for `run_id`; returns the run that already holds it, if any.
    pub async fn claim_idempotency(
        &self,
        tenant: &str,
        key: &str,
        run_id: &str,
    ) -> Result<Option<String>, Error> {
        let k = self.idem_key(tenant, key);
        let mut c = self.conn.clone();
        let set: Option<String> = redis::cmd("SET")
            .arg(&k)
            .arg(run_id)
            .arg("NX")
            .arg("EX")
            .arg(7 * 24 * 3600)
            .query_async(&mut c)
            .await?;
        if set.is_some() {
            return Ok(None);
        }
        let holder: Option<String> = redis::cmd("GET").arg(&k).query_async(&mut c).await?;
        Ok(holder)
    }

    /// Writes a new run with its first event, indexes it and queues its first step.
    pub async fn create(&self, state: &RunState, first_event: &pb::RunEvent) -> Result<(), Error> {
        let json = serde_json::to_string(state)
            .map_err(|e| Error::Corrupt(state.id.clone(), e.to_string()))?;
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
        let () = redis::cmd("ZADD")
            .arg(self.index_key(&state.tenant))
            .arg(state.created_ms)
            .arg(&state.id)
            .query_async(&mut c)
            .await
            .map(|_: i64| ())?;
        self.enqueue(&state.id).await
    }

    /// Queues a step of the run for any worker.
    pub async fn enqueue(&self, run_id: &str) -> Result<(), Error> {
        let mut c = self.conn.clone();
        let _: String = redis::cmd("XADD")
            .arg(self.work_key())
            .arg("*")
            .arg("run")
            .arg(run_id)
            .query_async(&mut c)
            .await?;
        Ok(())
    }

    pub async fn load(&self, id: &str) -> Result<Option<Loaded>, Error> {
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

    pub async fn load_required(&self, id: &str) -> Result<Loaded, Error> {
        self.load(id)
            .await?
            .ok_or_else(|| Error::UnknownRun(id.to_string()))
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
            .map_err(|e| Error::Corrupt(state.id.clone(), e.to_string()))?;
        let mut inv = self.checkpoint.key(self.run_key(&state.id));
        inv.key(self.events_key(&state.id)).arg(version).arg(json);
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
        id: &str,
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

    /// Run ids of a tenant, newest first.
    pub async fn list_ids(
        &self,
        tenant: &str,
        start: usize,
        count: usize,
    ) -> Result<Vec<String>, Error> {
        let mut c = self.conn.clone();
        let ids: Vec<String> = redis::cmd("ZREVRANGE")
            .arg(self.index_key(tenant))
            .arg(start)
            .arg(start + count.max(1) - 1)
            .query_async(&mut c)
            .await?;
        Ok(ids)
    }
}

/// Decodes a stream entry into an event, taking its offset from the entry id ("0-<offset>").
pub fn decode_event(run_id: &str, sid: &redis::streams::StreamId) -> Result<pb::RunEvent, Error> {
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
