//! The work queue: run steps as entries of N Redis stream partitions, one consumer group
//! (`workers`) on each, shared by every orchestrator process.
//!
//! A step goes to the partition of its run (FNV-1a of the run id, modulo N), so the steps of
//! one run stay in one stream, in order. Each partition has its own hash tag (`{steps}`,
//! `{steps-1}`, ...), so a Redis Cluster puts them on different slots; partition 0 keeps the
//! key of the single stream Bridle used before partitions, so an upgrade loses nothing.
//!
//! N can change on a live system. `<prefix>:work:partitions` holds the highest N any process
//! has started with (it only grows); producers write to their own N, consumers read every
//! partition up to that highest N. Raising N: new steps spread at once, and older processes
//! start reading the new partitions at their next refresh (a claim tick). Lowering N: steps
//! already queued, or held by a dead worker, in the partitions no longer written are still
//! read and claimed, because consumers keep reading up to the recorded highest N.

use std::time::Duration;

use redis::streams::{StreamAutoClaimReply, StreamId, StreamReadReply};

use bridle_core::ids::RunId;
use bridle_core::redis_util::{Keys, RedisConn};

use crate::Error;

/// Consumer group of every partition.
pub const GROUP: &str = "workers";

/// Records `ARGV[1]` as the partition count if it is higher than the stored one; returns the
/// stored (highest) count.
const REGISTER: &str = r"
local cur = tonumber(redis.call('GET', KEYS[1]) or '0')
local n = tonumber(ARGV[1])
if n > cur then
  redis.call('SET', KEYS[1], n)
  return n
end
return cur
";

/// A step taken from a partition by a consumer: the worker holds it until it acknowledges it,
/// dead-letters it, or dies (then another consumer claims it).
#[derive(Debug)]
pub struct Task {
    /// The partition's stream.
    key: String,
    /// The entry's id in that stream.
    pub id: String,
    pub run: RunId,
    /// Times the entry was delivered, this one included.
    pub deliveries: u64,
}

impl Task {
    /// The stream of the partition the task came from.
    pub fn partition(&self) -> &str {
        &self.key
    }
}

/// One sample of the work stream's partitions; the oldest are stream ids' milliseconds.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct QueueSample {
    pub waiting: u64,
    pub in_progress: u64,
    pub oldest_waiting: Option<i64>,
    pub oldest_in_progress: Option<i64>,
}

impl QueueSample {
    fn add(self, o: QueueSample) -> QueueSample {
        let min = |a: Option<i64>, b: Option<i64>| match (a, b) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        QueueSample {
            waiting: self.waiting + o.waiting,
            in_progress: self.in_progress + o.in_progress,
            oldest_waiting: min(self.oldest_waiting, o.oldest_waiting),
            oldest_in_progress: min(self.oldest_in_progress, o.oldest_in_progress),
        }
    }
}

/// XPENDING's summary: count, smallest id, largest id, per-consumer counts.
type PendingSummary = (
    u64,
    Option<String>,
    Option<String>,
    Option<Vec<(String, String)>>,
);

/// The milliseconds part of a stream id (`1700000000000-0`).
fn id_ms(id: &str) -> Option<i64> {
    id.split('-').next()?.parse().ok()
}

#[derive(Clone)]
pub struct WorkQueue {
    conn: RedisConn,
    keys: Keys,
    /// Partitions this process writes to.
    partitions: usize,
}

impl WorkQueue {
    pub fn new(conn: RedisConn, keys: Keys, partitions: usize) -> Self {
        Self {
            conn,
            keys,
            partitions: partitions.max(1),
        }
    }

    /// Partitions this process writes new steps to.
    pub fn partitions(&self) -> usize {
        self.partitions
    }

    /// The stream of partition `p`.
    fn key(&self, p: usize) -> String {
        if p == 0 {
            self.keys.key("work:{steps}")
        } else {
            self.keys.key(&format!("work:{{steps-{p}}}"))
        }
    }

