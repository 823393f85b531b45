//! Cancelling work in flight, across processes.
//!
//! `CancelRun` records the cancel in the run (so a worker that picks the run up later ends it)
//! and publishes the run id on a Redis channel. Every orchestrator process listens; the one
//! whose worker is inside that run's step cancels it there and then: the in-flight model call
//! is dropped (the router stops its provider call) and so is the tool call (the tools service
//! kills its container when the caller goes away). The worker then advances the run once more,
//! which ends it as cancelled and releases its sandboxes.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt as _;
use tokio_util::sync::CancellationToken;

use bridle_core::Shutdown;

type Registry = HashMap<String, Vec<(u64, CancellationToken)>>;

#[derive(Clone, Default)]
pub struct InFlight {
    map: Arc<Mutex<Registry>>,

    next: Arc<std::sync::atomic::AtomicU64>,
}

/// A registration of a run being worked on; unregisters on drop.
pub struct Registration {
    inflight: InFlight,
    run: String,
    id: u64,
    pub token: CancellationToken,
}

impl Drop for Registration {
    fn drop(&mut self) {
        let mut map = self.inflight.map.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(v) = map.get_mut(&self.run) {
            v.retain(|(id, _)| *id != self.id);
            if v.is_empty() {
                map.remove(&self.run);
            }
        }
    }
}

impl InFlight {
    pub fn register(&self, run: &str) -> Registration {
        let id = self.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let token = CancellationToken::new();
        self.map
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(run.to_string())
            .or_default()
            .push((id, token.clone()));
        Registration {
            inflight: self.clone(),
            run: run.to_string(),
            id,
            token,
        }
    }

    /// Cancels this process's work on `run`; returns how many steps were interrupted.
    pub fn cancel(&self, run: &str) -> usize {
        let map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        map.get(run).map_or(0, |v| {
            for (_, t) in v {
                t.cancel();
            }
            v.len()
        })
    }
}

/// Follows the cancel channel until shutdown, reconnecting when Redis drops.
pub async fn listen(redis_url: String, channel: String, inflight: InFlight, shutdown: Shutdown) {
    let mut failures = 0u32;
    while !shutdown.is_triggered() {
        // Through redis_util so a Sentinel group's current primary (or a Cluster node) is the
        // one subscribed to; after a failover the old primary drops us and we land here again.
        let sub = async {
            let mut pubsub = bridle_core::redis_util::pubsub(&redis_url).await?;
            pubsub
                .subscribe(&channel)
                .await
                .map_err(|e| bridle_core::Error::unavailable("redis pub/sub", e))?;
            Ok::<_, bridle_core::Error>(pubsub)
        };
        let mut pubsub = match sub.await {
            Ok(p) => p,
            Err(e) => {
                failures += 1;
                if failures == 1 || failures.is_multiple_of(20) {
                    tracing::warn!("cancel listener cannot subscribe: {e}");
                }
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_millis(200 * 2u64.pow(failures.min(5)))) => {}
                    _ = shutdown.triggered() => return,
                }
                continue;
            }
        };
        failures = 0;
        let mut stream = pubsub.on_message();
        loop {
            let msg = tokio::select! {
                m = stream.next() => m,
                _ = shutdown.triggered() => return,
            };
            let Some(msg) = msg else { break };
            let run: String = msg.get_payload().unwrap_or_default();
            let n = inflight.cancel(&run);
            if n > 0 {
                tracing::info!(run = %run, "cancelling the step in flight");
            }
        }
    }
}
