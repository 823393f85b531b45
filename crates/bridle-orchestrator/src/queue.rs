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

use bridle_core::redis_util::RedisConn;

use bridle_core::redis_util::Keys;

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
    pub fn key(&self, p: usize) -> String {
        if p == 0 {
            self.keys.key("work:{steps}")
        } else {
            self.keys.key(&format!("work:{{steps-{p}}}"))
        }
    }

    /// Dead letters of every partition.
    pub fn dead_key(&self) -> String {
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
    pub async fn enqueue(&self, run_id: &str) -> Result<(), Error> {
        let mut c = self.conn.clone();
        let _: String = redis::cmd("XADD")
            .arg(self.key(Self::partition_of(run_id, self.partitions)))
            .arg("*")
            .arg("run")
            .arg(run_id)
            .query_async(&mut c)
            .await?;
        Ok(())
    }
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
