//! The sandbox agent: calls without a `docker exec` each.
//!
//! A `docker exec` costs ~40 ms of engine work (the runtime starts a process in the
//! container's namespaces) and the engine runs them one after another, so 50 concurrent calls
//! took a second. Instead, a sandbox for `container` and `code` calls has as its main process
//! a small agent (`agent.py`, given to the image's `python3`): it connects to a socket this
//! service listens on in the sandbox's slot (`<slot>/agent`, mounted read-only at
//! `/run/bridle-agent`), and runs each call's command there, forked with its own pipes,
//! session and process group, under the container's limits, killing everything the call
//! started at the timeout, and reporting how the command ended and whether it left processes
//! behind.
//!
//! Isolation does not change: the agent runs as the sandbox's user under the container's
//! hardening (it can do nothing the tool's own code cannot), makes itself non-dumpable (the
//! tools, same user, cannot trace it or read its memory), and the service accepts one
//! connection per sandbox, then unlinks the socket: nothing else, in that sandbox or any
//! other, can reach it. The socket lives in the sandbox's own slot, mounted in that sandbox
//! only, so one run never sees another's.
//!
//! An image without `python3` (or where the agent cannot start) runs `sleep infinity` as
//! before, and its calls use `docker exec`; the image is remembered so its next sandboxes
//! start without trying.

mod run;
mod wire;

use std::collections::HashSet;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::BufReader;
use tokio::net::UnixListener;
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};

use super::backend::{Backend, OP_TIMEOUT};
use super::config::BindMount;

pub use run::call;

/// Where the slot's agent folder is mounted in the sandbox (agent.py's SOCKET is in it).
pub const DIR_IN_SANDBOX: &str = "/run/bridle-agent";
const SOCKET_NAME: &str = "agent.sock";

const AGENT_PY: &str = include_str!("agent.py");

/// The main process: the agent when the image has python3, else the idle wait. Running the
/// agent's source through `exec` turns any failure to start it (an old python, a missing
/// module) into the idle wait too, so the sandbox still works with `docker exec`.
const BOOT: &str = "command -v python3 >/dev/null 2>&1 && exec python3 -I -S -c \"$0\" \"$1\"; exec sleep infinity";
const TRAMPOLINE: &str = "import os, sys
try:
    exec(sys.argv[1], {'__name__': 'bridle_agent'})
except BaseException:
    pass
os.execvp('sleep', ['sleep', 'infinity'])
";

/// How long the first call waits for the agent to connect before asking the engine whether
/// it is starting at all; the wait doubles after each look, up to [`PROBE_MAX`]. An agent
/// connects well within the first wait; only an image without one (remembered after its first
/// sandbox) pays it. (A fixed 100 ms had 50 sandboxes starting at once ask `docker top` 500
/// times a second, which slowed the engine enough to make those starts take 15 s instead of 3.)
const PROBE_AFTER: Duration = Duration::from_secs(1);
const PROBE_MAX: Duration = Duration::from_secs(2);
/// How long a starting agent may take to connect before its sandbox uses `docker exec`.
const START_LIMIT: Duration = Duration::from_secs(15);

/// The main process's argv for a sandbox with an agent.
pub fn main_argv() -> Vec<String> {
    ["/bin/sh", "-c", BOOT, TRAMPOLINE, AGENT_PY]
        .iter()
        .map(|s| s.to_string())
        .collect()
}

/// The read-only mount of a slot's agent folder.
pub fn mount(dir: &Path) -> BindMount {
    BindMount {
        source: dir.to_string_lossy().into_owned(),
        target: DIR_IN_SANDBOX.into(),
        read_only: true,
        follows_host: false,
    }
}

/// Images whose sandboxes have no agent (no python3, or it could not start there): their
/// sandboxes start with the idle wait and are not waited for.
#[derive(Debug, Default)]
pub struct Agentless(Mutex<HashSet<String>>);

impl Agentless {
    pub fn contains(&self, image: &str) -> bool {
        self.set().contains(image)
    }

    pub fn insert(&self, image: &str) {
        if self.set().insert(image.to_string()) {
            tracing::info!(%image, "no sandbox agent in this image (it needs python3): its calls use docker exec");
        }
    }

