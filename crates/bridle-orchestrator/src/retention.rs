//! The retention sweep: what Redis expiry alone cannot clean. Ended runs expire by their keys'
//! TTL (set by the checkpoint that ends them); this removes their ids from the tenants' run
//! indexes once the keys are gone, and trims old dead letters. One orchestrator at a time
//! sweeps (a lock with the period as its TTL); any of them may.

use std::time::Duration;

use bridle_core::Shutdown;
use bridle_core::timeutil::now_ms;

use crate::store::RunStore;

/// How often the indexes are pruned: every minute, or as often as the shortest retention (at
/// least every second) when that is shorter. An index entry outliving its run by up to this
/// long only costs a skipped id when listing.
fn period(store: &RunStore) -> Duration {
    store
        .lifetimes()
        .shortest_retention()
        .clamp(Duration::from_secs(1), Duration::from_secs(60))
}

/// Index entries examined per tenant per sweep; the rest wait for the next sweep.
const BATCH: usize = 1000;

pub async fn sweep(store: RunStore, shutdown: Shutdown) {
    let period = period(&store);
    let mut tick = tokio::time::interval(period);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.triggered() => return,
        }
        match store.take_sweep(period.mul_f32(0.9)).await {
            Ok(true) => {}
            Ok(false) => continue,
            Err(e) => {
                tracing::warn!("retention sweep: {e}");
                continue;
            }
        }
        let now = now_ms();
        match store.prune_indexes(now, BATCH).await {
            Ok(0) => {}
            Ok(n) => tracing::debug!(removed = n, "pruned expired runs from the run indexes"),
            Err(e) => tracing::warn!("retention sweep (run indexes): {e}"),
        }
        if let Err(e) = store.trim_dead_letters(now).await {
            tracing::warn!("retention sweep (dead letters): {e}");
        }
    }
}
