//! The one place a sandbox container's configuration is made.
//!
//! Every hardening setting is fixed here when the container is created, never added later:
//! no network, read-only root, small tmpfs mounts for /tmp and /workspace, every capability
//! dropped, no-new-privileges, an unprivileged user, memory (without swap), CPU, pids and
//! open-file limits, and an init process that reaps zombies. What a caller may ask for is
//! limited to the fields of [`SandboxSpec`]; privileged mode, added capabilities and any mount
//! that would expose the Docker socket are refused, and the finished configuration is checked
//! again by [`verify`] before it is returned, so a later edit of this file that weakens it
//! fails loudly instead of creating a weaker container.

use std::collections::{BTreeMap, HashMap};
use std::fmt;

use bollard::models::{
    ContainerCreateBody, HostConfig, Mount, MountBindOptions, MountBindOptionsPropagationEnum,
    MountType, ResourcesUlimits,
};
use bridle_core::manifest::{ContainerLimits, parse_bytes};

use crate::Error;
use crate::user::{SANDBOX_UID, SANDBOX_USER};

pub const WORKSPACE: &str = "/workspace";

/// Engine sockets (and their usual locations' parents are checked by prefix): mounting one
/// would hand the tool the whole host.
const ENGINE_SOCKETS: &[&str] = &[
    "/var/run/docker.sock",
    "/run/docker.sock",
    "/var/run/containerd/containerd.sock",
    "/run/containerd/containerd.sock",
    "/var/run/podman/podman.sock",
    "/run/podman/podman.sock",
    "/var/run/crio/crio.sock",
    "/run/crio/crio.sock",
];

/// Limits of one container, in the units Docker takes.
#[derive(Clone, Debug, PartialEq)]
pub struct Limits {
    pub memory_bytes: i64,
    pub nano_cpus: i64,
    pub pids: i64,
    pub nofile: i64,
    pub tmpfs_bytes: u64,
    /// Cap on each of stdout and stderr.
    pub output_bytes: usize,
}

impl Limits {
    /// Converts manifest limits; the error names the field ("limits.memory: ...").
    pub fn from_manifest(l: &ContainerLimits) -> Result<Self, String> {
        let bytes =
            |field: &str, v: &str| parse_bytes(v).map_err(|e| format!("limits.{field}: {e}"));
        let memory = bytes("memory", &l.memory)?;
        let tmpfs = bytes("tmpfs", &l.tmpfs)?;
        let output = bytes("output", &l.output)?;
        if !(l.cpus.is_finite() && l.cpus > 0.0) {
            return Err(format!(
                "limits.cpus: must be more than zero, not {}",
                l.cpus
            ));
        }
        Ok(Self {
            memory_bytes: i64::try_from(memory)
                .map_err(|_| "limits.memory: too large".to_string())?,
            nano_cpus: (l.cpus * 1e9).round() as i64,
            pids: l.pids,
            nofile: i64::try_from(l.nofile).map_err(|_| "limits.nofile: too large".to_string())?,
            tmpfs_bytes: tmpfs,
            output_bytes: usize::try_from(output)
                .map_err(|_| "limits.output: too large".to_string())?,
        })
    }
}

/// A host folder mounted into the sandbox (the run's workspace, the call's secret files, the
/// egress proxy's socket).
#[derive(Clone, Debug, PartialEq)]
pub struct BindMount {
    pub source: String,
    pub target: String,
    pub read_only: bool,
    /// Mounts made later below the source on the host appear in the sandbox too (rslave
    /// propagation): the run's workspace filesystem is mounted into a sandbox made before
    /// the run was known. Never the other way: nothing the sandbox mounts reaches the host.
    pub follows_host: bool,
}

/// Everything a caller can ask of a sandbox container.
#[derive(Clone, PartialEq)]
pub struct SandboxSpec {
    pub image: String,
    /// argv; the first element is the program (no shell).
    pub argv: Vec<String>,
    /// Environment, secret values included: never logged (see the Debug impl).
    pub env: Vec<(String, String)>,
    pub workdir: Option<String>,
    pub limits: Limits,
    /// OCI runtime ("runsc"); None = the engine's default.
    pub runtime: Option<String>,
    /// Keep stdin open so the caller can write the arguments to it.
    pub stdin: bool,
    pub labels: BTreeMap<String, String>,
    pub mounts: Vec<BindMount>,
    /// Always refused; present so a request for it fails here, visibly, not silently.
    pub privileged: bool,
    /// Always refused when not empty, for the same reason.
    pub cap_add: Vec<String>,
}

