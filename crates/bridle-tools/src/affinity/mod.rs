//! Which tools replica holds a run, and how a run moves when that replica dies.
//!
//! A run's sandboxes, its workspace filesystem and its redaction set live in the memory and on
//! the host of one replica: its *owner*, named in Redis (`<prefix>:tools:run:{<h>}:owner`,
//! `<h>` a hash of tenant and run). Every call of a run goes to the owner: a replica that
//! receives one for a run another live replica owns forwards it there over gRPC, once (the
//! forwarded request names the replica it is meant for, so it is never forwarded again). Each
//! replica announces itself with a lease (`<prefix>:tools:replica:{<id>}` = the address other
//! replicas dial, renewed every third of `replica_lease`); a run whose owner's lease is gone
//! is taken over by the replica that receives its next call (one compare-and-set), which
//! restores the run's `/workspace` from the snapshot its owner stored after the run's last
//! completed call ([`snapshot`]).
//!
//! *Why a lease per replica and not per run:* renewal then costs one write per replica
//! whatever the number of runs it holds, and a run's owner key needs no renewal at all (it
//! expires with the run's idle time, refreshed by each call).

pub mod snapshot;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use bridle_core::client::{Outgoing, Traced};
use bridle_core::redis_util::{Keys, RedisConn};
use bridle_proto::tools_client::ToolsClient;
use sha2::{Digest as _, Sha256};

use crate::Error;

/// The metadata a forwarded request carries: the id of the replica it is meant for.
pub const FORWARDED_TO: &str = "x-bridle-forwarded-to";
/// An ended run's owner key holds this (for an hour) so that a late call cannot revive the
/// run on another replica.
pub const ENDED: &str = "-ended";
const ENDED_TTL: Duration = Duration::from_secs(3600);

/// Owner of a run: the caller (ARGV[1]) when there is none, or when the current one is the
/// replica the caller found dead (ARGV[3]); the caller's ownership and the run's snapshot
/// (KEYS[2]) live ARGV[2] ms more. Returns the owner afterwards.
const CLAIM: &str = r"
local cur = redis.call('GET', KEYS[1])
if cur == false or cur == ARGV[1] or (ARGV[3] ~= '' and cur == ARGV[3]) then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  redis.call('PEXPIRE', KEYS[2], ARGV[2])
  return ARGV[1]
end
return cur";

/// EndRun: the run is marked ended and its snapshot goes.
const END: &str = r"
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
redis.call('DEL', KEYS[2])
return 1";

/// This replica: its id (new at every start) and the address others dial.
#[derive(Debug)]
pub struct Replica {
    pub id: String,
    advertise: OnceLock<Option<String>>,
}

/// The keys of replicas and runs, and the liveness of replicas.
#[derive(Clone)]
pub struct Replicas {
    conn: RedisConn,
    keys: Keys,
    pub me: Arc<Replica>,
    lease: Duration,
    retired: Arc<AtomicBool>,
}

impl Replicas {
    pub fn new(conn: RedisConn, keys: Keys, lease: Duration) -> Self {
        Self {
            conn,
            keys,
            me: Arc::new(Replica {
                id: ulid::Ulid::new().to_string().to_lowercase(),
                advertise: OnceLock::new(),
            }),
            lease,
            retired: Arc::default(),
        }
    }

    pub fn lease(&self) -> Duration {
        self.lease
    }

    /// Whether this replica withdrew (shutdown): its lease is no longer renewed.
    pub fn retired(&self) -> bool {
        self.retired.load(Ordering::SeqCst)
    }

    fn replica_key(&self, id: &str) -> String {
        self.keys.key(&format!("tools:replica:{{{id}}}"))
    }

    /// `<prefix>:tools:run:{<h>}`: hashed, since run ids are the caller's text.
    pub fn run_base(&self, tenant: &str, run: &str) -> String {
        let mut h = Sha256::new();
        for part in [tenant, run] {
            h.update(part.as_bytes());
            h.update([0u8]);
        }
        let tag = hex::encode(&h.finalize()[..16]);
        self.keys.key(&format!("tools:run:{{{tag}}}"))
    }

