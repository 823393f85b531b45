//! The broker against real servers: an OpenBao dev server (with a file audit device, to count
//! what Vault really received), Redis for its bindings and lease records, and a Redis that a
//! dynamic database engine makes users in.

// Helpers outside #[test] functions are test code too.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod auth;
mod cache;
mod helpers;
mod leases;
mod resolve;
