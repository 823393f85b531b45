//! The sandboxes of each run. A run's calls take a sandbox of the profile they need (one the
//! run already holds, else a warm one from the pool, else a new one), one call at a time;
//! the run keeps its sandboxes and its workspace until EndRun (or until it has been idle for
//! `run_idle_ttl`, in case EndRun never comes). A call outside a run gets a sandbox of its
//! own, destroyed after the call. Nothing is ever handed from one run to another.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bridle_proto::Scope;
use tokio::time::Instant;

use super::backend::Backend;
use super::container::{Factory, Sandbox};
use super::pool::Pool;
use super::profile::Profile;
use crate::Error;
use crate::affinity::snapshot::Snapshots;
use crate::quota::Quotas;
use crate::workspace::volume::RunVolume;

/// Ended runs are remembered this long, so a late call cannot bring one back.
const TOMBSTONE_TTL: Duration = Duration::from_secs(3600);

type RunKey = (String, String);

#[derive(Default)]
pub struct RunState {
    /// The run's workspace filesystem, made by its first sandboxed call.
    workspace: Option<Arc<RunVolume>>,
    idle: Vec<Sandbox>,
    /// What the run's next call must tell it (its workspace could not be carried over).
    notice: Option<String>,
    /// The stored snapshot may be older than the workspace (storing the last one failed).
    snapshot_stale: bool,
}

pub struct RunEntry {
    state: Arc<tokio::sync::Mutex<RunState>>,
    /// Every live sandbox of the run (in a call or idle), for EndRun, with what removes it.
    containers: Mutex<HashMap<String, Arc<dyn Backend>>>,
    ended: AtomicBool,
    last_used: Mutex<Instant>,
}

impl RunEntry {
    fn new() -> Arc<Self> {
        Arc::new(Self {
            state: Arc::default(),
            containers: Mutex::default(),
            ended: AtomicBool::new(false),
            last_used: Mutex::new(Instant::now()),
        })
    }

    fn containers(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<dyn Backend>>> {
        self.containers.lock().unwrap_or_else(|p| p.into_inner())
    }
}

pub struct Sandboxes {
    pub factory: Arc<Factory>,
    pub pool: Arc<Pool>,
    runs: Mutex<HashMap<RunKey, Arc<RunEntry>>>,
    ended: Mutex<HashMap<RunKey, Instant>>,
    run_idle_ttl: Duration,
    /// Sizes of run workspaces.
    pub quotas: Quotas,
    /// Where run workspaces are stored after each call and restored from on another replica.
    pub snapshots: Snapshots,
    /// Set at shutdown: sandboxes are no longer kept after a call.
    closing: Arc<AtomicBool>,
}

/// A sandbox held by one call of a run; the run's other calls wait for it.
pub struct Lease {
    run: Arc<RunEntry>,
    guard: tokio::sync::OwnedMutexGuard<RunState>,
    sandbox: Option<Sandbox>,
    ephemeral: bool,
    closing: Arc<AtomicBool>,
}

impl Lease {
    pub fn sandbox(&self) -> Option<&Sandbox> {
        self.sandbox.as_ref()
    }

    pub fn sandbox_mut(&mut self) -> Option<&mut Sandbox> {
        self.sandbox.as_mut()
    }

    /// EndRun came for the run (its sandboxes are being removed).
    pub fn run_ended(&self) -> bool {
        self.run.ended.load(Ordering::SeqCst)
    }

    /// The run's workspace on the host (the leased sandbox's `/workspace`).
    pub fn workspace(&self) -> Option<PathBuf> {
        self.sandbox.as_ref().map(|s| s.slot.workspace())
    }

    /// Whether the call belongs to a run (whose workspace outlives it).
    pub fn in_run(&self) -> bool {
        !self.ephemeral
    }

    /// What this call must tell the run, once.
    pub fn take_notice(&mut self) -> Option<String> {
        self.guard.notice.take()
    }

    pub fn snapshot_stale(&self) -> bool {
        self.guard.snapshot_stale
    }

    pub fn set_snapshot_stale(&mut self, stale: bool) {
        self.guard.snapshot_stale = stale;
    }

    /// Ends the call. A sandbox that may be used again goes back to the run, unless the call
    /// left processes behind in it; otherwise it is destroyed (the workspace stays with the
    /// run).
    pub async fn release(self, reusable: bool) {
        self.finish(reusable, false).await;
    }

    /// Ends a call that left nothing running (its sandbox's agent looked): the sandbox goes
    /// back to the run without asking the engine.
    pub async fn release_clean(self) {
        self.finish(true, true).await;
    }

