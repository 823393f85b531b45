//! A connection to the primary of a Sentinel group that follows failovers by itself.
//!
//! The `redis` crate's `SentinelClient` finds the primary (asking the sentinels, then checking
//! the node's ROLE) but hands out plain connections that stay on whatever node they reached.
//! This keeps one multiplexed connection to the primary and drops it when:
//! - a command is refused because the node is no longer a writable primary (`READONLY`,
//!   `NOREPLICAS` with `min-replicas-to-write`, `MASTERDOWN`): nothing ran, so the command is
//!   sent again to the primary the sentinels name, for up to [`FAILOVER_WAIT`];
//! - the connection breaks (the old primary's clients are killed when Sentinel demotes it):
//!   the error is returned, as a `ConnectionManager` does, since the command may have run, and
//!   the next command reconnects;
//! - a sentinel announces `+switch-master` for this group (a watcher subscribed to the
//!   sentinels): without it, clients keep writing to a demoted-but-still-writable primary
//!   until Sentinel reconfigures it, and those writes are lost when it resynchronises.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use futures::StreamExt as _;
use redis::aio::MultiplexedConnection;
use redis::sentinel::{SentinelClient, SentinelClientBuilder, SentinelServerType};
use redis::{AsyncConnectionConfig, Cmd, ConnectionAddr, RedisError, RedisResult, Value};
use tokio::task::AbortHandle;

use super::url::{Addr, Auth};

/// How long a command refused by a demoted primary keeps being retried while the sentinels
/// elect and announce the new one.
pub const FAILOVER_WAIT: Duration = Duration::from_secs(20);

/// Errors that mean "this node is not the writable primary": the command did not run.
pub(crate) fn refused_by_replica(e: &RedisError) -> bool {
    matches!(e.code(), Some("READONLY" | "NOREPLICAS" | "MASTERDOWN")) || {
        // A transaction or a script aborted by one of those carries the code in its message.
        let s = e.to_string();
        s.contains("READONLY You can't write") || s.contains("NOREPLICAS")
    }
}

fn value_refused(v: &Value) -> bool {
    match v {
        Value::ServerError(e) => {
            matches!(e.code(), "READONLY" | "NOREPLICAS" | "MASTERDOWN")
                || e.details().is_some_and(|d| d.contains("NOREPLICAS"))
        }
        Value::Array(items) => items.iter().any(value_refused),
        _ => false,
    }
}

struct Current {
    generation: u64,
    conn: MultiplexedConnection,
}

struct Shared {
    /// Also serialises reconnects, so a failover makes one new connection, not one per caller.
    client: tokio::sync::Mutex<SentinelClient>,
    current: Mutex<Option<Current>>,
    generations: AtomicU64,
    config: AsyncConnectionConfig,
    db: i64,
    watcher: Mutex<Option<AbortHandle>>,
}

impl Drop for Shared {
    fn drop(&mut self) {
        if let Some(w) = self
            .watcher
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
        {
            w.abort();
        }
    }
}

/// Cheap to clone; clones share the connection.
#[derive(Clone)]
pub struct SentinelConn(Arc<Shared>);

impl SentinelConn {
    /// Builds the client; connects on the first command (see [`SentinelConn::connect_now`]).
    pub fn new(
        sentinels: &[Addr],
        master: &str,
        db: i64,
        auth: &Auth,
        config: AsyncConnectionConfig,
    ) -> RedisResult<Self> {
        let nodes: Vec<ConnectionAddr> = sentinels
            .iter()
            .map(|a| ConnectionAddr::Tcp(a.host.clone(), a.port))
            .collect();
        let mut b = SentinelClientBuilder::new(nodes, master, SentinelServerType::Master)?
            .set_client_to_redis_db(db);
        if let Some(u) = &auth.username {
            b = b.set_client_to_redis_username(u);
        }
        if let Some(p) = &auth.password {
            b = b.set_client_to_redis_password(p);
        }
        let shared = Arc::new(Shared {
            client: tokio::sync::Mutex::new(b.build()?),
            current: Mutex::new(None),
            generations: AtomicU64::new(0),
            config,
            db,
            watcher: Mutex::new(None),
        });
        // The watcher holds only a Weak and is aborted when the last clone drops, so it lives
        // exactly as long as the connection it serves; it has nothing to flush at shutdown.
        #[allow(clippy::disallowed_methods)]
        let task = tokio::spawn(watch_switch_master(
            Arc::downgrade(&shared),
            sentinels.to_vec(),
            master.to_string(),
        ));
        *shared.watcher.lock().unwrap_or_else(|e| e.into_inner()) = Some(task.abort_handle());
        Ok(Self(shared))
    }

    /// Finds the primary and connects to it now.
    pub async fn connect_now(&self) -> RedisResult<()> {
        self.connection().await.map(|_| ())
    }

