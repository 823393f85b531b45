//! The tool service against real Redis, the real Docker engine with the locally built sandbox
//! image, and (for secrets) a real OpenBao behind the real secrets broker.

// Helpers outside #[test] functions are test code too.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod boundary;
mod execute;
mod hardening;
mod helpers;
mod hostile;
mod idempotency;
mod lifecycle;
mod mcp;
mod net;
mod pool;
mod quota;
mod secrets_and_list;
mod workspace;
