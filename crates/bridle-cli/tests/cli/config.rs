//! Contexts (`bridle config ...` and the config file), precedence of flag, environment,
//! context and default, usage errors, and shell completions: snapshots of what the binary
//! prints. None needs a harness: the addresses a command would use show in the error of a
//! connection nothing answers.

use std::path::Path;

use crate::support::{Ran, bridle, run};

/// A `bridle` whose config file is `dir/config.toml`.
fn with_config(dir: &Path) -> tokio::process::Command {
    let mut c = bridle();
    c.env("BRIDLE_CONFIG", dir.join("config.toml"));
    c
}

/// What a run shows, with the temporary folder as `[DIR]`.
fn shown(args: &[&str], r: &Ran, dir: &Path) -> String {
    let mut s = format!(
        "$ bridle {}\nexit {}\n{}",
        args.join(" "),
        r.code.unwrap_or(-1),
        r.stdout
    );
    if !r.stderr.is_empty() {
        s.push_str(&format!("--- stderr\n{}", r.stderr));
    }
    s.replace(&dir.display().to_string(), "[DIR]")
}

async fn show(dir: &Path, args: &[&str]) -> String {
    let r = run(with_config(dir).args(args)).await;
    shown(args, &r, dir)
}

#[tokio::test]
async fn contexts_are_created_listed_and_chosen() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(d.join("ca.pem"), "not read by config commands").unwrap();
    let mut all = Vec::new();
    all.push(show(d, &["config", "get-contexts"]).await);
    all.push(show(d, &["config", "current-context"]).await);
    all.push(
        show(
            d,
            &[
                "config",
                "set-context",
                "dev",
                "--server",
                "http://127.0.0.1:9",
                "--current",
            ],
        )
        .await,
    );
    all.push(
        show(
            d,
            &[
                "config",
                "set-context",
                "prod",
                "--server",
                "https://orchestrator.example.com:50051",
                "--approvals-server",
                "https://approvals.example.com:50054",
                "--tenant",
                "acme",
                "--tls-ca",
                &d.join("ca.pem").display().to_string(),
                "--api-key-command",
                "echo bk_from_a_command",
            ],
        )
        .await,
    );
    for format in ["table", "wide", "json", "yaml", "name"] {
        all.push(show(d, &["config", "get-contexts", "-o", format]).await);
    }
    all.push(show(d, &["config", "use-context", "prod"]).await);
    all.push(show(d, &["config", "current-context"]).await);
    all.push(show(d, &["config", "use-context", "nope"]).await);
    all.push(show(d, &["config", "set-context", "prod", "--unset", "tenant"]).await);
    all.push(show(d, &["config", "set-context", "prod", "--unset", "colour"]).await);
    all.push(
        show(
            d,
            &["config", "set-context", "prod", "--api-key", "bk_inline"],
        )
        .await,
    );
    all.push(show(d, &["config", "delete-context", "dev"]).await);
    insta::assert_snapshot!(all.join("\n"));
    // The file as the commands left it.
    insta::assert_snapshot!(
        "config_file",
        std::fs::read_to_string(d.join("config.toml"))
            .unwrap()
            .replace(&d.display().to_string(), "[DIR]")
    );
}

#[tokio::test]
async fn a_setting_comes_from_the_flag_then_the_environment_then_the_context_then_the_default() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(
        d.join("config.toml"),
        "current-context = \"a\"\n\n[contexts.a]\nserver = \"http://127.0.0.1:9\"\n\n\
         [contexts.b]\nserver = \"http://127.0.0.1:8\"\n",
    )
    .unwrap();
    // Nothing listens on these ports: the error names the address used.
    let at = |r: &Ran| {
        assert_eq!(r.code, Some(1), "{r}");
        let i = r
            .stderr
            .find("orchestrator at ")
            .unwrap_or_else(|| panic!("{r}"));
        r.stderr[i + 16..]
            .split_whitespace()
            .next()
            .unwrap()
            .to_string()
    };
    let r = run(with_config(d).args(["get", "agents"])).await;
    assert_eq!(at(&r), "http://127.0.0.1:9", "the current context's");
    assert!(
        r.stderr.contains("the address comes from context 'a' (")
            && r.stderr.contains("--server overrides it"),
        "{r}"
    );
    let r = run(with_config(d).args(["--context", "b", "get", "agents"])).await;
    assert_eq!(at(&r), "http://127.0.0.1:8", "--context's");
    let r = run(with_config(d)
        .env("BRIDLE_CONTEXT", "b")
        .args(["get", "agents"]))
    .await;
    assert_eq!(at(&r), "http://127.0.0.1:8", "BRIDLE_CONTEXT's");
    let r = run(with_config(d)
        .env("BRIDLE_SERVER", "http://127.0.0.1:7")
        .args(["get", "agents"]))
    .await;
    assert_eq!(
        at(&r),
        "http://127.0.0.1:7",
        "the environment over the context"
    );
    let r = run(with_config(d)
        .env("BRIDLE_SERVER", "http://127.0.0.1:7")
        .args(["--server", "http://127.0.0.1:6", "get", "agents"]))
    .await;
    assert_eq!(
        at(&r),
        "http://127.0.0.1:6",
        "the flag over the environment"
    );
    let r = run(with_config(d).args(["--context", "c", "get", "agents"])).await;
    insta::assert_snapshot!(shown(&["--context", "c", "get", "agents"], &r, d));
}

