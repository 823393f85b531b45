//! Resolved secrets in memory, each until its own expiry (the `cache_ttl` of a KV value, the
//! lease of a dynamic one), with one Vault request per secret at a time: callers that arrive
//! while a request is out wait for its answer instead of sending their own.
//!
//! Fail closed: nothing is served past its expiry, whatever Vault's state. A failed request is
//! not cached, but the callers that waited for it get its error rather than queueing one
//! request each behind a Vault that is down.

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bridle_core::manifest::DynamicMethod;

use crate::clock::Clock;
use crate::vault::{Fields, VaultError};

/// Why a fetch failed; cloneable so the callers that waited for it share it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Failure {
    Vault(VaultError),
    /// A lease could not be recorded in Redis (so it was revoked, not served).
    Redis(String),
}

impl From<VaultError> for Failure {
    fn from(e: VaultError) -> Self {
        Failure::Vault(e)
    }
}

/// What a cached value was read from.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Key {
    Kv {
        mount: String,
        path: String,
    },
    /// Dynamic reads are per run: each run gets its own credentials and lease.
    Dynamic {
        tenant: String,
        run: String,
        method: DynamicMethod,
        path: String,
        /// The body as canonical JSON.
        body: String,
    },
}

impl Key {
    pub fn run(&self) -> Option<&str> {
        match self {
            Key::Kv { .. } => None,
            Key::Dynamic { run, .. } => Some(run),
        }
    }
}

#[derive(Clone)]
pub struct Entry {
    pub fields: Arc<Fields>,
    pub expires: Instant,
    /// The lease it came with, empty for KV values.
    pub lease_id: String,
}

impl Entry {
    pub fn remaining(&self, now: Instant) -> Duration {
        self.expires.saturating_duration_since(now)
    }
}

#[derive(Default)]
struct State {
    entry: Option<Entry>,
    /// The attempt number and error of the last failed request.
    failure: Option<(u64, Failure)>,
}

/// One secret's place in the cache; its lock is held across the Vault request.
#[derive(Default)]
pub struct Slot {
    state: tokio::sync::Mutex<State>,
    /// Requests finished (under the lock): a caller that saw fewer before it waited was
    /// waiting for the last one.
    done: AtomicU64,
}

impl Slot {
    /// Moves the expiry of the entry holding `lease_id` (a renewed lease).
    pub async fn extend(&self, lease_id: &str, expires: Instant) {
        let mut st = self.state.lock().await;
        if let Some(e) = st.entry.as_mut().filter(|e| e.lease_id == lease_id) {
            e.expires = expires;
        }
    }

    /// Drops the entry holding `lease_id` (revoked, or its renewal found it gone).
    pub async fn forget(&self, lease_id: &str) {
        let mut st = self.state.lock().await;
        if st.entry.as_ref().is_some_and(|e| e.lease_id == lease_id) {
            st.entry = None;
        }
    }
}

/// Slots beyond which expired, idle ones are swept on insert.
const SWEEP_AT: usize = 4096;

#[derive(Default)]
pub struct Cache {
    slots: Mutex<HashMap<Key, Arc<Slot>>>,
    /// Every expiry is on this clock's time.
    clock: Clock,
}

impl Cache {
    pub fn new(clock: Clock) -> Self {
        Self {
            slots: Mutex::default(),
            clock,
        }
    }

    /// The time entries expire by.
    pub fn now(&self) -> Instant {
        self.clock.now()
    }

    fn slot(&self, key: &Key) -> Arc<Slot> {
        let mut slots = self.slots.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(s) = slots.get(key) {
            return s.clone();
        }
        if slots.len() >= SWEEP_AT {
            let now = self.now();
            // A slot whose lock is taken has a request out or a reader: keep it.
            slots.retain(|_, s| match s.state.try_lock() {
                Ok(st) => st.entry.as_ref().is_some_and(|e| e.expires > now),
                Err(_) => true,
            });
        }
        slots.entry(key.clone()).or_default().clone()
    }

    /// The fresh entry for `key`, or the one `fetch` reads (given the slot, so a lease can be
    /// renewed into it). At most one `fetch` per key runs at a time. With `refresh`, only an
    /// entry read after this call began is fresh enough (callers refreshing together share
    /// one read).
    pub async fn get_or_fetch<F, Fut>(
        &self,
        key: &Key,
        refresh: bool,
        fetch: F,
    ) -> Result<Entry, Failure>
    where
        F: FnOnce(Arc<Slot>) -> Fut,
        Fut: Future<Output = Result<Entry, Failure>>,
    {
        let slot = self.slot(key);
        let seen = slot.done.load(Ordering::Acquire);
        let mut st = slot.state.lock().await;
        let read_since = slot.done.load(Ordering::Acquire) > seen;
        if let Some(e) = st.entry.as_ref().filter(|e| e.expires > self.now())
            && (!refresh || read_since)
        {
            return Ok(e.clone());
        }
        if let Some((n, e)) = &st.failure
            && *n > seen
        {
            return Err(e.clone());
        }
        st.entry = None;
        let result = fetch(slot.clone()).await;
        let n = slot.done.fetch_add(1, Ordering::AcqRel) + 1;
        match result {
            Ok(e) => {
                st.entry = Some(e.clone());
                st.failure = None;
                Ok(e)
            }
            Err(err) => {
                st.failure = Some((n, err.clone()));
                Err(err)
            }
        }
    }