    /// The address `id` advertised, while its lease lasts ("" when it advertised none).
    pub async fn live(&self, id: &str) -> Result<Option<String>, Error> {
        let mut conn = self.conn.clone();
        Ok(redis::cmd("GET")
            .arg(self.replica_key(id))
            .query_async(&mut conn)
            .await?)
    }

    /// Announces (or renews) this replica.
    pub async fn heartbeat(&self) -> Result<(), Error> {
        // Not announced before it knows its address (`Affinity::register`).
        let Some(url) = self.me.advertise.get() else {
            return Ok(());
        };
        if self.retired() {
            return Ok(());
        }
        let url = url.clone().unwrap_or_default();
        let mut conn = self.conn.clone();
        let () = redis::cmd("SET")
            .arg(self.replica_key(&self.me.id))
            .arg(url)
            .arg("PX")
            .arg(self.lease.as_millis() as u64)
            .query_async(&mut conn)
            .await?;
        Ok(())
    }

    /// Withdraws this replica (at the end of a graceful shutdown): its runs are taken over at
    /// their next call instead of after the lease.
    pub async fn retire(&self) {
        self.retired.store(true, Ordering::SeqCst);
        let mut conn = self.conn.clone();
        let r: Result<i64, _> = redis::cmd("DEL")
            .arg(self.replica_key(&self.me.id))
            .query_async(&mut conn)
            .await;
        if let Err(e) = r {
            tracing::warn!(error = %e, "cannot withdraw this tools replica; its lease expires by itself");
        }
    }
}

/// Where a call of a run is carried out.
#[derive(Debug, PartialEq, Eq)]
pub enum Route {
    /// Here: this replica owns the run (or the call has no run).
    Local,
    /// At the live replica `replica`, which advertised `url`.
    Forward { replica: String, url: String },
}

#[derive(Clone)]
pub struct Affinity {
    pub replicas: Replicas,
    /// An owner key lives this long after the run's last call (the run's idle time).
    run_ttl: Duration,
    outgoing: Outgoing,
    timeout: Duration,
    clients: Arc<Mutex<HashMap<String, ToolsClient<Traced>>>>,
    registered: Arc<AtomicBool>,
}

impl Affinity {
    pub fn new(
        replicas: Replicas,
        run_ttl: Duration,
        outgoing: Outgoing,
        timeout: Duration,
    ) -> Self {
        Self {
            replicas,
            run_ttl,
            outgoing,
            timeout,
            clients: Arc::default(),
            registered: Arc::default(),
        }
    }

    pub fn me(&self) -> &str {
        &self.replicas.me.id
    }

    /// Announces this replica at `advertise` (None: other replicas cannot forward to it).
    pub async fn register(&self, advertise: Option<String>) -> Result<(), Error> {
        let _ = self.replicas.me.advertise.set(advertise);
        self.replicas.heartbeat().await?;
        self.registered.store(true, Ordering::SeqCst);
        Ok(())
    }

