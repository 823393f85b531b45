//! The router against real Redis, a real OpenBao behind the real secrets broker, and mock
//! OpenAI and Anthropic servers that speak the real wire formats; router replicas as separate
//! processes; the HTTP fronts driven by the official Python SDKs.

// Test helpers fail loudly: a setup that cannot run should stop the test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod anthropic;
mod auth;
mod bad_input;
mod breaker;
mod budgets;
mod complete;
mod discovery;
mod failover;
mod gateway;
mod gateway_input;
mod helpers;
mod limits;
mod long_input;
mod replicas;
mod responses;
mod routes;
mod scripted;
mod strategies;
mod streaming;
