//! The task that tells a balanced channel which addresses to use: resolve, probe, watch,
//! eject, probe back in. One task per discovered peer; it owns every decision, so the set the
//! balancer sees and the count callers see (`State`) change together.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt as _;
use futures::future::AbortHandle;
use futures::stream::FuturesUnordered;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tonic::transport::Endpoint;
use tonic::transport::channel::Change;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::{HealthCheckRequest, HealthCheckResponse};

use super::{Dial, HostPort, Resolve};

/// How long a probe may take to connect and get the first health answer.
const PROBE_TIMEOUT: Duration = Duration::from_secs(5);
/// How long one name lookup may take.
const RESOLVE_TIMEOUT: Duration = Duration::from_secs(5);
/// The first wait before probing again an address that failed (doubling up to the resolve
/// interval).
const FIRST_BACKOFF: Duration = Duration::from_secs(1);

/// What callers see: whether discovery has been round once, how many addresses are in use,
/// and why none is, when none is.
#[derive(Clone, Debug, Default)]
pub struct State {
    pub settled: bool,
    pub ready: usize,
    pub why: String,
}

/// One name (or address) of the peer URL.
pub struct Target {
    pub https: bool,
    pub at: HostPort,
    /// A `dns:///` name (its emptiness is an error of its own) rather than a list entry.
    pub dns: bool,
}

pub struct Discovery {
    pub dial: Dial,
    pub targets: Vec<Target>,
    /// The peer URL, for messages.
    pub shown: String,
    pub resolver: Arc<dyn Resolve>,
    pub changes: mpsc::Sender<Change<SocketAddr, Endpoint>>,
    pub state: watch::Sender<State>,
}

enum Phase {
    /// A probe is running; `first`: the address has never been probed.
    Probing { first: bool },
    /// In the balancer, its health watch open.
    Up,
    /// Failed; probed again at `at`.
    Waiting { at: Instant },
}

struct Slot {
    /// Which target it came from (scheme and TLS name).
    target: usize,
    phase: Phase,
    backoff: Duration,
    /// Why it is not in use, when it is not.
    why: String,
    /// Tells the outputs of an aborted or superseded probe/watch from the current one.
    generation: u64,
    abort: Option<AbortHandle>,
}

/// A replica's health watch, with the connection it runs on.
type Health = (
    HealthClient<tonic::transport::Channel>,
    tonic::Streaming<HealthCheckResponse>,
);

enum Event {
    Probed(SocketAddr, u64, Result<Box<Health>, String>),
    Down(SocketAddr, u64, String),
}

type Task = Pin<Box<dyn std::future::Future<Output = Option<Event>> + Send>>;

