//! The host-side mount work behind workspace quotas: this instance's folder made a shared
//! mount (so filesystems mounted below it later reach sandboxes made earlier), bind mounts and
//! lazy unmounts, the instance lock that tells a live instance's folder from a dead one's, and
//! the release of a folder with everything mounted below it.
//!
//! Binds and unmounts are syscalls (rustix); making the filesystem and attaching it to a loop
//! device are `mke2fs` and `mount -o loop` (e2fsprogs, util-linux), which must be installed
//! where the service runs.

use std::collections::HashSet;
use std::ffi::OsStr;
use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use rustix::fs::FlockOperation;
use rustix::mount::{MountPropagationFlags, UnmountFlags};

/// Bound on one of the external programs (they take milliseconds).
const PROGRAM_TIMEOUT: Duration = Duration::from_secs(30);

/// Where a program is: on PATH, else in the sbin folders (a service started without them on
/// its PATH still finds mke2fs).
fn program(name: &str) -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin", "/usr/bin", "/bin"].map(PathBuf::from))
        .map(|d| d.join(name))
        .find(|p| p.is_file())
        .unwrap_or_else(|| PathBuf::from(name))
}

/// Runs a program to completion; the error names it and carries what it printed.
pub async fn run(name: &str, args: &[&OsStr]) -> Result<(), String> {
    let mut cmd = tokio::process::Command::new(program(name));
    cmd.args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let out = tokio::time::timeout(PROGRAM_TIMEOUT, cmd.output())
        .await
        .map_err(|_| format!("{name} did not finish within {PROGRAM_TIMEOUT:?}"))?
        .map_err(|e| format!("cannot run {name} (is it installed?): {e}"))?;
    if out.status.success() {
        return Ok(());
    }
    let err = String::from_utf8_lossy(&out.stderr);
    Err(format!(
        "{name} failed ({}): {}",
        out.status,
        bridle_core::redact::preview(err.trim(), 400)
    ))
}

/// Binds `dir` onto itself and makes it shared. A sandbox's workspace mount follows the host
/// (rslave), which the engine only allows below a shared or slave mount; this is what makes
/// a filesystem mounted into a slot later appear in the sandbox made earlier. Under a mount
/// that is shared already (a Kubernetes volume with Bidirectional propagation) the bind joins
/// that mount's peer group, so the engine beside the service sees the same mounts.
pub fn make_shared_mount(dir: &Path) -> std::io::Result<()> {
    rustix::mount::mount_bind(dir, dir)?;
    rustix::mount::mount_change(dir, MountPropagationFlags::SHARED)?;
    Ok(())
}

pub fn bind(from: &Path, to: &Path) -> std::io::Result<()> {
    Ok(rustix::mount::mount_bind(from, to)?)
}