impl fmt::Debug for SandboxSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SandboxSpec")
            .field("image", &self.image)
            .field("argv_len", &self.argv.len())
            .field(
                "env_keys",
                &self.env.iter().map(|(k, _)| k.as_str()).collect::<Vec<_>>(),
            )
            .field("workdir", &self.workdir)
            .field("limits", &self.limits)
            .field("runtime", &self.runtime)
            .field("stdin", &self.stdin)
            .field("labels", &self.labels)
            .field("mounts", &self.mounts)
            .finish_non_exhaustive()
    }
}

/// Why a configuration was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("sandbox configuration refused: {0}")]
pub struct Refused(pub String);

impl Refused {
    /// The service's error for a sandbox of `tool` refused this way. The conversion lives here,
    /// with the refusal, so that the crate's error type knows nothing of sandboxes.
    pub fn for_tool(self, tool: String) -> Error {
        Error::Refused {
            tool,
            reason: self.to_string(),
        }
    }
}

/// Builds the hardened container configuration for `spec`, or refuses it.
pub fn build(spec: &SandboxSpec) -> Result<ContainerCreateBody, Refused> {
    if spec.privileged {
        return Err(Refused("privileged mode is never allowed".into()));
    }
    if !spec.cap_add.is_empty() {
        return Err(Refused(format!(
            "adding capabilities ({}) is never allowed; every capability is dropped",
            spec.cap_add.join(", ")
        )));
    }
    let Some(program) = spec.argv.first() else {
        return Err(Refused("the command is empty".into()));
    };
    if spec.image.trim().is_empty() {
        return Err(Refused("no image".into()));
    }
    let mut mounts = Vec::with_capacity(spec.mounts.len());
    for m in &spec.mounts {
        check_mount_source(&m.source)?;
        mounts.push(Mount {
            target: Some(m.target.clone()),
            source: Some(m.source.clone()),
            typ: Some(MountType::BIND),
            read_only: Some(m.read_only),
            bind_options: m.follows_host.then(|| MountBindOptions {
                propagation: Some(MountBindOptionsPropagationEnum::RSLAVE),
                ..Default::default()
            }),
            ..Default::default()
        });
    }
    let l = &spec.limits;
    let mut tmpfs = HashMap::from([(
        "/tmp".to_string(),
        format!("rw,noexec,nosuid,nodev,size={}", l.tmpfs_bytes),
    )]);
    // Without a mounted workspace (a bare sandbox) /workspace is a tmpfs of its own.
    if !spec.mounts.iter().any(|m| m.target == WORKSPACE) {
        tmpfs.insert(
            WORKSPACE.to_string(),
            format!(
                "rw,nosuid,nodev,size={},uid={SANDBOX_UID},gid={SANDBOX_UID},mode=0755",
                l.tmpfs_bytes
            ),
        );
    }
    let host = HostConfig {
        network_mode: Some("none".into()),
        readonly_rootfs: Some(true),
        tmpfs: Some(tmpfs),
        cap_drop: Some(vec!["ALL".into()]),
        cap_add: None,
        privileged: Some(false),
        security_opt: Some(vec!["no-new-privileges".into()]),
        memory: Some(l.memory_bytes),
        memory_swap: Some(l.memory_bytes),
        nano_cpus: Some(l.nano_cpus),
        pids_limit: Some(l.pids),
        ulimits: Some(vec![ResourcesUlimits {
            name: Some("nofile".into()),
            soft: Some(l.nofile),
            hard: Some(l.nofile),
        }]),
        init: Some(true),
        runtime: spec.runtime.clone(),
        mounts: (!mounts.is_empty()).then_some(mounts),
        binds: None,
        // Removal is ours (after reading the exit state), not the engine's.
        auto_remove: Some(false),
        ..Default::default()
    };
    let body = ContainerCreateBody {
        image: Some(spec.image.clone()),
        entrypoint: Some(vec![program.clone()]),
        cmd: Some(spec.argv[1..].to_vec()),
        env: Some(spec.env.iter().map(|(k, v)| format!("{k}={v}")).collect()),
        user: Some(SANDBOX_USER.into()),
        working_dir: Some(spec.workdir.clone().unwrap_or_else(|| WORKSPACE.into())),
        hostname: Some("sandbox".into()),
        labels: Some(
            spec.labels
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
        ),
        network_disabled: Some(true),
        tty: Some(false),
        attach_stdin: Some(spec.stdin),
        open_stdin: Some(spec.stdin),
        stdin_once: Some(spec.stdin),
        attach_stdout: Some(true),
        attach_stderr: Some(true),
        host_config: Some(host),
        ..Default::default()
    };
    verify(&body)?;
    Ok(body)
}