impl Discovery {
    pub async fn run(self) {
        let mut slots: HashMap<SocketAddr, Slot> = HashMap::new();
        let mut tasks: FuturesUnordered<Task> = FuturesUnordered::new();
        let mut generation = 0u64;
        let mut resolve_at = Instant::now();
        let mut settled = false;
        // Why the last resolution gave nothing, when it did.
        let mut empty_why: Option<String> = None;
        let mut empty_backoff = FIRST_BACKOFF;
        // Changes the balancer has not taken yet. It reads them only when a call comes, so
        // with no calls its channel fills up; a later change to an address supersedes an
        // earlier one, which keeps this to one change per address.
        let mut pending: VecDeque<Change<SocketAddr, Endpoint>> = VecDeque::new();
        // Rotated TLS material: the addresses in use are redialled with it (replacing an
        // address's endpoint in the balancer drops its old connection once idle).
        let mut tls = match &self.dial.tls {
            Some(super::ClientTls::Watched(w)) => Some(w.clone()),
            _ => None,
        };
        let tls_changed = |tls: &mut Option<crate::tls::Watched>| {
            let mut w = tls.clone();
            async move {
                match w.as_mut() {
                    Some(w) => w.changed().await,
                    None => std::future::pending().await,
                }
                w
            }
        };
        loop {
            let now = Instant::now();
            if now >= resolve_at {
                let (found, why) = self.resolve().await;
                for (addr, slot) in slots.iter_mut() {
                    if !found.contains_key(addr) {
                        if let Some(a) = slot.abort.take() {
                            a.abort();
                        }
                        if matches!(slot.phase, Phase::Up) {
                            tracing::info!(
                                service = %self.dial.service,
                                %addr,
                                "peer address no longer resolved; taken out"
                            );
                            queue(&mut pending, Change::Remove(*addr));
                        }
                    }
                }
                slots.retain(|a, _| found.contains_key(a));
                for (addr, target) in found.iter() {
                    if !slots.contains_key(addr) {
                        generation += 1;
                        let (task, abort) = self.probe(*addr, *target, generation);
                        tasks.push(task);
                        slots.insert(
                            *addr,
                            Slot {
                                target: *target,
                                phase: Phase::Probing { first: true },
                                backoff: FIRST_BACKOFF,
                                why: String::new(),
                                generation,
                                abort: Some(abort),
                            },
                        );
                    }
                }
                let interval = self.dial.resolve_interval;
                resolve_at = if found.is_empty() {
                    empty_why = Some(why);
                    // Come back soon after a name that resolved to nothing.
                    let wait = empty_backoff.min(interval);
                    empty_backoff = (empty_backoff * 2).min(interval);
                    Instant::now() + wait
                } else {
                    empty_why = None;
                    empty_backoff = FIRST_BACKOFF;
                    Instant::now() + interval
                };
            }
            // Addresses whose back-off is over are probed again.
            let now = Instant::now();
            for (addr, slot) in slots.iter_mut() {
                let due = matches!(slot.phase, Phase::Waiting { at } if at <= now);
                if due {
                    generation += 1;
                    let (task, abort) = self.probe(*addr, slot.target, generation);
                    tasks.push(task);
                    slot.phase = Phase::Probing { first: false };
                    slot.generation = generation;
                    slot.abort = Some(abort);
                }
            }
            settled = settled
                || !slots
                    .values()
                    .any(|s| matches!(s.phase, Phase::Probing { first: true }));
            self.publish(settled, &slots, empty_why.as_deref());
            while let Some(c) = pending.pop_front() {
                match self.changes.try_send(c) {
                    Ok(()) => {}
                    Err(mpsc::error::TrySendError::Full(c)) => {
                        pending.push_front(c);
                        break;
                    }
                    // The balancer is gone: nobody calls through it any more.
                    Err(mpsc::error::TrySendError::Closed(_)) => return,
                }
            }

            let wake = slots
                .values()
                .filter_map(|s| match s.phase {
                    Phase::Waiting { at } => Some(at),
                    _ => None,
                })
                .chain([resolve_at])
                .min()
                .unwrap_or(resolve_at);
            tokio::select! {
                // Every Peer is gone: nobody calls through this channel any more.
                _ = self.state.closed() => return,
                seen = tls_changed(&mut tls) => {
                    tls = seen;
                    for (addr, slot) in slots.iter() {
                        if !matches!(slot.phase, Phase::Up) {
                            continue;
                        }
                        let t = &self.targets[slot.target];
                        if let Ok(ep) = self.dial.endpoint(*addr, t.https, &t.at.host) {
                            queue(&mut pending, Change::Insert(*addr, ep));
                        }
                    }
                    tracing::info!(service = %self.dial.service, "TLS material changed: the peer's addresses are redialled with it");
                }
                _ = tokio::time::sleep_until(wake) => {}
                Ok(permit) = self.changes.reserve(), if !pending.is_empty() => {
                    if let Some(c) = pending.pop_front() {
                        permit.send(c);
                    }
                }
                Some(ev) = tasks.next(), if !tasks.is_empty() => {
                    let Some(ev) = ev else { continue };
                    match ev {
                        Event::Probed(addr, g, result) => {
                            let Some(slot) = slots.get_mut(&addr).filter(|s| s.generation == g)
                            else { continue };
                            match result {
                                Ok(health) => {
                                    let t = &self.targets[slot.target];
                                    let ep = match self.dial.endpoint(addr, t.https, &t.at.host) {
                                        Ok(ep) => ep,
                                        Err(e) => {
                                            slot.why = e;
                                            slot.phase = Phase::Waiting {
                                                at: Instant::now() + self.dial.resolve_interval,
                                            };
                                            continue;
                                        }
                                    };
                                    queue(&mut pending, Change::Insert(addr, ep));
                                    tracing::info!(
                                        service = %self.dial.service,
                                        %addr,
                                        "peer address in use"
                                    );
                                    let (task, abort) = watch_health(addr, g, health);
                                    tasks.push(task);
                                    slot.phase = Phase::Up;
                                    slot.abort = Some(abort);
                                    slot.backoff = FIRST_BACKOFF;
                                    slot.why.clear();
                                }
                                Err(why) => {
                                    tracing::debug!(
                                        service = %self.dial.service,
                                        %addr,
                                        %why,
                                        "peer address does not answer"
                                    );
                                    slot.why = why;
                                    slot.phase = Phase::Waiting {
                                        at: Instant::now() + slot.backoff,
                                    };
                                    slot.backoff =
                                        (slot.backoff * 2).min(self.dial.resolve_interval);
                                    slot.abort = None;
                                }
                            }
                        }
                        Event::Down(addr, g, why) => {
                            let Some(slot) = slots.get_mut(&addr).filter(|s| s.generation == g)
                            else { continue };
                            tracing::warn!(
                                service = %self.dial.service,
                                %addr,
                                %why,
                                "peer address taken out"
                            );
                            queue(&mut pending, Change::Remove(addr));
                            slot.why = why;
                            slot.backoff = FIRST_BACKOFF;
                            slot.phase = Phase::Waiting {
                                at: Instant::now() + FIRST_BACKOFF,
                            };
                            slot.abort = None;
                            // A replica dropping out is a hint the names changed.
                            resolve_at = Instant::now();
                        }
                    }
                }
            }
        }
    }

