//! Where things are: the workspace root and the binaries cargo built for this test run.

use std::path::PathBuf;

/// The workspace root (the folder holding the top-level Cargo.toml).
pub fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .unwrap_or_else(|_| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../.."))
}

/// Path of a workspace binary ("bridle-router", "bridle") built alongside the running test
/// (`target/<profile>/`, also from a benchmark in `target/<profile>/examples/`), or in
/// `BRIDLE_BIN_DIR` when set.
pub fn binary(name: &str) -> anyhow::Result<PathBuf> {
    let dir = match std::env::var_os("BRIDLE_BIN_DIR") {
        Some(d) => PathBuf::from(d),
        None => {
            // target/<profile>/deps/<test-binary> (or examples/<benchmark>) -> target/<profile>
            let exe = std::env::current_exe()?;
            let mut dir = exe.parent().map(PathBuf::from).unwrap_or_default();
            if dir.ends_with("deps") || dir.ends_with("examples") {
                dir.pop();
            }
            dir
        }
    };
    let p = dir.join(name);
    if p.exists() {
        Ok(p)
    } else {
        anyhow::bail!(
            "{} does not exist: build the workspace binaries first (cargo build --workspace --bins), \
             or set BRIDLE_BIN_DIR",
            p.display()
        )
    }
}

/// Finds a program on PATH (or at one of the fallbacks).
pub fn program(name: &str, fallbacks: &[&str]) -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&path) {
            let p = dir.join(name);
            if p.is_file() {
                return Some(p);
            }
        }
    }
    fallbacks.iter().map(PathBuf::from).find(|p| p.is_file())
}

/// The Python of the tools venv that scripts/install-deps.sh makes (`BRIDLE_TOOLS_VENV`, else
/// `~/.cache/bridle/venv`): Helm's library, kubernetes-validate and the chart's checks.
pub fn tools_venv_python() -> PathBuf {
    match std::env::var_os("BRIDLE_TOOLS_VENV") {
        Some(v) => PathBuf::from(v),
        None => {
            PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(".cache/bridle/venv")
        }
    }
    .join("bin/python")
}
