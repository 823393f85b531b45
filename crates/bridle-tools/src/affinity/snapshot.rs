//! A run's `/workspace` in Redis, so that another replica can carry the run on.
//!
//! After each completed sandboxed call that changed the workspace, the owner writes it as a tar
//! (`<prefix>:tools:run:{<h>}:ws`, expiring with the run's idle time), but only while it is
//! still the run's owner (one script compares the owner key, which shares the hash tag). A
//! workspace larger than `workspace_snapshot_max` is not stored: a marker says so instead, and
//! the replica that takes the run over tells the run in its next tool result that its
//! workspace could not be carried over. A replica making a run's workspace restores the
//! snapshot first, before any sandbox sees the filesystem.
//!
//! The workspace is written by the tools, and this service reads it as root: the walk opens
//! every entry relative to its parent's descriptor without following symbolic links
//! (`O_NOFOLLOW`), checks the opened file's own type, and never opens anything but folders
//! and regular files, so a tool that swaps a folder for a link cannot make the snapshot read
//! a host file. Symbolic links are stored as links; fifos, sockets and devices are skipped.

use std::ffi::OsStr;
use std::io::Read as _;
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use rustix::fs::{AtFlags, Dir, FileType, Mode, OFlags};

use bridle_core::redact::Redactor;

use super::Replicas;
use crate::Error;
use crate::user::SANDBOX_UID;

/// Stores only while the caller owns the run.
const SAVE: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('SET', KEYS[2], ARGV[2], 'PX', ARGV[3])
  return 1
end
return 0";

const TAR: u8 = b'T';
const OVER: u8 = b'O';
const SECRET: u8 = b'S';

/// What packing a workspace gave.
#[derive(Debug)]
pub enum Packed {
    Tar(Vec<u8>),
    /// Larger than the cap.
    Over,
    /// It holds a value the run resolved: never stored.
    Secret,
}

#[derive(Clone)]
pub struct Snapshots {
    replicas: Replicas,
    /// The largest snapshot stored, in bytes, and as the option said it.
    max: u64,
    max_text: String,
    ttl: Duration,
}

impl Snapshots {
    pub fn new(replicas: Replicas, max: u64, max_text: String, ttl: Duration) -> Self {
        Self {
            replicas,
            max,
            max_text,
            ttl,
        }
    }

    /// Stores the workspace at `dir` as the run's snapshot (or the marker saying it is over
    /// the cap, or holds one of the run's secret `values`, which never go to Redis).
    /// Ok(false): this replica no longer owns the run, nothing was stored.
    pub async fn save(
        &self,
        tenant: &str,
        run: &str,
        dir: PathBuf,
        values: Redactor,
    ) -> Result<bool, Error> {
        let max = self.max;
        let packed = tokio::task::spawn_blocking(move || {
            pack(&dir, max).map(|p| match p {
                Packed::Tar(t) if holds_any(&values, &t) => Packed::Secret,
                other => other,
            })
        })
        .await
        .map_err(|e| Error::Core(bridle_core::Error::internal(e)))?
        .map_err(|e| Error::Workspace(format!("cannot snapshot the run's workspace: {e}")))?;
        let value = match packed {
            Packed::Tar(mut t) => {
                t.insert(0, TAR);
                t
            }
            Packed::Over => {
                tracing::warn!(run, tenant, max = %self.max_text, "a run's workspace is over workspace_snapshot_max: it cannot be carried to another replica");
                vec![OVER]
            }
            Packed::Secret => {
                tracing::warn!(
                    run,
                    tenant,
                    "a run's workspace holds a secret value it resolved: it is not stored, and cannot be carried to another replica"
                );
                vec![SECRET]
            }
        };
        let base = self.replicas.run_base(tenant, run);
        let mut conn = self.replicas.conn.clone();
        let stored: i64 = redis::Script::new(SAVE)
            .key(format!("{base}:owner"))
            .key(format!("{base}:ws"))
            .arg(&self.replicas.me.id)
            .arg(value)
            .arg(self.ttl.as_millis() as u64)
            .invoke_async(&mut conn)
            .await?;
        Ok(stored == 1)
    }