/// Detaches whatever is mounted at `path` (lazily: a sandbox still holding it keeps it until
/// it is gone; the loop device is freed with the last user). Not mounted is fine.
pub fn unmount(path: &Path) -> std::io::Result<()> {
    match rustix::mount::unmount(path, UnmountFlags::DETACH) {
        Ok(()) => Ok(()),
        Err(e) if e == rustix::io::Errno::INVAL || e == rustix::io::Errno::NOENT => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// True when another filesystem is mounted at `path` (its device differs from its parent's;
/// a bind of the same filesystem is not seen, and is not what this guards against).
/// Checked before removing a folder, so a removal never descends into a run's workspace.
pub fn is_mount_point(path: &Path) -> bool {
    let (Ok(me), Some(Ok(parent))) = (
        std::fs::symlink_metadata(path),
        path.parent().map(std::fs::symlink_metadata),
    ) else {
        return false;
    };
    me.dev() != parent.dev()
}

/// Mount points at or below `dir` in this process's mount namespace, deepest first.
pub fn mounts_under(dir: &Path) -> Vec<PathBuf> {
    let Ok(info) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return vec![];
    };
    let mut found: Vec<PathBuf> = info
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(|p| PathBuf::from(unescape(p)))
        .filter(|p| p.starts_with(dir))
        .collect::<HashSet<_>>()
        .into_iter()
        .collect();
    found.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    found
}

/// mountinfo escapes space, tab, newline and backslash as `\ooo`.
fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let code = b
            .get(i + 1..i + 4)
            .and_then(|t| std::str::from_utf8(t).ok())
            .and_then(|t| u8::from_str_radix(t, 8).ok());
        if b[i] == b'\\'
            && let Some(v) = code
        {
            out.push(v);
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Loop devices whose backing file is below `dir` (from sysfs).
pub fn loops_under(dir: &Path) -> Vec<PathBuf> {
    let Ok(rd) = std::fs::read_dir("/sys/block") else {
        return vec![];
    };
    rd.flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("loop"))
        .filter(|e| {
            std::fs::read_to_string(e.path().join("loop/backing_file")).is_ok_and(|f| {
                let f = f.trim_end();
                Path::new(f.strip_suffix(" (deleted)").unwrap_or(f)).starts_with(dir)
            })
        })
        .map(|e| Path::new("/dev").join(e.file_name()))
        .collect()
}

/// Removes `dir` with everything mounted below it: unmounts (deepest first), detaches loop
/// devices still backed by its images, then deletes the files. Used at shutdown, and by the
/// sweep for the folder of an instance that died.
pub async fn release_tree(dir: PathBuf) {
    let d = dir.clone();
    let _ = tokio::task::spawn_blocking(move || {
        for m in mounts_under(&d) {
            if let Err(e) = unmount(&m) {
                tracing::warn!(path = %m.display(), error = %e, "cannot unmount");
            }
        }
    })
    .await;
    // Unmounted loop filesystems free their devices themselves (mount -o loop sets
    // autoclear); one left attached without a mount is detached here.
    for dev in loops_under(&dir) {
        if let Err(e) = run("losetup", &[OsStr::new("-d"), dev.as_os_str()]).await {
            tracing::warn!(device = %dev.display(), error = %e, "cannot detach a loop device");
        }
    }
    let _ = tokio::task::spawn_blocking(move || {
        if !mounts_under(&dir).is_empty() {
            tracing::error!(path = %dir.display(), "still mounted after unmounting; left in place");
            return;
        }
        let _ = std::fs::remove_dir_all(&dir);
    })
    .await;
}

/// An instance's claim on its folder: an exclusive lock on `<root>/<instance>.lock`, held as
/// long as the process lives. The kernel drops it when the process dies (SIGKILL too), which
/// is how another instance knows the folder is nobody's.
#[derive(Debug)]
pub struct InstanceLock {
    path: PathBuf,
    _file: std::fs::File,
}

impl InstanceLock {
    /// Takes the lock. The file is made and locked under a temporary name, then renamed: a
    /// lock file another instance can see is always held by its owner from the start.
    pub fn take(root: &Path, instance: &str) -> std::io::Result<Self> {
        let tmp = root.join(format!(".{instance}.lock.new"));
        let file = std::fs::File::create(&tmp)?;
        rustix::fs::flock(&file, FlockOperation::NonBlockingLockExclusive)?;
        let path = root.join(format!("{instance}.lock"));
        std::fs::rename(&tmp, &path)?;
        Ok(Self { path, _file: file })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// Folders of instances that died without cleaning up (their lock is free): each one's
/// mounts, loop devices and files are released. Returns how many.
pub async fn sweep_dead(root: &Path, own: &InstanceLock) -> u32 {
    let Ok(rd) = std::fs::read_dir(root) else {
        return 0;
    };
    let mut swept = 0;
    for e in rd.flatten() {
        let path = e.path();
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(instance) = name.strip_suffix(".lock") else {
            continue;
        };
        if path == own.path() || instance.is_empty() || instance.starts_with('.') {
            continue;
        }
        let Ok(file) = std::fs::File::open(&path) else {
            continue;
        };
        if rustix::fs::flock(&file, FlockOperation::NonBlockingLockExclusive).is_err() {
            continue; // alive
        }
        tracing::info!(
            instance,
            "releasing the workspaces of an instance that died without cleaning up"
        );
        release_tree(root.join(instance)).await;
        let _ = std::fs::remove_file(&path);
        swept += 1;
    }
    swept
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mountinfo_paths_are_unescaped() {
        assert_eq!(unescape(r"/tmp/a\040b"), "/tmp/a b");
        assert_eq!(unescape(r"/plain"), "/plain");
        assert_eq!(unescape(r"/end\04"), r"/end\04");
    }

    #[test]
    fn a_lock_is_held_until_its_owner_lets_go() {
        let d = tempfile::tempdir().unwrap();
        let lock = InstanceLock::take(d.path(), "one").unwrap();
        let again = std::fs::File::open(d.path().join("one.lock")).unwrap();
        assert!(rustix::fs::flock(&again, FlockOperation::NonBlockingLockExclusive).is_err());
        drop(lock);
        assert!(rustix::fs::flock(&again, FlockOperation::NonBlockingLockExclusive).is_ok());
    }
}
