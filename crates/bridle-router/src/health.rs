//! What each router replica knows of its targets' health: a circuit breaker per target and an
//! exponentially weighted moving average of its latency.
//!
//! Both live in this process's memory, per (tenant, route, target): replicas do not share
//! them. A breaker protects the caller from a target that keeps failing, and each replica
//! learns that within a few calls of its own; sharing it through Redis would put a round trip
//! on every try for little gain.
//!
//! Breaker: `closed` until `failures` consecutive unhealthy tries (5xx, 429, no connection, a
//! timeout, a malformed or truncated answer); then `open` for `cooldown`, when the target is
//! skipped; then `half_open`, when one call at a time may probe it: success closes the
//! breaker, an unhealthy failure opens it again.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Weight of the newest sample in the latency average.
const EWMA_ALPHA: f64 = 0.3;
/// Entries kept at most; past it, the least recently used half is dropped.
const MAX_ENTRIES: usize = 16_384;

#[derive(Clone, Copy, Debug)]
pub struct BreakerConfig {
    /// Consecutive unhealthy tries that open the breaker; 0 turns breakers off.
    pub failures: u32,
    pub cooldown: Duration,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum State {
    Closed,
    Open { until: Instant },
    HalfOpen,
}

#[derive(Debug)]
struct Entry {
    state: State,
    failures: u32,
    probing: bool,
    ewma_ms: Option<f64>,
    used: Instant,
}

impl Entry {
    fn new(now: Instant) -> Self {
        Self {
            state: State::Closed,
            failures: 0,
            probing: false,
            ewma_ms: None,
            used: now,
        }
    }
}

/// May a call try this target now?
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Admit {
    Yes,
    /// Yes, as the one probe of a half-open breaker: report how it went.
    Probe,
    /// No: the breaker is open (for about this long), or another call is probing it.
    No(Duration),
}

/// How a try went, for the breaker.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    Success(Duration),
    /// The target is unhealthy.
    Unhealthy,
    /// It failed in a way that says nothing of the target (a refused request, a missing key,
    /// a caller that went away).
    Neutral,
}

type Key = (String, String, String);

pub struct Health {
    cfg: BreakerConfig,
    entries: Mutex<HashMap<Key, Entry>>,
}

fn key(tenant: &str, route: &str, target: &str) -> Key {
    (tenant.to_string(), route.to_string(), target.to_string())
}

