//! The `bridle` binary from outside: what it prints and how it exits, against real servers.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod apply;
mod audit;
mod config;
mod dev;
mod support;
mod tls;
