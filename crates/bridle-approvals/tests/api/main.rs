//! The approvals service in process, against a real redis-server per test.

// Helpers outside #[test] functions are test code too (clippy.toml only exempts the latter).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod audit;
mod audit_retention;
mod bounds;
mod browser;
mod decide;
mod duties;
mod evaluate;
mod expiry;
mod helpers;
mod inbox;
mod inbox_edges;
mod inbox_oidc;
mod list;
mod policies;
mod retention;
mod watch;
mod webhook;
