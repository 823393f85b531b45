//! Host directories mounted into sandboxes ("slots") and a run's workspace.
//!
//! With [`Mode::Folder`] nothing here is mounted: a run's workspace is a plain folder,
//! given to the engine as the `/workspace` bind source of each sandbox made for the run
//! (so no sandbox is made before its run), and its quota is not enforced.
//!
//! Every sandbox container gets a slot, made before the container (mounts are fixed when a
//! container is created, which for a warm one is before anyone knows the run):
//! `<root>/<instance>/<slot>/ws` is its `/workspace`, `secrets/` its read-only `/run/secrets`,
//! `net/` (egress only) holds the proxy's socket at `/run/bridle` and `agent/` the socket its
//! agent connects to, at `/run/bridle-agent` (both read-only). A run's workspace is a
//! filesystem of its own, of the run's quota ([`volume::RunVolume`]); it is bound onto the
//! `ws` of each sandbox the run uses, and reaches the sandbox made earlier through the mount's
//! propagation ([`mounts::make_shared_mount`]). A slot's directory is removed (its bind undone
//! first) when its sandbox lets go; the run's filesystem when the run and its slots have.
//!
//! The service never reads or follows anything a tool wrote here: listing uses
//! `symlink_metadata`, removal does not follow links and never descends into a mount.

pub mod mounts;
pub mod volume;

use std::collections::BTreeMap;
use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use bridle_core::Shutdown;

use crate::Error;
use crate::user::SANDBOX_UID;
use mounts::InstanceLock;
pub use volume::RunVolume;

/// Entries a snapshot looks at before it gives up (files_written is then partial).
const MAX_ENTRIES: usize = 20_000;
/// Paths listed in files_written at most.
pub const MAX_LISTED: usize = 1_000;

/// What a run's workspace is (the `workspace_mode` option).
#[derive(
    Clone,
    Copy,
    Debug,
    Default,
    PartialEq,
    Eq,
    serde::Serialize,
    serde::Deserialize,
    schemars::JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// A loop-mounted filesystem of the run's quota, bound onto each sandbox's slot.
    #[default]
    Quota,
    /// A plain folder the engine binds into each sandbox made for the run.
    Folder,
}

/// The name `sandbox_limits_unenforced` gives the workspace quota.
pub const QUOTA_LIMIT: &str = "workspace";

/// The folder all of this instance's slots live in.
#[derive(Clone, Debug)]
pub struct Workspaces {
    root: PathBuf,
    dir: PathBuf,
    cleanup: Shutdown,
    lock: Arc<InstanceLock>,
    /// Why run workspaces cannot be mounted here (not root, no loop devices): every
    /// sandboxed call then fails saying so, rather than running without a quota.
    unmountable: Option<String>,
    ids: HostIds,
    mode: Mode,
}

/// Who the engine's sandboxes are on this host. Under a rootful engine the sandbox user
/// (65534) is host uid 65534; under a rootless one it is a uid of the engine user's
/// subordinate range, and the engine runs as that user, which must reach the folders it mounts.
#[derive(Clone, Copy, Debug)]
pub struct HostIds {
    /// The host uid and gid that the sandbox's 65534 is: the owner of workspaces.
    pub sandbox: u32,
    /// The engine's host group, given the instance folder (0710) when set.
    pub engine_gid: Option<u32>,
}

impl Default for HostIds {
    fn default() -> Self {
        Self {
            sandbox: SANDBOX_UID,
            engine_gid: None,
        }
    }
}

