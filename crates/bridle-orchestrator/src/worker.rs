//! Workers: consume run steps from the Redis Streams work stream as one consumer group across
//! every orchestrator process.
//!
//! A worker heartbeats the task it holds (XCLAIM resets its idle time), so a long model or tool
//! call is not mistaken for a crash; a task whose worker died goes idle and is taken over by
//! XAUTOCLAIM in any process. A task delivered more than `max_deliveries` times goes to the
//! dead-letter stream and its run fails with that reason.

use std::time::Duration;

use redis::streams::{StreamAutoClaimReply, StreamReadReply};

use bridle_core::Shutdown;

use crate::engine::{Engine, Outcome};
use crate::store::GROUP;

#[derive(Clone)]
pub struct Workers {
    pub engine: Engine,
    pub redis_url: String,
    pub consumer: String,
    pub claim_idle: Duration,
    pub max_deliveries: u64,
    pub inflight: crate::cancel::InFlight,
}

const BLOCK: Duration = Duration::from_secs(2);

impl Workers {
    /// Creates the consumer group if needed and starts `n` workers on `shutdown`.
    pub async fn start(self, n: usize, shutdown: &Shutdown) -> Result<(), bridle_core::Error> {
        let mut c = self.engine.store.conn();
        let r: redis::RedisResult<String> = redis::cmd("XGROUP")
            .arg("CREATE")
            .arg(self.engine.store.work_key())
            .arg(GROUP)
            .arg("0")
            .arg("MKSTREAM")
            .query_async(&mut c)
            .await;
        match r {
            Ok(_) => {}
            Err(e) if e.code() == Some("BUSYGROUP") => {}
            Err(e) => return Err(e.into()),
        }
        for i in 0..n {
            let w = self.clone();
            let s = shutdown.clone();
            shutdown.spawn(async move { w.run(i, s).await });
        }
        tracing::info!(workers = n, consumer = %self.consumer, "workers started");
        Ok(())
    }

    async fn run(self, index: usize, shutdown: Shutdown) {
        let consumer = format!("{}-{index}", self.consumer);
        let mut conn = None;
        let mut failures = 0u32;
        // Stagger claim checks across workers.
        let mut next_claim =
            tokio::time::Instant::now() + self.claim_idle / 2 * (index as u32 % 4 + 1) / 4;
        while !shutdown.is_triggered() {
            if conn.is_none() {
                match bridle_core::redis_util::blocking_connection(&self.redis_url, BLOCK).await {
                    Ok(c) => conn = Some(c),
                    Err(e) => {
                        failures += 1;
                        tracing::warn!(worker = %consumer, "cannot reach redis: {e}");
                        self.pause(&shutdown, failures).await;
                        continue;
                    }
                }
            }
            let Some(c) = conn.as_mut() else { continue };
            let next = if tokio::time::Instant::now() >= next_claim {
                next_claim = tokio::time::Instant::now() + self.claim_idle / 2;
                self.claim(c, &consumer).await
            } else {
                self.read(c, &consumer, &shutdown).await
            };
            match next {
                Ok(Some((id, run, deliveries))) => {
                    failures = 0;
                    self.process(&consumer, &id, &run, deliveries).await;
                }
                Ok(None) => failures = 0,
                Err(e) => {
                    failures += 1;
                    tracing::warn!(worker = %consumer, "reading the work stream failed: {e}");
                    conn = None;
                    self.pause(&shutdown, failures).await;
                }
            }
        }
    }

    async fn pause(&self, shutdown: &Shutdown, failures: u32) {
        let d = crate::engine::backoff(failures.min(5));
        tokio::select! {
            _ = tokio::time::sleep(d) => {}
            _ = shutdown.triggered() => {}
        }
    }

    async fn read(
        &self,
        c: &mut bridle_core::redis_util::RedisConn,
        consumer: &str,
        shutdown: &Shutdown,
    ) -> redis::RedisResult<Option<(String, String, u64)>> {
        let mut cmd = redis::cmd("XREADGROUP");
        cmd.arg("GROUP")
            .arg(GROUP)
            .arg(consumer)
            .arg("COUNT")
            .arg(1)
            .arg("BLOCK")
            .arg(BLOCK.as_millis() as u64)
            .arg("STREAMS")
            .arg(self.engine.store.work_key())
            .arg(">");
        let fut = cmd.query_async::<Option<StreamReadReply>>(c);
        let reply = tokio::select! {
            r = fut => r?,
            _ = shutdown.triggered() => return Ok(None),
        };
        Ok(reply
            .and_then(|r| r.keys.into_iter().next())
            .and_then(|k| k.ids.into_iter().next())
            .map(|sid| {
                let run: String = sid.get("run").unwrap_or_default();
                // Entry ids start with the enqueue time in ms.
                if let Some(ms) = sid.id.split('-').next().and_then(|m| m.parse::<i64>().ok()) {
                    let lag = (bridle_core::timeutil::now_ms() - ms).max(0) as f64 / 1000.0;
                    bridle_core::metrics::metrics().claim_lag.record(lag, &[]);
                }

                (sid.id, run, 1)
            }))
    }