    async fn finish(mut self, reusable: bool, clean: bool) {
        let Some(s) = self.sandbox.take() else {
            return;
        };
        let keep = reusable
            && !self.ephemeral
            && !self.closing.load(Ordering::SeqCst)
            && !self.run.ended.load(Ordering::SeqCst)
            && (clean
                || s.profile.stdio
                || s.pids()
                    .await
                    .is_some_and(|now| now.len() <= s.idle_processes()));
        if keep {
            self.guard.idle.push(s);
        } else {
            self.run.containers().remove(&s.id);
            s.destroy().await;
        }
        *self.run.last_used.lock().unwrap_or_else(|p| p.into_inner()) = Instant::now();
    }
}

impl Sandboxes {
    pub fn new(
        factory: Arc<Factory>,
        pool: Arc<Pool>,
        run_idle_ttl: Duration,
        quotas: Quotas,
        snapshots: Snapshots,
    ) -> Arc<Self> {
        Arc::new(Self {
            factory,
            pool,
            runs: Mutex::default(),
            ended: Mutex::default(),
            run_idle_ttl,
            quotas,
            snapshots,
            closing: Arc::default(),
        })
    }

    fn runs(&self) -> std::sync::MutexGuard<'_, HashMap<RunKey, Arc<RunEntry>>> {
        self.runs.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn ended(&self) -> std::sync::MutexGuard<'_, HashMap<RunKey, Instant>> {
        self.ended.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A sandbox of `profile` for one call of the scope's run, with the run's workspace in it.
    /// `secret_env` (MCP servers started for a run) makes a sandbox no pool can provide.
    /// `quota` sizes the run's workspace when this call is the run's first to need one; a
    /// workspace keeps its size for the rest of the run.
    pub async fn lease(
        &self,
        scope: &Scope,
        profile: &Arc<Profile>,
        warm: usize,
        secret_env: Vec<(String, String)>,
        quota: u64,
    ) -> Result<Lease, Error> {
        // A phase of the tool call's span; where the sandbox came from is recorded on it.
        let span = tracing::info_span!(
            "acquire_sandbox",
            "otel.kind" = "internal",
            "bridle.sandbox.image" = %profile.image,
            "bridle.sandbox.source" = tracing::field::Empty,
        );
        let leased = self.lease_in(scope, profile, warm, secret_env, quota);
        tracing::Instrument::instrument(leased, span).await
    }

    async fn lease_in(
        &self,
        scope: &Scope,
        profile: &Arc<Profile>,
        warm: usize,
        secret_env: Vec<(String, String)>,
        quota: u64,
    ) -> Result<Lease, Error> {
        let source = |s: &str| {
            tracing::Span::current().record("bridle.sandbox.source", s);
        };
        self.factory.workspaces.check()?;
        let ephemeral = scope.run_id.is_empty();
        let key = (scope.tenant.clone(), scope.run_id.clone());
        let run = if ephemeral {
            RunEntry::new()
        } else {
            if self.ended().contains_key(&key) {
                return Err(Error::RunEnded(scope.run_id.clone()));
            }
            self.runs().entry(key).or_insert_with(RunEntry::new).clone()
        };
        let mut guard = run.state.clone().lock_owned().await;
        if run.ended.load(Ordering::SeqCst) {
            return Err(Error::RunEnded(scope.run_id.clone()));
        }
        // The run's workspace first: a sandbox made for the run gets it bound before it
        // starts (the only way a runtime that does not share the host's mounts sees it).
        let volume = match &guard.workspace {
            Some(v) => v.clone(),
            None => {
                let v = self.factory.workspaces.volume(quota).await?;
                // A run this replica took over: its files come back before any sandbox sees
                // the filesystem.
                if !ephemeral {
                    guard.notice = self
                        .snapshots
                        .restore(
                            &scope.tenant,
                            &scope.run_id,
                            v.path().to_path_buf(),
                            v.owner(),
                        )
                        .await?;
                }
                guard.workspace.insert(v).clone()
            }
        };
        let held = guard.idle.iter().position(|s| s.profile.key == profile.key);
        let sandbox = match held {
            Some(i) => {
                source("run");
                guard.idle.swap_remove(i)
            }
            None => {
                let warm_one = if secret_env.is_empty() && self.factory.can_be_warm(profile) {
                    self.pool.take(profile, warm).await
                } else {
                    None
                };
                match warm_one {
                    Some(s) => {
                        source("pool");
                        s
                    }
                    None => {
                        source("created");
                        // A cold start: the call waits for a sandbox to be made.
                        bridle_core::metrics::metrics().sandbox_cold_starts.add(
                            1,
                            &[opentelemetry::KeyValue::new(
                                "bridle.sandbox.image",
                                profile.image.clone(),
                            )],
                        );
                        let labels = self.factory.labels(
                            profile,
                            &[("tenant", &scope.tenant), ("run", &scope.run_id)],
                        );
                        self.factory
                            .create(profile, labels, secret_env, Some(&volume))
                            .await?
                    }
                }
            }
        };
        run.containers()
            .insert(sandbox.id.clone(), sandbox.backend.clone());
        // EndRun may have come while the sandbox was being made: it did not see it.
        if run.ended.load(Ordering::SeqCst) {
            run.containers().remove(&sandbox.id);
            sandbox.destroy().await;
            return Err(Error::EndedWhileStarting(scope.run_id.clone()));
        }
        // The sandbox goes back to the run or away through the lease, whatever fails here.
        let lease = Lease {
            run,
            guard,
            sandbox: Some(sandbox),
            ephemeral,
            closing: self.closing.clone(),
        };
        // A warm sandbox receives the run's workspace now (a held or new one has it already).
        let attached = match &lease.sandbox {
            Some(s) => s.slot.attach(&volume).await,
            None => Ok(()),
        };
        if let Err(e) = attached {
            lease.release(false).await;
            return Err(e);
        }
        Ok(lease)
    }

