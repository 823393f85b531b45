//! The documentation's examples are true: against a real `bridle dev` (with the quickstart's
//! manifests applied), every Bridle manifest in a ```yaml block of README.md and docs/src is
//! applied with `bridle apply --dry-run` (a page's blocks together, since they may name each
//! other), and every `$ bridle ...` command of a ```console block is run and its output
//! compared with the lines shown under it.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod dev_support;

use std::path::{Path, PathBuf};

use dev_support::Dev;

/// A fenced block: its info string, its first line's number (1-based) and its text.
struct Block {
    info: String,
    line: usize,
    text: String,
}

fn blocks(md: &str) -> Vec<Block> {
    let mut out = Vec::new();
    let mut open: Option<Block> = None;
    for (i, line) in md.lines().enumerate() {
        let trimmed = line.trim_start();
        match &mut open {
            None => {
                if let Some(info) = trimmed.strip_prefix("```") {
                    open = Some(Block {
                        info: info.trim().to_string(),
                        line: i + 2,
                        text: String::new(),
                    });
                }
            }
            Some(b) => {
                if trimmed.starts_with("```") {
                    out.extend(open.take());
                } else {
                    b.text.push_str(line);
                    b.text.push('\n');
                }
            }
        }
    }
    out
}

fn pages() -> Vec<PathBuf> {
    let root = bridle_testkit::paths::workspace_root();
    let mut out = vec![root.join("README.md")];
    let mut dirs = vec![root.join("docs/src")];
    while let Some(d) = dirs.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                dirs.push(p);
            } else if p.extension().is_some_and(|x| x == "md") {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

fn rel(p: &Path) -> String {
    let root = bridle_testkit::paths::workspace_root();
    p.strip_prefix(&root).unwrap_or(p).display().to_string()
}

#[tokio::test(flavor = "multi_thread")]
async fn every_manifest_and_command_in_the_docs_is_true() {
    let root = bridle_testkit::paths::workspace_root();
    let dev = Dev::start(&[]).await;
    let run = |args: Vec<String>| {
        let mut c = dev.cmd();
        c.args(&args).current_dir(&root);
        async move {
            let out = c.output().await.unwrap();
            (
                out.status.success(),
                String::from_utf8_lossy(&out.stdout).to_string(),
                String::from_utf8_lossy(&out.stderr).to_string(),
            )
        }
    };
    // What the pages build on: the quickstart's tools, agent and route.
    let q = root.join("examples/quickstart");
    let base: Vec<String> = ["tools.yaml", "agent.yaml", "routes/scripted.yaml"]
        .iter()
        .flat_map(|f| ["-f".to_string(), q.join(f).display().to_string()])
        .collect();
    let (ok, out, err) = run([vec!["apply".to_string()], base].concat()).await;
    assert!(ok, "{out}{err}");

    let scratch = tempfile::tempdir().unwrap();
    let mut failures = Vec::new();
    let (mut manifests, mut commands) = (0, 0);
    for page in pages() {
        let md = std::fs::read_to_string(&page).unwrap();
        let mut files = Vec::new();
        let mut where_ = Vec::new();
        for b in blocks(&md) {
            let lang = b.info.split([',', ' ']).next().unwrap_or_default();
            if lang == "yaml" && b.text.contains("apiVersion: bridle.dev/v1") {
                let f = scratch
                    .path()
                    .join(format!("{}-{}.yaml", files.len(), b.line));
                std::fs::write(&f, &b.text).unwrap();
                files.push(f);
                where_.push(format!("{}:{}", rel(&page), b.line));
                manifests += 1;
            }
            if lang == "console" {
                // `$ command` lines, each followed by the output it prints.
                let mut cmds: Vec<(String, String)> = Vec::new();
                for line in b.text.lines() {
                    match line.strip_prefix("$ ") {
                        Some(c) => cmds.push((c.to_string(), String::new())),
                        None => {
                            if let Some((_, out)) = cmds.last_mut() {
                                out.push_str(line);
                                out.push('\n');
                            }
                        }
                    }
                }
                for (cmd, want) in cmds {
                    let Some(args) = cmd.strip_prefix("bridle ") else {
                        failures.push(format!(
                            "{}:{}: only `bridle` commands can be checked in a console block: {cmd}",
                            rel(&page),
                            b.line
                        ));
                        continue;
                    };
                    commands += 1;
                    let args: Vec<String> = args.split_whitespace().map(str::to_string).collect();
                    let (ok, out, err) = run(args).await;
                    if !ok || out.trim_end() != want.trim_end() {
                        failures.push(format!(
                            "{}:{}: `{cmd}` printed\n{out}{err}\ninstead of\n{want}",
                            rel(&page),
                            b.line
                        ));
                    }
                }
            }
        }
        if files.is_empty() {
            continue;
        }
        let mut args = vec!["apply".to_string(), "--dry-run".to_string()];
        for f in &files {
            args.push("-f".into());
            args.push(f.display().to_string());
        }
        let (ok, out, err) = run(args).await;
        if !ok {
            failures.push(format!(
                "the manifests of {} (blocks at {}) do not apply:\n{out}{err}",
                rel(&page),
                where_.join(", ")
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of the documentation's examples are wrong:\n\n{}",
        failures.len(),
        failures.join("\n\n")
    );
    assert!(
        manifests > 10,
        "only {manifests} manifests found in the docs"
    );
    eprintln!("checked {manifests} manifests and {commands} commands");
}