#[tokio::test]
async fn the_api_key_comes_from_a_file_or_a_command_and_is_never_printed() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(d.join("key"), "bk_from_a_file\n").unwrap();
    std::fs::write(
        d.join("config.toml"),
        "current-context = \"f\"\n[contexts.f]\nserver = \"http://127.0.0.1:9\"\n\
         api-key-file = \"key\"\n[contexts.c]\nserver = \"http://127.0.0.1:9\"\n\
         api-key-command = \"echo bk_from_a_command\"\n[contexts.bad]\n\
         api-key-command = \"echo no such vault entry >&2; exit 3\"\n\
         [contexts.gone]\napi-key-file = \"absent.key\"\n",
    )
    .unwrap();
    for ctx in ["f", "c"] {
        for args in [
            vec!["--context", ctx, "get", "agents"],
            vec!["--context", ctx, "config", "get-contexts", "-o", "json"],
        ] {
            let r = run(with_config(d).args(&args)).await;
            assert!(
                !r.stdout.contains("bk_from") && !r.stderr.contains("bk_from"),
                "{r}"
            );
        }
    }
    let mut all = Vec::new();
    for ctx in ["bad", "gone"] {
        let args = ["--context", ctx, "get", "agents"];
        all.push(shown(&args, &run(with_config(d).args(args)).await, d));
    }
    insta::assert_snapshot!(all.join("\n"));
}

#[tokio::test]
async fn a_bad_config_file_is_named_with_its_line_and_key() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let mut all = Vec::new();
    for (what, text) in [
        (
            "an unknown key",
            "[contexts.prod]\nserver = \"http://a:1\"\nsever = \"http://b:1\"\n",
        ),
        (
            "a key of the wrong type",
            "current-context = \"prod\"\n[contexts.prod]\ntenant = 7\n",
        ),
        ("not TOML", "[contexts.prod\nserver = 1\n"),
        (
            "a key in the clear",
            "[contexts.prod]\nserver = \"http://a:1\"\napi-key = \"bk_secret\"\n",
        ),
        (
            "a current context that does not exist",
            "current-context = \"prod\"\n[contexts.dev]\n",
        ),
    ] {
        std::fs::write(d.join("config.toml"), text).unwrap();
        let args = ["get", "agents"];
        let r = run(with_config(d).args(args)).await;
        assert!(!r.stderr.contains("bk_secret"), "{r}");
        all.push(format!("# {what}\n{}", shown(&args, &r, d)));
    }
    insta::assert_snapshot!(all.join("\n"));
}

#[tokio::test]
async fn usage_errors_exit_2_and_say_what_is_wrong() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let mut all = Vec::new();
    for args in [
        &["get", "agnet"][..],
        &["get", "agents", "-o", "xml"],
        &["describe", "agent"],
        &["delete", "run", "run_x"],
        &["delete", "agent", "a", "b"],
        &["delete", "Agent/a", "b"],
        &["apply", "-f", "-", "-f", "-"],
        &["run", "a", "-i", "x", "-o", "json"],
        &["spend", "-o", "name"],
        &["runs", "watch", "run_x", "-o", "yaml"],
        &["--tls-cert", "c.pem", "get", "agents"],
    ] {
        let r = run(with_config(d).args(args).stdin(std::process::Stdio::null())).await;
        all.push(shown(args, &r, d));
    }
    insta::assert_snapshot!(all.join("\n"));
}

#[tokio::test]
async fn completions_are_printed_for_bash_zsh_and_fish() {
    let dir = tempfile::tempdir().unwrap();
    for shell in ["bash", "zsh", "fish"] {
        let r = run(with_config(dir.path()).args(["completion", shell])).await;
        assert_eq!(r.code, Some(0), "{r}");
        for word in ["get", "describe", "use-context", "output"] {
            assert!(r.stdout.contains(word), "{shell} completion lacks {word}");
        }
        if shell == "fish" {
            // The whole script for one shell: any new or changed flag or command shows here.
            insta::assert_snapshot!("completion_fish", r.stdout);
        }
    }
}

#[tokio::test]
async fn a_relative_path_given_to_set_context_is_stored_absolute() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::create_dir(d.join("work")).unwrap();
    let r = run(with_config(d).current_dir(d.join("work")).args([
        "config",
        "set-context",
        "rel",
        "--tls-ca",
        "ca.pem",
    ]))
    .await;
    assert_eq!(r.code, Some(0), "{r}");
    let file = std::fs::read_to_string(d.join("config.toml")).unwrap();
    let want = format!("tls-ca = \"{}\"", d.join("work/ca.pem").display());
    assert!(file.contains(&want), "{file}");
}
