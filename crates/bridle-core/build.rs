//! The git revision the crate is built from, for `service.version` (`telemetry::VERSION`):
//! `BRIDLE_GIT_REVISION` when set (an image build without the repository), else `git`, else
//! `unknown`. Rebuilt when HEAD moves.

use std::process::Command;

fn git(args: &[&str]) -> Option<String> {
    let out = Command::new("git")
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
        .filter(|s| !s.is_empty())
}

#[allow(clippy::print_stdout)] // Cargo reads a build script's instructions from stdout.
fn main() {
    println!("cargo:rerun-if-env-changed=BRIDLE_GIT_REVISION");
    let given = std::env::var("BRIDLE_GIT_REVISION")
        .ok()
        .map(|r| r.trim().to_string())
        .filter(|r| !r.is_empty());
    let revision = match given {
        Some(r) => r,
        None => {
            // HEAD and the branch it names (loose, or packed): a commit or a checkout moves one.
            let mut watched = vec![git(&["rev-parse", "--git-path", "HEAD"])];
            if let Some(branch) = git(&["symbolic-ref", "-q", "HEAD"]) {
                watched.push(git(&["rev-parse", "--git-path", &branch]));
            }
            watched.push(git(&["rev-parse", "--git-path", "packed-refs"]));
            for path in watched.into_iter().flatten() {
                let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(path);
                // A path that does not exist would make Cargo rerun this on every build.
                if path.exists() {
                    println!("cargo:rerun-if-changed={}", path.display());
                }
            }
            git(&["rev-parse", "--short=12", "HEAD"]).unwrap_or_else(|| "unknown".into())
        }
    };
    println!("cargo:rustc-env=BRIDLE_GIT_REVISION={revision}");
}
