//! When to try the same target again: exponential backoff with jitter, and the provider's
//! own `retry-after` when it sends one.

use std::time::Duration;

use rand::Rng as _;
use reqwest::header::HeaderMap;

/// Longest `retry-after` taken from a provider; anything longer is as good as "not soon".
const MAX_RETRY_AFTER: Duration = Duration::from_secs(3600);

/// The provider's requested wait: `retry-after-ms` (OpenAI sends it), else `retry-after` in
/// seconds. HTTP dates are not used by model providers and are ignored.
pub fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let get = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .and_then(|s| s.trim().parse::<f64>().ok())
    };
    let secs = get("retry-after-ms")
        .map(|ms| ms / 1000.0)
        .or_else(|| get("retry-after"))?;
    if !secs.is_finite() || secs < 0.0 {
        return None;
    }
    Some(Duration::from_secs_f64(
        secs.min(MAX_RETRY_AFTER.as_secs_f64()),
    ))
}

/// Backoff before retry number `retry` (0 for the first): `base * 2^retry`, capped at `max`,
/// then a random point in its upper half, so clients that failed together do not retry
/// together.
pub fn backoff(base: Duration, max: Duration, retry: u32) -> Duration {
    let exp = base
        .saturating_mul(2u32.saturating_pow(retry.min(16)))
        .min(max);
    let half = exp / 2;
    let jitter_ns = rand::rng().random_range(0..=half.as_nanos().min(u128::from(u64::MAX)) as u64);
    half + Duration::from_nanos(jitter_ns)
}

/// The wait before the next try, or None when it should not happen: the provider asks for
/// longer than `max`, or the wait would not end before the deadline.
pub fn next_wait(
    backoff: Duration,
    retry_after: Option<Duration>,
    max: Duration,
    remaining: Duration,
) -> Option<Duration> {
    if retry_after.is_some_and(|r| r > max) {
        return None;
    }
    let wait = backoff.max(retry_after.unwrap_or_default());
    (wait < remaining).then_some(wait)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_reads_seconds_and_milliseconds() {
        let mut h = HeaderMap::new();
        assert_eq!(retry_after(&h), None);
        h.insert("retry-after", "2".parse().unwrap());
        assert_eq!(retry_after(&h), Some(Duration::from_secs(2)));
        h.insert("retry-after-ms", "1500".parse().unwrap());
        assert_eq!(retry_after(&h), Some(Duration::from_millis(1500)));
        let mut h = HeaderMap::new();
        h.insert(
            "retry-after",
            "Wed, 21 Oct 2015 07:28:00 GMT".parse().unwrap(),
        );
        assert_eq!(retry_after(&h), None);
        h.insert("retry-after", "-3".parse().unwrap());
        assert_eq!(retry_after(&h), None);
    }

    #[test]
    fn backoff_doubles_within_jitter_and_cap() {
        let base = Duration::from_millis(100);
        let max = Duration::from_secs(1);
        for _ in 0..50 {
            let b0 = backoff(base, max, 0);
            assert!(b0 >= Duration::from_millis(50) && b0 <= base, "{b0:?}");
            let b2 = backoff(base, max, 2);
            assert!(
                b2 >= Duration::from_millis(200) && b2 <= Duration::from_millis(400),
                "{b2:?}"
            );
            let b9 = backoff(base, max, 9);
            assert!(b9 >= max / 2 && b9 <= max, "{b9:?}");
        }
        assert!(backoff(base, max, u32::MAX) <= max);
    }

    #[test]
    fn waits_honour_retry_after_the_cap_and_the_deadline() {
        let s = Duration::from_secs;
        assert_eq!(next_wait(s(1), None, s(20), s(60)), Some(s(1)));
        assert_eq!(next_wait(s(1), Some(s(3)), s(20), s(60)), Some(s(3)));
        assert_eq!(
            next_wait(s(1), Some(s(30)), s(20), s(60)),
            None,
            "longer than the cap: fail over"
        );
        assert_eq!(
            next_wait(s(1), Some(s(5)), s(20), s(4)),
            None,
            "past the deadline"
        );
    }
}
