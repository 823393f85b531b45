//! Snapshots of what `bridle` prints against a real `bridle dev`: `apply -f -`, `get` and
//! `describe` of every kind in every format, `delete --dry-run` and `delete`, `runs watch`,
//! and the errors of a missing object. Ids, times, durations and addresses are replaced by
//! placeholders; everything else must match the committed snapshot (`cargo insta review`
//! updates one after a deliberate change).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod dev_support;

use std::process::Stdio;
use std::time::Duration;

use dev_support::Dev;
use tokio::io::AsyncWriteExt as _;

const MANIFESTS: &str = r#"apiVersion: bridle.dev/v1
kind: Agent
metadata:
  name: greeter
spec:
  description: Says hello.
  route: hello
  instructions: Greet the user.
  budget:
    maxSteps: 3
---
apiVersion: bridle.dev/v1
kind: Agent
metadata:
  name: cleaner
spec:
  route: clean
  tools: [wipe]
---
apiVersion: bridle.dev/v1
kind: Tool
metadata:
  name: wipe
spec:
  description: Deletes a dataset (it never runs here; the approval gate in front of it is the point).
  risk: destructive
  parameters:
    type: object
    properties:
      dataset: {type: string}
    required: [dataset]
  container:
    image: bridle-sandbox:python
    command: ["python3", "-c", "print('wiped')"]
---
apiVersion: bridle.dev/v1
kind: ModelRoute
metadata:
  name: hello
spec:
  targets:
    - name: offline
      provider: scripted
      script:
        - text: Hello there.
---
apiVersion: bridle.dev/v1
kind: ModelRoute
metadata:
  name: clean
spec:
  targets:
    - name: offline
      provider: scripted
      script:
        - text: Wiping it.
          toolCalls:
            - name: wipe
              arguments: {dataset: old}
        - text: Done.
"#;

