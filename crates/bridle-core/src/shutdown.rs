//! Graceful shutdown: one token that SIGTERM/SIGINT (or a test) cancels, and a tracker that owns
//! every background task, so shutdown can wait for them within a grace period.
//!
//! Services spawn through [`Shutdown::spawn`] rather than a bare `tokio::spawn` (clippy.toml
//! forbids that): a task nobody drains is a task that can be cut off mid-write.

use std::future::Future;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

#[derive(Clone, Debug, Default)]
pub struct Shutdown {
    token: CancellationToken,
    tracker: TaskTracker,
}

impl Shutdown {
    pub fn new() -> Self {
        Self::default()
    }

    /// A shutdown that triggers on SIGTERM or SIGINT (Ctrl-C).
    pub fn on_signals() -> Self {
        let s = Self::new();
        let token = s.token.clone();
        #[allow(clippy::disallowed_methods)] // the signal listener owns no state to drain
        tokio::spawn(async move {
            wait_for_signal().await;
            tracing::info!("shutdown signal received");
            token.cancel();
        });
        s
    }

    pub fn trigger(&self) {
        self.token.cancel();
    }

    pub fn is_triggered(&self) -> bool {
        self.token.is_cancelled()
    }

    /// Resolves once shutdown has been triggered.
    pub async fn triggered(&self) {
        self.token.cancelled().await
    }

    /// A token cancelled at shutdown, for code that selects on it.
    pub fn token(&self) -> CancellationToken {
        self.token.clone()
    }

    /// A child shutdown: triggering it does not trigger the parent, but the parent's trigger
    /// reaches it. Its tasks are still drained by the parent.
    pub fn child(&self) -> Shutdown {
        Shutdown {
            token: self.token.child_token(),
            tracker: self.tracker.clone(),
        }
    }

    /// Spawns a task that shutdown waits for.
    pub fn spawn<F>(&self, fut: F) -> tokio::task::JoinHandle<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        self.tracker.spawn(fut)
    }

    /// Triggers shutdown and waits up to `grace` for every spawned task. Returns false when
    /// the grace period ran out first.
    pub async fn drain(&self, grace: Duration) -> bool {
        self.token.cancel();
        self.tracker.close();
        let done = tokio::time::timeout(grace, self.tracker.wait())
            .await
            .is_ok();
        if !done {
            tracing::warn!(
                grace = ?grace,
                remaining = self.tracker.len(),
                "grace period ended with tasks still running"
            );
        }
        done
    }
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for SIGTERM; only Ctrl-C will stop this process");
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn drain_waits_for_tasks_that_watch_the_token() {
        let s = Shutdown::new();
        let flag = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (s2, f2) = (s.clone(), flag.clone());
        s.spawn(async move {
            s2.triggered().await;
            tokio::time::sleep(Duration::from_millis(20)).await;
            f2.store(true, std::sync::atomic::Ordering::SeqCst);
        });
        assert!(s.drain(Duration::from_secs(5)).await);
        assert!(flag.load(std::sync::atomic::Ordering::SeqCst));
    }

    #[tokio::test]
    async fn drain_gives_up_after_grace() {
        let s = Shutdown::new();
        s.spawn(async { tokio::time::sleep(Duration::from_secs(30)).await });
        assert!(!s.drain(Duration::from_millis(20)).await);
    }
}
