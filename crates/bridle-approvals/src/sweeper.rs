//! The background sweeper: pending approvals past their expiry become EXPIRED and emit an
//! EXPIRED event, so a run parked on one learns that expired means denied even if nobody
//! asks for the approval. Every replica runs one; the expire script lets exactly one win.
//! Each tick also trims the audit trail of entries older than `audit_retention`, and the Watch
//! events older than `approval_retention` together with the final approvals they name (their
//! index entries, and their records if expiry has not taken them yet). Trimming twice is
//! harmless, so replicas need not agree who does it.

use std::time::Duration;

use bridle_core::Shutdown;

use crate::audit::AuditLog;
use crate::store::Store;

const BATCH: usize = 200;
/// Batches of old events dropped per tick at most (a backlog, e.g. the events kept before
/// there was a retention, is worked off over several ticks, and expiry is not held up).
const TRIM_BATCHES: usize = 50;

pub fn spawn(
    store: Store,
    audit: AuditLog,
    interval: Duration,
    audit_retention: Duration,
    approval_retention: Duration,
    shutdown: &Shutdown,
) {
    let stop = shutdown.token();
    shutdown.spawn(async move {
        loop {
            tokio::select! {
                _ = stop.cancelled() => break,
                _ = tokio::time::sleep(interval) => {}
            }
            let before = u64::try_from(bridle_core::timeutil::now_ms())
                .unwrap_or(0)
                .saturating_sub(u64::try_from(audit_retention.as_millis()).unwrap_or(u64::MAX));
            match audit.trim_before(before).await {
                Ok(0) => {}
                Ok(n) => tracing::info!(dropped = n, "trimmed the audit trail past its retention"),
                Err(e) => tracing::warn!("audit trim failed (retrying in {interval:?}): {e}"),
            }
            let before = bridle_core::timeutil::now_ms().saturating_sub(
                i64::try_from(approval_retention.as_millis()).unwrap_or(i64::MAX),
            );
            for _ in 0..TRIM_BATCHES {
                let result = tokio::select! {
                    _ = stop.cancelled() => return,
                    r = store.trim_events(before, BATCH) => r,
                };
                match result {
                    Ok(n) if n > 0 => tracing::info!(
                        dropped = n,
                        "dropped approval events (and the approvals they finalised) past their retention"
                    ),
                    Ok(_) => {}
                    Err(ref e) => {
                        tracing::warn!("approval retention sweep failed (retrying in {interval:?}): {e}")
                    }
                }
                if !matches!(result, Ok(n) if n >= BATCH) {
                    break;
                }
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
            match store.pending_count().await {
                Ok(n) => bridle_core::metrics::metrics()
                    .approvals_pending
                    .record(n, &[]),
                Err(e) => tracing::debug!("counting pending approvals failed: {e}"),
            }
        }
        tracing::debug!("expiry sweeper stopped");
    });
}
