//! Highly available Redis from real processes: a Sentinel group (one primary, one replica,
//! three sentinels) and a three-primary Redis Cluster, each on free loopback ports in their own
//! folders, for the tests of `redis+sentinel://` and `redis+cluster://`.

use std::collections::HashMap;
use std::process::Stdio;
use std::time::Duration;

use anyhow::Context as _;
use tokio::process::{Child, Command};

use crate::RedisServer;

async fn conn(port: u16) -> anyhow::Result<::redis::aio::MultiplexedConnection> {
    let c = ::redis::Client::open(format!("redis://127.0.0.1:{port}/"))?;
    Ok(c.get_multiplexed_async_connection().await?)
}

async fn info(port: u16, section: &str) -> Option<HashMap<String, String>> {
    let mut c = conn(port).await.ok()?;
    let text: String = ::redis::cmd("INFO")
        .arg(section)
        .query_async(&mut c)
        .await
        .ok()?;
    Some(
        text.lines()
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
            .collect(),
    )
}

fn redis_server_bin() -> anyhow::Result<std::path::PathBuf> {
    crate::paths::program(
        "redis-server",
        &["/usr/bin/redis-server", "/usr/local/bin/redis-server"],
    )
    .context("redis-server is not installed (apt-get install redis-server)")
}

/// One `redis-server --sentinel` process.
struct Sentinel {
    _child: Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Sentinel {
    async fn start(master: &str, primary_port: u16) -> anyhow::Result<Self> {
        let mut last = None;
        for _ in 0..5 {
            let port = crate::ports::free_port()?;
            let dir = tempfile::tempdir()?;
            // Sentinel rewrites its config file, so each has its own. A short down-after keeps
            // an unplanned failover quick; the tests ask for theirs with SENTINEL FAILOVER.
            let conf = dir.path().join("sentinel.conf");
            std::fs::write(
                &conf,
                format!(
                    "port {port}\nbind 127.0.0.1\ndaemonize no\ndir {}\n\
                     sentinel resolve-hostnames no\n\
                     sentinel monitor {master} 127.0.0.1 {primary_port} 2\n\
                     sentinel down-after-milliseconds {master} 2000\n\
                     sentinel failover-timeout {master} 10000\n\
                     sentinel parallel-syncs {master} 1\n",
                    dir.path().display()
                ),
            )?;
            let mut child = Command::new(redis_server_bin()?)
                .arg(&conf)
                .arg("--sentinel")
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .kill_on_drop(true)
                .spawn()
                .context("spawning redis-server --sentinel")?;
            // Ready when the sentinel on the port watches our primary (not another test's).
            let ready = crate::wait_for(
                "the sentinel to watch the primary",
                Duration::from_secs(10),
                || async move {
                    let mut c = conn(port).await.ok()?;
                    let addr: Vec<String> = ::redis::cmd("SENTINEL")
                        .arg("GET-MASTER-ADDR-BY-NAME")
                        .arg(master)
                        .query_async(&mut c)
                        .await
                        .ok()?;
                    (addr.get(1)? == &primary_port.to_string()).then_some(())
                },
            );
            tokio::select! {
                r = ready => match r {
                    Ok(()) => return Ok(Self { _child: child, port, _dir: dir }),
                    Err(e) => last = Some(e),
                },
                status = child.wait() => last = Some(anyhow::anyhow!(
                    "sentinel exited at start ({status:?}); port {port} may be taken"
                )),
            }
        }
        Err(last.unwrap_or_else(|| anyhow::anyhow!("redis sentinel did not start")))
    }

    async fn sentinel_cmd<T: ::redis::FromRedisValue>(&self, args: &[&str]) -> anyhow::Result<T> {
        let mut c = conn(self.port).await?;
        Ok(::redis::cmd("SENTINEL")
            .arg(args)
            .query_async(&mut c)
            .await?)
    }
}

/// One primary, one replica and three sentinels watching them as `master`.
///
/// The first primary runs with `min-replicas-to-write 1`: once a failover takes its replica
/// away it refuses writes (NOREPLICAS) instead of accepting writes that would be lost when
/// it is turned into a replica of the new primary. That is the setting the README
/// recommends for a Sentinel deployment; without it, writes in the moment between the
/// promotion and the clients' switch are lost, which no client can prevent.
pub struct SentinelGroup {
    pub primary: RedisServer,
    pub replica: RedisServer,
    sentinels: Vec<Sentinel>,
    pub master: String,
}

impl SentinelGroup {
    pub async fn start() -> anyhow::Result<Self> {
        let master = "mymaster".to_string();
        let primary = RedisServer::start_args(
            false,
            &[
                "--min-replicas-to-write",
                "1",
                "--min-replicas-max-lag",
                "10",
            ],
        )
        .await?;
        let pport = primary.port().to_string();
        let replica = RedisServer::start_args(false, &["--replicaof", "127.0.0.1", &pport]).await?;
        let port = primary.port();
        crate::wait_for(
            "the replica to be in sync with the primary",
            Duration::from_secs(15),
            || async move {
                let i = info(port, "replication").await?;
                (i.get("connected_slaves")? == "1" && i.get("slave0")?.contains("state=online"))
                    .then_some(())
            },
        )
        .await?;
        let mut sentinels = Vec::new();
        for _ in 0..3 {
            sentinels.push(Sentinel::start(&master, port).await?);
        }
        let g = Self {
            primary,
            replica,
            sentinels,
            master,
        };
        // A failover needs the sentinels to know the replica (from the primary's INFO) and
        // each other (from hello messages, every 2s).
        for s in &g.sentinels {
            let master = g.master.clone();
            crate::wait_for(
                "each sentinel to know the replica and the other sentinels",
                Duration::from_secs(30),
                || {
                    let master = master.clone();
                    async move {
                        let m: HashMap<String, String> =
                            s.sentinel_cmd(&["MASTER", &master]).await.ok()?;
                        let replicas: Vec<HashMap<String, String>> =
                            s.sentinel_cmd(&["REPLICAS", &master]).await.ok()?;
                        let good = replicas.iter().any(|r| {
                            r.get("flags").map(String::as_str) == Some("slave")
                                && r.get("master-link-status").map(String::as_str) == Some("ok")
                        });
                        (good && m.get("num-other-sentinels")? == "2").then_some(())
                    }
                },
            )
            .await?;
        }
        Ok(g)
    }