impl Workspaces {
    /// Takes the instance's lock, creates `<root>/<instance>` (0700: other host users cannot
    /// look into workspaces; 0710 with the group of a rootless engine, which must reach the
    /// folders it mounts) and, with [`Mode::Quota`], makes it a shared mount.
    pub fn create(
        root: &Path,
        instance: &str,
        cleanup: Shutdown,
        ids: HostIds,
        mode: Mode,
    ) -> Result<Self, Error> {
        let dir = root.join(instance);
        let failed = |what: &str, p: &Path, e: std::io::Error| {
            Error::Core(bridle_core::Error::internal(format!(
                "cannot {what} {}: {e}",
                p.display()
            )))
        };
        std::fs::create_dir_all(root)
            .map_err(|e| failed("create the workspace folder", root, e))?;
        let lock = InstanceLock::take(root, instance)
            .map_err(|e| failed("lock the instance's folder in", root, e))?;
        std::fs::create_dir_all(&dir)
            .and_then(|()| match ids.engine_gid {
                None => std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)),
                Some(gid) => std::os::unix::fs::chown(&dir, None, Some(gid)).and_then(|()| {
                    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o710))
                }),
            })
            .map_err(|e| failed("create the workspace folder", &dir, e))?;
        let shared = match mode {
            Mode::Quota => mounts::make_shared_mount(&dir),
            Mode::Folder => Ok(()),
        };
        let unmountable = shared.err().map(|e| {
            let why = format!(
                "workspace quotas cannot be enforced: making {} a shared mount failed ({e}); the tools service needs root (CAP_SYS_ADMIN) and loop devices",
                dir.display()
            );
            tracing::warn!("{why}; sandboxed tools will fail until it runs with them");
            why
        });
        Ok(Self {
            root: root.to_path_buf(),
            dir,
            cleanup,
            lock: Arc::new(lock),
            unmountable,
            ids,
            mode,
        })
    }

    /// Whether a run's workspace reaches a sandbox that started before it (a mount
    /// propagating into it); with folders, only sandboxes made for the run see it.
    pub fn reaches_started_sandboxes(&self) -> bool {
        self.mode == Mode::Quota
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Fails when run workspaces cannot be mounted here (checked before a sandbox is made
    /// for a run: the engine would refuse its workspace mount with a less helpful message).
    pub fn check(&self) -> Result<(), Error> {
        match &self.unmountable {
            Some(why) => Err(Error::Workspace(why.clone())),
            None => Ok(()),
        }
    }

    /// A new run workspace of `bytes` (mounted, or a folder).
    pub async fn volume(&self, bytes: u64) -> Result<Arc<RunVolume>, Error> {
        self.check()?;
        Ok(Arc::new(
            RunVolume::create(
                &self.dir.join("runs"),
                bytes,
                self.cleanup.clone(),
                self.ids.sandbox,
                self.mode == Mode::Quota,
            )
            .await?,
        ))
    }

    /// Releases the folders of instances that died without cleaning up (SIGKILL, OOM, node
    /// restart of the container): their mounts, loop devices and images.
    pub async fn sweep_dead(&self) -> u32 {
        mounts::sweep_dead(&self.root, &self.lock).await
    }

    /// A new slot with empty `ws`, `secrets`, `net` and `agent` folders.
    pub async fn slot(&self) -> Result<Arc<Slot>, Error> {
        let path = self.dir.join(ulid::Ulid::new().to_string().to_lowercase());
        let (p, owner) = (path.clone(), self.ids.sandbox);
        tokio::task::spawn_blocking(move || make_slot(&p, owner))
            .await
            .map_err(|e| Error::Core(bridle_core::Error::internal(e)))?
            .map_err(|e| {
                Error::Core(bridle_core::Error::internal(format!(
                    "cannot create a sandbox folder under {}: {e}",
                    path.display()
                )))
            })?;
        Ok(Arc::new(Slot {
            path,
            cleanup: self.cleanup.clone(),
            volume: Mutex::default(),
            binds: self.mode == Mode::Quota,
        }))
    }

    /// Removes every slot and run workspace, mounts first (at shutdown, after the
    /// containers), then the instance's lock.
    pub async fn remove_all(&self) {
        mounts::release_tree(self.dir.clone()).await;
        let _ = std::fs::remove_file(self.lock.path());
    }
}

fn make_slot(path: &Path, owner: u32) -> std::io::Result<()> {
    std::fs::create_dir(path)?;
    let ws = path.join("ws");
    for sub in ["ws", "secrets", "net", "agent"] {
        std::fs::create_dir(path.join(sub))?;
    }
    // The sandbox user owns its workspace. Without the right to chown (a service not running
    // as root) the folder is opened to everyone instead; its parent stays 0700.
    if std::os::unix::fs::chown(&ws, Some(owner), Some(owner)).is_err() {
        std::fs::set_permissions(&ws, std::fs::Permissions::from_mode(0o777))?;
    } else {
        std::fs::set_permissions(&ws, std::fs::Permissions::from_mode(0o755))?;
    }
    std::fs::set_permissions(path.join("secrets"), std::fs::Permissions::from_mode(0o755))?;
    std::fs::set_permissions(path.join("net"), std::fs::Permissions::from_mode(0o755))?;
    std::fs::set_permissions(path.join("agent"), std::fs::Permissions::from_mode(0o755))?;
    Ok(())
}

/// One sandbox's host folders; removed when dropped.
#[derive(Debug)]
pub struct Slot {
    path: PathBuf,
    cleanup: Shutdown,
    /// The run workspace bound onto `ws` (a sandbox serves one run, so at most one, ever).
    volume: Mutex<Option<Arc<RunVolume>>>,
    /// Whether the run's workspace is bound onto `ws` ([`Mode::Quota`]); otherwise the
    /// workspace's own folder is the sandbox's `/workspace`.
    binds: bool,
}

impl Slot {
    pub fn ws(&self) -> PathBuf {
        self.path.join("ws")
    }
    /// The host folder that is the sandbox's `/workspace`: `ws`, or with folders the run's
    /// own (attached before the sandbox is made).
    pub fn workspace(&self) -> PathBuf {
        match self.volume().as_ref() {
            Some(v) if !self.binds => v.path().to_path_buf(),
            _ => self.ws(),
        }
    }
    pub fn secrets(&self) -> PathBuf {
        self.path.join("secrets")
    }
    pub fn net(&self) -> PathBuf {
        self.path.join("net")
    }
    pub fn agent(&self) -> PathBuf {
        self.path.join("agent")
    }
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn volume(&self) -> std::sync::MutexGuard<'_, Option<Arc<RunVolume>>> {
        self.volume.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Binds the run's workspace onto `ws` (once: the sandbox sees it from then on); with
    /// folders, only records it (the sandbox is made with it as its `/workspace`).
    pub async fn attach(&self, v: &Arc<RunVolume>) -> Result<(), Error> {
        if let Some(cur) = self.volume().as_ref() {
            return if Arc::ptr_eq(cur, v) {
                Ok(())
            } else {
                Err(Error::Core(bridle_core::Error::internal(
                    "a sandbox already holds another run's workspace",
                )))
            };
        }
        if !self.binds {
            *self.volume() = Some(v.clone());
            return Ok(());
        }
        let (from, to) = (v.path().to_path_buf(), self.ws());
        tokio::task::spawn_blocking(move || mounts::bind(&from, &to))
            .await
            .map_err(|e| Error::Core(bridle_core::Error::internal(e)))?
            .map_err(|e| Error::Workspace(format!("cannot bind the run's workspace: {e}")))?;
        *self.volume() = Some(v.clone());
        Ok(())
    }

    /// Writes the call's secret files (0444: the sandbox user reads them through a read-only
    /// mount); they are removed by [`Slot::clear_secrets`] when the call ends.
    pub async fn write_secrets(&self, files: Vec<(String, String)>) -> Result<(), Error> {
        if files.is_empty() {
            return Ok(());
        }
        let dir = self.secrets();
        tokio::task::spawn_blocking(move || -> std::io::Result<()> {
            for (name, value) in files {
                let p = dir.join(&name);
                std::fs::write(&p, value.as_bytes())?;
                std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o444))?;
            }
            Ok(())
        })
        .await
        .map_err(|e| Error::Core(bridle_core::Error::internal(e)))?
        .map_err(|e| {
            Error::Core(bridle_core::Error::internal(format!(
                "cannot write a secret file: {e}"
            )))
        })
    }

    pub async fn clear_secrets(&self) {
        let dir = self.secrets();
        let _ = tokio::task::spawn_blocking(move || {
            if let Ok(rd) = std::fs::read_dir(&dir) {
                for e in rd.flatten() {
                    let _ = std::fs::remove_file(e.path());
                }
            }
        })
        .await;
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let path = std::mem::take(&mut self.path);
        if path.as_os_str().is_empty() || tokio::runtime::Handle::try_current().is_err() {
            return;
        }
        let volume = self.volume().take();
        let bound = volume.is_some() && self.binds;
        self.cleanup.spawn(async move {
            let _ = tokio::task::spawn_blocking(move || {
                let ws = path.join("ws");
                if bound
                    && let Err(e) = mounts::unmount(&ws)
                {
                    tracing::warn!(path = %ws.display(), error = %e, "cannot unbind a run's workspace");
                }
                // Never delete through a mount: those files are the run's.
                if mounts::is_mount_point(&ws) {
                    tracing::error!(path = %ws.display(), "a sandbox's workspace is still mounted; left for the shutdown sweep");
                    return;
                }
                let _ = std::fs::remove_dir_all(path);
            })
            .await;
            // The run's workspace goes when its last slot and the run have let go.
            drop(volume);
        });
    }
}