    pub fn db(&self) -> i64 {
        self.0.db
    }

    async fn connection(&self) -> RedisResult<(u64, MultiplexedConnection)> {
        if let Some(c) = self.cached() {
            return Ok(c);
        }
        let mut client = self.0.client.lock().await;
        if let Some(c) = self.cached() {
            return Ok(c);
        }
        let node = client.async_get_client().await?;
        let conn = node
            .get_multiplexed_async_connection_with_config(&self.0.config)
            .await?;
        let generation = self.0.generations.fetch_add(1, Ordering::Relaxed) + 1;
        *self.0.current.lock().unwrap_or_else(|e| e.into_inner()) = Some(Current {
            generation,
            conn: conn.clone(),
        });
        tracing::debug!(node = %node.get_connection_info().addr(), "connected to the Sentinel group's primary");
        Ok((generation, conn))
    }

    fn cached(&self) -> Option<(u64, MultiplexedConnection)> {
        self.0
            .current
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            .map(|c| (c.generation, c.conn.clone()))
    }

    /// Drops the connection if it is still the one of `generation` (a newer one stays).
    fn forget(&self, generation: Option<u64>) {
        let mut cur = self.0.current.lock().unwrap_or_else(|e| e.into_inner());
        if generation.is_none() || cur.as_ref().map(|c| c.generation) == generation {
            *cur = None;
        }
    }

    /// Runs `send` on the primary's connection, following a failover as the module says.
    async fn with_primary<T, F, Fut>(&self, send: F, refused: fn(&T) -> bool) -> RedisResult<T>
    where
        F: Fn(MultiplexedConnection) -> Fut,
        Fut: std::future::Future<Output = RedisResult<T>>,
    {
        let start = tokio::time::Instant::now();
        let mut pause = Duration::from_millis(50);
        loop {
            let retry = |e: RedisError| {
                if start.elapsed() + pause > FAILOVER_WAIT {
                    Err(e)
                } else {
                    Ok(())
                }
            };
            match self.connection().await {
                Err(e) => retry(e)?,
                Ok((generation, conn)) => match send(conn).await {
                    Ok(v) if refused(&v) => {
                        self.forget(Some(generation));
                        if start.elapsed() + pause > FAILOVER_WAIT {
                            return Ok(v);
                        }
                    }
                    Ok(v) => return Ok(v),
                    Err(e) if refused_by_replica(&e) => {
                        self.forget(Some(generation));
                        retry(e)?;
                    }
                    Err(e) => {
                        if e.is_unrecoverable_error()
                            || e.is_io_error()
                            || e.is_connection_dropped()
                        {
                            self.forget(Some(generation));
                        }
                        return Err(e);
                    }
                },
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_secs(1));
        }
    }

    pub async fn send_packed_command(&self, cmd: &Cmd) -> RedisResult<Value> {
        self.with_primary(
            |mut c| async move { c.send_packed_command(cmd).await },
            value_refused,
        )
        .await
    }

    pub async fn send_packed_commands(
        &self,
        pipeline: &redis::Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisResult<Vec<Value>> {
        self.with_primary(
            |mut c| async move { c.send_packed_commands(pipeline, offset, count).await },
            |vs: &Vec<Value>| vs.iter().any(value_refused),
        )
        .await
    }

    /// A client for the current primary, for pub/sub.
    pub async fn primary_client(&self) -> RedisResult<redis::Client> {
        self.0.client.lock().await.async_get_client().await
    }
}

/// Follows `+switch-master` on the sentinels (one at a time, moving on when one goes away) and
/// drops the connection when this group's primary changes.
async fn watch_switch_master(shared: Weak<Shared>, sentinels: Vec<Addr>, master: String) {
    let mut next = 0usize;
    loop {
        let a = &sentinels[next % sentinels.len()];
        next += 1;
        let sub = async {
            let client = redis::Client::open(ConnectionAddr::Tcp(a.host.clone(), a.port))?;
            let mut p = client.get_async_pubsub().await?;
            p.subscribe("+switch-master").await?;
            Ok::<_, RedisError>(p)
        };
        if let Ok(Ok(mut p)) = tokio::time::timeout(Duration::from_secs(5), sub).await {
            let mut messages = p.on_message();
            while let Some(m) = messages.next().await {
                let payload: String = m.get_payload().unwrap_or_default();
                // "<master name> <old ip> <old port> <new ip> <new port>"
                if payload.split(' ').next() != Some(master.as_str()) {
                    continue;
                }
                let Some(s) = shared.upgrade() else { return };
                tracing::info!(group = %master, change = %payload, "Sentinel switched the primary; reconnecting");
                SentinelConn(s).forget(None);
            }
        }
        if shared.strong_count() == 0 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}
