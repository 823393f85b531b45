//! A sandbox: one hardened container of a [`Profile`], with its slot (workspace, secrets,
//! egress socket, agent socket), started and waiting for calls. Calls run in it through its
//! agent (see [`super::agent`]) or its backend (see [`super::exec`]), or, for MCP stdio
//! servers, talk to its main process over the attached stdio (a [`Session`] the sandbox keeps
//! for its caller). What makes and removes it is its [`Backend`]; this file decides what goes
//! in it.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use super::agent;
use super::backend::{self, Backend, Cleanup, ContainerGuard, Created, Failed, MainStdio};
use super::config::{BindMount, SandboxSpec, WORKSPACE};
use super::profile::Profile;
use crate::Error;
use crate::egress::{self, proxy::Gate};
use crate::workspace::{RunVolume, Slot, Workspaces};

/// What a caller keeps with a sandbox's main process for as long as the sandbox lives, once it
/// took [`Sandbox::stdio`]: for an MCP stdio server, the MCP client (made on first use). The
/// sandbox only holds it and drops it with itself; what is spoken over the stdio is the
/// caller's business (the `mcp` tool kind's), so the sandboxes know nothing of MCP.
pub type Session = Box<dyn std::any::Any + Send + Sync>;

/// One started sandbox container. Dropping it removes the container.
pub struct Sandbox {
    pub id: String,
    pub short: String,
    pub profile: Arc<Profile>,
    pub slot: Arc<Slot>,
    pub gate: Option<Gate>,
    /// What made it, and removes it.
    pub backend: Arc<dyn Backend>,
    /// Taken once by the MCP client (in a mutex only so a sandbox can be shared by
    /// reference across tasks).
    pub stdio: std::sync::Mutex<Option<MainStdio>>,
    pub session: Option<Session>,
    /// The agent that runs its calls (None: calls go through the backend: `docker exec`).
    pub agent: Option<agent::Link>,
    guard: ContainerGuard,
}

impl Sandbox {
    /// Removes the container now (killing whatever runs in it).
    pub async fn destroy(self) {
        self.guard.remove().await;
    }

    /// Processes of an idle sandbox: the init, the idle main process, and the egress
    /// forwarder. More after a call means the call left something running.
    pub fn idle_processes(&self) -> usize {
        2 + usize::from(self.profile.egress)
    }

    /// Host pids of the processes running in it now.
    pub async fn pids(&self) -> Option<HashSet<String>> {
        self.backend.processes(&self.id).await.map(backend::pids)
    }
}

/// Makes sandboxes: the one place they are created (through its backend).
pub struct Factory {
    pub backend: Arc<dyn Backend>,
    pub workspaces: Workspaces,
    pub cleanup: Cleanup,
    pub label_namespace: String,
    pub instance: String,
    pub agentless: Arc<agent::Agentless>,
}

impl Factory {
    /// Whether a sandbox of `profile` can be started ahead of its run: it will see the run's
    /// workspace arrive (its runtime shares the host's mounts, and workspaces are mounts).
    pub fn can_be_warm(&self, profile: &Profile) -> bool {
        profile.can_be_warm() && self.workspaces.reaches_started_sandboxes()
    }

    /// Labels that say whose container it is. A warm container gets no run: labels are fixed
    /// at creation, and the run that takes it is tracked by the service.
    pub fn labels(&self, profile: &Profile, extra: &[(&str, &str)]) -> BTreeMap<String, String> {
        let ns = &self.label_namespace;
        let mut l = BTreeMap::from([
            (format!("{ns}.managed"), "true".to_string()),
            (format!("{ns}.instance"), self.instance.clone()),
            (format!("{ns}.profile"), profile.key.clone()),
        ]);
        for (k, v) in extra {
            l.insert(format!("{ns}.{k}"), v.to_string());
        }
        l
    }