    /// Dead letters of every partition.
    fn dead_key(&self) -> String {
        self.keys.key("work:{steps}:dead")
    }

    fn count_key(&self) -> String {
        self.keys.key("work:partitions")
    }

    /// The partition of a run's steps among `n`.
    pub fn partition_of(run_id: &str, n: usize) -> usize {
        // FNV-1a: stable across builds and platforms (std's hasher is not promised to be),
        // so every process, whatever its version, puts a run's steps in the same place.
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for b in run_id.bytes() {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
        // FNV's low bits mix poorly; fold the high half in before taking the remainder.
        let h = h ^ (h >> 29) ^ (h >> 47);
        (h % n.max(1) as u64) as usize
    }

    /// Records this process's partition count, creates the consumer group on every partition
    /// any process has used, and returns how many partitions to consume.
    pub async fn register(&self) -> Result<usize, Error> {
        let mut c = self.conn.clone();
        let n: usize = redis::Script::new(REGISTER)
            .key(self.count_key())
            .arg(self.partitions)
            .invoke_async(&mut c)
            .await?;
        for p in 0..n {
            let r: redis::RedisResult<String> = redis::cmd("XGROUP")
                .arg("CREATE")
                .arg(self.key(p))
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
        }
        Ok(n)
    }

    /// How many partitions to consume: the highest count any process has registered.
    pub async fn consumed(&self) -> Result<usize, Error> {
        let mut c = self.conn.clone();
        let n: Option<usize> = redis::cmd("GET")
            .arg(self.count_key())
            .query_async(&mut c)
            .await?;
        Ok(n.unwrap_or(0).max(self.partitions))
    }

    /// Queues a step of the run for any worker.
    pub async fn enqueue(&self, run_id: &RunId) -> Result<(), Error> {
        let mut c = self.conn.clone();
        let _: String = redis::cmd("XADD")
            .arg(self.key(Self::partition_of(run_id, self.partitions)))
            .arg("*")
            .arg("run")
            .arg(run_id.as_str())
            .query_async(&mut c)
            .await?;
        Ok(())
    }

    /// One new entry of partition `p` for `consumer`, blocking up to `block` when given. `c`
    /// is the caller's own connection when it blocks (a blocked command holds its connection).
    pub async fn read(
        &self,
        c: &mut RedisConn,
        p: usize,
        consumer: &str,
        block: Option<Duration>,
    ) -> Result<Option<Task>, Error> {
        let key = self.key(p);
        let mut cmd = redis::cmd("XREADGROUP");
        cmd.arg("GROUP")
            .arg(GROUP)
            .arg(consumer)
            .arg("COUNT")
            .arg(1);
        if let Some(b) = block {
            cmd.arg("BLOCK").arg(b.as_millis() as u64);
        }
        cmd.arg("STREAMS").arg(&key).arg(">");
        let reply: Option<StreamReadReply> = cmd.query_async(c).await?;
        let Some(sid) = reply
            .and_then(|r| r.keys.into_iter().next())
            .and_then(|k| k.ids.into_iter().next())
        else {
            return Ok(None);
        };
        // Entry ids start with the enqueue time in ms.
        if let Some(ms) = id_ms(&sid.id) {
            let lag = (bridle_core::timeutil::now_ms() - ms).max(0) as f64 / 1000.0;
            bridle_core::metrics::metrics().claim_lag.record(lag, &[]);
        }
        let Some(run) = self.run_of(c, &key, &sid, 1).await? else {
            return Ok(None);
        };
        Ok(Some(Task {
            key,
            id: sid.id,
            run,
            deliveries: 1,
        }))
    }

    /// The run an entry names. An entry that names none (Bridle never writes one: the data is
    /// damaged) is moved to the dead letters and acknowledged, and None returned, so it
    /// neither stops the partition nor comes back.
    async fn run_of(
        &self,
        c: &mut RedisConn,
        key: &str,
        sid: &StreamId,
        deliveries: u64,
    ) -> Result<Option<RunId>, Error> {
        let raw: String = sid.get("run").unwrap_or_default();
        let why = match RunId::parse(&raw) {
            Ok(run) => return Ok(Some(run)),
            Err(why) => why,
        };
        tracing::error!(
            partition = key,
            task = %sid.id,
            "queued step names no run (run {why}); moving it to the dead-letter stream"
        );
        // Two round trips, not one pipeline: the dead letters and the partition may live in
        // different Redis Cluster slots.
        self.record_dead_letter(c, &raw, &sid.id, deliveries)
            .await?;
        let () = Self::acked(&mut redis::pipe(), key, &sid.id)
            .query_async(c)
            .await?;
        Ok(None)
    }

    /// Takes over one entry of partition `p` that has been idle longer than `idle` (its worker
    /// died), with the number of times it has been delivered.
    pub async fn claim(
        &self,
        c: &mut RedisConn,
        p: usize,
        consumer: &str,
        idle: Duration,
    ) -> Result<Option<Task>, Error> {
        let key = self.key(p);
        let reply: StreamAutoClaimReply = redis::cmd("XAUTOCLAIM")
            .arg(&key)
            .arg(GROUP)
            .arg(consumer)
            .arg(idle.as_millis() as u64)
            .arg("0-0")
            .arg("COUNT")
            .arg(1)
            .query_async(c)
            .await?;
        let Some(sid) = reply.claimed.into_iter().next() else {
            return Ok(None);
        };
        let pending: Vec<(String, String, u64, u64)> = redis::cmd("XPENDING")
            .arg(&key)
            .arg(GROUP)
            .arg(&sid.id)
            .arg(&sid.id)
            .arg(1)
            .query_async(c)
            .await?;
        let deliveries = pending.first().map(|p| p.3).unwrap_or(1);
        let Some(run) = self.run_of(c, &key, &sid, deliveries).await? else {
            return Ok(None);
        };
        Ok(Some(Task {
            key,
            id: sid.id,
            run,
            deliveries,
        }))
    }

    /// Tells the group `consumer` still works on `task` (resets its idle time), so it is not
    /// taken for abandoned.
    pub async fn heartbeat(&self, task: &Task, consumer: &str) -> Result<(), Error> {
        let mut c = self.conn.clone();
        let _: Vec<String> = redis::cmd("XCLAIM")
            .arg(&task.key)
            .arg(GROUP)
            .arg(consumer)
            .arg(0)
            .arg(&task.id)
            .arg("JUSTID")
            .query_async(&mut c)
            .await?;
        Ok(())
    }

    /// Acknowledges and removes a finished task.
    pub async fn ack(&self, task: &Task) -> Result<(), Error> {
        let mut c = self.conn.clone();
        let () = Self::acked(&mut redis::pipe(), &task.key, &task.id)
            .query_async(&mut c)
            .await?;
        Ok(())
    }

    /// `pipe` with the commands that acknowledge and remove entry `id` of partition `key`.
    fn acked<'p>(pipe: &'p mut redis::Pipeline, key: &str, id: &str) -> &'p mut redis::Pipeline {
        pipe.cmd("XACK")
            .arg(key)
            .arg(GROUP)
            .arg(id)
            .ignore()
            .cmd("XDEL")
            .arg(key)
            .arg(id)
            .ignore()
    }

    /// Acknowledges `task` and queues the next step of its run, in one round trip when both
    /// are in one partition (always, unless the partition count changed since the task was
    /// queued). Queued first: should the acknowledgement fail, the step is delivered twice,
    /// which is harmless (fenced checkpoints), where the other order could lose it.
    pub async fn ack_and_enqueue(&self, task: &Task) -> Result<(), Error> {
        let next = self.key(Self::partition_of(&task.run, self.partitions));
        if next != task.key {
            self.enqueue(&task.run).await?;
            return self.ack(task).await;
        }
        let mut c = self.conn.clone();
        let mut pipe = redis::pipe();
        pipe.cmd("XADD")
            .arg(&next)
            .arg("*")
            .arg("run")
            .arg(task.run.as_str())
            .ignore();
        let () = Self::acked(&mut pipe, &task.key, &task.id)
            .query_async(&mut c)
            .await?;
        Ok(())
    }

    /// Records `task` in the dead-letter stream (the caller then ends its run and acks it).
    pub async fn dead_letter(&self, task: &Task) -> Result<(), Error> {
        let mut c = self.conn.clone();
        self.record_dead_letter(&mut c, &task.run, &task.id, task.deliveries)
            .await
    }

    /// Appends entry `task` (naming `run`, delivered `deliveries` times) to the dead letters.
    async fn record_dead_letter(
        &self,
        c: &mut RedisConn,
        run: &str,
        task: &str,
        deliveries: u64,
    ) -> Result<(), Error> {
        let _: String = redis::cmd("XADD")
            .arg(self.dead_key())
            .arg("*")
            .arg("run")
            .arg(run)
            .arg("task")
            .arg(task)
            .arg("deliveries")
            .arg(deliveries)
            .query_async(c)
            .await?;
        Ok(())
    }

    /// Drops dead letters recorded before `min_ms`.
    pub async fn trim_dead_letters(&self, min_ms: i64) -> Result<(), Error> {
        let mut c = self.conn.clone();
        let _: i64 = redis::cmd("XTRIM")
            .arg(self.dead_key())
            .arg("MINID")
            .arg(min_ms.max(0))
            .query_async(&mut c)
            .await?;
        Ok(())
    }

    /// Steps waiting and in progress in the first `n` partitions, with the oldest of each.
    pub async fn sample(&self, n: usize) -> Result<QueueSample, Error> {
        let mut c = self.conn.clone();
        let mut total = QueueSample::default();
        for p in 0..n {
            total = total.add(sample_partition(&mut c, &self.key(p)).await?);
        }
        Ok(total)
    }
}

