//! Redis connections with errors that say which Redis and why, and key naming.
//!
//! `redis_url` names one server, a Sentinel group or a Cluster ([`url`]); every store holds a
//! [`RedisConn`] and issues commands the same way on each.
//!
//! Keys are `bridle:<area>:{<hash tag>}:...`: everything one atomic operation touches shares a
//! hash tag, so the same code works on Redis Cluster.

mod conn;
pub mod sentinel;
pub mod url;

use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{AsyncConnectionConfig, ConnectionAddr, IntoConnectionInfo as _, RedisConnectionInfo};

use conn::Kind;
pub use conn::RedisConn;
use sentinel::SentinelConn;
pub use url::RedisUrl;
use url::{Addr, Auth};

use crate::Error;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(10);

/// The URL with any password replaced, for messages.
pub fn display_url(url: &str) -> String {
    match RedisUrl::parse(url) {
        Ok(u) => u.shown(),
        Err(_) => "<unparseable redis url>".to_string(),
    }
}

fn parse(url: &str) -> Result<RedisUrl, Error> {
    RedisUrl::parse(url).map_err(|e| Error::Config(format!("redis url {}: {e}", display_url(url))))
}

/// Connects and checks the server answers, so a service that cannot reach Redis says so at
/// start instead of on its first request. The connection reconnects by itself afterwards (to
/// the new primary after a Sentinel failover; to the nodes owning each slot on a Cluster).
///
/// With several sentinels or cluster seeds, start fails (`Error::Unavailable`, exit 69) when
/// none answers, naming each with its error; one that does not answer while others do is
/// logged by address and start goes on, since the others are there to cover for it.
pub async fn connect(url: &str) -> Result<RedisConn, Error> {
    let parsed = parse(url)?;
    let shown = parsed.shown();
    let mut conn = match &parsed {
        RedisUrl::Single(url) => {
            let client = redis::Client::open(url.as_str())
                .map_err(|e| Error::Config(format!("redis url {shown}: {e}")))?;
            let config = ConnectionManagerConfig::new()
                .set_connection_timeout(Some(CONNECT_TIMEOUT))
                .set_response_timeout(Some(RESPONSE_TIMEOUT))
                .set_number_of_retries(2);
            let conn = tokio::time::timeout(
                Duration::from_secs(10),
                ConnectionManager::new_with_config(client, config),
            )
            .await
            .map_err(|_| Error::unavailable(format!("redis at {shown}"), "no answer within 10s"))?
            .map_err(|e| Error::unavailable(format!("redis at {shown}"), e))?;
            RedisConn(Kind::Single(conn))
        }
        RedisUrl::Sentinel { .. } | RedisUrl::Cluster { .. } => {
            multi(&parsed, RESPONSE_TIMEOUT).await?
        }
    };
    let what = match &parsed {
        RedisUrl::Sentinel { master, .. } => format!("redis primary of '{master}' (via {shown})"),
        _ => format!("redis at {shown}"),
    };
    let _: String = redis::cmd("PING")
        .query_async(&mut conn)
        .await
        .map_err(|e| Error::unavailable(what, e))?;
    Ok(conn)
}

/// A connection of its own for blocking commands (XREAD BLOCK, XREADGROUP BLOCK): on the
/// shared multiplexed connection a blocked command would hold up every other caller.
pub async fn blocking_connection(url: &str, block: Duration) -> Result<RedisConn, Error> {
    dedicated_connection(url, block + Duration::from_secs(5)).await
}

/// A connection of its own whose replies may take up to `response` (a blocking command's
/// longest wait plus a margin).
pub async fn dedicated_connection(url: &str, response: Duration) -> Result<RedisConn, Error> {
    let parsed = parse(url)?;
    let shown = parsed.shown();
    match &parsed {
        RedisUrl::Single(url) => {
            let client = redis::Client::open(url.as_str())
                .map_err(|e| Error::Config(format!("redis url {shown}: {e}")))?;
            let config = AsyncConnectionConfig::new()
                .set_connection_timeout(Some(CONNECT_TIMEOUT))
                .set_response_timeout(Some(response));
            client
                .get_multiplexed_async_connection_with_config(&config)
                .await
                .map(|c| RedisConn(Kind::Dedicated(c)))
                .map_err(|e| Error::unavailable(format!("redis at {shown}"), e))
        }
        RedisUrl::Sentinel { .. } | RedisUrl::Cluster { .. } => multi(&parsed, response).await,
    }
}

/// A pub/sub connection: to the server, to the Sentinel group's current primary, or to the
/// first Cluster seed that answers (a Cluster passes PUBLISH to every node). The caller
/// subscribes again when it ends, which after a failover reaches the new primary.
pub async fn pubsub(url: &str) -> Result<redis::aio::PubSub, Error> {
    let parsed = parse(url)?;
    let shown = parsed.shown();
    let unavailable = |e: redis::RedisError| Error::unavailable(format!("redis at {shown}"), e);
    match &parsed {
        RedisUrl::Single(url) => redis::Client::open(url.as_str())
            .map_err(unavailable)?
            .get_async_pubsub()
            .await
            .map_err(unavailable),
        RedisUrl::Sentinel {
            sentinels,
            master,
            db,
            auth,
        } => {
            let s = SentinelConn::new(
                sentinels,
                master,
                *db,
                auth,
                sentinel_config(RESPONSE_TIMEOUT),
            )
            .map_err(unavailable)?;
            s.primary_client()
                .await
                .map_err(unavailable)?
                .get_async_pubsub()
                .await
                .map_err(unavailable)
        }
        RedisUrl::Cluster { seeds, auth } => {
            let mut last = None;
            for a in seeds {
                match redis::Client::open(node_info(a, auth, 0)?) {
                    Ok(c) => match c.get_async_pubsub().await {
                        Ok(p) => return Ok(p),
                        Err(e) => last = Some(e),
                    },
                    Err(e) => last = Some(e),
                }
            }
            Err(unavailable(last.unwrap_or_else(|| {
                redis::RedisError::from((redis::ErrorKind::Io, "no cluster seed"))
            })))
        }
    }
}

