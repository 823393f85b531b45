//! Watch: approval events with offset > n, then new ones as they happen.
//!
//! Offsets are dense: the scripts write event n at stream entry id `0-n`. A watcher that saw
//! offset n and reconnects with `from_offset = n` gets n+1 onwards: nothing missed or repeated.
//!
//! Events older than `approval_retention` are trimmed (see `Store::trim_events`). A watcher
//! asking for events that are gone is never served the rest as if nothing were missing: it
//! gets OUT_OF_RANGE naming the first offset still kept (in the message and in the
//! `bridle-first-offset` metadata entry), at the call when it asks for too old an offset, or
//! in the stream when a trim overtakes a slow reader (dense offsets make any gap visible).
//! It then decides how to make up for what it missed (the orchestrator re-checks every run
//! waiting on an approval) and watches again from `first - 1`.

use std::collections::HashMap;
use std::time::Duration;

use bridle_core::redis_util::RedisConn;
use bridle_proto::{ApprovalEvent, ApprovalEventKind};
use futures::Stream;
use tokio_util::sync::CancellationToken;
use tonic::Status;

use crate::keys::ApprovalKeys;
use crate::store::Store;
use crate::{Error, record};

/// How long one XREAD waits for new events before it asks again.
const BLOCK: Duration = Duration::from_secs(5);
/// The watch connection must outlast a blocked XREAD.
pub const RESPONSE_TIMEOUT: Duration = Duration::from_secs(15);
const BATCH: usize = 200;

type Entry = (String, HashMap<String, String>);

/// The metadata entry of an OUT_OF_RANGE answer that holds the first offset still kept.
pub const FIRST_OFFSET: &str = "bridle-first-offset";

/// The answer to a watcher whose next event (`after` + 1) has been trimmed.
pub fn out_of_range(after: u64, first: u64) -> Status {
    let mut md = tonic::metadata::MetadataMap::new();
    md.insert(FIRST_OFFSET, first.into());
    Status::with_metadata(
        tonic::Code::OutOfRange,
        format!(
            "approval events after offset {after} up to {} are no longer kept (events are \
             dropped approval_retention after they happen); the first kept event is offset \
             {first}: make up for the missed ones, then watch from offset {}",
            first - 1,
            first - 1
        ),
        md,
    )
}

pub(crate) fn offset_of(id: &str) -> Option<u64> {
    id.strip_prefix("0-")?.parse().ok()
}

fn parse(entry: &Entry) -> Result<ApprovalEvent, Error> {
    let (id, fields) = entry;
    let broken = |what: &str| {
        Error::Core(bridle_core::Error::internal(format!(
            "approval event {id}: {what}"
        )))
    };
    let offset = offset_of(id).ok_or_else(|| broken("entry id is not 0-<offset>"))?;
    let kind = match fields.get("kind").map(String::as_str) {
        Some("created") => ApprovalEventKind::Created,
        Some("decided") => ApprovalEventKind::Decided,
        Some("expired") => ApprovalEventKind::Expired,
        _ => return Err(broken("unknown kind")),
    };
    Ok(ApprovalEvent {
        offset,
        kind: kind as i32,
        approval: Some(record::from_fields(fields)?),
    })
}

async fn read(
    conn: &mut RedisConn,
    key: &str,
    after: u64,
    follow: bool,
) -> Result<Vec<Entry>, Error> {
    if follow {
        let reply: Option<Vec<(String, Vec<Entry>)>> = redis::cmd("XREAD")
            .arg("COUNT")
            .arg(BATCH)
            .arg("BLOCK")
            .arg(BLOCK.as_millis() as u64)
            .arg("STREAMS")
            .arg(key)
            .arg(format!("0-{after}"))
            .query_async(conn)
            .await?;
        Ok(reply
            .into_iter()
            .flatten()
            .flat_map(|(_, entries)| entries)
            .collect())
    } else {
        Ok(redis::cmd("XRANGE")
            .arg(key)
            .arg(format!("(0-{after}"))
            .arg("+")
            .arg("COUNT")
            .arg(BATCH)
            .query_async(conn)
            .await?)
    }
}

/// Refuses, with OUT_OF_RANGE, a watch from an offset whose next event was trimmed.
pub async fn check_from(
    conn: &mut RedisConn,
    keys: &ApprovalKeys,
    from_offset: u64,
) -> Result<(), Status> {
    let first = Store::first_offset(conn, keys)
        .await
        .map_err(Status::from)?;
    if from_offset.saturating_add(1) < first {
        tracing::info!(
            from_offset,
            first,
            "a watcher asked for approval events that are no longer kept"
        );
        return Err(out_of_range(from_offset, first));
    }
    Ok(())
}

/// The event stream of one Watch call. It ends when `stop` fires (service shutdown) and is
/// dropped, with its connection, when the client goes away.
pub fn events(
    key: String,
    mut conn: RedisConn,
    from_offset: u64,
    tenant: Option<String>,
    stop: CancellationToken,
) -> impl Stream<Item = Result<ApprovalEvent, Status>> + Send + 'static {
    async_stream::try_stream! {
        let mut last = from_offset;
        // Catch up with XRANGE, then follow with blocking XREADs.
        let mut follow = false;
        loop {
            let read = tokio::select! {
                _ = stop.cancelled() => break,
                r = read(&mut conn, &key, last, follow) => r,
            };
            let entries = read.map_err(|e| {
                tracing::warn!(from = last, "watch ends: {e}");
                Status::from(e)
            })?;
            if entries.is_empty() {
                follow = true;
                continue;
            }
            for entry in &entries {
                let event = parse(entry).map_err(Status::from)?;
                if event.offset > last.saturating_add(1) {
                    // Trimmed while this watcher was behind: never skip over a gap silently.
                    tracing::info!(after = last, first = event.offset, "a watcher fell behind the approval event retention");
                    Err::<(), Status>(out_of_range(last, event.offset))?;
                }
                last = event.offset;
                let wanted = match (&tenant, &event.approval) {
                    (None, _) => true,
                    (Some(t), Some(a)) => &a.tenant == t,
                    (Some(_), None) => false,
                };
                if wanted {
                    yield event;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets_are_entry_sequence_numbers() {
        assert_eq!(offset_of("0-1"), Some(1));
        assert_eq!(offset_of("0-18446744073709551615"), Some(u64::MAX));
        assert_eq!(offset_of("1700000000000-0"), None);
        assert!(
            parse(&("0-1".into(), HashMap::new()))
                .unwrap_err()
                .to_string()
                .contains("0-1")
        );
    }
}
