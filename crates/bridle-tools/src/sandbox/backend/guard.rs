//! Containers are removed whatever happens to the call that made them: a guard that, when
//! dropped still armed (an error returned early, or the caller went away and the gRPC handler
//! was dropped mid-run), force-removes its container on a task that shutdown drains. At
//! shutdown, containers still running near the end of the grace period are removed too.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bridle_core::Shutdown;

use super::Backend;

/// Where abandoned containers are cleaned up from, and which ones are alive.
#[derive(Clone, Debug)]
pub struct Cleanup {
    shutdown: Shutdown,
    live: Arc<Mutex<HashSet<String>>>,
}

impl Cleanup {
    pub fn new(shutdown: Shutdown) -> Self {
        Self {
            shutdown,
            live: Arc::default(),
        }
    }

    pub fn shutdown(&self) -> &Shutdown {
        &self.shutdown
    }

    /// Containers of this service that exist now.
    pub fn live_count(&self) -> usize {
        self.live().len()
    }

    fn live(&self) -> std::sync::MutexGuard<'_, HashSet<String>> {
        self.live.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// At shutdown, lets in-flight calls finish for most of the grace period, then removes the
    /// containers still alive, so none outlives the process.
    pub fn sweep_on_shutdown(&self, backend: Arc<dyn Backend>, grace: Duration) {
        let me = self.clone();
        self.shutdown.spawn(async move {
            me.shutdown.triggered().await;
            let deadline = tokio::time::Instant::now() + grace.mul_f64(0.75);
            while !me.live().is_empty() && tokio::time::Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            let ids: Vec<String> = me.live().iter().cloned().collect();
            if ids.is_empty() {
                return;
            }
            tracing::warn!(
                count = ids.len(),
                "shutting down: removing containers of unfinished calls"
            );
            for id in ids {
                backend.remove(&id).await;
            }
        });
    }
}

/// Removes its sandbox, through the backend that made it, unless disarmed by
/// [`ContainerGuard::remove`].
pub struct ContainerGuard {
    backend: Arc<dyn Backend>,
    id: String,
    cleanup: Cleanup,
    armed: bool,
}

impl ContainerGuard {
    pub fn new(backend: Arc<dyn Backend>, id: String, cleanup: Cleanup) -> Self {
        cleanup.live().insert(id.clone());
        Self {
            backend,
            id,
            cleanup,
            armed: true,
        }
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    /// Removes the container now (killing it if it still runs).
    pub async fn remove(mut self) {
        self.armed = false;
        self.backend.remove(&self.id).await;
        self.cleanup.live().remove(&self.id);
    }
}

impl Drop for ContainerGuard {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        let (backend, id) = (self.backend.clone(), self.id.clone());
        if tokio::runtime::Handle::try_current().is_err() {
            tracing::error!(container = %id, "container guard dropped outside a runtime; the container is left behind");
            return;
        }
        tracing::info!(container = %id, "call abandoned; removing its container");
        let live = self.cleanup.live.clone();
        self.cleanup.shutdown.spawn(async move {
            backend.remove(&id).await;
            live.lock().unwrap_or_else(|p| p.into_inner()).remove(&id);
        });
    }
}
