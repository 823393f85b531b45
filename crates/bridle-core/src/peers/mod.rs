//! Peers with several replicas: a peer URL may name every address of a DNS name
//! (`dns:///host:port`) or a fixed list; calls are spread over the replicas that answer, by
//! tonic's balanced channel (tower's power-of-two-choices on outstanding requests).
//!
//! What the balancer is told comes from a discovery task (`discovery.rs`): it resolves the
//! names, probes each address with the gRPC health service over a connection of its own
//! (TLS as configured, so a replica that would refuse the handshake is never used), adds the
//! addresses that answer SERVING and keeps a health `Watch` open on each. A replica that dies,
//! stops answering (HTTP/2 keep-alive pings go unanswered) or starts draining (NOT_SERVING)
//! ends its watch and is taken out at once; it is probed again with a back-off and comes back
//! when it answers. Names are re-resolved every `peer_resolve_interval` and right after a
//! replica drops out.
//!
//! A plain `http://` URL is dialled as one lazily connected channel. A service with TLS
//! material dials every peer through discovery (an `https://` URL as a list of one), so that
//! when its certificate is rotated the addresses in use are redialled with the new one.

mod discovery;
mod url;

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use tonic::transport::{Channel, ClientTlsConfig};

pub use url::{Entry, HostPort, PeerUrl};

use crate::Error;

/// Turns a host name into addresses. The system's resolver in the services; a test can give
/// records of its own (and change them) to see discovery follow.
pub trait Resolve: Send + Sync + 'static {
    fn resolve(
        &self,
        host: &str,
        port: u16,
    ) -> Pin<Box<dyn Future<Output = std::io::Result<Vec<SocketAddr>>> + Send>>;
}

/// getaddrinfo, through tokio (A and AAAA records; an IP literal is its own address).
pub struct SystemResolver;

impl Resolve for SystemResolver {
    fn resolve(
        &self,
        host: &str,
        port: u16,
    ) -> Pin<Box<dyn Future<Output = std::io::Result<Vec<SocketAddr>>> + Send>> {
        let host = host.to_string();
        Box::pin(async move {
            Ok(tokio::net::lookup_host((host.as_str(), port))
                .await?
                .collect())
        })
    }
}

/// How to dial a peer's addresses.
#[derive(Clone)]
pub struct Dial {
    /// The peer, in messages ("tools").
    pub service: String,
    /// The longest any call may take (calls may set shorter deadlines).
    pub timeout: Duration,
    /// TLS for https:// entries, and for a `dns:///` target when set.
    pub tls: Option<ClientTls>,
    /// The name the servers' certificates must carry; `None`: each entry's host name (for a
    /// `dns:///` target, the name resolved), never the IP it resolved to.
    pub tls_name: Option<String>,
    /// How often names are resolved again.
    pub resolve_interval: Duration,
}

/// What a dial presents and verifies: fixed (the CLI), or a service's material that follows
/// its files, in which case discovery redials the addresses in use when it changes.
#[derive(Clone)]
pub enum ClientTls {
    Fixed(ClientTlsConfig),
    Watched(crate::tls::Watched),
}

impl ClientTls {
    fn config(&self) -> ClientTlsConfig {
        match self {
            ClientTls::Fixed(c) => c.clone(),
            ClientTls::Watched(w) => w.current().client(),
        }
    }
}

impl Dial {
    /// The endpoint for one resolved address: same settings as a single-address channel.
    fn endpoint(
        &self,
        addr: SocketAddr,
        https: bool,
        host: &str,
    ) -> Result<tonic::transport::Endpoint, String> {
        let scheme = if https { "https" } else { "http" };
        let mut ep = tonic::transport::Endpoint::from_shared(format!("{scheme}://{addr}"))
            .map_err(|e| format!("{addr}: {e}"))?
            .connect_timeout(Duration::from_secs(5))
            .timeout(self.timeout)
            .tcp_nodelay(true)
            .http2_keep_alive_interval(Duration::from_secs(30))
            .keep_alive_while_idle(true);
        if https {
            let Some(tls) = &self.tls else {
                return Err(format!(
                    "{addr} is https:// but no TLS is configured for the {}",
                    self.service
                ));
            };
            let name = self.tls_name.as_deref().unwrap_or(host);
            ep = ep
                .tls_config(tls.config().domain_name(name))
                .map_err(|e| format!("TLS for {addr}: {e}"))?;
        }
        Ok(ep)
    }
}

/// A channel to a peer: one address, or a balanced set that discovery keeps current. Clone
/// it freely; clones share connections.
#[derive(Clone)]
pub struct Peer {
    channel: Channel,
    pool: Option<Pool>,
}