    /// `redis+sentinel://` naming the three sentinels.
    pub fn url(&self) -> String {
        let hosts: Vec<String> = self
            .sentinels
            .iter()
            .map(|s| format!("127.0.0.1:{}", s.port))
            .collect();
        format!("redis+sentinel://{}/{}", hosts.join(","), self.master)
    }

    pub fn sentinel_ports(&self) -> Vec<u16> {
        self.sentinels.iter().map(|s| s.port).collect()
    }

    /// The port of the primary the sentinels name now.
    pub async fn primary_port(&self) -> anyhow::Result<u16> {
        let addr: Vec<String> = self.sentinels[0]
            .sentinel_cmd(&["GET-MASTER-ADDR-BY-NAME", &self.master])
            .await?;
        Ok(addr.get(1).context("no primary address")?.parse()?)
    }

    /// `SENTINEL FAILOVER <master>`, then waits until every sentinel names the new primary
    /// and the old one has become its replica; returns the new primary's port.
    pub async fn failover(&self) -> anyhow::Result<u16> {
        let before = self.primary_port().await?;
        let _: String = self.sentinels[0]
            .sentinel_cmd(&["FAILOVER", &self.master])
            .await?;
        let mut after = before;
        for s in &self.sentinels {
            let master = self.master.clone();
            after = crate::wait_for(
                "every sentinel to name the new primary",
                Duration::from_secs(30),
                || {
                    let master = master.clone();
                    async move {
                        let a: Vec<String> = s
                            .sentinel_cmd(&["GET-MASTER-ADDR-BY-NAME", &master])
                            .await
                            .ok()?;
                        let p: u16 = a.get(1)?.parse().ok()?;
                        (p != before).then_some(p)
                    }
                },
            )
            .await?;
        }
        crate::wait_for(
            "the old primary to become a replica",
            Duration::from_secs(30),
            || async move {
                let i = info(before, "replication").await?;
                (i.get("role")? == "slave").then_some(())
            },
        )
        .await?;
        Ok(after)
    }
}

/// A Redis Cluster of three primaries (no replicas) covering all 16384 slots.
pub struct RedisCluster {
    pub nodes: Vec<RedisServer>,
}

impl RedisCluster {
    pub async fn start() -> anyhow::Result<Self> {
        let mut nodes = Vec::new();
        for _ in 0..3 {
            nodes.push(Self::node().await?);
        }
        let cli = crate::paths::program(
            "redis-cli",
            &["/usr/bin/redis-cli", "/usr/local/bin/redis-cli"],
        )
        .context("redis-cli is not installed (apt-get install redis-tools)")?;
        let out = Command::new(cli)
            .arg("--cluster")
            .arg("create")
            .args(nodes.iter().map(|n| format!("127.0.0.1:{}", n.port())))
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .stdin(Stdio::null())
            .output()
            .await
            .context("running redis-cli --cluster create")?;
        anyhow::ensure!(
            out.status.success(),
            "redis-cli --cluster create failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        for n in &nodes {
            let port = n.port();
            crate::wait_for(
                "every cluster node to report cluster_state:ok with three nodes",
                Duration::from_secs(30),
                || async move {
                    let mut c = conn(port).await.ok()?;
                    let text: String = ::redis::cmd("CLUSTER")
                        .arg("INFO")
                        .query_async(&mut c)
                        .await
                        .ok()?;
                    (text.contains("cluster_state:ok") && text.contains("cluster_known_nodes:3"))
                        .then_some(())
                },
            )
            .await?;
        }
        Ok(Self { nodes })
    }

