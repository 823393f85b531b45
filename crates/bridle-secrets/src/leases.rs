//! Leases of dynamic secrets, tied to the run they were read for: renewed at two thirds of
//! their duration while the run lives, revoked when it ends (`Secrets.EndRun`).
//!
//! Every lease is written to Redis (`<prefix>:secrets:leases:{<run>}`, lease ids only) before
//! its secret is handed out, so whichever broker replica receives EndRun can revoke the leases
//! all replicas took for that run. Renewal is done by the replica that read the lease; if it
//! dies, the lease lapses at the end of its duration (fail safe).

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bridle_core::Shutdown;
use bridle_core::redis_util::Keys;
use bridle_core::redis_util::RedisConn;
use tokio_util::sync::CancellationToken;

use crate::Error;
use crate::cache::Slot;
use crate::clock::Clock;
use crate::vault::{Vault, VaultError};

/// How long Redis keeps a run's lease list without an EndRun (a run that never ends).
const RECORD_TTL: Duration = Duration::from_secs(7 * 24 * 3600);

/// A lease this close to its end is left to lapse rather than renewed in a tight loop.
const TOO_SHORT: Duration = Duration::from_secs(2);

struct RunLeases {
    stop: CancellationToken,
    ids: Vec<String>,
}

pub struct Leases {
    vault: Arc<Vault>,
    conn: RedisConn,
    keys: Keys,
    runs: Mutex<HashMap<String, RunLeases>>,
    shutdown: Shutdown,
    /// The cache's clock: a renewed lease's new expiry is on its time.
    clock: Clock,
}

impl Leases {
    pub fn new(
        vault: Arc<Vault>,
        conn: RedisConn,
        keys: Keys,
        shutdown: Shutdown,
        clock: Clock,
    ) -> Self {
        Self {
            vault,
            conn,
            keys,
            runs: Mutex::default(),
            shutdown,
            clock,
        }
    }

    fn key(&self, run: &str) -> String {
        self.keys.key(&format!("secrets:leases:{{{run}}}"))
    }

    fn uses_key(&self, run: &str) -> String {
        self.keys.key(&format!("secrets:uses:{{{run}}}"))
    }

    /// How long ago `run` first resolved `name` (zero the first time, which records it). Times
    /// are Redis's own, so every broker replica measures from the same first use.
    pub async fn since_first_use(&self, run: &str, name: &str) -> Result<Duration, Error> {
        const SCRIPT: &str = r#"
            local t = redis.call('TIME')
            local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
            local first = redis.call('HGET', KEYS[1], ARGV[1])
            if not first then
                redis.call('HSET', KEYS[1], ARGV[1], now)
                redis.call('EXPIRE', KEYS[1], ARGV[2])
                return 0
            end
            return now - tonumber(first)
        "#;
        let mut c = self.conn.clone();
        let elapsed: i64 = redis::Script::new(SCRIPT)
            .key(self.uses_key(run))
            .arg(name)
            .arg(RECORD_TTL.as_secs())
            .invoke_async(&mut c)
            .await
            .map_err(|e| Error::Core(e.into()))?;
        Ok(Duration::from_millis(elapsed.max(0) as u64))
    }

    /// Records a new lease of `run` and keeps it renewed (when it can be) until the run ends.
    /// Fails closed: a lease that cannot be recorded is revoked and its secret not served.
    pub async fn track(
        &self,
        run: &str,
        lease_id: &str,
        duration: Duration,
        renewable: bool,
        slot: Arc<Slot>,
    ) -> Result<(), Error> {
        let mut c = self.conn.clone();
        let expires_ms = bridle_core::timeutil::now_ms() + duration.as_millis() as i64;
        let recorded: Result<(), redis::RedisError> = redis::pipe()
            .atomic()
            .hset(self.key(run), lease_id, expires_ms)
            .ignore()
            .expire(self.key(run), RECORD_TTL.as_secs() as i64)
            .ignore()
            .query_async(&mut c)
            .await;
        if let Err(e) = recorded {
            if let Err(v) = self.vault.revoke_lease(lease_id).await {
                tracing::warn!(run, error = ?v, "could not revoke a lease that could not be recorded; it lapses at the end of its duration");
            }
            return Err(Error::Core(e.into()));
        }
        let stop = {
            let mut runs = self.runs.lock().unwrap_or_else(|e| e.into_inner());
            let r = runs.entry(run.to_string()).or_insert_with(|| RunLeases {
                stop: self.shutdown.token().child_token(),
                ids: Vec::new(),
            });
            r.ids.push(lease_id.to_string());
            r.stop.clone()
        };
        tracing::info!(run, ttl = ?duration, renewable, "leased a dynamic secret for the run");
        if renewable && !duration.is_zero() {
            self.shutdown.spawn(keep(
                self.vault.clone(),
                slot,
                lease_id.to_string(),
                duration,
                stop,
                self.clock.clone(),
            ));
        }
        Ok(())
    }