#[derive(Clone)]
struct Pool {
    service: Arc<str>,
    timeout: Duration,
    state: tokio::sync::watch::Receiver<discovery::State>,
}

impl Peer {
    /// One address, no discovery.
    pub fn single(channel: Channel) -> Self {
        Self {
            channel,
            pool: None,
        }
    }

    /// A balanced channel over every address of `url` (a `dns:///` target or a list), kept
    /// current by a discovery task that ends when the last clone of this peer is dropped.
    /// Needs a tokio runtime.
    pub fn discover(dial: Dial, url: &PeerUrl, resolver: Arc<dyn Resolve>) -> Result<Self, Error> {
        if tokio::runtime::Handle::try_current().is_err() {
            return Err(Error::internal(
                "a discovered peer needs a running tokio runtime",
            ));
        }
        let targets = match url {
            PeerUrl::Single(u) => {
                return Err(Error::internal(format!(
                    "{u} is one address: dial it with Peer::single"
                )));
            }
            PeerUrl::Dns(at) => vec![discovery::Target {
                https: dial.tls.is_some(),
                at: at.clone(),
                dns: true,
            }],
            PeerUrl::List(entries) => entries
                .iter()
                .map(|e| discovery::Target {
                    https: e.https,
                    at: e.at.clone(),
                    dns: false,
                })
                .collect(),
        };
        let shown = match url {
            PeerUrl::Dns(at) => format!("dns:///{at}"),
            PeerUrl::List(v) => format!(
                "the list {}",
                v.iter()
                    .map(|e| e.at.to_string())
                    .collect::<Vec<_>>()
                    .join(",")
            ),
            PeerUrl::Single(u) => u.clone(),
        };
        let (channel, changes) = Channel::balance_channel::<SocketAddr>(64);
        let (state_tx, state) = tokio::sync::watch::channel(discovery::State::default());
        let pool = Pool {
            service: dial.service.clone().into(),
            timeout: dial.timeout,
            state,
        };
        let task = discovery::Discovery {
            dial,
            targets,
            shown,
            resolver,
            changes,
            state: state_tx,
        };
        // Not through Shutdown::spawn: the task holds no state to drain and ends on its own
        // when the last Peer (the only holder of its state's receivers) is dropped.
        #[allow(clippy::disallowed_methods)]
        tokio::spawn(task.run());
        Ok(Self {
            channel,
            pool: Some(pool),
        })
    }

    /// How many addresses calls are spread over now; `None` for a single-address peer.
    pub fn ready_endpoints(&self) -> Option<usize> {
        self.pool.as_ref().map(|p| p.state.borrow().ready)
    }
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;
type Req = http::Request<tonic::body::Body>;
type Resp = http::Response<tonic::body::Body>;

impl tower::Service<Req> for Peer {
    type Response = Resp;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Resp, BoxError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        tower::Service::poll_ready(&mut self.channel, cx).map_err(Into::into)
    }

    fn call(&mut self, req: Req) -> Self::Future {
        let method = req.uri().path().trim_start_matches('/').to_string();
        let fut = self.call_through(req);
        crate::rpc_telemetry::client_call(method, fut)
    }
}

impl Peer {
    /// The call itself, over the one channel or the balanced pool.
    fn call_through(
        &mut self,
        req: Req,
    ) -> Pin<Box<dyn Future<Output = Result<Resp, BoxError>> + Send>> {
        let Some(pool) = self.pool.clone() else {
            let fut = tower::Service::call(&mut self.channel, req);
            return Box::pin(async move { fut.await.map_err(Into::into) });
        };
        // The ready channel (holding its slot in the buffer) goes into the future; a fresh
        // clone stays for the next poll_ready.
        let fresh = self.channel.clone();
        let mut ready = std::mem::replace(&mut self.channel, fresh);
        // The call's own deadline when it is the tighter one, else the channel's.
        let deadline = grpc_timeout(req.headers()).map_or(pool.timeout, |t| t.min(pool.timeout));
        // Set once a connection starts sending the request: until then it waits in the
        // balancer's queue and can be failed without having reached any replica.
        let sent = Arc::new(AtomicBool::new(false));
        let req = req.map(|inner| {
            tonic::body::Body::new(Marked {
                inner,
                sent: sent.clone(),
            })
        });
        Box::pin(async move {
            let unavailable = |why: &str| {
                Box::new(tonic::Status::unavailable(format!(
                    "{} is unavailable: {why}",
                    pool.service
                ))) as BoxError
            };
            let work = async {
                let mut rx = pool.state.clone();
                // Before discovery has been round once, wait for it (within the deadline)
                // rather than fail a call made right at startup.
                match rx.wait_for(|s| s.settled).await.map(|s| s.clone()) {
                    Ok(s) if s.ready == 0 => return Err(unavailable(&s.why)),
                    Ok(_) => {}
                    Err(_) => return Err(unavailable("its discovery has stopped")),
                }
                let call = tower::Service::call(&mut ready, req);
                tokio::pin!(call);
                loop {
                    tokio::select! {
                        r = &mut call => return r.map_err(|e| went_away(&pool.service, e.into())),
                        // The last replica went while the call waited in the queue: it
                        // would wait there until one comes back, so it fails now.
                        Ok(()) = rx.changed() => {
                            let s = rx.borrow_and_update().clone();
                            if s.ready == 0 && !sent.load(Ordering::Acquire) {
                                return Err(unavailable(&s.why));
                            }
                        }
                    }
                }
            };
            // A replica that takes the connection and never answers holds no call past its
            // deadline; the balancer's queue is covered too, not only the connection.
            match tokio::time::timeout(deadline, work).await {
                Ok(r) => r,
                // CANCELLED, as tonic's own per-connection deadline reports it (and callers
                // retry it as before).
                Err(_) => Err(Box::new(tonic::Status::cancelled(format!(
                    "{} did not answer within {}",
                    pool.service,
                    humantime::format_duration(deadline)
                ))) as BoxError),
            }
        })
    }
}

