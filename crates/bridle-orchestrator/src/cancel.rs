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
    crate::pubsub::follow(
        redis_url,
        channel,
        "cancel listener",
        shutdown,
        || {},
        |run| {
            let n = inflight.cancel(&run);
            if n > 0 {
                tracing::info!(run = %run, "cancelling the step in flight");
            }
        },
    )
    .await;
}