    /// Removes every entry of a run (its leases were revoked).
    pub fn forget_run(&self, run: &str) {
        self.slots
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|k, _| k.run() != Some(run));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use secrecy::{ExposeSecret as _, SecretString};

    fn entry(v: &str, ttl: Duration) -> Entry {
        let mut f = Fields::new();
        f.insert("value".into(), SecretString::from(v.to_string()));
        Entry {
            fields: Arc::new(f),
            expires: Instant::now() + ttl,
            lease_id: String::new(),
        }
    }

    fn key() -> Key {
        Key::Kv {
            mount: "secret".into(),
            path: "p".into(),
        }
    }

    #[tokio::test]
    async fn waiters_share_one_fetch_and_its_error() {
        let shutdown = bridle_core::Shutdown::new();
        let cache = Arc::new(Cache::default());
        let calls = Arc::new(AtomicU64::new(0));
        let probe = cache.slot(&key());
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let first = {
            let (cache, calls) = (cache.clone(), calls.clone());
            shutdown.spawn(async move {
                cache
                    .get_or_fetch(&key(), false, |_| async move {
                        calls.fetch_add(1, Ordering::SeqCst);
                        let _ = rx.await;
                        Err(VaultError::Unavailable("down".into()).into())
                    })
                    .await
            })
        };
        let waiters: Vec<_> = (0..8)
            .map(|_| {
                let (cache, calls) = (cache.clone(), calls.clone());
                shutdown.spawn(async move {
                    cache
                        .get_or_fetch(&key(), false, |_| async move {
                            calls.fetch_add(1, Ordering::SeqCst);
                            Ok(entry("x", Duration::from_secs(60)))
                        })
                        .await
                })
            })
            .collect();
        // The map, the probe, the first caller and the 8 waiters hold the slot.
        for _ in 0..10_000 {
            if Arc::strong_count(&probe) >= 11 && calls.load(Ordering::SeqCst) == 1 {
                break;
            }
            tokio::task::yield_now().await;
        }
        assert!(Arc::strong_count(&probe) >= 11, "every waiter is queued");
        let _ = tx.send(());
        assert!(first.await.unwrap().is_err());
        for w in waiters {
            assert_eq!(
                w.await.unwrap().err(),
                Some(Failure::Vault(VaultError::Unavailable("down".into()))),
                "a waiter shares the failed request's answer"
            );
        }
        assert_eq!(calls.load(Ordering::SeqCst), 1, "one request for all nine");
        // A caller that comes after the failure asks Vault again.
        let e = cache
            .get_or_fetch(&key(), false, |_| async {
                Ok(entry("y", Duration::from_secs(60)))
            })
            .await
            .unwrap();
        assert_eq!(e.fields["value"].expose_secret(), "y");
        shutdown.drain(Duration::from_secs(1)).await;
    }

    #[tokio::test]
    async fn nothing_is_served_past_its_expiry() {
        let cache = Cache::default();
        let e = cache
            .get_or_fetch(&key(), false, |_| async { Ok(entry("a", Duration::ZERO)) })
            .await
            .unwrap();
        assert_eq!(e.fields["value"].expose_secret(), "a");
        let e = cache
            .get_or_fetch(&key(), false, |_| async {
                Err(VaultError::Unavailable("down".into()).into())
            })
            .await;
        assert!(
            e.is_err(),
            "an expired entry is not served when Vault fails"
        );
    }

    #[tokio::test]
    async fn a_refresh_reads_again_even_within_the_ttl() {
        let (cache, k) = (Cache::default(), key());
        let get = |v: &'static str, refresh: bool| {
            cache.get_or_fetch(&k, refresh, move |_| async move {
                Ok(entry(v, Duration::from_secs(60)))
            })
        };
        let read =
            |e: Result<Entry, Failure>| e.unwrap().fields["value"].expose_secret().to_string();
        assert_eq!(read(get("old", false).await), "old");
        assert_eq!(
            read(get("new", false).await),
            "old",
            "cached within its TTL"
        );
        assert_eq!(
            read(get("new", true).await),
            "new",
            "a refresh goes to Vault"
        );
        assert_eq!(read(get("newer", false).await), "new");
    }
}