    /// Every address of every target, with the target it came from; and, when there are
    /// none, why.
    async fn resolve(&self) -> (HashMap<SocketAddr, usize>, String) {
        let mut found = HashMap::new();
        let mut errors: Vec<(&HostPort, Option<String>)> = Vec::new();
        for (i, t) in self.targets.iter().enumerate() {
            let lookup = tokio::time::timeout(
                RESOLVE_TIMEOUT,
                self.resolver.resolve(&t.at.host, t.at.port),
            )
            .await;
            match lookup {
                Ok(Ok(addrs)) => {
                    if addrs.is_empty() {
                        errors.push((&t.at, None));
                    }
                    for a in addrs {
                        found.entry(a).or_insert(i);
                    }
                }
                Ok(Err(e)) => errors.push((&t.at, Some(e.to_string()))),
                Err(_) => errors.push((
                    &t.at,
                    Some(format!(
                        "no answer from the resolver within {}",
                        humantime::format_duration(RESOLVE_TIMEOUT)
                    )),
                )),
            }
        }
        let line = |at: &HostPort, detail: &Option<String>| match detail {
            Some(d) => format!("{at} resolved to no address ({d})"),
            None => format!("{at} resolved to no address"),
        };
        let why = match (self.targets.as_slice(), errors.as_slice()) {
            ([t], [(_, detail)]) if t.dns => match detail {
                Some(d) => format!("dns:///{} resolved to no address ({d})", t.at),
                None => format!("dns:///{} resolved to no address", t.at),
            },
            _ => format!(
                "{}: {}",
                self.shown,
                errors
                    .iter()
                    .map(|(at, d)| line(at, d))
                    .collect::<Vec<_>>()
                    .join("; ")
            ),
        };
        (found, why)
    }

