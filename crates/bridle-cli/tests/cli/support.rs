//! Running the real `bridle` binary with a clean environment.

use std::process::Output;

use tokio::process::Command;

/// `bridle` with none of the caller's BRIDLE_* or TLS settings or contexts, so a developer's shell cannot
/// change what a test sees.
pub fn bridle() -> Command {
    let mut c = Command::new(bridle_testkit::paths::binary("bridle").unwrap());
    for (k, _) in std::env::vars_os() {
        if k.to_string_lossy().starts_with("BRIDLE_") {
            c.env_remove(&k);
        }
    }
    // No config file (a developer's contexts would change what a test reaches).
    c.env(
        "BRIDLE_CONFIG",
        std::env::temp_dir().join("bridle-tests-no-config.toml"),
    )
    .env_remove("SSL_CERT_FILE")
    .env_remove("SSL_CERT_DIR")
    .kill_on_drop(true);
    c
}

pub struct Ran {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl From<Output> for Ran {
    fn from(o: Output) -> Self {
        Ran {
            code: o.status.code(),
            stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
        }
    }
}

impl std::fmt::Display for Ran {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "exit {:?}\n--- stdout\n{}--- stderr\n{}",
            self.code, self.stdout, self.stderr
        )
    }
}

pub async fn run(cmd: &mut Command) -> Ran {
    cmd.output().await.unwrap().into()
}