    /// Stops renewing the run's leases and revokes every lease any replica recorded for it.
    /// Returns how many were revoked.
    pub async fn end_run(&self, run: &str) -> Result<u32, Error> {
        let mine = self
            .runs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(run);
        let mut ids: BTreeSet<String> = BTreeSet::new();
        if let Some(r) = mine {
            r.stop.cancel();
            ids.extend(r.ids);
        }
        let mut c = self.conn.clone();
        // The run's first uses of time-limited secrets go with it.
        let _: Result<i64, _> = redis::cmd("DEL")
            .arg(self.uses_key(run))
            .query_async(&mut c)
            .await;
        let stored: HashMap<String, String> = redis::cmd("HGETALL")
            .arg(self.key(run))
            .query_async(&mut c)
            .await
            .map_err(|e| Error::Core(e.into()))?;
        ids.extend(stored.into_keys());
        if ids.is_empty() {
            return Ok(0);
        }
        let results =
            futures::future::join_all(ids.iter().map(|id| self.vault.revoke_lease(id))).await;
        let mut revoked = Vec::new();
        let mut failed: Option<VaultError> = None;
        for (id, r) in ids.iter().zip(results) {
            match r {
                Ok(()) => revoked.push(id.clone()),
                Err(e) => failed = Some(e),
            }
        }
        if !revoked.is_empty() {
            let _: () = redis::cmd("HDEL")
                .arg(self.key(run))
                .arg(&revoked)
                .query_async(&mut c)
                .await
                .map(|_: i64| ())
                .map_err(|e| Error::Core(e.into()))?;
        }
        tracing::info!(run, revoked = revoked.len(), "revoked the run's leases");
        match failed {
            None => Ok(revoked.len() as u32),
            Some(e) => {
                let left = ids.len() - revoked.len();
                tracing::warn!(run, left, error = ?e, "some leases of the run could not be revoked; they stay recorded for another EndRun and lapse at the end of their duration");
                Err(e.general("revoking the run's leases", self.vault.addr()))
            }
        }
    }
}

/// Renews one lease at two thirds of its duration until the run ends, the lease is gone, or
/// it reaches its max TTL.
async fn keep(
    vault: Arc<Vault>,
    slot: Arc<Slot>,
    lease_id: String,
    increment: Duration,
    stop: CancellationToken,
    clock: Clock,
) {
    let mut expires = clock.now() + increment;
    let mut failures = 0u32;
    loop {
        let left = expires.saturating_duration_since(clock.now());
        if left.is_zero() {
            return;
        }
        let wait = if failures == 0 {
            left * 2 / 3
        } else {
            Duration::from_millis(250 * 2u64.pow(failures.min(6))).min(left / 2)
        };
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = stop.cancelled() => return,
        }
        match vault.renew_lease(&lease_id, increment).await {
            Ok(d) if d.is_zero() => {
                slot.forget(&lease_id).await;
                return;
            }
            Ok(d) => {
                failures = 0;
                expires = clock.now() + d;
                slot.extend(&lease_id, expires).await;
                tracing::debug!(ttl = ?d, "renewed a lease");
                if d < increment && d < TOO_SHORT {
                    // At its max TTL: it lapses; the next resolve reads a new one.
                    return;
                }
            }
            Err(VaultError::NotFound | VaultError::Rejected(_)) => {
                // Revoked (by another replica's EndRun) or past its end.
                slot.forget(&lease_id).await;
                return;
            }
            Err(e) => {
                failures += 1;
                tracing::warn!(error = ?e, attempt = failures, left = ?left, "could not renew a lease; retrying until it lapses");
            }
        }
    }
}
