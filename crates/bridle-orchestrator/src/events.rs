//! Following runs' events: one pub/sub subscription per orchestrator process, fanned out to
//! its WatchRun streams.
//!
//! A run's events live in its Redis stream, and the stream stays the only source of truth.
//! The checkpoint that appends events also publishes the run's id on the events channel
//! (`RunStore::events_channel`, in the same Lua script). Each process follows that channel
//! once (`listen`) and wakes the watchers of that run in this process (`Hub`), which then read
//! the stream from the offset they have reached. A notice is only a hint to read: pub/sub
//! keeps nothing for a subscriber that is away, so after every (re)subscription every watcher
//! reads again, and a watcher also reads every `BACKSTOP` whatever it heard.
//!
//! Before this, each following WatchRun held a Redis connection of its own blocked in XREAD:
//! the watchers of a deployment were bounded by Redis's `maxclients` (10,000 by default), and
//! each paid for a connection's setup and teardown.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bridle_core::Shutdown;
use tokio::sync::watch;

/// How often a watcher reads its run's stream when no notice came: a bound on how late an
/// event can reach it if a notice was lost.
pub const BACKSTOP: Duration = Duration::from_secs(5);

/// This process's watchers, by run id.
#[derive(Clone, Default)]
pub struct Hub {
    map: Arc<Mutex<HashMap<String, watch::Sender<()>>>>,
}

/// A watcher's registration: woken when its run has new events (or may have). Unregisters
/// when dropped.
pub struct Watch {
    hub: Hub,
    run: String,
    rx: watch::Receiver<()>,
}

impl Hub {
    /// Registers a watcher of `run`. Register before reading the stream: a notice that comes
    /// between the read and the wait then still wakes it.
    pub fn watch(&self, run: &str) -> Watch {
        let rx = self
            .lock()
            .entry(run.to_string())
            .or_insert_with(|| watch::channel(()).0)
            .subscribe();
        Watch {
            hub: self.clone(),
            run: run.to_string(),
            rx,
        }
    }

    /// Wakes the watchers of `run` in this process; returns whether there were any.
    pub fn notify(&self, run: &str) -> bool {
        match self.lock().get(run) {
            Some(tx) => {
                tx.send_replace(());
                true
            }
            None => false,
        }
    }

    /// Wakes every watcher: after a (re)subscription, when notices may have been missed.
    pub fn notify_all(&self) {
        for tx in self.lock().values() {
            tx.send_replace(());
        }
    }

    /// How many runs have a watcher in this process.
    #[cfg(test)]
    fn watched(&self) -> usize {
        self.lock().len()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, watch::Sender<()>>> {
        self.map.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Watch {
    /// Waits until the run may have new events: a notice, or `BACKSTOP` without one.
    pub async fn wait(&mut self) {
        // The sender lives as long as a receiver does (see Drop), so changed() only returns
        // on a notice.
        let _ = tokio::time::timeout(BACKSTOP, self.rx.changed()).await;
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        let mut map = self.hub.lock();
        // This watcher's receiver is still alive here: it is the last when the count is 1.
        if map
            .get(&self.run)
            .is_some_and(|tx| tx.receiver_count() <= 1)
        {
            map.remove(&self.run);
        }
    }
}

/// Follows the events channel until shutdown, waking this process's watchers.
pub async fn listen(redis_url: String, channel: String, hub: Hub, shutdown: Shutdown) {
    let all = hub.clone();
    crate::pubsub::follow(
        redis_url,
        channel,
        "events listener",
        shutdown,
        move || all.notify_all(),
        move |run| {
            hub.notify(&run);
        },
    )
    .await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_notice_wakes_the_watchers_of_its_run_only() {
        let hub = Hub::default();
        let mut a1 = hub.watch("a");
        let mut a2 = hub.watch("a");
        let mut b = hub.watch("b");
        assert!(hub.notify("a"));
        assert!(!hub.notify("c"));
        // Woken at once, well inside the backstop.
        let woke = tokio::time::timeout(Duration::from_secs(1), async {
            a1.wait().await;
            a2.wait().await;
        })
        .await;
        assert!(woke.is_ok(), "the watchers of a were not woken");
        assert!(!b.rx.has_changed().unwrap(), "b was woken by a's notice");
        hub.notify_all();
        assert!(b.rx.has_changed().unwrap(), "notify_all did not reach b");
        b.rx.mark_unchanged();
    }

    #[test]
    fn the_last_watcher_of_a_run_unregisters_it() {
        let hub = Hub::default();
        let a1 = hub.watch("a");
        let a2 = hub.watch("a");
        assert_eq!(hub.watched(), 1);
        drop(a1);
        assert_eq!(hub.watched(), 1, "a still has a watcher");
        assert!(hub.notify("a"));
        drop(a2);
        assert_eq!(hub.watched(), 0);
        assert!(!hub.notify("a"));
    }

    #[tokio::test]
    async fn a_notice_between_registering_and_waiting_is_not_lost() {
        let hub = Hub::default();
        let mut w = hub.watch("a");
        // The watcher reads the stream here, then a checkpoint lands before it waits.
        hub.notify("a");
        let woke = tokio::time::timeout(Duration::from_secs(1), w.wait()).await;
        assert!(woke.is_ok());
    }
}