    /// Takes over one task that has been idle longer than `claim_idle` (its worker died).
    async fn claim(
        &self,
        c: &mut bridle_core::redis_util::RedisConn,
        consumer: &str,
    ) -> redis::RedisResult<Option<(String, String, u64)>> {
        let key = self.engine.store.work_key();
        let reply: StreamAutoClaimReply = redis::cmd("XAUTOCLAIM")
            .arg(&key)
            .arg(GROUP)
            .arg(consumer)
            .arg(self.claim_idle.as_millis() as u64)
            .arg("0-0")
            .arg("COUNT")
            .arg(1)
            .query_async(c)
            .await?;
        let Some(sid) = reply.claimed.into_iter().next() else {
            return Ok(None);
        };
        let run: String = sid.get("run").unwrap_or_default();
        let pending: Vec<(String, String, u64, u64)> = redis::cmd("XPENDING")
            .arg(&key)
            .arg(GROUP)
            .arg(&sid.id)
            .arg(&sid.id)
            .arg(1)
            .query_async(c)
            .await?;
        let deliveries = pending.first().map(|p| p.3).unwrap_or(1);
        tracing::info!(worker = consumer, task = %sid.id, run = %run, deliveries, "took over a stalled task");
        Ok(Some((sid.id, run, deliveries)))
    }

    async fn process(&self, consumer: &str, id: &str, run: &str, deliveries: u64) {
        if deliveries > self.max_deliveries {
            self.dead_letter(id, run, deliveries).await;
            return;
        }
        let heartbeat = async {
            let mut t = tokio::time::interval(self.claim_idle / 3);
            t.tick().await;
            loop {
                t.tick().await;
                let mut c = self.engine.store.conn();
                let r: redis::RedisResult<Vec<String>> = redis::cmd("XCLAIM")
                    .arg(self.engine.store.work_key())
                    .arg(GROUP)
                    .arg(consumer)
                    .arg(0)
                    .arg(id)
                    .arg("JUSTID")
                    .query_async(&mut c)
                    .await;
                if let Err(e) = r {
                    tracing::warn!(task = id, "heartbeat failed: {e}");
                }
            }
        };
        let registration = self.inflight.register(run);
        let outcome = tokio::select! {
            r = self.engine.advance(run) => r,
            () = heartbeat => return,
            () = registration.token.cancelled() => {
                // The step was cut short where it stood; what it committed stands. Advancing
                // again finds the cancel and ends the run.
                self.engine.advance(run).await
            }
        };
        match outcome {
            Ok(Outcome::Done) => self.ack(id).await,
            Ok(Outcome::Retry(why)) => {
                tracing::warn!(run, task = id, deliveries, "step will be retried: {why}");
            }
            Err(crate::Error::Corrupt(r, why)) => {
                tracing::error!(run = %r, "run state is unreadable: {why}");
                self.dead_letter(id, run, deliveries).await;
            }
            Err(e) => {
                tracing::warn!(
                    run,
                    task = id,
                    deliveries,
                    "step failed and will be retried: {e}"
                );
            }
        }
    }

    async fn ack(&self, id: &str) {
        let mut c = self.engine.store.conn();
        let r: redis::RedisResult<()> = redis::pipe()
            .cmd("XACK")
            .arg(self.engine.store.work_key())
            .arg(GROUP)
            .arg(id)
            .ignore()
            .cmd("XDEL")
            .arg(self.engine.store.work_key())
            .arg(id)
            .ignore()
            .query_async(&mut c)
            .await;
        if let Err(e) = r {
            // The task stays pending and is redelivered; advancing a run again is harmless.
            tracing::warn!(task = id, "ack failed: {e}");
        }
    }

    async fn dead_letter(&self, id: &str, run: &str, deliveries: u64) {
        tracing::error!(
            run,
            task = id,
            deliveries,
            "task delivered too many times; moving it to the dead-letter stream"
        );
        let mut c = self.engine.store.conn();
        let r: redis::RedisResult<String> = redis::cmd("XADD")
            .arg(self.engine.store.dead_key())
            .arg("*")
            .arg("run")
            .arg(run)
            .arg("task")
            .arg(id)
            .arg("deliveries")
            .arg(deliveries)
            .query_async(&mut c)
            .await;
        if let Err(e) = r {
            tracing::warn!(
                task = id,
                "dead-letter write failed; leaving the task pending: {e}"
            );
            return;
        }
        if let Err(e) = self.engine.fail_dead_letter(run, deliveries).await {
            tracing::warn!(run, "could not mark the run failed: {e}");
        }
        self.ack(id).await;
    }
}

/// XPENDING's summary: count, smallest id, largest id, per-consumer counts.
type PendingSummary = (
    u64,
    Option<String>,
    Option<String>,
    Option<Vec<(String, String)>>,
);

/// Samples the work stream for the queue-depth gauge every few seconds until shutdown.
pub async fn sample_queue(store: crate::store::RunStore, shutdown: Shutdown) {
    let mut tick = tokio::time::interval(Duration::from_secs(5));
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.triggered() => return,
        }
        let mut c = store.conn();
        let depth: redis::RedisResult<(u64, PendingSummary)> = redis::pipe()
            .cmd("XLEN")
            .arg(store.work_key())
            .cmd("XPENDING")
            .arg(store.work_key())
            .arg(GROUP)
            .query_async(&mut c)
            .await;
        if let Ok((len, (pending, ..))) = depth {
            let m = bridle_core::metrics::metrics();
            m.queue_depth.record(
                len.saturating_sub(pending),
                &[opentelemetry::KeyValue::new(
                    "bridle.queue.state",
                    "waiting",
                )],
            );
            m.queue_depth.record(
                pending,
                &[opentelemetry::KeyValue::new(
                    "bridle.queue.state",
                    "in_progress",
                )],
            );
        }
    }
}