    /// Fills the fresh workspace at `dir` with the run's snapshot, if there is one, its files
    /// given to host uid `owner` (the sandbox user as the engine maps it). Returns what the
    /// run must be told when its workspace could not be carried over.
    ///
    /// Redis failing to answer is an error, not a lost workspace: the snapshot may well be
    /// there (Redis restarting, a failover, a partition), so the call fails as unavailable and
    /// the orchestrator retries it, rather than the run going on with an empty `/workspace`.
    pub async fn restore(
        &self,
        tenant: &str,
        run: &str,
        dir: PathBuf,
        owner: u32,
    ) -> Result<Option<String>, Error> {
        let key = format!("{}:ws", self.replicas.run_base(tenant, run));
        let mut conn = self.replicas.conn.clone();
        let got: Result<Option<Vec<u8>>, _> =
            redis::cmd("GET").arg(&key).query_async(&mut conn).await;
        let bytes = match got {
            Ok(Some(b)) => b,
            Ok(None) => return Ok(None),
            Err(e) => {
                tracing::warn!(run, tenant, error = %e, "cannot read a run's workspace snapshot; the call fails as unavailable and is retried");
                return Err(e.into());
            }
        };
        Ok(match bytes.split_first() {
            Some((&OVER, _)) => Some(not_carried(&format!(
                "it was larger than the {} a snapshot may hold (the tools service's workspace_snapshot_max)",
                self.max_text
            ))),
            Some((&SECRET, _)) => Some(not_carried(
                "it held a secret value the run had resolved, and such values are never stored outside the replica",
            )),
            Some((&TAR, tar)) => {
                let tar = tar.to_vec();
                let size = tar.len();
                let done = tokio::task::spawn_blocking(move || unpack(&tar, &dir, owner)).await;
                match done {
                    Ok(Ok(())) => {
                        tracing::info!(
                            run,
                            tenant,
                            bytes = size,
                            "restored a run's workspace from its snapshot"
                        );
                        None
                    }
                    Ok(Err(e)) => Some(not_carried(&format!(
                        "its snapshot could not be unpacked ({e}); /workspace may hold part of it"
                    ))),
                    Err(e) => Some(not_carried(&format!(
                        "its snapshot could not be unpacked ({e})"
                    ))),
                }
            }
            _ => Some(not_carried("its snapshot is unreadable")),
        })
    }
}

/// Whether the tar holds any form of any of the run's values (the text parts of a binary
/// archive are enough: the values are text).
fn holds_any(values: &Redactor, tar: &[u8]) -> bool {
    if values.is_empty() {
        return false;
    }
    let text = String::from_utf8_lossy(tar);
    values.redact(&text) != text
}

/// The notice a run gets in its next tool result when its workspace was lost.
fn not_carried(why: &str) -> String {
    format!(
        "[workspace not carried over: the tools replica that held this run stopped and another one took the run over, but its /workspace could not be carried over: {why}. Files written by earlier calls are gone; /workspace starts empty.]"
    )
}

/// The tree at `dir` as a tar, or Over when it passes `max` bytes.
pub fn pack(dir: &Path, max: u64) -> std::io::Result<Packed> {
    let root = rustix::fs::open(
        dir,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )?;
    let mut b = tar::Builder::new(Vec::new());
    let mut stack: Vec<(OwnedFd, PathBuf)> = vec![(root, PathBuf::new())];
    while let Some((fd, rel)) = stack.pop() {
        let mut names = Vec::new();
        for e in Dir::read_from(&fd)? {
            let e = e?;
            let n = e.file_name().to_bytes();
            if n != b"." && n != b".." {
                names.push(e.file_name().to_owned());
            }
        }
        names.sort();
        for name in names {
            let path = rel.join(OsStr::from_bytes(name.to_bytes()));
            // Gone since the listing: skipped.
            let Ok(st) = rustix::fs::statat(&fd, name.as_c_str(), AtFlags::SYMLINK_NOFOLLOW) else {
                continue;
            };
            let mut h = tar::Header::new_gnu();
            h.set_mode(st.st_mode & 0o777);
            h.set_mtime(st.st_mtime.max(0) as u64);
            h.set_uid(u64::from(SANDBOX_UID));
            h.set_gid(u64::from(SANDBOX_UID));
            match FileType::from_raw_mode(st.st_mode) {
                FileType::Directory => {
                    let Ok(d) = rustix::fs::openat(
                        &fd,
                        name.as_c_str(),
                        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                        Mode::empty(),
                    ) else {
                        continue;
                    };
                    h.set_entry_type(tar::EntryType::Directory);
                    h.set_size(0);
                    b.append_data(&mut h, &path, std::io::empty())?;
                    stack.push((d, path));
                }
                FileType::RegularFile => {
                    let Ok(f) = rustix::fs::openat(
                        &fd,
                        name.as_c_str(),
                        OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC,
                        Mode::empty(),
                    ) else {
                        continue;
                    };
                    // What was opened, not what the name pointed at a moment before.
                    let fst = rustix::fs::fstat(&f)?;
                    if FileType::from_raw_mode(fst.st_mode) != FileType::RegularFile {
                        continue;
                    }
                    let room = max.saturating_sub(b.get_ref().len() as u64);
                    if fst.st_size.max(0) as u64 > room {
                        return Ok(Packed::Over);
                    }
                    let mut data = Vec::new();
                    std::fs::File::from(f)
                        .take(room + 1)
                        .read_to_end(&mut data)?;
                    h.set_entry_type(tar::EntryType::Regular);
                    h.set_size(data.len() as u64);
                    b.append_data(&mut h, &path, data.as_slice())?;
                }
                FileType::Symlink => {
                    let target = rustix::fs::readlinkat(&fd, name.as_c_str(), Vec::new())?;
                    h.set_entry_type(tar::EntryType::Symlink);
                    h.set_size(0);
                    b.append_link(&mut h, &path, OsStr::from_bytes(target.to_bytes()))?;
                }
                _ => continue,
            }
            if b.get_ref().len() as u64 > max {
                return Ok(Packed::Over);
            }
        }
    }
    let out = b.into_inner()?;
    if out.len() as u64 > max {
        return Ok(Packed::Over);
    }
    Ok(Packed::Tar(out))
}

