//! Containers are removed whatever happens to the call that made them: a guard that, when
//! dropped still armed (an error returned early, or the caller went away and the gRPC handler
//! was dropped mid-run), force-removes its container on a task that shutdown drains. At
//! shutdown, containers still running near the end of the grace period are removed too.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bollard::Docker;
use bollard::query_parameters::RemoveContainerOptionsBuilder;
use bridle_core::Shutdown;

use super::engine::{Engine, OP_TIMEOUT, is_not_found};

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
    pub fn sweep_on_shutdown(&self, engine: Arc<Engine>, grace: Duration) {
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
            if let Ok(docker) = engine.client().await {
                for id in ids {
                    remove_now(&docker, &id).await;
                }
            }
        });
    }
}

pub struct ContainerGuard {
    docker: Docker,
    id: String,
    cleanup: Cleanup,
    armed: bool,
}

impl ContainerGuard {
    pub fn new(docker: Docker, id: String, cleanup: Cleanup) -> Self {
        cleanup.live().insert(id.clone());
        Self {
            docker,
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
        remove_now(&self.docker, &self.id).await;
        self.cleanup.live().remove(&self.id);
    }
}

impl Drop for ContainerGuard {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        let (docker, id) = (self.docker.clone(), self.id.clone());
        if tokio::runtime::Handle::try_current().is_err() {
            tracing::error!(container = %id, "container guard dropped outside a runtime; the container is left behind");
            return;
        }
        tracing::info!(container = %id, "call abandoned; removing its container");
        let live = self.cleanup.live.clone();
        self.cleanup.shutdown.spawn(async move {
            remove_now(&docker, &id).await;
            live.lock().unwrap_or_else(|p| p.into_inner()).remove(&id);
        });
    }
}

/// Force-removes a container; returns true when it existed. Failures are logged: the caller
/// has nothing better to do with them, and EndRun sweeps what is left.
pub async fn remove_now(docker: &Docker, id: &str) -> bool {
    let opts = RemoveContainerOptionsBuilder::new()
        .force(true)
        .v(true)
        .build();
    match tokio::time::timeout(OP_TIMEOUT, docker.remove_container(id, Some(opts))).await {
        Ok(Ok(())) => true,
        Ok(Err(e)) if is_not_found(&e) => false,
        Ok(Err(e)) => {
            tracing::warn!(container = %id, error = %e, "cannot remove container");
            false
        }
        Err(_) => {
            tracing::warn!(container = %id, "removing the container took longer than {OP_TIMEOUT:?}");
            false
        }
    }
}

/// Removes the sandboxes of other instances of this service (same label namespace) that have
/// stopped more than `grace` ago: an instance killed without draining leaves its sandboxes
/// behind, and their agents end them when the instance's connection drops, but nobody removes
/// them. An instance reads a stopped sandbox's state and removes it at once, so one stopped
/// for `grace` is nobody's. Returns how many were removed.
pub async fn sweep_orphans(engine: &Engine, ns: &str, instance: &str, grace: Duration) -> u32 {
    use bollard::query_parameters::{InspectContainerOptions, ListContainersOptionsBuilder};
    let Ok(docker) = engine.client().await else {
        return 0;
    };
    let filters = std::collections::HashMap::from([
        ("label".to_string(), vec![format!("{ns}.managed=true")]),
        (
            "status".to_string(),
            vec!["exited".to_string(), "dead".to_string()],
        ),
    ]);
    let opts = ListContainersOptionsBuilder::new()
        .all(true)
        .filters(&filters)
        .build();
    let Ok(Ok(found)) = tokio::time::timeout(OP_TIMEOUT, docker.list_containers(Some(opts))).await
    else {
        return 0;
    };
    let now = time::OffsetDateTime::now_utc();
    let mut removed = 0;
    for c in found {
        let Some(id) = c.id else { continue };
        let theirs = c
            .labels
            .as_ref()
            .and_then(|l| l.get(&format!("{ns}.instance")))
            .is_some_and(|i| i != instance);
        if !theirs {
            continue;
        }
        let Ok(Ok(info)) = tokio::time::timeout(
            OP_TIMEOUT,
            docker.inspect_container(&id, None::<InspectContainerOptions>),
        )
        .await
        else {
            continue;
        };
        let finished = info.state.and_then(|s| s.finished_at).and_then(|t| {
            time::OffsetDateTime::parse(&t, &time::format_description::well_known::Rfc3339).ok()
        });
        let stopped_for = finished.map(|f| now - f);
        if stopped_for.is_some_and(|d| d >= grace) && remove_now(&docker, &id).await {
            removed += 1;
        }
    }
    if removed > 0 {
        tracing::info!(
            count = removed,
            "removed sandboxes that instances gone without draining left behind"
        );
    }
    removed
}