    /// One node in cluster mode. Its bus port is chosen like its port (`cluster-port`, Redis
    /// 7), not port + 10000, which is often past 65535 for an ephemeral port.
    async fn node() -> anyhow::Result<RedisServer> {
        let mut last = None;
        for _ in 0..5 {
            let bus = crate::ports::free_port()?.to_string();
            match RedisServer::start_args(
                false,
                &[
                    "--cluster-enabled",
                    "yes",
                    "--cluster-config-file",
                    "nodes.conf",
                    "--cluster-node-timeout",
                    "5000",
                    "--cluster-port",
                    &bus,
                ],
            )
            .await
            {
                Ok(s) => return Ok(s),
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| anyhow::anyhow!("cluster node did not start")))
    }

    /// `redis+cluster://` naming every node as a seed.
    pub fn url(&self) -> String {
        let hosts: Vec<String> = self
            .nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.port()))
            .collect();
        format!("redis+cluster://{}", hosts.join(","))
    }

    /// Moves the hash slot of `key` to another primary with its keys, as `redis-cli --cluster
    /// reshard` does: the target IMPORTING, the source MIGRATING, the keys sent over with
    /// `MIGRATE` a few at a time (`pause` between batches, so that clients meet ASK redirects
    /// meanwhile), then the slot assigned to the target on every node. Returns (from, to)
    /// ports.
    pub async fn migrate_slot_of(&self, key: &str, pause: Duration) -> anyhow::Result<(u16, u16)> {
        let first = self.nodes[0].port();
        let mut c = conn(first).await?;
        let slot: u16 = ::redis::cmd("CLUSTER")
            .arg("KEYSLOT")
            .arg(key)
            .query_async(&mut c)
            .await?;
        let nodes_text: String = ::redis::cmd("CLUSTER")
            .arg("NODES")
            .query_async(&mut c)
            .await?;
        // "<id> <ip:port@bus> <flags> <master> <ping> <pong> <epoch> <link> <slot ranges...>"
        let mut owner = None;
        let mut ids = HashMap::new();
        for line in nodes_text.lines() {
            let f: Vec<&str> = line.split_whitespace().collect();
            let (Some(id), Some(addr)) = (f.first(), f.get(1)) else {
                continue;
            };
            let port: u16 = addr
                .split('@')
                .next()
                .and_then(|a| a.rsplit(':').next())
                .and_then(|p| p.parse().ok())
                .context("a port in CLUSTER NODES")?;
            ids.insert(port, id.to_string());
            for range in f.iter().skip(8) {
                let (lo, hi) = match range.split_once('-') {
                    Some((a, b)) => (a.parse::<u16>()?, b.parse::<u16>()?),
                    None => match range.parse::<u16>() {
                        Ok(v) => (v, v),
                        Err(_) => continue,
                    },
                };
                if (lo..=hi).contains(&slot) {
                    owner = Some(port);
                }
            }
        }
        let from = owner.context("no node owns the slot")?;
        let to = self
            .nodes
            .iter()
            .map(RedisServer::port)
            .find(|p| *p != from)
            .context("a second node")?;
        let (from_id, to_id) = (ids[&from].clone(), ids[&to].clone());
        let mut src = conn(from).await?;
        let mut dst = conn(to).await?;
        let setslot = |state: &str, id: &str| {
            let mut cmd = ::redis::cmd("CLUSTER");
            cmd.arg("SETSLOT").arg(slot).arg(state).arg(id);
            cmd
        };
        let () = setslot("IMPORTING", &from_id).query_async(&mut dst).await?;
        let () = setslot("MIGRATING", &to_id).query_async(&mut src).await?;
        loop {
            let keys: Vec<String> = ::redis::cmd("CLUSTER")
                .arg("GETKEYSINSLOT")
                .arg(slot)
                .arg(2)
                .query_async(&mut src)
                .await?;
            if keys.is_empty() {
                break;
            }
            let () = ::redis::cmd("MIGRATE")
                .arg("127.0.0.1")
                .arg(to)
                .arg("")
                .arg(0)
                .arg(5000)
                .arg("KEYS")
                .arg(&keys)
                .query_async(&mut src)
                .await?;
            tokio::time::sleep(pause).await;
        }
        for n in &self.nodes {
            let mut c = conn(n.port()).await?;
            let () = setslot("NODE", &to_id).query_async(&mut c).await?;
        }
        Ok((from, to))
    }

    /// Keys per node (DBSIZE), to show the data is spread.
    pub async fn keys_per_node(&self) -> anyhow::Result<Vec<u64>> {
        let mut out = Vec::new();
        for n in &self.nodes {
            let mut c = conn(n.port()).await?;
            out.push(::redis::cmd("DBSIZE").query_async(&mut c).await?);
        }
        Ok(out)
    }
}