/// Unpacks a snapshot into the fresh, empty workspace at `dir` (no sandbox sees it yet) and
/// gives everything to the sandbox user. The tar crate refuses entries that would land
/// outside `dir` (`..`, absolute paths, paths through a link).
pub fn unpack(tar_bytes: &[u8], dir: &Path, owner: u32) -> std::io::Result<()> {
    let mut a = tar::Archive::new(tar_bytes);
    a.set_preserve_permissions(true);
    a.set_preserve_mtime(true);
    a.set_overwrite(true);
    a.set_unpack_xattrs(false);
    a.unpack(dir)?;
    chown_tree(dir, owner)
}

/// Gives every entry below `dir` to the sandbox user, links themselves (never their targets).
fn chown_tree(dir: &Path, owner: u32) -> std::io::Result<()> {
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d)? {
            let p = e?.path();
            let m = std::fs::symlink_metadata(&p)?;
            // Not root: the files stay as they were unpacked (the tests' case).
            let _ = std::os::unix::fs::lchown(&p, Some(owner), Some(owner));
            if m.is_dir() {
                stack.push(p);
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tree_survives_pack_and_unpack_links_included() {
        let from = tempfile::tempdir().unwrap();
        let p = from.path();
        std::fs::create_dir_all(p.join("sub/deeper")).unwrap();
        std::fs::write(p.join("a.txt"), "one").unwrap();
        std::fs::write(p.join("sub/deeper/b.bin"), vec![7u8; 5000]).unwrap();
        std::os::unix::fs::symlink("/etc/passwd", p.join("link")).unwrap();
        let Packed::Tar(t) = pack(p, 1 << 20).unwrap() else {
            panic!("over the cap")
        };
        let to = tempfile::tempdir().unwrap();
        unpack(&t, to.path(), SANDBOX_UID).unwrap();
        assert_eq!(
            std::fs::read_to_string(to.path().join("a.txt")).unwrap(),
            "one"
        );
        assert_eq!(
            std::fs::read(to.path().join("sub/deeper/b.bin")).unwrap(),
            vec![7u8; 5000]
        );
        assert_eq!(
            std::fs::read_link(to.path().join("link")).unwrap(),
            Path::new("/etc/passwd"),
            "the link is stored as a link, not as the file it names"
        );
    }

    #[test]
    fn a_workspace_holding_a_runs_value_is_seen() {
        let values = Redactor::new(["s3cr3t-value-123"]);
        assert!(holds_any(&values, b"\0\0config: s3cr3t-value-123\n\xff"));
        assert!(!holds_any(&values, b"\0\0config: nothing here\n\xff"));
        assert!(!holds_any(&Redactor::default(), b"s3cr3t-value-123"));
    }

    /// Seen in the cluster test: a GET that timed out while Redis restarted was reported to
    /// the run as a lost workspace, though the snapshot was there.
    #[tokio::test]
    async fn a_snapshot_redis_cannot_answer_for_fails_the_call_as_unavailable() {
        let mut redis = bridle_testkit::RedisServer::start().await.unwrap();
        let conn = bridle_core::redis_util::connect(&redis.url())
            .await
            .unwrap();
        let keys = bridle_core::redis_util::Keys::new(&bridle_testkit::unique("snap"));
        let snaps = Snapshots::new(
            Replicas::new(conn, keys, Duration::from_secs(2)),
            1 << 20,
            "1Mi".into(),
            Duration::from_secs(60),
        );
        let dir = tempfile::tempdir().unwrap();
        // No snapshot: nothing to restore and nothing to say.
        let none = snaps
            .restore("t", "run_a", dir.path().to_path_buf(), SANDBOX_UID)
            .await
            .unwrap();
        assert_eq!(none, None);

        redis.kill().await;
        let err = snaps
            .restore("t", "run_a", dir.path().to_path_buf(), SANDBOX_UID)
            .await
            .expect_err("Redis is down: the workspace is not known to be lost");
        let status = tonic::Status::from(bridle_core::Error::from(err));
        assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}");
    }

    #[test]
    fn a_tree_over_the_cap_is_not_packed() {
        let from = tempfile::tempdir().unwrap();
        std::fs::write(from.path().join("big"), vec![0u8; 70_000]).unwrap();
        assert!(matches!(
            pack(from.path(), 64 * 1024).unwrap(),
            Packed::Over
        ));
        assert!(matches!(
            pack(from.path(), 1 << 20).unwrap(),
            Packed::Tar(_)
        ));
    }
}