impl Health {
    pub fn new(cfg: BreakerConfig) -> Self {
        Self {
            cfg,
            entries: Mutex::new(HashMap::new()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Key, Entry>> {
        self.entries.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn admit(&self, tenant: &str, route: &str, target: &str, now: Instant) -> Admit {
        if self.cfg.failures == 0 {
            return Admit::Yes;
        }
        let mut map = self.lock();
        let Some(e) = map.get_mut(&key(tenant, route, target)) else {
            return Admit::Yes;
        };
        e.used = now;
        match e.state {
            State::Closed => Admit::Yes,
            State::Open { until } if now < until => Admit::No(until - now),
            State::Open { .. } | State::HalfOpen if !e.probing => {
                e.state = State::HalfOpen;
                e.probing = true;
                Admit::Probe
            }
            // Half-open with a probe in flight: wait for its verdict.
            State::Open { .. } | State::HalfOpen => Admit::No(Duration::ZERO),
        }
    }

    /// Records a try. Returns true when the target's breaker is open afterwards.
    pub fn record(
        &self,
        tenant: &str,
        route: &str,
        target: &str,
        outcome: Outcome,
        now: Instant,
    ) -> bool {
        let mut map = self.lock();
        if map.len() >= MAX_ENTRIES {
            evict(&mut map);
        }
        let e = map
            .entry(key(tenant, route, target))
            .or_insert_with(|| Entry::new(now));
        e.used = now;
        let unhealthy = matches!(outcome, Outcome::Unhealthy);
        match outcome {
            Outcome::Success(took) => {
                let ms = took.as_secs_f64() * 1000.0;
                e.ewma_ms = Some(match e.ewma_ms {
                    Some(old) => old + EWMA_ALPHA * (ms - old),
                    None => ms,
                });
                e.state = State::Closed;
                e.failures = 0;
                e.probing = false;
            }
            Outcome::Unhealthy => {
                e.failures = e.failures.saturating_add(1);
                let probe_failed = e.state == State::HalfOpen;
                if self.cfg.failures > 0 && (probe_failed || e.failures >= self.cfg.failures) {
                    e.state = State::Open {
                        until: now + self.cfg.cooldown,
                    };
                }
                e.probing = false;
            }
            Outcome::Neutral => e.probing = false,
        }
        let m = bridle_core::metrics::metrics();
        let attrs = [
            opentelemetry::KeyValue::new("bridle.route", route.to_string()),
            opentelemetry::KeyValue::new("bridle.target", target.to_string()),
        ];
        if unhealthy {
            m.provider_errors.add(1, &attrs);
        }
        let state = match e.state {
            State::Closed => 0,
            State::HalfOpen => 1,
            State::Open { .. } => 2,
        };
        m.breaker_state.record(state, &attrs);
        matches!(e.state, State::Open { .. })
    }

    /// A probe ended without a verdict (or after one was recorded, harmlessly): the next call
    /// may probe.
    pub fn end_probe(&self, tenant: &str, route: &str, target: &str) {
        if let Some(e) = self.lock().get_mut(&key(tenant, route, target)) {
            e.probing = false;
        }
    }

    /// "closed", "open" or "half_open", as ListModels reports it.
    pub fn state(
        &self,
        tenant: &str,
        route: &str,
        target: &str,
        now: Instant,
    ) -> bridle_proto::BreakerState {
        use bridle_proto::BreakerState as B;
        match self
            .lock()
            .get(&key(tenant, route, target))
            .map(|e| e.state)
        {
            None | Some(State::Closed) => B::Closed,
            Some(State::Open { until }) if now < until => B::Open,
            Some(State::Open { .. }) | Some(State::HalfOpen) => B::HalfOpen,
        }
    }

    /// The target's latency average, None until it has answered once.
    pub fn latency_ms(&self, tenant: &str, route: &str, target: &str) -> Option<f64> {
        self.lock()
            .get(&key(tenant, route, target))
            .and_then(|e| e.ewma_ms)
    }
}

fn evict(map: &mut HashMap<Key, Entry>) {
    let mut used: Vec<Instant> = map.values().map(|e| e.used).collect();
    used.sort_unstable();
    let cut = used[used.len() / 2];
    map.retain(|_, e| e.used > cut);
}

#[cfg(test)]
mod tests {
    use super::*;
    use bridle_proto::BreakerState as B;

    const S: Duration = Duration::from_secs(1);

    fn health() -> Health {
        Health::new(BreakerConfig {
            failures: 3,
            cooldown: Duration::from_secs(10),
        })
    }

    #[test]
    fn opens_after_consecutive_failures_then_probes_once_and_closes() {
        let h = health();
        let t0 = Instant::now();
        let rec = |o, t| h.record("t", "r", "a", o, t);
        assert!(!rec(Outcome::Unhealthy, t0));
        assert!(!rec(Outcome::Unhealthy, t0));
        // A success in between resets the count.
        assert!(!rec(Outcome::Success(S), t0));
        assert!(!rec(Outcome::Unhealthy, t0));
        assert!(!rec(Outcome::Neutral, t0), "neutral failures do not count");
        assert!(!rec(Outcome::Unhealthy, t0));
        assert!(rec(Outcome::Unhealthy, t0), "third in a row opens it");
        assert_eq!(h.state("t", "r", "a", t0), B::Open);
        assert_eq!(h.admit("t", "r", "a", t0 + S), Admit::No(9 * S));
        assert_eq!(h.admit("t", "r", "other", t0), Admit::Yes);
        assert_eq!(h.admit("u", "r", "a", t0), Admit::Yes, "tenants apart");

        let later = t0 + Duration::from_secs(10);
        assert_eq!(h.state("t", "r", "a", later), B::HalfOpen);
        assert_eq!(h.admit("t", "r", "a", later), Admit::Probe);
        assert_eq!(
            h.admit("t", "r", "a", later),
            Admit::No(Duration::ZERO),
            "one probe at a time"
        );
        assert!(!rec(Outcome::Success(S), later));
        assert_eq!(h.state("t", "r", "a", later), B::Closed);
        assert_eq!(h.admit("t", "r", "a", later), Admit::Yes);
    }

    #[test]
    fn a_failed_probe_reopens_at_once() {
        let h = health();
        let t0 = Instant::now();
        for _ in 0..3 {
            h.record("t", "r", "a", Outcome::Unhealthy, t0);
        }
        let later = t0 + Duration::from_secs(11);
        assert_eq!(h.admit("t", "r", "a", later), Admit::Probe);
        assert!(h.record("t", "r", "a", Outcome::Unhealthy, later));
        assert_eq!(
            h.admit("t", "r", "a", later + S),
            Admit::No(Duration::from_secs(9))
        );
        // A probe that ended neutrally, or was abandoned, lets the next call probe.
        let again = later + Duration::from_secs(10);
        assert_eq!(h.admit("t", "r", "a", again), Admit::Probe);
        h.record("t", "r", "a", Outcome::Neutral, again);
        assert_eq!(h.admit("t", "r", "a", again), Admit::Probe);
        h.end_probe("t", "r", "a");
        assert_eq!(h.admit("t", "r", "a", again), Admit::Probe);
    }

    #[test]
    fn latency_is_a_moving_average_and_breakers_can_be_off() {
        let h = Health::new(BreakerConfig {
            failures: 0,
            cooldown: S,
        });
        let t0 = Instant::now();
        assert_eq!(h.latency_ms("t", "r", "a"), None);
        h.record(
            "t",
            "r",
            "a",
            Outcome::Success(Duration::from_millis(100)),
            t0,
        );
        h.record(
            "t",
            "r",
            "a",
            Outcome::Success(Duration::from_millis(200)),
            t0,
        );
        let l = h.latency_ms("t", "r", "a").unwrap();
        assert!((l - 130.0).abs() < 1e-9, "{l}");
        for _ in 0..10 {
            assert!(!h.record("t", "r", "a", Outcome::Unhealthy, t0));
        }
        assert_eq!(h.admit("t", "r", "a", t0), Admit::Yes);
    }
}