    fn probe(&self, addr: SocketAddr, target: usize, generation: u64) -> (Task, AbortHandle) {
        let t = &self.targets[target];
        let ep = self.dial.endpoint(addr, t.https, &t.at.host).map(|ep| {
            // Its own connection, with tight keep-alive: a replica that stops answering is
            // noticed within ~15 s even when no call is going to it.
            ep.http2_keep_alive_interval(Duration::from_secs(10))
                .keep_alive_timeout(Duration::from_secs(5))
                // The probe's own limit below is the one that reports, with its reason.
                .timeout(PROBE_TIMEOUT * 2)
        });
        let fut = async move {
            let ep = ep?;
            let mut client = HealthClient::new(ep.connect_lazy());
            let first = async {
                let mut stream = client
                    .watch(HealthCheckRequest {
                        service: String::new(),
                    })
                    .await
                    .map_err(|s| describe(&s))?
                    .into_inner();
                match stream.message().await {
                    Ok(Some(m)) if m.status() == ServingStatus::Serving => Ok(stream),
                    Ok(Some(m)) => Err(format!("reports {}", m.status().as_str_name())),
                    Ok(None) => Err("closed its health watch".to_string()),
                    Err(s) => Err(describe(&s)),
                }
            };
            match tokio::time::timeout(PROBE_TIMEOUT, first).await {
                Ok(r) => r.map(|stream| Box::new((client, stream))),
                Err(_) => Err(format!(
                    "accepted the connection but gave no health answer within {}",
                    humantime::format_duration(PROBE_TIMEOUT)
                )),
            }
        };
        let (fut, abort) = futures::future::abortable(fut);
        let task = async move { fut.await.ok().map(|r| Event::Probed(addr, generation, r)) };
        (Box::pin(task), abort)
    }

    fn publish(&self, settled: bool, slots: &HashMap<SocketAddr, Slot>, empty: Option<&str>) {
        let ready = slots
            .values()
            .filter(|s| matches!(s.phase, Phase::Up))
            .count();
        let why = match empty {
            Some(why) => why.to_string(),
            None if ready == 0 => {
                let mut v: Vec<String> = slots
                    .iter()
                    .filter(|(_, s)| !s.why.is_empty())
                    .map(|(a, s)| format!("{a}: {}", s.why))
                    .collect();
                v.sort();
                v.truncate(3);
                format!(
                    "none of the {} addresses of {} answers ({})",
                    slots.len(),
                    self.shown,
                    v.join("; ")
                )
            }
            None => String::new(),
        };
        self.state.send_if_modified(|s| {
            let changed = s.settled != settled || s.ready != ready || s.why != why;
            s.settled = settled;
            s.ready = ready;
            s.why = why;
            changed
        });
    }
}

/// Queues `change`, dropping an earlier one to the same address that it supersedes.
fn queue(
    pending: &mut VecDeque<Change<SocketAddr, Endpoint>>,
    change: Change<SocketAddr, Endpoint>,
) {
    let addr = |c: &Change<SocketAddr, Endpoint>| match c {
        Change::Insert(a, _) | Change::Remove(a) => *a,
    };
    let a = addr(&change);
    pending.retain(|c| addr(c) != a);
    pending.push_back(change);
}

/// Waits on a replica's health watch until it stops saying SERVING.
fn watch_health(addr: SocketAddr, generation: u64, health: Box<Health>) -> (Task, AbortHandle) {
    let (client, mut stream) = *health;
    let fut = async move {
        // The watch's connection lives as long as its client.
        let _client = client;
        loop {
            match stream.message().await {
                Ok(Some(m)) if m.status() == ServingStatus::Serving => {}
                Ok(Some(m)) => return format!("reports {}", m.status().as_str_name()),
                Ok(None) => return "closed its health watch".to_string(),
                Err(s) => return describe(&s),
            }
        }
    };
    let (fut, abort) = futures::future::abortable(fut);
    let task = async move { fut.await.ok().map(|why| Event::Down(addr, generation, why)) };
    (Box::pin(task), abort)
}

/// A status from a probe, with its cause ("transport error: tcp connect error: Connection
/// refused").
fn describe(s: &tonic::Status) -> String {
    use std::error::Error as _;
    let mut out = s.message().to_string();
    let mut cur = s.source();
    while let Some(e) = cur {
        let t = e.to_string();
        if !out.contains(&t) {
            out.push_str(": ");
            out.push_str(&t);
        }
        cur = e.source();
    }
    out
}
