//! Redis connections with errors that say which Redis and why, and key naming.
//!
//! Keys are `bridle:<area>:{<hash tag>}:...`: everything one atomic operation touches shares a
//! hash tag, so the same code works on Redis Cluster.

use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};

use crate::Error;

/// The URL with any password replaced, for messages.
pub fn display_url(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut u) => {
            if u.password().is_some() {
                let _ = u.set_password(Some("***"));
            }
            u.to_string()
        }
        Err(_) => "<unparseable redis url>".to_string(),
    }
}

/// Connects and checks the server answers, so a service that cannot reach Redis says so at
/// start instead of on its first request. The manager reconnects by itself afterwards.
pub async fn connect(url: &str) -> Result<ConnectionManager, Error> {
    let shown = display_url(url);
    let client =
        redis::Client::open(url).map_err(|e| Error::Config(format!("redis url {shown}: {e}")))?;
    let config = ConnectionManagerConfig::new()
        .set_connection_timeout(Some(Duration::from_secs(5)))
        .set_response_timeout(Some(Duration::from_secs(10)))
        .set_number_of_retries(2);
    let mut conn = tokio::time::timeout(
        Duration::from_secs(10),
        ConnectionManager::new_with_config(client, config),
    )
    .await
    .map_err(|_| Error::unavailable(format!("redis at {shown}"), "no answer within 10s"))?
    .map_err(|e| Error::unavailable(format!("redis at {shown}"), e))?;
    let _: String = redis::cmd("PING")
        .query_async(&mut conn)
        .await
        .map_err(|e| Error::unavailable(format!("redis at {shown}"), e))?;
    Ok(conn)
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

/// A connection of its own for blocking commands (XREAD BLOCK, XREADGROUP BLOCK): on the
/// shared multiplexed connection a blocked command would hold up every other caller.
pub async fn blocking_connection(
    url: &str,
    block: Duration,
) -> Result<redis::aio::MultiplexedConnection, Error> {
    let shown = display_url(url);
    let client =
        redis::Client::open(url).map_err(|e| Error::Config(format!("redis url {shown}: {e}")))?;
    let config = redis::AsyncConnectionConfig::new()
        .set_connection_timeout(Some(Duration::from_secs(5)))
        .set_response_timeout(Some(block + Duration::from_secs(5)));
    client
        .get_multiplexed_async_connection_with_config(&config)
        .await
        .map_err(|e| Error::unavailable(format!("redis at {shown}"), e))
}
