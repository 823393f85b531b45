//! Warm pools: per sandbox profile, containers started ahead of demand. A warm container has
//! never served anyone; `take` hands it to one run, which keeps it until the run ends, and
//! the pool starts a replacement in the background. A profile nobody asked for in
//! `idle_ttl` is emptied.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Semaphore;
use tokio::time::Instant;

use super::container::{Factory, Sandbox};
use super::profile::Profile;

/// After a failed start, a profile's pool waits this long before trying again.
const RETRY_AFTER: Duration = Duration::from_secs(30);

struct Entry {
    profile: Arc<Profile>,
    /// Oldest first.
    ready: VecDeque<Sandbox>,
    want: usize,
    filling: usize,
    /// Takers waiting for a sandbox being started.
    waiting: usize,
    last_demand: Instant,
    failed_at: Option<Instant>,
}

pub struct Pool {
    factory: Arc<Factory>,
    entries: Mutex<HashMap<String, Entry>>,
    /// Containers started at once by the pool (the machine also runs the calls).
    starting: Arc<Semaphore>,
    max_total: usize,
    idle_ttl: Duration,
    /// Signalled when a sandbox becomes ready.
    pushed: tokio::sync::Notify,
}

/// How long after a take its replacement is started.
const REFILL_DELAY: Duration = Duration::from_millis(200);

/// How long a taker waits for a sandbox that is being started, rather than starting its own.
const WAIT_FOR_FILL: Duration = Duration::from_secs(2);

impl Pool {
    pub fn new(
        factory: Arc<Factory>,
        max_total: usize,
        parallel: usize,
        idle_ttl: Duration,
    ) -> Arc<Self> {
        Arc::new(Self {
            factory,
            entries: Mutex::new(HashMap::new()),
            starting: Arc::new(Semaphore::new(parallel.max(1))),
            max_total,
            idle_ttl,
            pushed: tokio::sync::Notify::new(),
        })
    }

