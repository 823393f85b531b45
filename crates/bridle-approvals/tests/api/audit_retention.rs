//! The audit trail is trimmed by age: the sweeper drops entries appended before
//! `audit_retention` (by their stream id's time) and nothing newer.

use std::time::Duration;

use crate::helpers::*;

fn now_ms() -> u64 {
    u64::try_from(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis(),
    )
    .unwrap()
}

#[tokio::test]
async fn the_sweeper_drops_only_audit_entries_older_than_the_retention() {
    let h = Harness::start_with(|o| {
        o.sweep_interval = Duration::from_millis(200);
        o.audit_retention = Duration::from_secs(3600);
    })
    .await;
    let mut r = h.redis().await;
    let now = now_ms();
    // Older entries first: stream ids only grow. Two past the retention, one well inside it.
    let mut kept = Vec::new();
    for (age_min, expect_kept) in [(180u64, false), (61, false), (50, true)] {
        let id: String = redis::cmd("XADD")
            .arg(h.keys.audit())
            .arg(format!("{}-0", now - age_min * 60_000))
            .arg("action")
            .arg(format!("seeded {age_min} minutes ago"))
            .query_async(&mut r)
            .await
            .unwrap();
        if expect_kept {
            kept.push(id);
        }
    }
    // A real evaluation appends a current entry.
    h.pending(&new_run(), "c1", "{}").await;

    let deadline = tokio::time::Instant::now() + WAIT;
    let ids = loop {
        let entries: Vec<(String, Vec<String>)> = redis::cmd("XRANGE")
            .arg(h.keys.audit())
            .arg("-")
            .arg("+")
            .query_async(&mut r)
            .await
            .unwrap();
        let ids: Vec<String> = entries.into_iter().map(|(id, _)| id).collect();
        if ids.len() == 2 || tokio::time::Instant::now() > deadline {
            break ids;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(ids.len(), 2, "{ids:?}");
    assert_eq!(ids[0], kept[0], "the 50-minute-old entry stays");
    let audit = h.audit().await;
    assert_eq!(audit[1]["action"], "evaluate", "{audit:?}");
    h.stop().await;
}
