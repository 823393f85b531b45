//! The compose test's plumbing: bounded commands, prerequisites, a compose project that is torn
//! down when dropped, and removal of projects left by killed runs.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::print_stderr
)]

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use tokio::process::Command;

pub const PROJECT_PREFIX: &str = "bridlect";

/// Runs a command with a bound; returns (success, stdout, stderr).
pub async fn run(cmd: &mut Command, limit: Duration) -> (bool, String, String) {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let what = format!("{cmd:?}");
    let out = tokio::time::timeout(limit, cmd.output())
        .await
        .unwrap_or_else(|_| panic!("{what} did not finish within {limit:?}"))
        .unwrap_or_else(|e| panic!("{what}: {e}"));
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The python sandbox image, and images of this test run's binaries (`bin_dir`) tagged
/// `:test`, so a developer's `:local` images stay as they are. The first build debootstraps
/// the bases (a minute or two); later ones hit the cache. One build at a time on the machine.
pub async fn build_test_images(root: &Path, bin_dir: &Path) {
    bridle_testkit::docker::ensure_sandbox_image("python")
        .await
        .unwrap();
    let (ok, out, err) = run(
        Command::new("flock")
            .arg("/tmp/bridle-images-build.lock")
            .args(["bash", "deploy/images/build.sh", "--bases", "--bin-dir"])
            .arg(bin_dir)
            .current_dir(root)
            .env("BRIDLE_IMAGE_TAG", "test"),
        Duration::from_secs(1200),
    )
    .await;
    assert!(ok, "building the images failed:\n{out}\n{err}");
}

fn sync_ok(program: &str, args: &[&str]) -> bool {
    std::process::Command::new(program)
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

/// Why images cannot be built here, if they cannot.
pub fn missing_prerequisite() -> Option<String> {
    if !sync_ok("docker", &["info"]) {
        return Some("the Docker engine does not answer".into());
    }
    if !sync_ok("docker-compose", &["version"]) {
        return Some("docker-compose is not installed".into());
    }
    if !Path::new("/var/run/docker.sock").exists() {
        return Some("no /var/run/docker.sock for the tools service to mount".into());
    }
    let bases_built = sync_ok("docker", &["image", "inspect", "bridle/runtime-base:local"]);
    if !bases_built
        && bridle_testkit::paths::program("debootstrap", &["/usr/sbin/debootstrap"]).is_none()
    {
        return Some("debootstrap is missing and the base images are not built".into());
    }
    None
}

/// Mount points at or below `dir` in this process's mount namespace (the host's), deepest first.
fn mounts_at_or_below(dir: &Path) -> Vec<PathBuf> {
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let mut found: Vec<PathBuf> = info
        .lines()
        .filter_map(|l| l.split(' ').nth(4).map(PathBuf::from))
        .filter(|p| p.starts_with(dir))
        .collect();
    found.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    found
}

/// Whether the mount that holds `dir` is shared (the innermost mount point above it; the last
/// one mounted there wins, as in path lookup).
fn on_shared_mount(dir: &Path) -> bool {
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let mut best: Option<(usize, bool)> = None;
    for l in info.lines() {
        let fields: Vec<&str> = l.split(' ').collect();
        let (Some(point), Some(optional)) = (fields.get(4), fields.get(6..)) else {
            continue;
        };
        let point = Path::new(point);
        if !dir.starts_with(point) {
            continue;
        }
        let depth = point.components().count();
        let shared = optional
            .iter()
            .take_while(|f| **f != "-")
            .any(|f| f.starts_with("shared:"));
        if best.is_none_or(|(d, _)| depth >= d) {
            best = Some((depth, shared));
        }
    }
    best.is_some_and(|(_, shared)| shared)
}

/// Makes `dir` usable as the stack's BRIDLE_TOOLS_WORKSPACE: docker-compose.yml binds it into
/// the tools service with rshared propagation, which Docker accepts only for a folder on a
/// shared mount of the host. Where it is not (a host without systemd, like this CI machine),
/// it is bound onto itself and made shared, as the file's header tells a user to do;
/// [`release_workspace`] undoes it.
pub fn share_workspace(dir: &Path) -> Result<(), String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    if on_shared_mount(dir) {
        return Ok(());
    }
    let d = dir.to_string_lossy();
    for args in [&["--bind", &*d, &*d][..], &["--make-shared", &*d][..]] {
        let out = std::process::Command::new("mount")
            .args(args)
            .output()
            .map_err(|e| format!("cannot run mount: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "{} is not on a shared mount, and `mount {}` failed ({}): {}. Run the test as \
                 root, or where / is shared (systemd makes it so)",
                dir.display(),
                args.join(" "),
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
    }
    Ok(())
}

/// Unmounts (lazily, deepest first) what is mounted at or below the workspace folder: the bind
/// [`share_workspace`] made, and run workspaces of a tools service killed before it cleaned up.
/// Then removes the folder (best effort).
pub fn release_workspace(dir: &Path) {
    for m in mounts_at_or_below(dir) {
        let _ = std::process::Command::new("umount")
            .arg("--lazy")
            .arg(&m)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
    if mounts_at_or_below(dir).is_empty() {
        let _ = std::fs::remove_dir_all(dir);
    }
}

/// A compose project; `down -v` when dropped, whatever happened.
pub struct Stack {
    pub root: PathBuf,
    pub project: String,
    pub env: Vec<(String, String)>,
}

impl Stack {
    pub fn compose(&self) -> Command {
        let mut c = Command::new("docker-compose");
        c.current_dir(&self.root).args(["--ansi", "never"]).args([
            "-p",
            &self.project,
            "-f",
            "docker-compose.yml",
        ]);
        // Only what the test sets: variables of the developer's shell must not change the stack.
        for k in [
            "OPENAI_API_KEY",
            "BRIDLE_LOG",
            "BRIDLE_KEY_PREFIX",
            "BRIDLE_BIND",
        ] {
            c.env_remove(k);
        }
        c.envs(self.env.iter().map(|(k, v)| (k, v)));
        c
    }

    pub async fn compose_ok(&self, args: &[&str], limit: Duration) -> String {
        let (ok, out, err) = run(self.compose().args(args), limit).await;
        assert!(
            ok,
            "docker-compose {args:?} failed:\n{out}\n{err}\n{}",
            self.logs().await
        );
        out
    }

    pub async fn logs(&self) -> String {
        let (_, out, err) = run(
            self.compose().args(["logs", "--no-color", "--tail", "40"]),
            Duration::from_secs(60),
        )
        .await;
        format!("--- docker-compose logs ---\n{out}{err}")
    }

    /// `docker inspect` of a service's container with a Go template.
    pub async fn inspect(&self, service: &str, format: &str) -> String {
        let id = self
            .compose_ok(&["ps", "-q", service], Duration::from_secs(60))
            .await;
        let id = id.trim();
        assert!(!id.is_empty(), "no container for {service}");
        let (_, out, _) = run(
            Command::new("docker").args(["inspect", "-f", format, id]),
            Duration::from_secs(30),
        )
        .await;
        out.trim().to_string()
    }

    fn down(project: &str, root: &Path) {
        let _ = std::process::Command::new("docker-compose")
            .current_dir(root)
            .args(["--ansi", "never", "-p", project, "-f", "docker-compose.yml"])
            .args(["down", "-v", "--remove-orphans", "-t", "5"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        Stack::down(&self.project, &self.root);
        release_workspace(Path::new(&format!("/tmp/{}-tools", self.project)));
        if let Some((_, ns)) = self
            .env
            .iter()
            .find(|(k, _)| k == "BRIDLE_TOOLS_LABEL_NAMESPACE")
        {
            let _ = std::process::Command::new("sh")
                .arg("-c")
                .arg(format!(
                    "docker ps -aq --filter label={ns}.managed=true | xargs -r docker rm -f"
                ))
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
    }
}

/// Compose projects of this test whose process is gone (a run killed by a timeout).
pub fn reap_stale_projects(root: &Path) {
    let label = "com.docker.compose.project";
    let mut names = std::collections::BTreeSet::new();
    for kind in [
        &["ps", "-a"][..],
        &["network", "ls"][..],
        &["volume", "ls"][..],
    ] {
        let out = std::process::Command::new("docker")
            .args(kind)
            .args(["--filter", &format!("label={label}"), "--format"])
            .arg(format!("{{{{.Label \"{label}\"}}}}"))
            .output();
        if let Ok(out) = out {
            for name in String::from_utf8_lossy(&out.stdout).lines() {
                names.insert(name.trim().to_string());
            }
        }
    }
    for name in names {
        let Some(rest) = name.strip_prefix(PROJECT_PREFIX) else {
            continue;
        };
        let pid = rest.split('x').next().unwrap_or_default();
        if !pid.is_empty() && !Path::new(&format!("/proc/{pid}")).exists() {
            eprintln!("removing compose project {name} left by a run that is gone");
            Stack::down(&name, root);
            release_workspace(Path::new(&format!("/tmp/{name}-tools")));
        }
    }
}

pub fn bridle(bin: &Path, stack_env: &[(String, String)]) -> Command {
    let port = |k: &str| {
        stack_env
            .iter()
            .find(|(n, _)| n == k)
            .map(|(_, v)| v.clone())
            .unwrap()
    };
    let mut c = Command::new(bin);
    c.env(
        "BRIDLE_SERVER",
        format!("http://127.0.0.1:{}", port("BRIDLE_ORCHESTRATOR_PORT")),
    )
    .env(
        "BRIDLE_APPROVALS_SERVER",
        format!("http://127.0.0.1:{}", port("BRIDLE_APPROVALS_PORT")),
    )
    // The tenant the quickstart job applies to, named as a user of a shared deployment would.
    .env("BRIDLE_TENANT", "default")
    .env_remove("BRIDLE_API_KEY")
    .kill_on_drop(true);
    c
}
