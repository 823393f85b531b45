//! A run's workspace as a filesystem of its own, so its size is bounded: a sparse image file of
//! the quota's size (`<instance>/runs/<id>.img`), formatted ext4 and loop-mounted at
//! `<instance>/runs/<id>`. Each sandbox the run uses gets it bound onto its slot's `ws`, which
//! reaches the sandbox's `/workspace` through the mount's propagation; a write past the quota
//! fails in the sandbox with ENOSPC, and nothing outside the image is touched. The image only
//! takes the host space its files use.
//!
//! With workspace folders (`workspace_mode: folder`) it is only the folder
//! `<instance>/runs/<id>`: nothing is mounted and nothing bounds its size.
//!
//! Dropping the last handle unmounts it (the loop device goes with the last user) and deletes
//! the image; slots hold a handle while it is bound to them, so it outlives its binds.

use std::ffi::OsStr;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};

use bridle_core::Shutdown;

use super::mounts;
use crate::Error;

#[derive(Debug)]
pub struct RunVolume {
    image: PathBuf,
    mnt: PathBuf,
    bytes: u64,
    cleanup: Shutdown,
    /// The host uid and gid that own its root (the sandbox user, as the engine maps it).
    owner: u32,
    /// A mounted filesystem (else a plain folder).
    mounted: bool,
}

impl RunVolume {
    /// The host uid and gid its files belong to.
    pub fn owner(&self) -> u32 {
        self.owner
    }

    /// Makes and mounts a `bytes`-sized filesystem in `dir` (`mounted`), or only a folder.
    pub async fn create(
        dir: &Path,
        bytes: u64,
        cleanup: Shutdown,
        owner: u32,
        mounted: bool,
    ) -> Result<Self, Error> {
        let id = ulid::Ulid::new().to_string().to_lowercase();
        let v = Self {
            image: dir.join(format!("{id}.img")),
            mnt: dir.join(&id),
            bytes,
            cleanup,
            owner,
            mounted,
        };
        // On failure the half-made volume is dropped, which removes what was made.
        if mounted {
            v.make(dir).await.map_err(Error::Workspace)?;
        } else {
            v.make_folder(dir).await.map_err(Error::Workspace)?;
        }
        Ok(v)
    }

    /// The run's folder, the sandbox user's (or, where this service may not give it away,
    /// open to it; its parent stays 0700).
    async fn make_folder(&self, dir: &Path) -> Result<(), String> {
        let (dir, mnt, owner) = (dir.to_path_buf(), self.mnt.clone(), self.owner);
        tokio::task::spawn_blocking(move || -> std::io::Result<()> {
            std::fs::create_dir_all(&dir)?;
            // The engine passes through it to the folder it binds (the instance folder
            // around it keeps other host users out).
            std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o711))?;
            std::fs::create_dir(&mnt)?;
            let mode = match std::os::unix::fs::chown(&mnt, Some(owner), Some(owner)) {
                Ok(()) => 0o755,
                Err(_) => 0o777,
            };
            std::fs::set_permissions(&mnt, std::fs::Permissions::from_mode(mode))
        })
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| format!("cannot make the run's workspace folder: {e}"))
    }

    async fn make(&self, dir: &Path) -> Result<(), String> {
        let (dir, image, mnt, bytes) = (
            dir.to_path_buf(),
            self.image.clone(),
            self.mnt.clone(),
            self.bytes,
        );
        let made = tokio::task::spawn_blocking(move || -> std::io::Result<()> {
            std::fs::create_dir_all(&dir)?;
            std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700))?;
            // Sparse: the host's space is taken as files are written, up to the size.
            let f = std::fs::File::create(&image)?;
            f.set_permissions(std::fs::Permissions::from_mode(0o600))?;
            f.set_len(bytes)?;
            std::fs::create_dir(&mnt)
        })
        .await
        .map_err(|e| e.to_string())?;
        made.map_err(|e| format!("cannot make the workspace image: {e}"))?;
        let owner = format!("root_owner={0}:{0},nodiscard", self.owner);
        // No journal (a workspace does not outlive a crash of this service: its image is
        // deleted), no blocks reserved for root (the sandbox user gets the whole quota).
        mounts::run(
            "mke2fs",
            &[
                OsStr::new("-q"),
                OsStr::new("-F"),
                OsStr::new("-t"),
                OsStr::new("ext4"),
                OsStr::new("-m"),
                OsStr::new("0"),
                OsStr::new("-O"),
                OsStr::new("^has_journal"),
                OsStr::new("-E"),
                OsStr::new(&owner),
                self.image.as_os_str(),
            ],
        )
        .await?;
        mounts::run(
            "mount",
            &[
                OsStr::new("-t"),
                OsStr::new("ext4"),
                OsStr::new("-o"),
                OsStr::new("loop,nosuid,nodev,noatime"),
                self.image.as_os_str(),
                self.mnt.as_os_str(),
            ],
        )
        .await?;
        // mke2fs's lost+found (root's, 0700) would only puzzle the tools.
        let _ = std::fs::remove_dir(self.mnt.join("lost+found"));
        Ok(())
    }

    /// Where it is mounted on the host.
    pub fn path(&self) -> &Path {
        &self.mnt
    }

    pub fn bytes(&self) -> u64 {
        self.bytes
    }
}

impl Drop for RunVolume {
    fn drop(&mut self) {
        let (image, mnt) = (
            std::mem::take(&mut self.image),
            std::mem::take(&mut self.mnt),
        );
        if mnt.as_os_str().is_empty() {
            return;
        }
        let mounted = self.mounted;
        let release = move || {
            if !mounted {
                // remove_dir_all does not follow links; nothing can be mounted below it (the
                // sandboxes that wrote it hold no capability).
                if let Err(e) = std::fs::remove_dir_all(&mnt)
                    && e.kind() != std::io::ErrorKind::NotFound
                {
                    tracing::warn!(path = %mnt.display(), error = %e, "cannot remove a run's workspace folder");
                }
                return;
            }
            if let Err(e) = mounts::unmount(&mnt) {
                tracing::warn!(path = %mnt.display(), error = %e, "cannot unmount a run's workspace");
            }
            if mounts::is_mount_point(&mnt) {
                tracing::error!(path = %mnt.display(), "a run's workspace is still mounted; left for the shutdown sweep");
                return;
            }
            let _ = std::fs::remove_dir(&mnt);
            let _ = std::fs::remove_file(&image);
        };
        if tokio::runtime::Handle::try_current().is_err() {
            release();
            return;
        }
        self.cleanup.spawn(async move {
            let _ = tokio::task::spawn_blocking(release).await;
        });
    }
}