    /// Ends a run: kills and removes its containers (calls in flight end as cancelled), then
    /// removes its workspace. Returns how many containers were removed.
    pub async fn end_run(&self, tenant: &str, run_id: &str) -> u32 {
        let key = (tenant.to_string(), run_id.to_string());
        self.ended().insert(key.clone(), Instant::now());
        let Some(run) = self.runs().remove(&key) else {
            return 0;
        };
        self.end(run).await
    }

    async fn end(&self, run: Arc<RunEntry>) -> u32 {
        run.ended.store(true, Ordering::SeqCst);
        let ids: Vec<(String, Arc<dyn Backend>)> = run.containers().drain().collect();
        let removals = ids.iter().map(|(id, b)| b.remove(id));
        let removed = futures::future::join_all(removals)
            .await
            .into_iter()
            .filter(|r| *r)
            .count() as u32;
        // Calls in flight see their sandbox gone and finish; then the rest goes.
        // (Bounded well inside the orchestrator's 30s deadline on EndRun.)
        if let Ok(mut state) =
            tokio::time::timeout(Duration::from_secs(20), run.state.clone().lock_owned()).await
        {
            for s in state.idle.drain(..) {
                s.destroy().await;
            }
            state.workspace = None;
        }
        removed
    }

    /// Ends runs idle past `run_idle_ttl`, forgets old tombstones and shrinks unused pools.
    pub async fn reap(&self) {
        let stale: Vec<(RunKey, Arc<RunEntry>)> = self
            .runs()
            .iter()
            .filter(|(_, r)| {
                r.last_used
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .elapsed()
                    > self.run_idle_ttl
                    && r.state.try_lock().is_ok()
            })
            .map(|(k, r)| (k.clone(), r.clone()))
            .collect();
        for (key, run) in stale {
            tracing::info!(tenant = %key.0, run = %key.1, "run idle too long: removing its sandboxes and workspace");
            self.runs().remove(&key);
            self.ended().insert(key, Instant::now());
            self.end(run).await;
        }
        self.ended().retain(|_, t| t.elapsed() < TOMBSTONE_TTL);
        for s in self.pool.expire() {
            s.destroy().await;
        }
    }

    /// At shutdown: warm and idle sandboxes go now; busy ones are left to the cleanup sweep
    /// (a call finishing meanwhile destroys its sandbox instead of keeping it).
    pub async fn shutdown(&self) {
        self.closing.store(true, Ordering::SeqCst);
        for s in self.pool.drain() {
            s.destroy().await;
        }
        let runs: Vec<Arc<RunEntry>> = self.runs().values().cloned().collect();
        let each = runs.into_iter().map(|r| async move {
            // A sandbox being put back after a call holds the lock for a moment.
            let Ok(mut st) =
                tokio::time::timeout(Duration::from_secs(2), r.state.clone().lock_owned()).await
            else {
                return;
            };
            let idle: Vec<Sandbox> = st.idle.drain(..).collect();
            drop(st);
            for s in idle {
                r.containers().remove(&s.id);
                s.destroy().await;
            }
        });
        futures::future::join_all(each).await;
    }

    /// Number of runs with sandboxes (for tests).
    pub fn active_runs(&self) -> usize {
        self.runs().len()
    }
}
