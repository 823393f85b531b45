//! What every Bridle service shares: typed options and their layering, telemetry, graceful
//! shutdown, the gRPC server stack (health, reflection, timeouts, limits), clients between the
//! services, the error -> `tonic::Status` mapping, ids, manifests and their validation, the
//! Redis-backed manifest store, and redaction.
//!
//! This crate must never hold service logic, never print a secret (values are
//! `secrecy::SecretString` and the redactor scrubs text), and never panic on input.

pub mod auth;
pub mod client;
pub mod config;
pub mod error;
pub mod error_details;
pub mod genai;
pub mod http_client;
pub mod http_server;
pub mod ids;
pub mod manifest;
pub mod manifest_service;
pub mod metrics;
pub mod oidc;
pub mod paging;
pub mod peers;
pub mod prometheus;
pub mod redact;
pub mod redis_util;
pub mod rpc_telemetry;
pub mod server;
pub mod service;
pub mod shutdown;
pub mod store;
pub mod telemetry;
pub mod timeutil;
pub mod tls;
pub mod yaml;

pub use error::{Error, Result};
pub use shutdown::Shutdown;