/// Ids, times, durations, trace ids and addresses as placeholders. Ids and times in tables
/// keep their width (`run_XXXX...`, `####-##-##T##:##:##Z`), so columns stay aligned.
fn redact(s: &str) -> String {
    let same_width = [
        r"\b(run|apr|key)_[0-9A-Za-z]{10,}",
        r"\b\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ\b",
    ];
    let mut s = s.to_string();
    for re in same_width {
        s = regex::Regex::new(re)
            .unwrap()
            .replace_all(&s, |c: &regex::Captures| match c.get(1) {
                Some(prefix) => format!(
                    "{}_{}",
                    prefix.as_str(),
                    "X".repeat(c[0].len() - prefix.len() - 1)
                ),
                None => c[0]
                    .chars()
                    .map(|ch| if ch.is_ascii_digit() { '#' } else { ch })
                    .collect(),
            })
            .into_owned();
    }
    let rules = [
        (
            r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d+(Z|[+-]\d\d:\d\d)",
            "[TIME]",
        ),
        (r#""\d+(\.\d+)?s""#, r#""[DURATION]""#),
        (r"\b\d+(\.\d+)?(ms|µs|s)\b", "[DURATION]"),
        (r#"("traceId": ?)"[0-9a-f]+""#, r#"$1"[TRACE]""#),
        (r"127\.0\.0\.1:\d+", "127.0.0.1:[PORT]"),
        (
            r#"("(?:atMs|offset|lastEventOffset)": ?)"\d+""#,
            r#"$1"[N]""#,
        ),
    ];
    for (re, with) in rules {
        s = regex::Regex::new(re)
            .unwrap()
            .replace_all(&s, with)
            .into_owned();
    }
    s
}

struct Cli<'a>(&'a Dev);

impl Cli<'_> {
    /// Runs `bridle ARGS`: "exit N", stdout, and stderr when there is any, redacted.
    async fn show(&self, args: &[&str]) -> String {
        let out = self.0.cmd().args(args).output().await.unwrap();
        let mut s = format!(
            "$ bridle {}\nexit {}\n{}",
            args.join(" "),
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout)
        );
        let err = String::from_utf8_lossy(&out.stderr);
        if !err.is_empty() {
            s.push_str(&format!("--- stderr\n{err}"));
        }
        redact(&s)
    }

    async fn stdout(&self, args: &[&str]) -> String {
        let out = self.0.cmd().args(args).output().await.unwrap();
        assert!(
            out.status.success(),
            "bridle {args:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn what_the_cli_prints_against_a_real_harness() {
    let dev = Dev::start(&[]).await;
    let cli = Cli(&dev);

    // apply -f - : the manifests come on stdin.
    let mut apply = dev
        .cmd()
        .args(["apply", "-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = apply.stdin.take().unwrap();
    stdin.write_all(MANIFESTS.as_bytes()).await.unwrap();
    drop(stdin);
    let applied = apply.wait_with_output().await.unwrap();
    assert!(applied.status.success(), "{applied:?}\n{}", dev.log());
    insta::assert_snapshot!("apply_stdin", String::from_utf8_lossy(&applied.stdout));

    for (name, args) in [
        ("get_agents", &["get", "agents"][..]),
        ("get_agents_wide", &["get", "agents", "-o", "wide"]),
        ("get_agents_json", &["get", "agents", "-o", "json"]),
        ("get_agents_yaml", &["get", "agents", "-o", "yaml"]),
        ("get_agents_name", &["get", "agents", "-o", "name"]),
        ("get_agent_json", &["get", "Agent/greeter", "-o", "json"]),
        ("get_tools", &["get", "tools"]),
        ("get_routes", &["get", "modelroutes", "-o", "wide"]),
        ("get_policies_empty", &["get", "policies"]),
        (
            "get_policies_empty_json",
            &["get", "policies", "-o", "json"],
        ),
        ("describe_agent", &["describe", "agent", "cleaner"]),
        (
            "describe_agent_json",
            &["describe", "agent", "cleaner", "-o", "json"],
        ),
        ("describe_tool", &["describe", "tool", "wipe"]),
        ("get_models", &["get", "models"]),
        ("get_models_json", &["get", "models", "-o", "json"]),
        ("describe_model", &["describe", "model", "hello"]),
        ("get_missing", &["get", "agent", "nobody"]),
        ("describe_missing_run", &["describe", "run", "run_nope"]),
    ] {
        insta::assert_snapshot!(name, cli.show(args).await);
    }

    // A run to its end, followed by `runs watch` (text, then JSON lines).
    let run = cli.stdout(&["run", "greeter", "-i", "hi"]).await;
    let run = run.trim();
    let watched = cli.show(&["runs", "watch", run]).await;
    insta::assert_snapshot!("runs_watch", watched);
    let lines = cli.stdout(&["runs", "watch", run, "-o", "json"]).await;
    for l in lines.lines() {
        serde_json::from_str::<serde_json::Value>(l)
            .unwrap_or_else(|e| panic!("not one JSON object per line ({e}): {l}"));
    }
    insta::assert_snapshot!("runs_watch_json", redact(&lines));
    insta::assert_snapshot!(
        "get_run_json",
        cli.show(&["get", "run", run, "-o", "json"]).await
    );
    insta::assert_snapshot!("get_runs", cli.show(&["get", "runs"]).await);
    insta::assert_snapshot!(
        "get_runs_wide",
        cli.show(&["runs", "list", "-o", "wide"]).await
    );

    // A run parked on an approval.
    let parked = cli.stdout(&["run", "cleaner", "-i", "wipe old"]).await;
    let parked = parked.trim().to_string();
    let approval = bridle_testkit::wait_for("a pending approval", Duration::from_secs(60), || {
        let cli = &cli;
        async move {
            let names = cli.stdout(&["get", "approvals", "-o", "name"]).await;
            names
                .lines()
                .next()
                .map(|l| l.trim_start_matches("Approval/").to_string())
        }
    })
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", dev.log()));
    insta::assert_snapshot!("get_approvals", cli.show(&["get", "approvals"]).await);
    insta::assert_snapshot!(
        "get_approval_yaml",
        cli.show(&["get", "approval", &approval, "-o", "yaml"])
            .await
    );
    insta::assert_snapshot!(
        "describe_approval",
        cli.show(&["describe", "approval", &approval]).await
    );
    cli.stdout(&["approvals", "deny", &approval, "--reason", "keep it"])
        .await;
    let ended = cli.show(&["runs", "watch", &parked]).await;
    assert!(
        ended.contains("run succeeded") || ended.contains("run failed"),
        "{ended}"
    );

    // Keys: created, listed, revoked through delete.
    let created = dev
        .cmd()
        .args(["keys", "create", "--name", "ci", "--role", "viewer"])
        .output()
        .await
        .unwrap();
    assert!(created.status.success(), "{created:?}");
    let keys = cli.stdout(&["get", "keys", "-o", "name"]).await;
    let key = keys.lines().next().unwrap().trim().to_string();
    insta::assert_snapshot!("get_keys", cli.show(&["get", "keys"]).await);
    insta::assert_snapshot!(
        "whoami_json",
        cli.show(&["keys", "whoami", "-o", "json"]).await
    );
    insta::assert_snapshot!(
        "delete_key_dry_run",
        cli.show(&["delete", &key, "--dry-run"]).await
    );
    insta::assert_snapshot!("delete_key", cli.show(&["delete", &key]).await);
    insta::assert_snapshot!(
        "get_keys_revoked_json",
        cli.show(&["get", "keys", "-o", "json"]).await
    );

    // Deleting a manifest: a dry run changes nothing, then the delete, then it is gone.
    insta::assert_snapshot!(
        "delete_agent_dry_run",
        cli.show(&["delete", "agent", "greeter", "--dry-run"]).await
    );
    assert!(
        cli.stdout(&["get", "agents", "-o", "name"])
            .await
            .contains("Agent/greeter")
    );
    insta::assert_snapshot!(
        "delete_agent",
        cli.show(&["delete", "agent", "greeter"]).await
    );
    insta::assert_snapshot!(
        "delete_agent_again",
        cli.show(&["delete", "agent", "greeter"]).await
    );
    insta::assert_snapshot!(
        "delete_run_refused",
        cli.show(&["delete", "run", "run_x"]).await
    );
    insta::assert_snapshot!(
        "history_json",
        cli.show(&["history", "Agent/greeter", "-o", "json"]).await
    );

    // What `get -o yaml` prints applies again, unchanged.
    let yaml = cli.stdout(&["get", "tool", "wipe", "-o", "yaml"]).await;
    let mut again = dev
        .cmd()
        .args(["apply", "-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = again.stdin.take().unwrap();
    stdin.write_all(yaml.as_bytes()).await.unwrap();
    drop(stdin);
    let again = again.wait_with_output().await.unwrap();
    assert!(again.status.success(), "{again:?}");
    assert_eq!(
        String::from_utf8_lossy(&again.stdout).trim(),
        "Tool/wipe unchanged"
    );
}