/// What a file looked like: changes to any of these mean it was written. ctime cannot be set
/// by the tool, so a copy that keeps the old mtime is still seen.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Stamp {
    ino: u64,
    len: u64,
    mtime: (i64, i64),
    ctime: (i64, i64),
}

/// Every non-directory entry below a folder, by relative path.
#[derive(Debug, Default)]
pub struct Snapshot {
    files: BTreeMap<String, Stamp>,
    /// The walk stopped at [`MAX_ENTRIES`].
    partial: bool,
}

impl Snapshot {
    pub async fn take(dir: PathBuf) -> Snapshot {
        tokio::task::spawn_blocking(move || {
            let mut s = Snapshot::default();
            let mut stack = vec![(dir.clone(), String::new())];
            let mut seen = 0usize;
            while let Some((abs, rel)) = stack.pop() {
                let Ok(rd) = std::fs::read_dir(&abs) else {
                    continue;
                };
                for e in rd.flatten() {
                    seen += 1;
                    if seen > MAX_ENTRIES {
                        s.partial = true;
                        return s;
                    }
                    let name = e.file_name().to_string_lossy().into_owned();
                    let rel_path = if rel.is_empty() {
                        name
                    } else {
                        format!("{rel}/{name}")
                    };
                    let Ok(m) = std::fs::symlink_metadata(e.path()) else {
                        continue;
                    };
                    if m.is_dir() {
                        stack.push((e.path(), rel_path));
                    } else {
                        s.files.insert(
                            rel_path,
                            Stamp {
                                ino: m.ino(),
                                len: m.len(),
                                mtime: (m.mtime(), m.mtime_nsec()),
                                ctime: (m.ctime(), m.ctime_nsec()),
                            },
                        );
                    }
                }
            }
            s
        })
        .await
        .unwrap_or_default()
    }

