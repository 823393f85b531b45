//! Hardened sandboxes: sandboxes ([`container`]) and their profiles ([`profile`]), calls run
//! in them ([`exec`], [`call`]) through their agent ([`agent`]) or their backend, warm pools
//! ([`pool`]), the sandboxes of each run ([`runs`]), capped and redacted output ([`output`])
//! and the guard that removes a sandbox whatever happens ([`backend::guard`]).
//!
//! Every engine operation a sandbox needs (create and start it, run a call without an agent,
//! look at its state and processes, remove it, find the service's sandboxes by label) goes
//! through one trait, [`backend::Backend`], so that the tool kinds, runs, pools, calls and
//! EndRun never name an engine and another backend can be added beside Docker's. The one
//! implementation is [`docker::DockerBackend`], over the lazily connected engine
//! ([`engine`]), with the container configuration and its refusals in [`config`].
//!
//! Every sandbox is made by [`container::Factory::create`] through [`Backend::create`]; the
//! Docker backend builds each container through [`config::build`], which refuses privileged
//! mode, added capabilities and the Docker socket.

pub mod agent;
pub mod backend;
pub mod call;
pub mod checks;
pub mod config;
pub mod container;
pub mod docker;
pub mod engine;
pub mod exec;
pub mod output;
pub mod pool;
pub mod profile;
pub mod runs;
pub mod runtime;

pub use backend::{Backend, Cleanup};
pub use config::{Limits, Refused, SandboxSpec};
pub use engine::Engine;
pub use runtime::Runtimes;
