//! MCP tools against real servers nobody here wrote: `mcp-server-time` and `mcp-server-git`
//! from PyPI over stdio in a sandbox (image `bridle-sandbox:mcp`), `mcp-server-time` and
//! `mcp-server-fetch` as configured local processes, and a streamable-HTTP server written with the official `mcp`
//! Python SDK.

use std::collections::BTreeMap;
use std::time::Duration;

use bridle_proto::{ListToolsRequest, RiskClass, ToolErrorKind, ToolSpec};
use serde_json::json;

use crate::helpers::{Harness, Setup, TENANT};

fn fixtures() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

/// The host venv with `mcp` and `mcp-server-time` (made once, under a lock).
async fn venv() -> std::path::PathBuf {
    venv_of("").await
}

/// `mcp-venv.sh <which>`'s venv.
async fn venv_of(which: &str) -> std::path::PathBuf {
    bridle_testkit::mcp::venv(which).await.unwrap()
}

async fn list(h: &Harness, names: &[&str]) -> Vec<ToolSpec> {
    let r = h
        .tools
        .clone()
        .list_tools(ListToolsRequest {
            tenant: TENANT.into(),
            names: names.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(r.missing.is_empty(), "{:?}", r.missing);
    r.tools
}

fn risk(specs: &[ToolSpec], name: &str) -> RiskClass {
    let s = specs
        .iter()
        .find(|s| s.name == name)
        .unwrap_or_else(|| panic!("{name} in {specs:?}"));
    RiskClass::try_from(s.risk).unwrap()
}

const TIME_STDIO: &str = r#"apiVersion: bridle.dev/v1
kind: Tool
metadata:
  name: time
spec:
  description: Current time and time zone conversions.
  mcp:
    stdio:
      image: bridle-sandbox:mcp
      command: [mcp-server-time, --local-timezone, UTC]
      limits: {memory: 256Mi}
"#;

#[tokio::test]
async fn mcp_server_time_over_stdio_in_a_sandbox() {
    let h = Harness::start_with(Setup {
        images: vec!["mcp"],
        ..Setup::default()
    })
    .await;
    h.apply(TIME_STDIO).await;
    let specs = list(&h, &["time"]).await;
    let mut names: Vec<&str> = specs.iter().map(|s| s.name.as_str()).collect();
    names.sort();
    assert_eq!(names, ["time__convert_time", "time__get_current_time"]);
    assert_eq!(
        risk(&specs, "time__get_current_time"),
        RiskClass::ReadOnly,
        "readOnlyHint"
    );
    let schema: serde_json::Value = serde_json::from_str(
        &specs
            .iter()
            .find(|s| s.name == "time__get_current_time")
            .unwrap()
            .parameters_json_schema,
    )
    .unwrap();
    assert!(schema["properties"]["timezone"].is_object(), "{schema}");

    let r = h
        .call(
            "run_t",
            "time__get_current_time",
            json!({"timezone": "Asia/Tokyo"}),
        )
        .await;
    assert!(!r.is_error, "{r:?}");
    let v: serde_json::Value = serde_json::from_str(&r.output).unwrap();
    assert_eq!(v["timezone"], "Asia/Tokyo", "{v}");
    assert_eq!(
        r.sandbox_id.len(),
        12,
        "the server runs in a sandbox: {r:?}"
    );

    let r = h
        .call(
            "run_t",
            "time__convert_time",
            json!({"source_timezone": "UTC", "time": "12:00", "target_timezone": "Asia/Kolkata"}),
        )
        .await;
    assert!(r.output.contains("17:30"), "{r:?}");

    // The server's schema is enforced before anything is sent.
    let r = h.call("run_t", "time__get_current_time", json!({})).await;
    assert_eq!(
        r.error_kind,
        ToolErrorKind::InvalidArguments as i32,
        "{r:?}"
    );
    // The manifest itself is not callable.
    let e = h
        .execute(h.request_in("run_t", "time", json!({})))
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument);
    assert!(
        e.message().contains("time__get_current_time"),
        "{}",
        e.message()
    );

    assert_eq!(
        h.end_run("run_t").await,
        1,
        "one server sandbox for the run"
    );
    h.stop().await;
}

#[tokio::test]
async fn mcp_server_git_over_stdio_works_on_the_runs_workspace() {
    let h = Harness::start_with(Setup {
        images: vec!["mcp"],
        ..Setup::default()
    })
    .await;
    h.apply(
        r#"apiVersion: bridle.dev/v1
kind: Tool
metadata:
  name: git
spec:
  description: Git on the run's workspace.
  mcp:
    stdio:
      image: bridle-sandbox:mcp
      command: [mcp-server-git]
"#,
    )
    .await;
    // A code tool in the same image makes a repository in the run's workspace.
    h.apply(
        r#"apiVersion: bridle.dev/v1
kind: Tool
metadata:
  name: sh
spec:
  description: Python in the MCP image.
  parameters: {type: object, properties: {code: {type: string}}, required: [code]}
  code:
    language: python
    image: bridle-sandbox:mcp
"#,
    )
    .await;
    let specs = list(&h, &["git"]).await;
    assert_eq!(risk(&specs, "git__git_status"), RiskClass::ReadOnly);
    assert_eq!(
        risk(&specs, "git__git_commit"),
        RiskClass::Mutating,
        "destructiveHint: false"
    );
    assert_eq!(risk(&specs, "git__git_reset"), RiskClass::Destructive);

    let make = r#"
import os, subprocess
env = dict(os.environ, GIT_AUTHOR_NAME="t", GIT_AUTHOR_EMAIL="t@x", GIT_COMMITTER_NAME="t", GIT_COMMITTER_EMAIL="t@x")
subprocess.run(["git", "init", "-q", "-b", "main", "repo"], check=True)
open("repo/readme.md", "w").write("hello\n")
subprocess.run(["git", "-C", "repo", "add", "."], check=True, env=env)
subprocess.run(["git", "-C", "repo", "commit", "-q", "-m", "first commit"], check=True, env=env)
open("repo/new.txt", "w").write("untracked\n")
print("ok")
"#;
    let r = h.call("run_g", "sh", json!({"code": make})).await;
    assert_eq!(r.stdout, "ok\n", "{r:?}");

    let status = h
        .call(
            "run_g",
            "git__git_status",
            json!({"repo_path": "/workspace/repo"}),
        )
        .await;
    assert!(!status.is_error, "{status:?}");
    assert!(status.output.contains("new.txt"), "{}", status.output);
    let log = h
        .call(
            "run_g",
            "git__git_log",
            json!({"repo_path": "/workspace/repo"}),
        )
        .await;
    assert!(log.output.contains("first commit"), "{}", log.output);
    // Another run has no such repository.
    let other = h
        .call(
            "run_other",
            "git__git_status",
            json!({"repo_path": "/workspace/repo"}),
        )
        .await;
    assert!(other.is_error, "{other:?}");
    h.stop().await;
}

#[tokio::test]
async fn mcp_server_time_as_a_configured_local_process() {
    let venv = venv().await;
    let server = bridle_tools::mcp::LocalServer {
        command: vec![
            venv.join("bin/mcp-server-time")
                .to_string_lossy()
                .into_owned(),
            "--local-timezone".into(),
            "UTC".into(),
        ],
        env: BTreeMap::new(),
        ..Default::default()
    };
    let h = Harness::start_with(Setup {
        mcp_local_servers: BTreeMap::from([("time".to_string(), server)]),
        ..Setup::default()
    })
    .await;
    h.apply(
        "apiVersion: bridle.dev/v1\nkind: Tool\nmetadata:\n  name: clock\nspec:\n  description: Time.\n  mcp:\n    local: time\n    prefix: clk\n",
    )
    .await;
    h.apply(
        "apiVersion: bridle.dev/v1\nkind: Tool\nmetadata:\n  name: nope\nspec:\n  description: Missing.\n  mcp:\n    local: nothing\n",
    )
    .await;
    let specs = list(&h, &["clock"]).await;
    assert!(
        specs.iter().any(|s| s.name == "clk__get_current_time"),
        "{specs:?}"
    );
    let r = h
        .call(
            "",
            "clk__get_current_time",
            json!({"timezone": "Europe/Paris"}),
        )
        .await;
    assert!(r.output.contains("Europe/Paris"), "{r:?}");
    assert_eq!(r.sandbox_id, "mcp:local:time");

    let e = h
        .tools
        .clone()
        .list_tools(ListToolsRequest {
            tenant: TENANT.into(),
            names: vec!["nope".into()],
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::FailedPrecondition);
    assert_eq!(
        e.message(),
        "tool 'nope': spec.mcp.local: 'nothing' is not a local MCP server of this tool service (configured: time)"
    );
    h.stop().await;
}

/// `mcp-server-fetch` from PyPI as configured local processes: by default it refuses loopback
/// addresses, and that refusal comes back as the call's error with the server's reason; started
/// with `--allow-private-ips` it reads a page from a server on this machine.
#[tokio::test]
async fn mcp_server_fetch_refuses_private_addresses_unless_configured_and_reads_a_page() {
    let venv = venv().await;
    let page = axum::Router::new().route(
        "/page.html",
        axum::routing::get(|| async {
            axum::response::Html("<html><body><h1>Hello from Bridle</h1></body></html>")
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/page.html", listener.local_addr().unwrap());
    #[allow(clippy::disallowed_methods)] // The test's page server, dropped with the test.
    let _web = tokio::spawn(async move { axum::serve(listener, page).await });
    let fetch = |extra: &[&str]| bridle_tools::mcp::LocalServer {
        command: [
            venv.join("bin/mcp-server-fetch")
                .to_string_lossy()
                .into_owned(),
            "--ignore-robots-txt".into(),
        ]
        .into_iter()
        .chain(extra.iter().map(|s| s.to_string()))
        .collect(),
        ..Default::default()
    };
    let h = Harness::start_with(Setup {
        mcp_local_servers: BTreeMap::from([
            ("fetch".to_string(), fetch(&[])),
            ("fetch-private".to_string(), fetch(&["--allow-private-ips"])),
        ]),
        ..Setup::default()
    })
    .await;
    h.apply(&local_tool("web", "fetch", "")).await;
    h.apply(&local_tool("intranet", "fetch-private", "")).await;
    // The server annotates its tool read-only.
    let specs = list(&h, &["web"]).await;
    assert_eq!(risk(&specs, "web__fetch"), RiskClass::ReadOnly, "{specs:?}");

    let r = h.call("", "web__fetch", json!({"url": url})).await;
    assert!(r.is_error, "{r:?}");
    assert!(r.output.contains("not a public address"), "{r:?}");
    // `raw`: the page as it is (the simplified form needs a Node.js package fetched at run time).
    let r = h
        .call("", "intranet__fetch", json!({"url": url, "raw": true}))
        .await;
    assert!(!r.is_error, "{r:?}");
    assert!(r.output.contains("Hello from Bridle"), "{r:?}");
    h.stop().await;
}

struct PyServer {
    _child: tokio::process::Child,
}

impl PyServer {
    async fn start() -> (Self, u16) {
        let venv = venv().await;
        let port = bridle_testkit::ports::free_port().unwrap();
        let child = tokio::process::Command::new(venv.join("bin/python"))
            .arg(fixtures().join("mcp_http_server.py"))
            .arg(port.to_string())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        bridle_testkit::wait_for(
            "the MCP test server",
            Duration::from_secs(60),
            || async move {
                tokio::net::TcpStream::connect(("127.0.0.1", port))
                    .await
                    .ok()
                    .map(|_| ())
            },
        )
        .await
        .unwrap();
        (Self { _child: child }, port)
    }
}

#[tokio::test]
async fn a_streamable_http_server_with_annotations_errors_and_overrides() {
    let (_server, port) = PyServer::start().await;
    let h = Harness::start().await;
    h.apply(&format!(
        "apiVersion: bridle.dev/v1\nkind: Tool\nmetadata:\n  name: remote\nspec:\n  description: Test server.\n  risk: read_only\n  mcp:\n    url: http://127.0.0.1:{port}/mcp\n    headers:\n      X-Team: platform\n    riskOverrides:\n      touch: destructive\n"
    ))
    .await;
    let specs = list(&h, &["remote"]).await;
    assert_eq!(risk(&specs, "remote__echo"), RiskClass::ReadOnly);
    assert_eq!(risk(&specs, "remote__wipe"), RiskClass::Destructive);
    assert_eq!(
        risk(&specs, "remote__touch"),
        RiskClass::Destructive,
        "the override wins"
    );
    assert_eq!(
        risk(&specs, "remote__plain"),
        RiskClass::ReadOnly,
        "no annotations: the manifest's risk"
    );
    assert!(
        specs
            .iter()
            .all(|s| s.kind() == bridle_proto::ToolKind::Mcp)
    );

    let r = h
        .call("run_h", "remote__echo", json!({"text": "hello"}))
        .await;
    assert_eq!((r.output.as_str(), r.is_error), ("hello", false), "{r:?}");
    let r = h
        .call("run_h", "remote__header", json!({"name": "x-team"}))
        .await;
    assert_eq!(r.output, "platform", "{r:?}");
    let r = h.call("run_h", "remote__fail", json!({})).await;
    assert!(r.is_error && r.output.contains("fail"), "{r:?}");
    assert_eq!(r.error_kind, ToolErrorKind::Failed as i32);
    // An exposed name can be listed by itself (what an agent granting one tool needs).
    let one = list(&h, &["remote__wipe"]).await;
    assert_eq!(one.len(), 1);
    h.stop().await;
}

/// A local server from the fixture `mcp_stdio_server.py` in `mode`, with `env`.
fn fixture_server(
    venv: &std::path::Path,
    mode: &str,
    env: &[(&str, &str)],
) -> bridle_tools::mcp::LocalServer {
    bridle_tools::mcp::LocalServer {
        command: vec![
            venv.join("bin/python").to_string_lossy().into_owned(),
            fixtures()
                .join("mcp_stdio_server.py")
                .to_string_lossy()
                .into_owned(),
            mode.into(),
        ],
        env: env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        ..Default::default()
    }
}

async fn list_err(h: &Harness, name: &str) -> tonic::Status {
    h.tools
        .clone()
        .list_tools(ListToolsRequest {
            tenant: TENANT.into(),
            names: vec![name.into()],
            ..Default::default()
        })
        .await
        .unwrap_err()
}

fn local_tool(name: &str, server: &str, extra: &str) -> String {
    format!(
        "apiVersion: bridle.dev/v1\nkind: Tool\nmetadata:\n  name: {name}\nspec:\n  description: Test.\n  mcp:\n    local: {server}\n{extra}"
    )
}

#[tokio::test]
async fn a_server_that_says_nothing_about_its_tools_gets_the_specifications_defaults() {
    // mcp-server-sqlite (PyPI) annotates none of its tools, write_query (DELETE, DROP) among
    // them: destructive, as the MCP specification's defaults say, unless the manifest says.
    let venv = venv_of("sqlite").await;
    let db = tempfile::tempdir().unwrap();
    let server = bridle_tools::mcp::LocalServer {
        command: vec![
            venv.join("bin/mcp-server-sqlite")
                .to_string_lossy()
                .into_owned(),
            "--db-path".into(),
            db.path().join("t.db").to_string_lossy().into_owned(),
        ],
        env: BTreeMap::new(),
        ..Default::default()
    };
    let h = Harness::start_with(Setup {
        mcp_local_servers: BTreeMap::from([("sqlite".to_string(), server)]),
        ..Setup::default()
    })
    .await;
    h.apply(&local_tool("db", "sqlite", "")).await;
    h.apply(&local_tool(
        "dbro",
        "sqlite",
        "    riskOverrides:\n      read_query: read_only\n      list_tables: read_only\n",
    ))
    .await;
    let specs = list(&h, &["db"]).await;
    assert_eq!(specs.len(), 6, "{specs:?}");
    for s in &specs {
        assert_eq!(
            RiskClass::try_from(s.risk).unwrap(),
            RiskClass::Destructive,
            "{}",
            s.name
        );
        assert_eq!(s.risk_source, "mcp-default", "{}", s.name);
    }
    let specs = list(&h, &["dbro"]).await;
    let source = |n: &str| {
        specs
            .iter()
            .find(|s| s.name == n)
            .map(|s| s.risk_source.clone())
            .unwrap()
    };
    assert_eq!(risk(&specs, "dbro__read_query"), RiskClass::ReadOnly);
    assert_eq!(source("dbro__read_query"), "riskOverrides");
    assert_eq!(risk(&specs, "dbro__write_query"), RiskClass::Destructive);
    assert_eq!(source("dbro__write_query"), "mcp-default");
    let r = h.call("", "dbro__list_tables", json!({})).await;
    assert!(!r.is_error, "{r:?}");
    h.stop().await;
}

#[tokio::test]
async fn local_servers_are_isolated_and_a_broken_one_fails_fast_saying_why() {
    let venv = venv().await;
    let mut ok = fixture_server(&venv, "ok", &[("GREETING", "hi"), ("MixedCase", "kept")]);
    ok.limits.open_files = Some(256);
    ok.limits.memory_bytes = Some(4 << 30);
    ok.limits.cpu_seconds = Some(3600);
    let servers = BTreeMap::from([
        ("ok".to_string(), ok),
        ("hang".to_string(), fixture_server(&venv, "hang", &[])),
        ("hang2".to_string(), fixture_server(&venv, "hang", &[])),
        ("exit".to_string(), fixture_server(&venv, "exit", &[])),
        ("garbage".to_string(), fixture_server(&venv, "garbage", &[])),
    ]);
    let h = Harness::start_with(Setup {
        mcp_local_servers: servers,
        mcp_init_timeout: Some(Duration::from_secs(8)),
        ..Setup::default()
    })
    .await;
    for name in ["ok", "hang", "hang2", "exit", "garbage"] {
        h.apply(&local_tool(name, name, "")).await;
    }

    // Only its configured environment (case kept) and a PATH: none of the service's.
    let r = h.call("", "ok__env", json!({})).await;
    assert!(!r.is_error, "{r:?}");
    let names: Vec<&str> = r.output.lines().collect();
    assert!(
        names.contains(&"GREETING") && names.contains(&"MixedCase"),
        "{names:?}"
    );
    for n in &names {
        assert!(
            ["GREETING", "MixedCase", "PATH", "LC_CTYPE"].contains(n),
            "the server sees {n}: {names:?}"
        );
    }
    assert!(
        std::env::vars().any(|(k, _)| k.starts_with("CARGO")),
        "the test's own environment has variables the server must not see"
    );

    // Its resource limits: the configured ones, and the default file size limit (1 GiB).
    let r = h.call("", "ok__limits", json!({})).await;
    assert!(!r.is_error, "{r:?}");
    let limits: serde_json::Value = serde_json::from_str(&r.output).unwrap();
    assert_eq!(
        limits,
        json!({
            "nofile": [256, 256],
            "fsize": [1u64 << 30, 1u64 << 30],
            "as": [4u64 << 30, 4u64 << 30],
            "cpu": [3600, 3600],
        }),
        "{r:?}"
    );

    // A server that dies mid-call: the call says why (its stderr), and what it started dies
    // with it (its process group).
    let r = h.call("", "ok__spawn", json!({})).await;
    let pid: u32 = r.output.trim().parse().unwrap_or_else(|_| panic!("{r:?}"));
    assert!(std::path::Path::new(&format!("/proc/{pid}")).exists());
    let r = h.call("", "ok__crash", json!({})).await;
    assert!(r.is_error, "{r:?}");
    assert!(
        r.output
            .contains("fatal: the test server crashed on purpose"),
        "{r:?}"
    );
    let gone = || {
        std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .map(|s| s.split_whitespace().nth(2) == Some("Z"))
            .unwrap_or(true)
    };
    bridle_testkit::wait_for(
        "the server's child to die",
        Duration::from_secs(10),
        || async { gone().then_some(()) },
    )
    .await
    .unwrap();
    // The next call starts the server again.
    let r = h.call("", "ok__env", json!({})).await;
    assert!(!r.is_error, "{r:?}");

    // A server that never answers initialize: the call fails at the configured timeout with
    // the server's stderr, and the next fails at once with the same reason (back-off).
    let e = list_err(&h, "hang").await;
    assert!(
        e.message().contains("did not answer initialize within 8s")
            && e.message().contains("starting up slowly"),
        "{e:?}"
    );
    let again = list_err(&h, "hang").await;
    assert!(
        again
            .message()
            .contains("failed 1 time(s) in a row; tried again in"),
        "{again:?}"
    );
    // While one server hangs in initialize, others answer: no lock is shared.
    let hung = {
        let mut tools = h.tools.clone();
        #[allow(clippy::disallowed_methods)] // A test's own task, awaited below.
        tokio::spawn(async move {
            tools
                .list_tools(ListToolsRequest {
                    tenant: TENANT.into(),
                    names: vec!["hang2".into()],
                    ..Default::default()
                })
                .await
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    let r = h.call("", "ok__env", json!({})).await;
    assert!(!r.is_error, "{r:?}");
    assert!(
        !hung.is_finished(),
        "the call to a healthy server waited for the hanging one"
    );
    assert!(hung.await.unwrap().is_err());

    // A server that exits at once, and one that writes garbage: each error says so.
    let e = list_err(&h, "exit").await;
    assert!(
        e.message()
            .contains("cannot open the database: permission denied"),
        "{e:?}"
    );
    let e = list_err(&h, "garbage").await;
    assert!(e.message().contains("initialize"), "{e:?}");
    h.stop().await;
}

#[tokio::test]
async fn a_servers_new_tools_are_listed_once_its_list_is_stale() {
    // The server restarts as its next version, with one more tool: the cached list is read
    // again after mcp_tools_ttl, and the new tool can be called (it was NOT_FOUND forever).
    let venv = venv().await;
    let dir = tempfile::tempdir().unwrap();
    let marker = dir.path().join("next-version");
    let marker_text = marker.to_string_lossy().into_owned();
    let h = Harness::start_with(Setup {
        mcp_local_servers: BTreeMap::from([(
            "ok".to_string(),
            fixture_server(&venv, "ok", &[("MARKER", &marker_text)]),
        )]),
        mcp_tools_ttl: Some(Duration::from_secs(1)),
        ..Setup::default()
    })
    .await;
    h.apply(&local_tool("ok", "ok", "")).await;
    let names =
        |specs: Vec<ToolSpec>| -> Vec<String> { specs.into_iter().map(|s| s.name).collect() };
    assert!(!names(list(&h, &["ok"]).await).contains(&"ok__extra".to_string()));
    // The next version: the marker exists, and the running server goes (it crashes).
    std::fs::write(&marker, "").unwrap();
    let r = h.call("", "ok__crash", json!({})).await;
    assert!(r.is_error, "{r:?}");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(
        names(list(&h, &["ok"]).await).contains(&"ok__extra".to_string()),
        "the list was read again after its TTL"
    );
    let r = h.call("", "ok__extra", json!({})).await;
    assert_eq!((r.output.as_str(), r.is_error), ("extra", false), "{r:?}");
    h.stop().await;
}
