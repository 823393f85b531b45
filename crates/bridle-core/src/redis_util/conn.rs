//! The one connection type the stores use, whatever `redis_url` names.

use redis::aio::{ConnectionLike, ConnectionManager, MultiplexedConnection};
use redis::cluster_async::ClusterConnection;
use redis::{Cmd, RedisFuture, Value};

use super::sentinel::SentinelConn;

/// A Redis connection: one server (reconnecting by itself), the primary of a Sentinel group
/// (following failovers), or a Redis Cluster (following MOVED/ASK and slot changes). Cheap to
/// clone; clones share the underlying connection. Commands, pipelines and scripts are issued
/// the same way on every kind, through [`ConnectionLike`].
#[derive(Clone)]
pub struct RedisConn(pub(super) Kind);

#[derive(Clone)]
pub(super) enum Kind {
    Single(ConnectionManager),
    /// A connection of its own to one server, for blocking commands.
    Dedicated(MultiplexedConnection),
    Sentinel(SentinelConn),
    Cluster(ClusterConnection),
}

impl RedisConn {
    /// What kind of deployment this connection talks to, for logs.
    pub fn kind(&self) -> &'static str {
        match &self.0 {
            Kind::Single(_) | Kind::Dedicated(_) => "server",
            Kind::Sentinel(_) => "sentinel",
            Kind::Cluster(_) => "cluster",
        }
    }
}

impl std::fmt::Debug for RedisConn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "RedisConn({})", self.kind())
    }
}

impl ConnectionLike for RedisConn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match &mut self.0 {
            Kind::Single(c) => c.req_packed_command(cmd),
            Kind::Dedicated(c) => c.req_packed_command(cmd),
            Kind::Sentinel(c) => Box::pin(c.send_packed_command(cmd)),
            Kind::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a redis::Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match &mut self.0 {
            Kind::Single(c) => c.req_packed_commands(pipeline, offset, count),
            Kind::Dedicated(c) => c.req_packed_commands(pipeline, offset, count),
            Kind::Sentinel(c) => Box::pin(c.send_packed_commands(pipeline, offset, count)),
            Kind::Cluster(c) => c.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match &self.0 {
            Kind::Single(c) => c.get_db(),
            Kind::Dedicated(c) => c.get_db(),
            Kind::Sentinel(c) => c.db(),
            Kind::Cluster(c) => c.get_db(),
        }
    }
}
