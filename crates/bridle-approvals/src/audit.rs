//! The audit trail as a log to trim and to read out: entries older than the retention are
//! dropped (by stream id, whose first part is the append time in ms on Redis's clock), and
//! `bridle audit export` reads a time window page by page, resumable from any entry id.
//!
//! The stream is only ever appended to by the scripts in `lua/`; nothing here writes an entry.

use std::collections::BTreeMap;

use bridle_core::redis_util::RedisConn;
use redis::streams::StreamRangeReply;

use bridle_core::redis_util::Keys;

use crate::Error;
use crate::keys::ApprovalKeys;

/// One audit record: its stream id and its fields (time, action, tenant, agent, run, step,
/// call, tool, args_sha256, decision, reason, approval, actor).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Entry {
    pub id: String,
    #[serde(flatten)]
    pub fields: BTreeMap<String, String>,
}

/// A stream entry id (`<ms>-<seq>`), parsed so a bad `--after` is refused before any read.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct EntryId {
    pub ms: u64,
    pub seq: u64,
}

impl EntryId {
    pub fn parse(s: &str) -> Result<Self, String> {
        let (ms, seq) = s.split_once('-').unwrap_or((s, "0"));
        match (ms.parse(), seq.parse()) {
            (Ok(ms), Ok(seq)) => Ok(Self { ms, seq }),
            _ => Err(format!(
                "'{}' is not a stream id (expected <milliseconds>-<sequence>, as printed by a previous export)",
                bridle_core::redact::quote(s)
            )),
        }
    }
}

impl std::fmt::Display for EntryId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}-{}", self.ms, self.seq)
    }
}

#[derive(Clone)]
pub struct AuditLog {
    conn: RedisConn,
    key: String,
}

impl AuditLog {
    pub fn new(conn: RedisConn, keys: &Keys) -> Self {
        Self {
            conn,
            key: ApprovalKeys::new(keys).audit(),
        }
    }

    /// Drops every entry appended before `before_ms`; returns how many went.
    pub async fn trim_before(&self, before_ms: u64) -> Result<u64, Error> {
        let mut c = self.conn.clone();
        // Exact, not `~`: the sweep runs often, so each call removes few entries, and what an
        // export sees must not depend on how Redis packed the stream.
        let n: u64 = redis::cmd("XTRIM")
            .arg(&self.key)
            .arg("MINID")
            .arg(before_ms)
            .query_async(&mut c)
            .await
            .map_err(bridle_core::Error::from)?;
        Ok(n)
    }

    /// Up to `count` entries after `after` (exclusive; from the start of `since_ms` when
    /// none), appended before `until_ms` (exclusive; no end when none).
    pub async fn read(
        &self,
        since_ms: u64,
        after: Option<EntryId>,
        until_ms: Option<u64>,
        count: usize,
    ) -> Result<Vec<Entry>, Error> {
        let start = match after {
            Some(a)
                if a >= (EntryId {
                    ms: since_ms,
                    seq: 0,
                }) =>
            {
                format!("({a}")
            }
            _ => format!("{since_ms}-0"),
        };
        let end = match until_ms {
            // `(` excludes the end id; ids at until_ms-max are still in.
            Some(0) => return Ok(Vec::new()),
            Some(u) => format!("({u}-0"),
            None => "+".to_string(),
        };
        let mut c = self.conn.clone();
        let reply: StreamRangeReply = redis::cmd("XRANGE")
            .arg(&self.key)
            .arg(start)
            .arg(end)
            .arg("COUNT")
            .arg(count.max(1))
            .query_async(&mut c)
            .await
            .map_err(bridle_core::Error::from)?;
        Ok(reply
            .ids
            .into_iter()
            .map(|sid| Entry {
                fields: sid
                    .map
                    .keys()
                    .map(|k| (k.clone(), sid.get::<String>(k).unwrap_or_default()))
                    .collect(),
                id: sid.id,
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::EntryId;

    #[test]
    fn entry_ids_parse_and_bad_ones_are_named() {
        assert_eq!(
            EntryId::parse("1700000000000-3").unwrap(),
            EntryId {
                ms: 1_700_000_000_000,
                seq: 3
            }
        );
        assert_eq!(EntryId::parse("17").unwrap().to_string(), "17-0");
        let e = EntryId::parse("yesterday").unwrap_err();
        assert!(e.contains("'yesterday' is not a stream id"), "{e}");
    }
}