    /// Makes and starts a sandbox of `profile`, with `workspace` bound into its slot first
    /// when given (a sandbox made for a run; a warm one gets its run's later).
    pub async fn create(
        &self,
        profile: &Arc<Profile>,
        labels: BTreeMap<String, String>,
        secret_env: Vec<(String, String)>,
        workspace: Option<&Arc<RunVolume>>,
    ) -> Result<Sandbox, Error> {
        let slot = self.workspaces.slot().await?;
        if let Some(v) = workspace {
            slot.attach(v).await?;
        }
        let gate = if profile.egress {
            Some(
                Gate::start(&slot.net(), self.cleanup.shutdown()).map_err(|e| {
                    Error::Core(bridle_core::Error::internal(format!(
                        "cannot start the egress proxy: {e}"
                    )))
                })?,
            )
        } else {
            None
        };
        let mut mounts = vec![
            BindMount {
                source: slot.workspace().to_string_lossy().into_owned(),
                target: WORKSPACE.into(),
                read_only: false,
                // A run's workspace mounted after the sandbox started reaches it (not with
                // folders: the sandbox is made with its run's).
                follows_host: self.workspaces.reaches_started_sandboxes(),
            },
            BindMount {
                source: slot.secrets().to_string_lossy().into_owned(),
                target: "/run/secrets".into(),
                read_only: true,
                follows_host: false,
            },
        ];
        let mut env = vec![("HOME".to_string(), "/tmp".to_string())];
        if profile.egress {
            mounts.push(BindMount {
                source: slot.net().to_string_lossy().into_owned(),
                target: "/run/bridle".into(),
                read_only: true,
                follows_host: false,
            });
            env.extend(egress::proxy_env());
        }
        env.extend(profile.main_env.iter().cloned());
        env.extend(secret_env);
        let base = SandboxSpec {
            image: profile.image.clone(),
            argv: profile.main.clone(),
            env,
            workdir: None,
            limits: profile.limits.clone(),
            runtime: profile.runtime.clone(),
            stdin: profile.stdio,
            labels,
            mounts,
            privileged: false,
            cap_add: vec![],
        };
        let with_agent = profile.uses_agent() && !self.agentless.contains(&profile.image);
        let launched = match self.launch(profile, &slot, base.clone(), with_agent).await {
            // The agent's boot needs /bin/sh: an image where it cannot start gets the idle
            // wait, as before the agent.
            Err(Failed { at_start: true, .. }) if with_agent => {
                let again = self.launch(profile, &slot, base, false).await;
                if again.is_ok() {
                    self.agentless.insert(&profile.image);
                }
                again
            }
            other => other,
        };
        let Launched {
            created: Created { id, guard, stdio },
            agent,
        } = launched.map_err(|f| f.error)?;
        let sandbox = Sandbox {
            short: id.chars().take(12).collect(),
            id,
            profile: profile.clone(),
            slot,
            gate,
            backend: self.backend.clone(),
            stdio: std::sync::Mutex::new(stdio),
            session: None,
            agent,
            guard,
        };
        Ok(sandbox)
    }

    /// Creates and starts the sandbox of `spec` through the backend, with the agent as its
    /// main process when `with_agent` (then listening for it in the slot first).
    async fn launch(
        &self,
        profile: &Profile,
        slot: &Slot,
        mut spec: SandboxSpec,
        with_agent: bool,
    ) -> Result<Launched, Failed> {
        let early = |error| Failed {
            error,
            at_start: false,
        };
        let agent = if with_agent {
            let link = agent::Link::listen(&slot.agent(), &profile.image, self.agentless.clone())
                .map_err(|e| {
                early(Error::Core(bridle_core::Error::internal(format!(
                    "cannot listen for the sandbox agent: {e}"
                ))))
            })?;
            spec.argv = agent::main_argv();
            spec.mounts.push(agent::mount(&slot.agent()));
            Some(link)
        } else {
            None
        };
        let created = self.backend.clone().create(profile, spec).await?;
        Ok(Launched { created, agent })
    }
}

struct Launched {
    created: Created,
    agent: Option<agent::Link>,
}
