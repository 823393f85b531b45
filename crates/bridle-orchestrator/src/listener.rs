//! Wakes parked runs: follows the approvals service's event stream and, when an approval is
//! decided or expires, queues its run so a worker picks the decision up.
//!
//! The stream offset is kept in Redis, so an orchestrator that was down while someone
//! decided resumes from where it stopped and misses nothing. Every orchestrator process runs
//! a listener; a per-approval marker makes sure a run is woken once, not once per process.

use std::time::Duration;

use futures::StreamExt as _;

use bridle_core::Shutdown;
use bridle_proto as pb;

use crate::engine::Engine;

pub async fn run(engine: Engine, shutdown: Shutdown) {
    let offset_key = engine.store.keys().key("orchestrator:{approvals}:offset");
    let mut failures = 0u32;
    while !shutdown.is_triggered() {
        let mut conn = engine.store.conn();
        let from: u64 = match redis::cmd("GET")
            .arg(&offset_key)
            .query_async::<Option<u64>>(&mut conn)
            .await
        {
            Ok(v) => v.unwrap_or(0),
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
            let r: redis::RedisResult<()> = redis::cmd("SET")
                .arg(&offset_key)
                .arg(ev.offset)
                .query_async(&mut conn)
                .await;
            if let Err(e) = r {
                tracing::warn!("approval listener cannot store its offset: {e}");
            }
        }
        pause(&shutdown, 1).await;
    }
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
    if a.run_id.is_empty() || bridle_core::ids::check_id("run id", "run", &a.run_id).is_err() {
        return Ok(());
    }
    let marker = engine
        .store
        .keys()
        .key(&format!("run:{{{}}}:woken:{}", a.run_id, a.id));
    let mut conn = engine.store.conn();
    let first: Option<String> = redis::cmd("SET")
        .arg(&marker)
        .arg(1)
        .arg("NX")
        .arg("EX")
        .arg(24 * 3600)
        .query_async(&mut conn)
        .await?;
    if first.is_some() {
        tracing::info!(run = %a.run_id, approval = %a.id, "approval resolved; resuming the run");
        if let Err(e) = engine.store.enqueue(&a.run_id).await {
            // Let the retry (from the stored offset) wake it.
            let _: redis::RedisResult<()> =
                redis::cmd("DEL").arg(&marker).query_async(&mut conn).await;
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