/// A call whose connection broke under it (the replica was killed, or its connection closed
/// mid-call: hyper's "connection closed", which tonic would report as CANCELLED or UNKNOWN) is
/// UNAVAILABLE: the caller's signal to retry, on another replica. A status the replica sent,
/// and the call's own deadline (CANCELLED, as tonic reports it), stay as they are.
fn went_away(service: &str, e: BoxError) -> BoxError {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e.as_ref());
    while let Some(err) = cur {
        if err.is::<tonic::Status>() || err.is::<tonic::TimeoutExpired>() {
            return e;
        }
        cur = err.source();
    }
    Box::new(tonic::Status::unavailable(format!(
        "{service}: the connection to its replica broke during the call: {}",
        innermost(e.as_ref())
    )))
}

/// The innermost message of an error chain ("connection closed", not "transport error").
fn innermost(e: &(dyn std::error::Error + 'static)) -> String {
    let mut cur = e;
    while let Some(next) = cur.source() {
        cur = next;
    }
    cur.to_string()
}

/// A request body that records when a connection first reads it.
struct Marked {
    inner: tonic::body::Body,
    sent: Arc<AtomicBool>,
}

impl http_body::Body for Marked {
    type Data = bytes::Bytes;
    type Error = tonic::Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<bytes::Bytes>, tonic::Status>>> {
        self.sent.store(true, Ordering::Release);
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

/// The deadline a call carries (`grpc-timeout: 250m`), when it carries one.
fn grpc_timeout(headers: &http::HeaderMap) -> Option<Duration> {
    let v = headers.get("grpc-timeout")?.to_str().ok()?;
    let (n, unit) = v.split_at(v.len().checked_sub(1)?);
    let n: u64 = n.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(n.saturating_mul(3600)),
        "M" => Duration::from_secs(n.saturating_mul(60)),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_broken_connection_is_unavailable_and_a_replicas_status_is_kept() {
        let io = std::io::Error::new(std::io::ErrorKind::ConnectionReset, "connection closed");
        let e = went_away("tools", Box::new(io));
        let st = e.downcast_ref::<tonic::Status>().unwrap();
        assert_eq!(st.code(), tonic::Code::Unavailable);
        assert_eq!(
            st.message(),
            "tools: the connection to its replica broke during the call: connection closed"
        );
        let sent = went_away("tools", Box::new(tonic::Status::not_found("no such tool")));
        assert_eq!(
            sent.downcast_ref::<tonic::Status>().unwrap().code(),
            tonic::Code::NotFound
        );
        let deadline = went_away("tools", Box::new(tonic::TimeoutExpired(())));
        assert!(deadline.is::<tonic::TimeoutExpired>());
    }

    #[test]
    fn grpc_timeout_reads_every_unit() {
        let t = |v: &str| {
            let mut h = http::HeaderMap::new();
            h.insert("grpc-timeout", v.parse().unwrap());
            grpc_timeout(&h)
        };
        assert_eq!(t("2H"), Some(Duration::from_secs(7200)));
        assert_eq!(t("3M"), Some(Duration::from_secs(180)));
        assert_eq!(t("4S"), Some(Duration::from_secs(4)));
        assert_eq!(t("250m"), Some(Duration::from_millis(250)));
        assert_eq!(t("7u"), Some(Duration::from_micros(7)));
        assert_eq!(t("9n"), Some(Duration::from_nanos(9)));
        assert_eq!(t("9x"), None);
        assert_eq!(t(""), None);
        assert_eq!(grpc_timeout(&http::HeaderMap::new()), None);
    }
}