/// Checks a finished configuration against every hardening rule. [`build`] calls it; it is
/// public so the rules can be tested against configurations `build` would never make.
pub fn verify(body: &ContainerCreateBody) -> Result<(), Refused> {
    let refuse = |what: &str| Err(Refused(what.to_string()));
    let Some(h) = &body.host_config else {
        return refuse("no host configuration");
    };
    if h.privileged == Some(true) {
        return refuse("privileged mode is never allowed");
    }
    if h.cap_add.as_ref().is_some_and(|c| !c.is_empty()) {
        return refuse("adding capabilities is never allowed");
    }
    if !h
        .cap_drop
        .as_ref()
        .is_some_and(|c| c.iter().any(|x| x == "ALL"))
    {
        return refuse("every capability must be dropped (cap_drop ALL)");
    }
    if h.network_mode.as_deref() != Some("none") {
        return refuse("the network mode must be 'none'");
    }
    if h.readonly_rootfs != Some(true) {
        return refuse("the root filesystem must be read-only");
    }
    if !h.security_opt.as_ref().is_some_and(|o| {
        o.iter()
            .any(|x| x == "no-new-privileges" || x == "no-new-privileges:true")
    }) {
        return refuse("no-new-privileges must be set");
    }
    if body.user.as_deref() != Some(SANDBOX_USER) {
        return refuse("the container must run as 65534:65534");
    }
    match (h.memory, h.memory_swap) {
        (Some(m), Some(s)) if m > 0 && s == m => {}
        _ => return refuse("memory must be limited, with swap equal to it"),
    }
    if h.pids_limit.is_none_or(|p| p <= 0) || h.nano_cpus.is_none_or(|c| c <= 0) {
        return refuse("pids and CPU must be limited");
    }
    if h.init != Some(true) {
        return refuse("an init process must reap the tool's children");
    }
    for (what, mode) in [
        ("pid", &h.pid_mode),
        ("ipc", &h.ipc_mode),
        ("uts", &h.uts_mode),
        ("userns", &h.userns_mode),
    ] {
        if mode
            .as_deref()
            .is_some_and(|m| m == "host" || m.starts_with("container:"))
        {
            return refuse(&format!("sharing the {what} namespace is never allowed"));
        }
    }
    if h.devices.as_ref().is_some_and(|d| !d.is_empty())
        || h.device_requests.as_ref().is_some_and(|d| !d.is_empty())
    {
        return refuse("host devices are never allowed");
    }
    if h.volumes_from.as_ref().is_some_and(|v| !v.is_empty()) {
        return refuse("volumes from other containers are never allowed");
    }
    for b in h.binds.iter().flatten() {
        check_mount_source(b.split(':').next().unwrap_or(b))?;
    }
    for m in h.mounts.iter().flatten() {
        if let Some(src) = &m.source
            && matches!(m.typ, Some(MountType::BIND) | None)
        {
            check_mount_source(src)?;
        }
        if m.bind_options
            .as_ref()
            .and_then(|b| b.propagation)
            .is_some_and(|p| {
                matches!(
                    p,
                    MountBindOptionsPropagationEnum::SHARED
                        | MountBindOptionsPropagationEnum::RSHARED
                )
            })
        {
            return refuse("a shared mount would let the sandbox's mounts reach the host");
        }
    }
    Ok(())
}

/// Refuses a host path that is, or contains, a container engine's socket.
fn check_mount_source(source: &str) -> Result<(), Refused> {
    let refuse = || {
        Err(Refused(format!(
            "mounting '{source}' would expose the container engine's socket"
        )))
    };
    if !source.starts_with('/') {
        return Err(Refused(format!(
            "mount source '{source}' must be an absolute host path"
        )));
    }
    let mut parts = Vec::new();
    for p in source.split('/') {
        match p {
            "" | "." => {}
            ".." => {
                return Err(Refused(format!(
                    "mount source '{source}' must not contain '..'"
                )));
            }
            p => parts.push(p),
        }
    }
    let norm = format!("/{}", parts.join("/"));
    if norm.ends_with(".sock") || parts.last().is_some_and(|p| p.contains("docker")) {
        return refuse();
    }
    let is_within =
        |dir: &str, path: &str| dir == "/" || path == dir || path.starts_with(&format!("{dir}/"));
    if ENGINE_SOCKETS.iter().any(|s| is_within(&norm, s)) {
        return refuse();
    }
    Ok(())
}

#[cfg(test)]
#[path = "config_tests.rs"]
mod tests;
