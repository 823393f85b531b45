//! Time helpers: protobuf timestamps and durations, and human-readable durations in options.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

pub fn ts_from_ms(ms: i64) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: ms.div_euclid(1000),
        nanos: (ms.rem_euclid(1000) * 1_000_000) as i32,
    }
}

pub fn ms_from_ts(ts: &prost_types::Timestamp) -> i64 {
    ts.seconds * 1000 + i64::from(ts.nanos) / 1_000_000
}

pub fn now_ts() -> prost_types::Timestamp {
    ts_from_ms(now_ms())
}

pub fn pb_duration(d: Duration) -> prost_types::Duration {
    prost_types::Duration {
        seconds: d.as_secs() as i64,
        nanos: d.subsec_nanos() as i32,
    }
}

/// A protobuf duration as a std one; negative or absent durations are `None`.
pub fn std_duration(d: Option<&prost_types::Duration>) -> Option<Duration> {
    let d = d?;
    if d.seconds < 0 || d.nanos < 0 || (d.seconds == 0 && d.nanos == 0) {
        return None;
    }
    Some(Duration::new(d.seconds as u64, d.nanos as u32))
}

pub fn pb_duration_ms(ms: i64) -> prost_types::Duration {
    pb_duration(Duration::from_millis(ms.max(0) as u64))
}

/// "1.2s", "340ms", "2m05s": short, for CLI output and logs.
pub fn short_duration(d: Duration) -> String {
    let ms = d.as_millis();
    if ms < 1000 {
        format!("{ms}ms")
    } else if ms < 60_000 {
        format!("{:.1}s", d.as_secs_f64())
    } else {
        let s = d.as_secs();
        format!("{}m{:02}s", s / 60, s % 60)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_round_trip() {
        for ms in [0, 1, 999, 1_700_000_000_123, -1] {
            assert_eq!(ms_from_ts(&ts_from_ms(ms)), ms);
        }
    }

    #[test]
    fn durations() {
        assert_eq!(short_duration(Duration::from_millis(340)), "340ms");
        assert_eq!(short_duration(Duration::from_millis(1240)), "1.2s");
        assert_eq!(short_duration(Duration::from_secs(125)), "2m05s");
        assert_eq!(
            std_duration(Some(&pb_duration(Duration::from_millis(1500)))),
            Some(Duration::from_millis(1500))
        );
        assert_eq!(std_duration(None), None);
    }
}
