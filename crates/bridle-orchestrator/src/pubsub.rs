//! Following a Redis pub/sub channel for the life of the process: cancels (`cancel`) and
//! notices of runs' new events (`events`) both arrive this way.

use std::time::Duration;

use futures::StreamExt as _;

use bridle_core::Shutdown;

/// Follows `channel` until shutdown, reconnecting (with back-off) when Redis drops.
/// `subscribed` is called each time the subscription is in place, the first time and after
/// every reconnection: pub/sub keeps nothing for a subscriber that was away, so a caller that
/// must not miss a message reads what it may have missed there. `message` gets each payload.
pub async fn follow(
    redis_url: String,
    channel: String,
    what: &'static str,
    shutdown: Shutdown,
    mut subscribed: impl FnMut(),
    mut message: impl FnMut(String),
) {
    let mut failures = 0u32;
    while !shutdown.is_triggered() {
        // Through redis_util so a Sentinel group's current primary (or a Cluster node) is the
        // one subscribed to; after a failover the old primary drops us and we land here again.
        let sub = async {
            let mut pubsub = bridle_core::redis_util::pubsub(&redis_url).await?;
            pubsub
                .subscribe(&channel)
                .await
                .map_err(|e| bridle_core::Error::unavailable("redis pub/sub", e))?;
            Ok::<_, bridle_core::Error>(pubsub)
        };
        let mut pubsub = match sub.await {
            Ok(p) => p,
            Err(e) => {
                failures += 1;
                if failures == 1 || failures.is_multiple_of(20) {
                    tracing::warn!("the {what} cannot subscribe: {e}");
                }
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_millis(200 * 2u64.pow(failures.min(5)))) => {}
                    _ = shutdown.triggered() => return,
                }
                continue;
            }
        };
        if failures > 0 {
            tracing::info!("the {what} is subscribed again");
        }
        failures = 0;
        subscribed();
        let mut stream = pubsub.on_message();
        loop {
            let msg = tokio::select! {
                m = stream.next() => m,
                _ = shutdown.triggered() => return,
            };
            let Some(msg) = msg else { break };
            message(msg.get_payload().unwrap_or_default());
        }
    }
}
