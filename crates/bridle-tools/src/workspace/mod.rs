//! Host directories mounted into sandboxes ("slots") and a run's workspace.
//!
//! Every sandbox container gets a slot, made before the container (mounts are fixed when a
//! container is created, which for a warm one is before anyone knows the run):
//! `<root>/<instance>/<slot>/ws` is its `/workspace`, `secrets/` its read-only `/run/secrets`,
//! `net/` (egress only) holds the proxy's socket at `/run/bridle` and `agent/` the socket its
//! agent connects to, at `/run/bridle-agent` (both read-only). A run's workspace is
//! the `ws` of one slot; when a call of the run lands in another sandbox (another image, or
//! after a sandbox was discarded) the workspace's entries are moved into that sandbox's slot
//! (renames within one filesystem), so the files follow the run. A slot's directory is
//! removed when the last holder (its sandbox, or the run whose workspace it is) lets go.
//!
//! The service never reads or follows anything a tool wrote here: listing uses
//! `symlink_metadata`, moves rename entries as they are, removal does not follow links.

use std::collections::BTreeMap;
use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bridle_core::Shutdown;

use crate::Error;
use crate::sandbox::config::SANDBOX_UID;

/// Entries a snapshot looks at before it gives up (files_written is then partial).
const MAX_ENTRIES: usize = 20_000;
/// Paths listed in files_written at most.
pub const MAX_LISTED: usize = 1_000;

/// The folder all of this instance's slots live in.
#[derive(Clone, Debug)]
pub struct Workspaces {
    dir: PathBuf,
    cleanup: Shutdown,
}

impl Workspaces {
    /// Creates `<root>/<instance>` (0700: other host users cannot look into workspaces).
    pub fn create(root: &Path, instance: &str, cleanup: Shutdown) -> Result<Self, Error> {
        let dir = root.join(instance);
        std::fs::create_dir_all(&dir)
            .and_then(|()| std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)))
            .map_err(|e| {
                Error::Core(bridle_core::Error::internal(format!(
                    "cannot create the workspace folder {}: {e}",
                    dir.display()
                )))
            })?;
        Ok(Self { dir, cleanup })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// A new slot with empty `ws`, `secrets`, `net` and `agent` folders.
    pub async fn slot(&self) -> Result<Arc<Slot>, Error> {
        let path = self.dir.join(ulid::Ulid::new().to_string().to_lowercase());
        let p = path.clone();
        tokio::task::spawn_blocking(move || make_slot(&p))
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
        }))
    }

    /// Removes every slot (at shutdown, after the containers).
    pub async fn remove_all(&self) {
        let dir = self.dir.clone();
        let _ = tokio::task::spawn_blocking(move || std::fs::remove_dir_all(dir)).await;
    }
}

fn make_slot(path: &Path) -> std::io::Result<()> {
    std::fs::create_dir(path)?;
    let ws = path.join("ws");
    for sub in ["ws", "secrets", "net", "agent"] {
        std::fs::create_dir(path.join(sub))?;
    }
    // The sandbox user owns its workspace. Without the right to chown (a service not running
    // as root) the folder is opened to everyone instead; its parent stays 0700.
    if std::os::unix::fs::chown(&ws, Some(SANDBOX_UID), Some(SANDBOX_UID)).is_err() {
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
}

impl Slot {
    pub fn ws(&self) -> PathBuf {
        self.path.join("ws")
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
        self.cleanup.spawn(async move {
            let _ = tokio::task::spawn_blocking(move || std::fs::remove_dir_all(path)).await;
        });
    }
}

/// Moves every entry of `from` into `to` (which a fresh slot has empty). Entries already
/// present in `to` are replaced.
pub async fn move_entries(from: PathBuf, to: PathBuf) -> Result<(), Error> {
    tokio::task::spawn_blocking(move || -> std::io::Result<()> {
        for e in std::fs::read_dir(&from)? {
            let e = e?;
            let target = to.join(e.file_name());
            if let Ok(m) = std::fs::symlink_metadata(&target) {
                if m.is_dir() {
                    std::fs::remove_dir_all(&target)?;
                } else {
                    std::fs::remove_file(&target)?;
                }
            }
            std::fs::rename(e.path(), target)?;
        }
        Ok(())
    })
    .await
    .map_err(|e| Error::Core(bridle_core::Error::internal(e)))?
    .map_err(|e| {
        Error::Core(bridle_core::Error::internal(format!(
            "cannot move the run's workspace: {e}"
        )))
    })
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

    #[tokio::test]
    async fn entries_move_between_folders() {
        let a = tempfile::tempdir().unwrap();
        let b = tempfile::tempdir().unwrap();
        std::fs::create_dir(a.path().join("dir")).unwrap();
        std::fs::write(a.path().join("dir/f"), "1").unwrap();
        std::fs::write(a.path().join("g"), "2").unwrap();
        std::fs::write(b.path().join("g"), "old").unwrap();
        move_entries(a.path().into(), b.path().into())
            .await
            .unwrap();
        assert_eq!(
            std::fs::read_to_string(b.path().join("dir/f")).unwrap(),
            "1"
        );
        assert_eq!(std::fs::read_to_string(b.path().join("g")).unwrap(), "2");
        assert_eq!(std::fs::read_dir(a.path()).unwrap().count(), 0);
    }
}