    fn set(&self) -> std::sync::MutexGuard<'_, HashSet<String>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The sandbox a call through its agent runs in, as the agent's side needs it: the backend
/// that made it (to look at it and to remove it), its id, and its short id for logs.
#[derive(Clone, Copy)]
pub struct Target<'a> {
    pub backend: &'a dyn Backend,
    pub id: &'a str,
    pub short: &'a str,
}

/// This service's end of one sandbox's agent.
pub struct Link {
    path: PathBuf,
    image: String,
    agentless: Arc<Agentless>,
    state: tokio::sync::Mutex<State>,
}

enum State {
    /// Listening; the agent connects when the sandbox starts, and is accepted by the first
    /// call.
    Waiting(UnixListener),
    Ready(Conn),
    /// No agent: calls use `docker exec`.
    Absent,
    /// The agent went away (the sandbox is discarded after the call that saw it).
    Lost,
}

struct Conn {
    r: BufReader<OwnedReadHalf>,
    w: OwnedWriteHalf,
}

impl Link {
    /// Listens at `<dir>/agent.sock`, for a sandbox of `image` about to start.
    pub fn listen(dir: &Path, image: &str, agentless: Arc<Agentless>) -> std::io::Result<Self> {
        let path = dir.join(SOCKET_NAME);
        let listener = UnixListener::bind(&path)?;
        // The sandbox user connects through a read-only mount; the slot's parent keeps host
        // users out.
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o666))?;
        Ok(Self {
            path,
            image: image.to_string(),
            agentless,
            state: tokio::sync::Mutex::new(State::Waiting(listener)),
        })
    }

    /// Accepts the agent's connection, or finds that there is none.
    async fn connect(&self, listener: &UnixListener, sandbox: Target<'_>) -> State {
        let started = tokio::time::Instant::now();
        let mut wait = PROBE_AFTER;
        loop {
            match tokio::time::timeout(wait, listener.accept()).await {
                Ok(Ok((stream, _))) => return self.hello(stream).await,
                Ok(Err(e)) => {
                    tracing::warn!(sandbox = %sandbox.short, error = %e, "cannot accept the sandbox agent; using docker exec");
                    return State::Absent;
                }
                Err(_) if started.elapsed() > START_LIMIT => {
                    tracing::warn!(sandbox = %sandbox.short, "the sandbox agent did not connect within {START_LIMIT:?}; using docker exec");
                    return State::Absent;
                }
                Err(_) => match idle_main(sandbox).await {
                    // The image has no python3, or the agent failed to start.
                    Some(true) => {
                        self.agentless.insert(&self.image);
                        return State::Absent;
                    }
                    // The container is gone: docker exec will say so.
                    None => return State::Absent,
                    Some(false) => wait = (wait * 2).min(PROBE_MAX),
                },
            }
        }
    }

    async fn hello(&self, stream: tokio::net::UnixStream) -> State {
        let (r, w) = stream.into_split();
        let mut conn = Conn {
            r: BufReader::new(r),
            w,
        };
        let hello = tokio::time::timeout(OP_TIMEOUT, wire::read_frame(&mut conn.r)).await;
        match hello {
            Ok(Ok((wire::HELLO, body))) => match serde_json::from_slice::<wire::Hello>(&body) {
                Ok(h) if h.agent == "bridle" && h.version == 1 => State::Ready(conn),
                _ => {
                    tracing::warn!(image = %self.image, "the sandbox agent spoke another protocol; using docker exec");
                    State::Absent
                }
            },
            _ => {
                tracing::warn!(image = %self.image, "the sandbox agent connected but did not greet; using docker exec");
                State::Absent
            }
        }
    }
}

impl Drop for Link {
    fn drop(&mut self) {
        // Normally gone already (unlinked once the agent connected); the slot goes anyway.
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Whether the sandbox's main process is the idle wait (Some(true)), something else (the
/// agent still starting: Some(false)), or the container cannot be looked at (None).
async fn idle_main(sandbox: Target<'_>) -> Option<bool> {
    let processes = sandbox.backend.processes(sandbox.id).await?;
    Some(processes.iter().any(|p| p.command == "sleep infinity"))
}