    /// Where a call of `run` goes. `claim`: a call that needs the run's state (Execute) makes
    /// this replica the owner when there is none or the owner is dead; EndRun and Redact only
    /// look.
    pub async fn route(&self, tenant: &str, run: &str, claim: bool) -> Result<Route, Error> {
        if run.is_empty() {
            return Ok(Route::Local);
        }
        if !self.registered.load(Ordering::SeqCst) {
            return Err(Error::Core(bridle_core::Error::unavailable(
                "this tools replica",
                "it is starting; retry",
            )));
        }
        let base = self.replicas.run_base(tenant, run);
        let owner_key = format!("{base}:owner");
        let me = self.me().to_string();
        let mut dead = String::new();
        for _ in 0..4 {
            let mut conn = self.replicas.conn.clone();
            let owner: Option<String> = if claim {
                Some(
                    redis::Script::new(CLAIM)
                        .key(&owner_key)
                        .key(format!("{base}:ws"))
                        .arg(&me)
                        .arg(self.run_ttl.as_millis() as u64)
                        .arg(&dead)
                        .invoke_async(&mut conn)
                        .await?,
                )
            } else {
                redis::cmd("GET")
                    .arg(&owner_key)
                    .query_async(&mut conn)
                    .await?
            };
            let Some(owner) = owner else {
                return Ok(Route::Local);
            };
            if owner == me {
                if !dead.is_empty() {
                    tracing::info!(run, tenant, from = %dead, "took over a run whose tools replica is gone");
                }
                return Ok(Route::Local);
            }
            if owner == ENDED {
                return if claim {
                    Err(Error::RunEnded(run.to_string()))
                } else {
                    Ok(Route::Local)
                };
            }
            match self.replicas.live(&owner).await? {
                Some(url) if !url.is_empty() => {
                    return Ok(Route::Forward {
                        replica: owner,
                        url,
                    });
                }
                Some(_) => {
                    return Err(Error::Core(bridle_core::Error::unavailable(
                        format!("tools replica {owner}"),
                        format!(
                            "it holds run '{run}' but advertises no address the other replicas can dial; set its advertise_url (or POD_IP)"
                        ),
                    )));
                }
                // Its lease is gone: it died. Calls that need the run take it over.
                None if claim => dead = owner,
                None => return Ok(Route::Local),
            }
        }
        Err(Error::Core(bridle_core::Error::unavailable(
            format!("the owner of run '{run}'"),
            "it changed hands too often; retry",
        )))
    }

    /// Waits (up to one lease and a second) for `replica`'s lease to go: true when it went
    /// (the replica is dead; the run can be taken over), false when it is still held.
    pub async fn wait_gone(&self, replica: &str) -> Result<bool, Error> {
        let deadline = tokio::time::Instant::now() + self.replicas.lease + Duration::from_secs(1);
        loop {
            if self.replicas.live(replica).await?.is_none() {
                return Ok(true);
            }
            if tokio::time::Instant::now() >= deadline {
                return Ok(false);
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Marks the run ended (a later call for it is refused on every replica) and drops its
    /// workspace snapshot.
    pub async fn end(&self, tenant: &str, run: &str) -> Result<(), Error> {
        let base = self.replicas.run_base(tenant, run);
        let mut conn = self.replicas.conn.clone();
        let _: i64 = redis::Script::new(END)
            .key(format!("{base}:owner"))
            .key(format!("{base}:ws"))
            .arg(ENDED)
            .arg(ENDED_TTL.as_millis() as u64)
            .invoke_async(&mut conn)
            .await?;
        Ok(())
    }

    /// A client of the replica at `url` (one lazily connected channel per address).
    pub fn client(&self, url: &str) -> Result<ToolsClient<Traced>, Error> {
        let mut clients = self.clients.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(c) = clients.get(url) {
            return Ok(c.clone());
        }
        let ch = bridle_core::client::traced("tools", url, self.timeout, self.outgoing.clone())?;
        let c = ToolsClient::new(ch);
        clients.insert(url.to_string(), c.clone());
        Ok(c)
    }
}

/// `msg` as a request forwarded to `replica`: the caller's deadline goes along.
pub fn forwarded<T>(
    incoming: &tonic::metadata::MetadataMap,
    msg: T,
    replica: &str,
) -> Result<tonic::Request<T>, Error> {
    let mut req = tonic::Request::new(msg);
    if let Some(t) = incoming.get("grpc-timeout") {
        req.metadata_mut().insert("grpc-timeout", t.clone());
    }
    let to = replica.parse().map_err(|_| {
        Error::Core(bridle_core::Error::internal(format!(
            "replica id '{replica}' is not a header value"
        )))
    })?;
    req.metadata_mut().insert(FORWARDED_TO, to);
    Ok(req)
}

/// Whether a forwarded call failed because the owner could not be reached (the connection
/// was refused or broke), as opposed to an answer of the owner: a status made by the client
/// carries the transport error as its source; one the owner sent does not.
pub fn unreachable(s: &tonic::Status) -> bool {
    matches!(s.code(), tonic::Code::Unavailable | tonic::Code::Unknown)
        && std::error::Error::source(s).is_some()
}