fn sentinel_config(response: Duration) -> AsyncConnectionConfig {
    AsyncConnectionConfig::new()
        .set_connection_timeout(Some(CONNECT_TIMEOUT))
        .set_response_timeout(Some(response))
}

fn node_info(a: &Addr, auth: &Auth, db: i64) -> Result<redis::ConnectionInfo, Error> {
    let mut r = RedisConnectionInfo::default().set_db(db);
    if let Some(u) = &auth.username {
        r = r.set_username(u);
    }
    if let Some(p) = &auth.password {
        r = r.set_password(p);
    }
    Ok(ConnectionAddr::Tcp(a.host.clone(), a.port)
        .into_connection_info()
        .map_err(|e| Error::Config(format!("redis node {a}: {e}")))?
        .set_redis_settings(r))
}

/// PINGs each node; start goes on if one answers (see [`connect`]).
async fn check_nodes(
    role: &str,
    nodes: &[Addr],
    info: impl Fn(&Addr) -> Result<redis::ConnectionInfo, Error>,
) -> Result<(), Error> {
    let mut failed = Vec::new();
    for a in nodes {
        let ping = async {
            let client = redis::Client::open(info(a)?)
                .map_err(|e| Error::Config(format!("redis {role} {a}: {e}")))?;
            let mut c = client
                .get_multiplexed_async_connection_with_config(&sentinel_config(CONNECT_TIMEOUT))
                .await
                .map_err(|e| e.to_string())
                .map_err(|e| Error::unavailable(a.to_string(), e))?;
            let _: String = redis::cmd("PING")
                .query_async(&mut c)
                .await
                .map_err(|e| Error::unavailable(a.to_string(), e))?;
            Ok::<_, Error>(())
        };
        match tokio::time::timeout(CONNECT_TIMEOUT + Duration::from_secs(1), ping).await {
            Ok(Ok(())) => {}
            Ok(Err(Error::Config(e))) => return Err(Error::Config(e)),
            Ok(Err(Error::Unavailable { reason, .. })) => failed.push(format!("{a}: {reason}")),
            Ok(Err(e)) => failed.push(format!("{a}: {e}")),
            Err(_) => failed.push(format!(
                "{a}: no answer within {}s",
                CONNECT_TIMEOUT.as_secs() + 1
            )),
        }
    }
    if failed.len() == nodes.len() {
        let what = match nodes {
            [one] => format!("redis {role} at {one}"),
            _ => format!(
                "every redis {role} ({})",
                nodes
                    .iter()
                    .map(Addr::to_string)
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        };
        return Err(Error::unavailable(what, failed.join("; ")));
    }
    for f in failed {
        tracing::warn!("redis {role} {f} (carrying on with the others)");
    }
    Ok(())
}

/// The Sentinel and Cluster forms: checks the sentinels or seeds, then connects.
async fn multi(parsed: &RedisUrl, response: Duration) -> Result<RedisConn, Error> {
    let shown = parsed.shown();
    match parsed {
        RedisUrl::Sentinel {
            sentinels,
            master,
            db,
            auth,
        } => {
            check_nodes("sentinel", sentinels, |a| node_info(a, &Auth::default(), 0)).await?;
            let what = || format!("redis primary of '{master}' (via {shown})");
            let conn = SentinelConn::new(sentinels, master, *db, auth, sentinel_config(response))
                .map_err(|e| Error::Config(format!("redis url {shown}: {e}")))?;
            tokio::time::timeout(Duration::from_secs(15), conn.connect_now())
                .await
                .map_err(|_| Error::unavailable(what(), "no answer within 15s"))?
                .map_err(|e| Error::unavailable(what(), e))?;
            Ok(RedisConn(Kind::Sentinel(conn)))
        }
        RedisUrl::Cluster { seeds, auth } => {
            check_nodes("cluster seed", seeds, |a| node_info(a, auth, 0)).await?;
            let infos = seeds
                .iter()
                .map(|a| node_info(a, auth, 0))
                .collect::<Result<Vec<_>, _>>()?;
            let client = redis::cluster::ClusterClientBuilder::new(infos)
                .connection_timeout(CONNECT_TIMEOUT)
                .response_timeout(response)
                .build()
                .map_err(|e| Error::Config(format!("redis url {shown}: {e}")))?;
            let conn = tokio::time::timeout(Duration::from_secs(15), client.get_async_connection())
                .await
                .map_err(|_| {
                    Error::unavailable(format!("redis cluster at {shown}"), "no answer within 15s")
                })?
                .map_err(|e| Error::unavailable(format!("redis cluster at {shown}"), e))?;
            Ok(RedisConn(Kind::Cluster(conn)))
        }
        RedisUrl::Single(_) => Err(Error::internal("multi() called for a single-server url")),
    }
}

/// Prefix for every key a deployment writes; tests use a fresh one each.
#[derive(Clone, Debug)]
pub struct Keys {
    prefix: String,
}

impl Keys {
    pub fn new(prefix: &str) -> Self {
        Self {
            prefix: prefix.trim_end_matches(':').to_string(),
        }
    }

    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// `<prefix>:<rest>`
    pub fn key(&self, rest: &str) -> String {
        format!("{}:{rest}", self.prefix)
    }
}

impl Default for Keys {
    fn default() -> Self {
        Self::new("bridle")
    }
}
