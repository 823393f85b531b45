//! What a sandbox is made of: its profile (image, limits, runtime, egress, main process). The
//! tool kinds ask for one, pools keep warm sandboxes by it and backends create from it (see
//! [`super::backend::Backend::create`]), so it sits below all of them.

use sha2::{Digest as _, Sha256};

use super::config::Limits;

/// What makes two sandboxes interchangeable: a warm one of the same profile can serve any
/// run's call. Per-call things (argv, environment, secrets, allowlist) are not part of it.
#[derive(Clone, Debug)]
pub struct Profile {
    pub image: String,
    pub limits: Limits,
    pub runtime: Option<String>,
    /// Has the egress socket and forwarder.
    pub egress: bool,
    /// The main process: an idle wait, or an MCP stdio server.
    pub main: Vec<String>,
    /// Its environment (plain values only: warm sandboxes exist before any secret is known).
    pub main_env: Vec<(String, String)>,
    /// The main process's stdio is attached (MCP servers).
    pub stdio: bool,
    pub key: String,
}

/// The idle main process of sandboxes that run calls through their backend (those without an
/// agent; see [`super::agent`]).
const IDLE: &[&str] = &["sleep", "infinity"];

impl Profile {
    /// Calls run through an agent as the main process (when the image can run it).
    pub fn uses_agent(&self) -> bool {
        !self.stdio
    }

    /// A sandbox of this profile sees mounts made on the host after it started, so it can be
    /// started ahead of its run (see [`super::runtime::shares_host_mounts`]).
    pub fn can_be_warm(&self) -> bool {
        super::runtime::shares_host_mounts(self.runtime.as_deref())
    }

    /// A sandbox for `container` and `code` calls.
    pub fn idle(image: &str, limits: Limits, runtime: Option<String>, egress: bool) -> Self {
        Self::new(
            image,
            limits,
            runtime,
            egress,
            IDLE.iter().map(|s| s.to_string()).collect(),
            vec![],
            false,
        )
    }

    /// A sandbox whose main process is an MCP stdio server.
    pub fn server(
        image: &str,
        limits: Limits,
        runtime: Option<String>,
        egress: bool,
        argv: Vec<String>,
        env: Vec<(String, String)>,
    ) -> Self {
        Self::new(image, limits, runtime, egress, argv, env, true)
    }

    fn new(
        image: &str,
        limits: Limits,
        runtime: Option<String>,
        egress: bool,
        main: Vec<String>,
        main_env: Vec<(String, String)>,
        stdio: bool,
    ) -> Self {
        let mut h = Sha256::new();
        h.update(
            format!("{image}\0{limits:?}\0{runtime:?}\0{egress}\0{main:?}\0{main_env:?}\0{stdio}")
                .as_bytes(),
        );
        Self {
            image: image.to_string(),
            limits,
            runtime,
            egress,
            main,
            main_env,
            stdio,
            key: hex::encode(&h.finalize()[..8]),
        }
    }
}
