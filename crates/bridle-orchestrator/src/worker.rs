//! Workers: consume run steps from the work queue's stream partitions (`queue.rs`) as one
//! consumer group per partition across every orchestrator process.
//!
//! Every worker reads every partition: without blocking, starting after its home partition
//! (worker index modulo the partition count), then blocking on its home partition; so each
//! partition has workers blocked on it when there are at least as many workers as partitions,
//! and an idle worker finds a step in any partition. Claims of abandoned tasks go round every
//! partition the same way.
//!
//! A worker heartbeats the task it holds (XCLAIM resets its idle time), so a long model or tool
//! call is not mistaken for a crash; a task whose worker died goes idle and is taken over by
//! XAUTOCLAIM in any process. A task delivered more than `max_deliveries` times goes to the
//! dead-letter stream and its run fails with that reason. A Redis out of memory is not counted
//! as a delivery: the worker keeps the task and tries the step again until memory is freed.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bridle_core::Shutdown;
use bridle_core::redis_util::RedisConn;

use crate::engine::{Engine, Outcome};
use crate::queue::Task;

#[derive(Clone)]
pub struct Workers {
    pub engine: Engine,
    pub redis_url: String,
    pub consumer: String,
    pub claim_idle: Duration,
    pub max_deliveries: u64,
    pub inflight: crate::cancel::InFlight,
    /// Workers of this process (`start`'s n).
    pub workers: usize,
    /// Partitions to consume: every one any process has used (refreshed on claim ticks).
    pub consumed: Arc<AtomicUsize>,
}

const BLOCK: Duration = Duration::from_secs(2);
/// With fewer workers than partitions some partition has nobody blocked on it; blocking
/// shorter bounds how long a step there can wait on an idle system.
const SHORT_BLOCK: Duration = Duration::from_millis(200);

