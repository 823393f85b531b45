//! The background sweeper: pending approvals past their expiry become EXPIRED and emit an
//! EXPIRED event, so a run parked on one learns that expired means denied even if nobody
//! asks for the approval. Every replica runs one; the expire script lets exactly one win.

use std::time::Duration;

use bridle_core::Shutdown;

use crate::store::Store;

const BATCH: usize = 200;

pub fn spawn(store: Store, interval: Duration, shutdown: &Shutdown) {
    let stop = shutdown.token();
    shutdown.spawn(async move {
        loop {
            tokio::select! {
                _ = stop.cancelled() => break,
                _ = tokio::time::sleep(interval) => {}
            }
            // Each approval is one atomic script, so stopping between them loses nothing.
            loop {
                let result = tokio::select! {
                    _ = stop.cancelled() => return,
                    r = store.expire_due(BATCH) => r,
                };
                match result {
                    Ok(n) if n > 0 => tracing::info!(expired = n, "expired lapsed approvals"),
                    Ok(_) => {}
                    Err(ref e) => {
                        tracing::warn!("expiry sweep failed (retrying in {interval:?}): {e}")
                    }
                }
                // A full batch may mean more are due; anything else waits for the next tick.
                if !matches!(result, Ok(n) if n >= BATCH) {
                    break;
                }
            }
        }
        tracing::debug!("expiry sweeper stopped");
    });
}