async fn sample_partition(c: &mut RedisConn, key: &str) -> Result<QueueSample, Error> {
    let (len, (pending, min_pending, ..), groups): (
        u64,
        PendingSummary,
        redis::streams::StreamInfoGroupsReply,
    ) = redis::pipe()
        .cmd("XLEN")
        .arg(key)
        .cmd("XPENDING")
        .arg(key)
        .arg(GROUP)
        .cmd("XINFO")
        .arg("GROUPS")
        .arg(key)
        .query_async(c)
        .await?;
    let waiting = len.saturating_sub(pending);
    // The oldest step waiting is the first entry after the group's last delivered one.
    let last = groups
        .groups
        .iter()
        .find(|g| g.name == GROUP)
        .map(|g| g.last_delivered_id.clone());
    let oldest_waiting = match last {
        Some(last) if waiting > 0 => {
            let first: redis::streams::StreamRangeReply = redis::cmd("XRANGE")
                .arg(key)
                .arg(format!("({last}"))
                .arg("+")
                .arg("COUNT")
                .arg(1)
                .query_async(c)
                .await?;
            first.ids.first().and_then(|e| id_ms(&e.id))
        }
        _ => None,
    };
    Ok(QueueSample {
        waiting,
        in_progress: pending,
        oldest_waiting,
        oldest_in_progress: min_pending.as_deref().and_then(id_ms),
    })
}

#[cfg(test)]
mod tests {
    use super::WorkQueue;

    #[test]
    fn a_run_always_lands_in_the_same_partition_and_runs_spread() {
        let ids: Vec<String> = (0..400).map(|i| format!("run_{i:026}")).collect();
        let mut counts = [0usize; 4];
        for id in &ids {
            let p = WorkQueue::partition_of(id, 4);
            assert_eq!(p, WorkQueue::partition_of(id, 4));
            counts[p] += 1;
        }
        // Each of four partitions gets a fair share (100 expected each).
        assert!(counts.iter().all(|&c| c > 50), "{counts:?}");
        assert!(ids.iter().all(|id| WorkQueue::partition_of(id, 1) == 0));
    }
}