impl Workers {
    /// Creates the consumer group if needed and starts `n` workers on `shutdown`.
    pub async fn start(self, n: usize, shutdown: &Shutdown) -> Result<(), bridle_core::Error> {
        let consumed = self
            .engine
            .store
            .queue()
            .register()
            .await
            .map_err(bridle_core::Error::from)?;
        self.consumed.store(consumed, Ordering::Relaxed);
        for i in 0..n {
            let w = self.clone();
            let s = shutdown.clone();
            shutdown.spawn(async move { w.run(i, s).await });
        }
        tracing::info!(
            workers = n,
            consumer = %self.consumer,
            partitions = self.engine.store.queue().partitions(),
            consumed,
            "workers started"
        );
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
                self.refresh_partitions().await;
                self.claim(c, &consumer, index).await
            } else {
                self.read(c, &consumer, index, &shutdown).await
            };
            match next {
                Ok(Some(task)) => {
                    failures = 0;
                    self.process(&consumer, &task, &shutdown).await;
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

    /// Partitions now consumed, and this worker's home among them.
    fn partitions(&self, index: usize) -> (usize, usize) {
        let n = self.consumed.load(Ordering::Relaxed).max(1);
        (n, index % n)
    }

    /// Picks up partitions another process added (or that a restart with a higher count
    /// registered); the count never goes down.
    async fn refresh_partitions(&self) {
        match self.engine.store.queue().consumed().await {
            Ok(n) => {
                let before = self.consumed.fetch_max(n, Ordering::Relaxed);
                if n > before {
                    tracing::info!(partitions = n, "consuming more work partitions");
                }
            }
            Err(e) => tracing::warn!("cannot read the work partition count: {e}"),
        }
    }

    async fn read(
        &self,
        c: &mut RedisConn,
        consumer: &str,
        index: usize,
        shutdown: &Shutdown,
    ) -> Result<Option<Task>, crate::Error> {
        let queue = self.engine.store.queue();
        let (n, home) = self.partitions(index);
        let workers = self.workers.max(1);
        for k in 1..n {
            if let Some(t) = queue.read(c, (home + k) % n, consumer, None).await? {
                return Ok(Some(t));
            }
        }
        let block = if workers < n { SHORT_BLOCK } else { BLOCK };
        tokio::select! {
            r = queue.read(c, home, consumer, Some(block)) => r,
            _ = shutdown.triggered() => Ok(None),
        }
    }

    /// Takes over one task that has been idle longer than `claim_idle` (its worker died), from
    /// the first partition that has one, starting at this worker's home.
    async fn claim(
        &self,
        c: &mut RedisConn,
        consumer: &str,
        index: usize,
    ) -> Result<Option<Task>, crate::Error> {
        let (n, home) = self.partitions(index);
        for k in 0..n {
            let p = (home + k) % n;
            if let Some(t) = self
                .engine
                .store
                .queue()
                .claim(c, p, consumer, self.claim_idle)
                .await?
            {
                tracing::info!(worker = consumer, partition = t.partition(), task = %t.id, run = %t.run, deliveries = t.deliveries, "took over a stalled task");
                return Ok(Some(t));
            }
        }
        Ok(None)
    }

    async fn process(&self, consumer: &str, task: &Task, shutdown: &Shutdown) {
        let (id, run, deliveries) = (task.id.as_str(), &task.run, task.deliveries);
        if deliveries > self.max_deliveries {
            self.dead_letter(task).await;
            return;
        }
        let heartbeat = async {
            let mut t = tokio::time::interval(self.claim_idle / 3);
            t.tick().await;
            loop {
                t.tick().await;
                if let Err(e) = self.engine.store.queue().heartbeat(task, consumer).await {
                    tracing::warn!(task = id, "heartbeat failed: {e}");
                }
            }
        };
        let registration = self.inflight.register(run);
        // A Redis out of memory (ours, or a service's) keeps the task here, heartbeaten, and
        // the step is tried again after a pause until memory is freed: leaving it for
        // redelivery would count a failed delivery every `claim_idle` and dead-letter the run.
        let work = async {
            let mut waits = 0u32;
            loop {
                let r = tokio::select! {
                    r = self.engine.advance(run, shutdown) => r,
                    () = registration.token.cancelled() => {
                        // The step was cut short where it stood; what it committed stands.
                        // Advancing again finds the cancel and ends the run.
                        self.engine.advance(run, shutdown).await
                    }
                };
                let why = match &r {
                    Ok(Outcome::WaitForRedis(why)) => why.clone(),
                    Err(e) if e.is_redis_out_of_memory() => e.to_string(),
                    _ => return r,
                };
                waits += 1;
                if waits == 1 || waits.is_multiple_of(20) {
                    tracing::warn!(
                        run = %run,
                        task = id,
                        waits,
                        "{why}; the step keeps its task and is tried again"
                    );
                }
                tokio::select! {
                    () = tokio::time::sleep(crate::engine::backoff(waits.min(5))) => {}
                    () = shutdown.triggered() => return r,
                }
            }
        };
        let outcome = tokio::select! {
            r = work => r,
            () = heartbeat => return,
        };
        match outcome {
            Ok(Outcome::Done) => self.ack(task).await,
            Ok(Outcome::Next) => {
                if let Err(e) = self.engine.store.queue().ack_and_enqueue(task).await {
                    // The task stays pending and is redelivered; its run is at the next step.
                    tracing::warn!(run = %run, task = id, "queueing the next step failed: {e}");
                }
            }
            Ok(Outcome::Retry(why) | Outcome::WaitForRedis(why)) => {
                tracing::warn!(run = %run, task = id, deliveries, "step will be retried: {why}");
            }
            Err(crate::Error::Corrupt(r, why)) => {
                tracing::error!(run = %r, "run state is unreadable: {why}");
                self.dead_letter(task).await;
            }
            Err(e) => {
                tracing::warn!(
                    run = %run,
                    task = id,
                    deliveries,
                    "step failed and will be retried: {e}"
                );
            }
        }
    }

    async fn ack(&self, task: &Task) {
        if let Err(e) = self.engine.store.queue().ack(task).await {
            // The task stays pending and is redelivered; advancing a run again is harmless.
            tracing::warn!(task = %task.id, "ack failed: {e}");
        }
    }

    async fn dead_letter(&self, task: &Task) {
        let (id, run, deliveries) = (task.id.as_str(), &task.run, task.deliveries);
        tracing::error!(
            run = %run,
            task = id,
            deliveries,
            "task delivered too many times; moving it to the dead-letter stream"
        );
        if let Err(e) = self.engine.store.queue().dead_letter(task).await {
            tracing::warn!(
                task = id,
                "dead-letter write failed; leaving the task pending: {e}"
            );
            return;
        }
        bridle_core::metrics::metrics()
            .queue_dead_lettered
            .add(1, &[]);
        if let Err(e) = self.engine.fail_dead_letter(run, deliveries).await {
            tracing::warn!(run = %run, "could not mark the run failed: {e}");
        }
        self.ack(task).await;
    }
}

/// Samples the work stream for the queue gauges every few seconds until shutdown: steps
/// waiting and in progress, and the age of the oldest of each.
pub async fn sample_queue(
    store: crate::store::RunStore,
    consumed: Arc<AtomicUsize>,
    shutdown: Shutdown,
) {
    let mut tick = tokio::time::interval(Duration::from_secs(5));
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.triggered() => return,
        }
        let n = consumed.load(Ordering::Relaxed).max(1);
        if let Ok(t) = store.queue().sample(n).await {
            let now = bridle_core::timeutil::now_ms();
            let age = |oldest: Option<i64>| {
                oldest.map_or(0.0, |ms| (now.saturating_sub(ms)).max(0) as f64 / 1000.0)
            };
            let m = bridle_core::metrics::metrics();
            for (state, depth, oldest) in [
                ("waiting", t.waiting, t.oldest_waiting),
                ("in_progress", t.in_progress, t.oldest_in_progress),
            ] {
                let attrs = [opentelemetry::KeyValue::new("bridle.queue.state", state)];
                m.queue_depth.record(depth, &attrs);
                m.queue_oldest_age.record(age(oldest), &attrs);
            }
        }
    }
}