    /// Whether nothing was created, changed or removed since `before`, as far as both walks
    /// saw (a partial walk never says so).
    pub fn unchanged_since(&self, before: &Snapshot) -> bool {
        !self.partial && !before.partial && self.files == before.files
    }

    /// Paths created or changed since `before`, sorted, at most [`MAX_LISTED`].
    pub fn written_since(&self, before: &Snapshot) -> Vec<String> {
        self.files
            .iter()
            .filter(|(p, st)| before.files.get(*p) != Some(st))
            .map(|(p, _)| p.clone())
            .take(MAX_LISTED)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn snapshots_see_new_changed_and_copied_files() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().to_path_buf();
        std::fs::write(p.join("same"), "x").unwrap();
        std::fs::write(p.join("changed"), "x").unwrap();
        let before = Snapshot::take(p.clone()).await;
        std::fs::create_dir_all(p.join("sub/deeper")).unwrap();
        std::fs::write(p.join("sub/deeper/new.txt"), "hello").unwrap();
        std::fs::write(p.join("changed"), "y").unwrap();
        std::os::unix::fs::symlink("/etc/passwd", p.join("link")).unwrap();
        let after = Snapshot::take(p.clone()).await;
        assert_eq!(
            after.written_since(&before),
            vec!["changed", "link", "sub/deeper/new.txt"]
        );
    }
}
