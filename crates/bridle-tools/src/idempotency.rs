//! "A completed tool call is never executed twice for the same key."
//!
//! The result of a call made with an idempotency key is stored (prost-encoded, redacted) under
//! a key hash-tagged by the call, for `ttl`. While a call runs, an in-progress marker
//! (`SET NX` with an expiry longer than the call's timeout) makes a duplicate wait for the
//! result instead of running the tool again. If the running call dies without a result, its
//! marker is released (or expires) and one waiting duplicate takes over. The marker names the
//! tools replica running the call: when that replica's lease is gone (it died mid-call), a
//! retry on another replica replaces the marker at once instead of waiting for it to expire.

use std::time::Duration;

use bridle_core::Shutdown;
use bridle_core::redis_util::Keys;
use bridle_core::redis_util::RedisConn;
use bridle_proto::ToolResult;
use prost::Message as _;
use sha2::{Digest as _, Sha256};
use tokio::time::Instant;

use crate::Error;
use crate::affinity::Replicas;

/// The marker outlives the call's timeout by this much (create, inspect and remove time).
const LOCK_MARGIN: Duration = Duration::from_secs(60);
/// A duplicate waits this much past the call's timeout before giving up.
const WAIT_MARGIN: Duration = Duration::from_secs(30);
pub const MAX_KEY_LEN: usize = 512;

const FINISH: &str = r"
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
if redis.call('GET', KEYS[2]) == ARGV[3] then redis.call('DEL', KEYS[2]) end
return 1";

const RELEASE: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0";

/// Takes over the marker of a dead replica's call, if it is still that one.
const REPLACE: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
  return 1
end
return 0";

#[derive(Clone)]
pub struct Idempotency {
    conn: RedisConn,
    keys: Keys,
    ttl: Duration,
    replicas: Replicas,
}

#[derive(Clone, Debug)]
struct CallKeys {
    result: String,
    running: String,
}

/// What `begin` found.
pub enum Begin {
    /// The call completed before: its stored result.
    Replay(ToolResult),
    /// This caller runs the call and must `complete` the claim.
    Claimed(Claim),
}

impl Idempotency {
    pub fn new(conn: RedisConn, keys: Keys, ttl: Duration, replicas: Replicas) -> Self {
        Self {
            conn,
            keys,
            ttl,
            replicas,
        }
    }

    /// Whether the marker `held` belongs to a replica whose lease is gone.
    async fn holder_dead(&self, held: &str) -> Result<bool, Error> {
        match held.split_once(' ') {
            Some((_, replica)) if replica != self.replicas.me.id => {
                Ok(self.replicas.live(replica).await?.is_none())
            }
            _ => Ok(false),
        }
    }

    fn call_keys(&self, tenant: &str, tool: &str, key: &str) -> CallKeys {
        // Hashed: the key is the caller's text and may hold braces; the tenant and tool are in
        // it so one tenant's key can never replay another's result.
        let mut h = Sha256::new();
        for part in [tenant, tool, key] {
            h.update(part.as_bytes());
            h.update([0u8]);
        }
        let tag = hex::encode(&h.finalize()[..16]);
        let base = self.keys.key(&format!("tools:idem:{{{tag}}}"));
        CallKeys {
            result: format!("{base}:result"),
            running: format!("{base}:running"),
        }
    }

