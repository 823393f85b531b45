//! Wakes parked runs: follows the approvals service's event stream and, when an approval is
//! decided or expires, queues its run so a worker picks the decision up.
//!
//! The stream offset is kept in Redis, so an orchestrator that was down while someone
//! decided resumes from where it stopped and misses nothing. Every orchestrator process runs
//! a listener; a per-approval marker makes sure a run is woken once, not once per process.
//!
//! The approvals service drops events older than its `approval_retention`. When the listener
//! was behind that far (no orchestrator ran for that long), Watch answers OUT_OF_RANGE with
//! the first offset it still has; the listener then queues every run parked on or held by an
//! approval (a worker asks the approvals service about each: decided is applied, gone counts
//! as denied for a parked call and as resolved for a hold), and only then follows from that
//! offset. Every trimmed event happened before that scan, so no decision is missed.

use std::time::Duration;

use futures::StreamExt as _;

use bridle_core::Shutdown;
use bridle_proto as pb;

use crate::engine::Engine;

/// Where the approvals service puts the first offset it still has in an OUT_OF_RANGE answer.
const FIRST_OFFSET: &str = "bridle-first-offset";

pub async fn run(engine: Engine, shutdown: Shutdown) {
    let mut failures = 0u32;
    while !shutdown.is_triggered() {
        let from = match engine.store.approval_offset().await {
            Ok(v) => v,
            Err(e) => {
                failures += 1;
                tracing::warn!("approval listener cannot read its offset: {e}");
                pause(&shutdown, failures).await;
                continue;
            }
        };
        let mut client = engine.clients.approvals.clone();
        let stream = tokio::select! {
            r = client.watch(pb::WatchApprovalsRequest { from_offset: from, tenant: String::new() }) => r,
            _ = shutdown.triggered() => return,
        };
        let mut stream = match stream {
            Ok(s) => s.into_inner(),
            Err(st) if st.code() == tonic::Code::OutOfRange => {
                if let Err(e) = recover(&engine, &st).await {
                    failures += 1;
                    tracing::warn!(
                        "approval listener cannot make up for trimmed events (retrying): {e}"
                    );
                    pause(&shutdown, failures).await;
                }
                continue;
            }
            Err(st) => {
                failures += 1;
                if failures == 1 || failures.is_multiple_of(20) {
                    tracing::warn!(
                        "cannot watch approvals ({}); parked runs wake when it is back",
                        st.message()
                    );
                }
                pause(&shutdown, failures).await;
                continue;
            }
        };
        failures = 0;
        loop {
            let next = tokio::select! {
                n = stream.next() => n,
                _ = shutdown.triggered() => return,
            };
            let ev = match next {
                Some(Ok(ev)) => ev,
                Some(Err(st)) if st.code() == tonic::Code::OutOfRange => {
                    if let Err(e) = recover(&engine, &st).await {
                        tracing::warn!(
                            "approval listener cannot make up for trimmed events (retrying): {e}"
                        );
                    }
                    break;
                }
                Some(Err(st)) => {
                    tracing::debug!("approval stream ended: {}", st.message());
                    break;
                }
                None => break,
            };
            if let Err(e) = handle(&engine, &ev).await {
                tracing::warn!(offset = ev.offset, "waking a run failed, will retry: {e}");
                break;
            }
            if let Err(e) = engine.store.set_approval_offset(ev.offset).await {
                tracing::warn!("approval listener cannot store its offset: {e}");
            }
        }
        pause(&shutdown, 1).await;
    }
}

/// The approvals service no longer has the events after our offset: queue every run waiting
/// on an approval, then move the offset to just before the first event still kept.
async fn recover(engine: &Engine, st: &tonic::Status) -> Result<(), crate::Error> {
    let first = st
        .metadata()
        .get(FIRST_OFFSET)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
        .filter(|&f| f > 0)
        .ok_or_else(|| {
            crate::Error::Core(bridle_core::Error::internal(format!(
                "the approvals service answered OUT_OF_RANGE without a valid {FIRST_OFFSET}: {}",
                st.message()
            )))
        })?;
    tracing::warn!(
        first,
        "approval events this orchestrator had not read are past the approvals service's \
         retention and gone; re-checking every run parked on or held by an approval"
    );
    let runs = engine.store.runs_waiting_on_approvals().await?;
    for run in &runs {
        engine.store.enqueue(run).await?;
    }
    engine.store.set_approval_offset(first - 1).await?;
    tracing::info!(
        runs = runs.len(),
        from_offset = first - 1,
        "runs waiting on approvals queued for a re-check; following approval events again"
    );
    Ok(())
}

async fn handle(engine: &Engine, ev: &pb::ApprovalEvent) -> Result<(), crate::Error> {
    let kind =
        pb::ApprovalEventKind::try_from(ev.kind).unwrap_or(pb::ApprovalEventKind::Unspecified);
    if !matches!(
        kind,
        pb::ApprovalEventKind::Decided | pb::ApprovalEventKind::Expired
    ) {
        return Ok(());
    }
    let Some(a) = &ev.approval else { return Ok(()) };
    // An approval of no run (asked for by another caller than a run) wakes nothing.
    let Ok(run) = bridle_core::ids::RunId::parse(&a.run_id) else {
        return Ok(());
    };
    if engine.store.mark_woken(&run, &a.id).await? {
        tracing::info!(run = %run, approval = %a.id, "approval resolved; resuming the run");
        if let Err(e) = engine.store.enqueue(&run).await {
            // Let the retry (from the stored offset) wake it.
            engine.store.unmark_woken(&run, &a.id).await;
            return Err(e);
        }
    }
    Ok(())
}

async fn pause(shutdown: &Shutdown, failures: u32) {
    let d = Duration::from_millis(200 * 2u64.pow(failures.min(5)));
    tokio::select! {
        _ = tokio::time::sleep(d) => {}
        _ = shutdown.triggered() => {}
    }
}
