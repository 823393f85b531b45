//! Hardened Docker sandboxes: the container configuration and its refusals ([`config`]), the
//! lazily connected engine ([`engine`]), sandbox containers and their profiles
//! ([`container`]), calls run in them ([`exec`], [`call`]) through their agent ([`agent`]) or
//! `docker exec`, warm pools ([`pool`]), the sandboxes of each run ([`runs`]), capped and
//! redacted output ([`output`]) and the guard that removes a container whatever happens
//! ([`guard`]).
//!
//! Every container is made by [`container::Factory::create`] through [`config::build`],
//! which refuses privileged mode, added capabilities and the Docker socket.

pub mod agent;
pub mod backend;
pub mod call;
pub mod config;
pub mod container;
pub mod docker;
pub mod engine;
pub mod exec;
pub mod guard;
pub mod output;
pub mod pool;
pub mod runs;
pub mod runtime;

pub use backend::Backend;
pub use config::{Limits, Refused, SandboxSpec};
pub use engine::Engine;
pub use guard::Cleanup;
pub use runtime::Runtimes;