    /// Replays a completed call, or claims it for this caller, waiting (up to the call's
    /// timeout plus a margin) while another caller runs it.
    pub async fn begin(
        &self,
        tenant: &str,
        tool: &str,
        key: &str,
        run_timeout: Duration,
        cleanup: &Shutdown,
    ) -> Result<Begin, Error> {
        let ck = self.call_keys(tenant, tool, key);
        // "<token> <replica>": whose call it is.
        let token = format!("{} {}", ulid::Ulid::new(), self.replicas.me.id);
        let lock_ms = (run_timeout + LOCK_MARGIN).as_millis() as u64;
        let deadline = Instant::now() + run_timeout + WAIT_MARGIN;
        let mut delay = Duration::from_millis(50);
        loop {
            if let Some(r) = self.stored(&ck).await? {
                return Ok(Begin::Replay(r));
            }
            let mut conn = self.conn.clone();
            let got: Option<String> = redis::cmd("SET")
                .arg(&ck.running)
                .arg(&token)
                .arg("NX")
                .arg("PX")
                .arg(lock_ms)
                .query_async(&mut conn)
                .await?;
            let mut claimed = got.is_some();
            if !claimed {
                let held: Option<String> = redis::cmd("GET")
                    .arg(&ck.running)
                    .query_async(&mut conn)
                    .await?;
                if let Some(held) = held
                    && self.holder_dead(&held).await?
                {
                    let replaced: i64 = redis::Script::new(REPLACE)
                        .key(&ck.running)
                        .arg(&held)
                        .arg(&token)
                        .arg(lock_ms)
                        .invoke_async(&mut conn)
                        .await?;
                    if replaced == 1 {
                        tracing::info!(tool, "took over a call whose tools replica is gone");
                    }
                    claimed = replaced == 1;
                }
            }
            if claimed {
                let claim = Claim {
                    store: self.clone(),
                    keys: ck.clone(),
                    token,
                    cleanup: cleanup.clone(),
                    armed: true,
                };
                // The previous holder may have finished between our read and our SET.
                if let Some(r) = self.stored(&ck).await? {
                    claim.release().await;
                    return Ok(Begin::Replay(r));
                }
                return Ok(Begin::Claimed(claim));
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(Error::InProgress(key.to_string()));
            }
            tokio::time::sleep(delay.min(deadline - now)).await;
            delay = (delay * 2).min(Duration::from_millis(500));
        }
    }

    async fn stored(&self, ck: &CallKeys) -> Result<Option<ToolResult>, Error> {
        let mut conn = self.conn.clone();
        let bytes: Option<Vec<u8>> = redis::cmd("GET")
            .arg(&ck.result)
            .query_async(&mut conn)
            .await?;
        bytes
            .map(|b| {
                ToolResult::decode(b.as_slice()).map_err(|e| {
                    Error::Core(bridle_core::Error::internal(format!(
                        "stored tool result {} is unreadable: {e}",
                        ck.result
                    )))
                })
            })
            .transpose()
    }
}

/// The right to run one call. Dropped without `complete` (an error, or the caller went away),
/// it releases the marker so a retry need not wait for it to expire.
pub struct Claim {
    store: Idempotency,
    keys: CallKeys,
    token: String,
    cleanup: Shutdown,
    armed: bool,
}

impl Claim {
    /// Stores the result and releases the marker, atomically.
    pub async fn complete(mut self, result: &ToolResult) -> Result<(), Error> {
        self.armed = false;
        let mut conn = self.store.conn.clone();
        let () = redis::Script::new(FINISH)
            .key(&self.keys.result)
            .key(&self.keys.running)
            .arg(result.encode_to_vec())
            .arg(self.store.ttl.as_millis() as u64)
            .arg(&self.token)
            .invoke_async::<i64>(&mut conn)
            .await
            .map(|_| ())?;
        Ok(())
    }

    /// Gives the call up without a result (nothing ran).
    pub async fn release(mut self) {
        self.armed = false;
        release(
            self.store.conn.clone(),
            self.keys.running.clone(),
            self.token.clone(),
        )
        .await;
    }
}

impl Drop for Claim {
    fn drop(&mut self) {
        if !self.armed || tokio::runtime::Handle::try_current().is_err() {
            return;
        }
        let (conn, key, token) = (
            self.store.conn.clone(),
            self.keys.running.clone(),
            self.token.clone(),
        );
        self.cleanup.spawn(release(conn, key, token));
    }
}

async fn release(mut conn: RedisConn, key: String, token: String) {
    let r: Result<i64, _> = redis::Script::new(RELEASE)
        .key(&key)
        .arg(&token)
        .invoke_async(&mut conn)
        .await;
    if let Err(e) = r {
        tracing::warn!(error = %e, "cannot release an idempotency marker; it expires by itself");
    }
}
