//! CPU time as the benchmarks read it: a process's own (`/proc/<pid>/stat`), the machine's
//! busy time (`/proc/stat`), in clock ticks, and the load average.

#![allow(dead_code)]

/// CPU time of processes and of the machine, in clock ticks.
#[derive(Clone, Default)]
pub struct Cpu {
    pub machine_busy: u64,
    pub machine_total: u64,
    pub procs: Vec<u64>,
}

pub fn proc_ticks(pid: &str) -> u64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return 0;
    };
    // Fields after the command (which may hold spaces): state is field 3, utime 14, stime 15.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<u64> = rest
        .split_whitespace()
        .map(|x| x.parse().unwrap_or(0))
        .collect();
    f.get(11).copied().unwrap_or(0) + f.get(12).copied().unwrap_or(0)
}

pub fn sample_cpu(pids: &[String]) -> Cpu {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let line: Vec<u64> = stat
        .lines()
        .next()
        .unwrap_or("")
        .split_whitespace()
        .skip(1)
        .map(|x| x.parse().unwrap_or(0))
        .collect();
    // user nice system idle iowait irq softirq steal (guest time is already in user).
    let total: u64 = line.iter().take(8).sum();
    let idle = line.get(3).copied().unwrap_or(0) + line.get(4).copied().unwrap_or(0);
    Cpu {
        machine_busy: total - idle,
        machine_total: total,
        procs: pids.iter().map(|p| proc_ticks(p)).collect(),
    }
}

pub fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

pub fn clock_ticks() -> f64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100.0)
}

/// The pid of the Redis server at `url`, from its INFO.
pub async fn redis_pid(url: &str) -> anyhow::Result<String> {
    let mut c = connect(url).await?;
    let info: String = redis::cmd("INFO").arg("server").query_async(&mut c).await?;
    info.lines()
        .find_map(|l| l.strip_prefix("process_id:"))
        .map(|p| p.trim().to_string())
        .ok_or_else(|| anyhow::anyhow!("redis INFO has no process_id"))
}

/// Redis's own time per command since the last `CONFIG RESETSTAT` (INFO commandstats):
/// `(command, calls, usec)`, most time first. The time is the command's execution alone (not
/// reading the request or writing the reply); a script's time includes the commands it runs,
/// which are also counted on their own.
pub async fn redis_command_times(url: &str) -> anyhow::Result<Vec<(String, u64, u64)>> {
    let mut c = connect(url).await?;
    let info: String = redis::cmd("INFO")
        .arg("commandstats")
        .query_async(&mut c)
        .await?;
    let mut out: Vec<(String, u64, u64)> = info
        .lines()
        .filter_map(|l| {
            // cmdstat_get:calls=2,usec=15,usec_per_call=7.50,...
            let (name, fields) = l.strip_prefix("cmdstat_")?.split_once(':')?;
            let field = |k: &str| {
                fields
                    .split(',')
                    .find_map(|f| f.strip_prefix(k)?.strip_prefix('='))
                    .and_then(|v| v.parse::<u64>().ok())
            };
            Some((name.to_string(), field("calls")?, field("usec")?))
        })
        .collect();
    out.sort_by_key(|c| std::cmp::Reverse(c.2));
    Ok(out)
}

/// Zeroes Redis's command statistics (`CONFIG RESETSTAT`).
pub async fn reset_redis_stats(url: &str) -> anyhow::Result<()> {
    let mut c = connect(url).await?;
    let () = redis::cmd("CONFIG")
        .arg("RESETSTAT")
        .query_async(&mut c)
        .await?;
    Ok(())
}

/// A connection to the benchmark's Redis, for the readings above.
async fn connect(url: &str) -> anyhow::Result<redis::aio::MultiplexedConnection> {
    Ok(redis::Client::open(url)?
        .get_multiplexed_async_connection()
        .await?)
}