    fn entries(&self) -> std::sync::MutexGuard<'_, HashMap<String, Entry>> {
        self.entries.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A warm sandbox of `profile`: a ready one, or one that is being started (waiting for
    /// it up to [`WAIT_FOR_FILL`] when more are starting than others already wait for).
    /// Records the demand and tops the pool up to `warm`.
    pub async fn take(self: &Arc<Self>, profile: &Arc<Profile>, warm: usize) -> Option<Sandbox> {
        let (got, wait) = {
            let mut entries = self.entries();
            let e = entries.entry(profile.key.clone()).or_insert_with(|| Entry {
                profile: profile.clone(),
                ready: VecDeque::new(),
                want: 0,
                filling: 0,
                waiting: 0,
                last_demand: Instant::now(),
                failed_at: None,
            });
            // Tools sharing a profile share its pool: the largest `warm` of them counts.
            e.want = e.want.max(warm);
            e.last_demand = Instant::now();
            let got = e.ready.pop_front();
            let wait = got.is_none() && e.filling > e.waiting;
            if wait {
                e.waiting += 1;
            }
            gauge(e);
            (got, wait)
        };

        if got.is_some() {
            // The replacement starts once the taker's call is under way: on a small machine a
            // container start competes with that call's exec for the engine and the CPU.
            let me = self.clone();
            self.factory.cleanup.shutdown().spawn(async move {
                tokio::time::sleep(REFILL_DELAY).await;
                me.fill();
            });
        } else {
            self.fill();
        }
        if !wait {
            return got;
        }
        let deadline = Instant::now() + WAIT_FOR_FILL;
        let got = loop {
            let notified = self.pushed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if let Some(s) = self.pop_ready(&profile.key) {
                break Some(s);
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                break None;
            }
        };
        if let Some(e) = self.entries().get_mut(&profile.key) {
            e.waiting = e.waiting.saturating_sub(1);
        }
        if got.is_some() {
            self.fill();
        }
        got
    }

    fn pop_ready(&self, key: &str) -> Option<Sandbox> {
        self.entries()
            .get_mut(key)
            .and_then(|e| e.ready.pop_front())
    }

    /// Registers `profile` (so its pool fills before the first call).
    pub fn prepare(self: &Arc<Self>, profile: &Arc<Profile>, warm: usize) {
        // A sandbox under a runtime that does not share the host's mounts, or with workspace
        // folders, cannot receive a run's workspace after it starts (such Tools are refused
        // `pool.warm` at apply; this holds for the ones applied before the setting changed).
        if warm == 0 || !self.factory.can_be_warm(profile) {
            return;
        }
        {
            let mut entries = self.entries();
            let e = entries.entry(profile.key.clone()).or_insert_with(|| Entry {
                profile: profile.clone(),
                ready: VecDeque::new(),
                want: 0,
                filling: 0,
                waiting: 0,
                last_demand: Instant::now(),
                failed_at: None,
            });
            e.want = e.want.max(warm);
            e.last_demand = Instant::now();
        }
        self.fill();
    }

    /// Ready containers of a profile (for tests and the bench).
    pub fn ready(&self, key: &str) -> usize {
        self.entries().get(key).map_or(0, |e| e.ready.len())
    }

    /// Starts the containers each profile is missing, within the total cap.
    fn fill(self: &Arc<Self>) {
        let mut jobs = Vec::new();
        {
            let mut entries = self.entries();
            let mut total: usize = entries.values().map(|e| e.ready.len() + e.filling).sum();
            for e in entries.values_mut() {
                if e.failed_at.is_some_and(|t| t.elapsed() < RETRY_AFTER) {
                    continue;
                }
                while e.ready.len() + e.filling < e.want && total < self.max_total {
                    e.filling += 1;
                    total += 1;
                    jobs.push(e.profile.clone());
                }
            }
        }
        for profile in jobs {
            let me = self.clone();
            let shutdown = self.factory.cleanup.shutdown().clone();
            self.factory.cleanup.shutdown().spawn(async move {
                let permit = tokio::select! {
                    () = shutdown.triggered() => None,
                    p = me.starting.clone().acquire_owned() => p.ok(),
                };
                let made = match permit {
                    Some(_p) if !shutdown.is_triggered() => {
                        let labels = me.factory.labels(&profile, &[("pool", "warm")]);
                        Some(me.factory.create(&profile, labels, vec![], None).await)
                    }
                    _ => None,
                };
                let mut entries = me.entries();
                let Some(e) = entries.get_mut(&profile.key) else {
                    return;
                };
                e.filling = e.filling.saturating_sub(1);
                match made {
                    Some(Ok(s)) if !shutdown.is_triggered() => {
                        e.failed_at = None;
                        e.ready.push_back(s);
                        gauge(e);
                        me.pushed.notify_waiters();
                    }
                    Some(Err(err)) => {
                        me.pushed.notify_waiters();
                        tracing::warn!(image = %profile.image, error = %err, "cannot start a warm sandbox; retrying in {RETRY_AFTER:?}");
                        e.failed_at = Some(Instant::now());
                    }
                    _ => {}
                }
            });
        }
    }

    /// Empties profiles nobody asked for lately; returns the sandboxes to destroy.
    pub fn expire(&self) -> Vec<Sandbox> {
        let mut out = Vec::new();
        let mut entries = self.entries();
        entries.retain(|_, e| {
            if e.last_demand.elapsed() < self.idle_ttl || e.filling > 0 {
                return true;
            }
            out.extend(e.ready.drain(..));
            e.want = 0;
            gauge(e);
            false
        });
        out
    }

    /// Every ready sandbox (at shutdown).
    pub fn drain(&self) -> Vec<Sandbox> {
        let mut out = Vec::new();
        for e in self.entries().values_mut() {
            e.want = 0;
            out.extend(e.ready.drain(..));
        }
        out
    }
}

/// The pool gauges of one profile: warm sandboxes ready, and asked for.
fn gauge(e: &Entry) {
    let image = [opentelemetry::KeyValue::new(
        "bridle.sandbox.image",
        e.profile.image.clone(),
    )];
    let m = bridle_core::metrics::metrics();
    m.sandbox_pool_size.record(e.ready.len() as u64, &image);
    m.sandbox_pool_target.record(e.want as u64, &image);
}
