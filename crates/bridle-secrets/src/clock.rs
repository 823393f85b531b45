//! The time the cache and the lease keeper read: the system's monotonic clock, or one a test
//! moves by hand, so a test of expiry says "a TTL later" instead of sleeping through it and
//! depending on how fast the machine is.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Cheap to clone; clones share one time.
#[derive(Clone, Default)]
pub struct Clock(Option<Arc<Manual>>);

struct Manual {
    start: Instant,
    moved: Mutex<Duration>,
}

impl Clock {
    /// The system's monotonic clock (what a service runs with).
    pub fn system() -> Self {
        Self(None)
    }

    /// A clock that stands still until [`Clock::advance`] moves it (for tests).
    pub fn manual() -> Self {
        Self(Some(Arc::new(Manual {
            start: Instant::now(),
            moved: Mutex::new(Duration::ZERO),
        })))
    }

    pub fn now(&self) -> Instant {
        match &self.0 {
            None => Instant::now(),
            Some(m) => m.start + *m.moved.lock().unwrap_or_else(|e| e.into_inner()),
        }
    }

    /// Moves a manual clock forward; the system clock moves by itself, so nothing changes.
    pub fn advance(&self, by: Duration) {
        if let Some(m) = &self.0 {
            *m.moved.lock().unwrap_or_else(|e| e.into_inner()) += by;
        }
    }
}

impl std::fmt::Debug for Clock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_some() {
            "Clock(manual)"
        } else {
            "Clock(system)"
        })
    }
}
