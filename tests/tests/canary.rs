//! The canary: a run whose tool deliberately prints a freshly generated secret — plain, base64
//! and URL-encoded, on stdout and stderr, and into a workspace file that a later call of the
//! same run (with no secrets of its own) prints again. Afterwards every Redis key and value,
//! every run event, every span the OTLP receiver got (content capture on), every log line of
//! every service and every request the mock model provider received are scanned for the canary
//! in plain, base64, URL-encoded and 8-character-prefix forms: none may contain it.

#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

mod support;

use std::time::Duration;

use base64::Engine as _;
use bridle_proto as pb;
use bridle_proto::run_event::Kind;
use bridle_testkit::mock_openai::Reply;
use bridle_testkit::otlp::OtlpReceiver;
use support::{Harness, Options, follow, tool_outputs};

/// 32 random characters (the random half of two ULIDs), so even its 8-character prefix is
/// 40 random bits that nothing else in the test can contain by chance.
fn fresh_canary() -> String {
    let half = || ulid::Ulid::new().to_string().to_lowercase()[10..].to_string();
    format!("{}{}", half(), half())
}

/// The forms a leaked canary could take.
fn forms(canary: &str) -> Vec<(&'static str, String)> {
    let b = canary.as_bytes();
    vec![
        ("plain", canary.to_string()),
        (
            "base64",
            base64::engine::general_purpose::STANDARD_NO_PAD.encode(b),
        ),
        (
            "base64url",
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b),
        ),
        (
            "url-encoded",
            url::form_urlencoded::byte_serialize(b).collect::<String>(),
        ),
        ("8-character prefix", canary[..8].to_string()),
        ("hex", hex_of(b)),
        ("hex (upper case)", hex_of(b).to_uppercase()),
        (
            "\\u escapes",
            canary
                .chars()
                .map(|c| format!("\\u{:04x}", c as u32))
                .collect(),
        ),
        // Inside `Basic user:<canary>`: the characters made of the canary's bits alone.
        ("base64 after a prefix", {
            let enc = base64::engine::general_purpose::STANDARD.encode(format!("user:{canary}"));
            enc[8..enc.len() - 8].to_string()
        }),
    ]
}

fn hex_of(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Fails naming where and in which form the canary showed up.
fn scan(place: &str, text: &str, forms: &[(&'static str, String)], leaks: &mut Vec<String>) {
    for (form, needle) in forms {
        if let Some(at) = text.find(needle.as_str()) {
            let from = text[..at]
                .char_indices()
                .rev()
                .nth(80)
                .map_or(0, |(i, _)| i);
            let to = (at + needle.len() + 80).min(text.len());
            let to = (to..=text.len())
                .find(|i| text.is_char_boundary(*i))
                .unwrap_or(text.len());
            leaks.push(format!("{place}: {form} form in …{}…", &text[from..to]));
        }
    }
}

/// Every key of the Redis server and everything it holds, as text.
async fn redis_dump(h: &Harness) -> Vec<(String, String)> {
    let mut c = h.redis.client().await.unwrap();
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg("*")
        .query_async(&mut c)
        .await
        .unwrap();
    let mut out = Vec::new();
    for k in keys {
        let kind: String = redis::cmd("TYPE")
            .arg(&k)
            .query_async(&mut c)
            .await
            .unwrap();
        let v: redis::Value = match kind.as_str() {
            "string" => redis::cmd("GET").arg(&k).query_async(&mut c).await,
            "hash" => redis::cmd("HGETALL").arg(&k).query_async(&mut c).await,
            "list" => {
                redis::cmd("LRANGE")
                    .arg(&k)
                    .arg(0)
                    .arg(-1)
                    .query_async(&mut c)
                    .await
            }
            "set" => redis::cmd("SMEMBERS").arg(&k).query_async(&mut c).await,
            "zset" => {
                redis::cmd("ZRANGE")
                    .arg(&k)
                    .arg(0)
                    .arg(-1)
                    .arg("WITHSCORES")
                    .query_async(&mut c)
                    .await
            }
            "stream" => {
                redis::cmd("XRANGE")
                    .arg(&k)
                    .arg("-")
                    .arg("+")
                    .query_async(&mut c)
                    .await
            }
            other => panic!("key {k} has type {other}, which this scan does not read"),
        }
        .unwrap();
        out.push((k, value_text(&v)));
    }
    out
}

fn value_text(v: &redis::Value) -> String {
    use redis::Value::*;
    match v {
        BulkString(b) => String::from_utf8_lossy(b).into_owned(),
        SimpleString(s) => s.clone(),
        Array(items) | Set(items) => items.iter().map(value_text).collect::<Vec<_>>().join("\n"),
        Map(pairs) => pairs
            .iter()
            .map(|(k, v)| format!("{}={}", value_text(k), value_text(v)))
            .collect::<Vec<_>>()
            .join("\n"),
        other => format!("{other:?}"),
    }
}

/// Every file under `dir` (the services' logs), as (path, text).
fn files_under(dir: &std::path::Path) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if let Ok(bytes) = std::fs::read(&p) {
                out.push((
                    p.display().to_string(),
                    String::from_utf8_lossy(&bytes).into_owned(),
                ));
            }
        }
    }
    out
}

/// Everything a value could have reached, as (kind, place, text): kind 0 Redis, 1 run
/// events, 2 spans, 3 log lines, 4 model requests.
async fn sinks(
    h: &Harness,
    otlp: &OtlpReceiver,
    events: &[pb::RunEvent],
) -> Vec<(usize, String, String)> {
    let mut out = Vec::new();
    for (k, v) in redis_dump(h).await {
        out.push((0, format!("redis key {k}"), k.clone()));
        out.push((0, format!("redis value of {k}"), v));
    }
    for e in events {
        out.push((1, format!("event {}", e.offset), format!("{e:?}")));
    }
    for s in otlp.spans() {
        out.push((
            2,
            format!("span {} of {}", s.span.name, s.service),
            format!("{:?}", s.span),
        ));
    }
    for (path, text) in files_under(h.dir.path()) {
        for (i, line) in text.lines().enumerate() {
            out.push((3, format!("{path}:{}", i + 1), line.to_string()));
        }
    }
    for r in h.mock.requests() {
        out.push((
            4,
            format!("model request {} {}", r.method, r.path),
            format!("{:?} {}", r.headers, r.body),
        ));
    }
    out
}

/// A harness whose services export to `otlp` with content capture on (prompts, completions,
/// tool arguments and results on the spans: a value must be scrubbed from those too) and log
/// everything, with `env` added; and a fresh canary stored as `secret://canary`.
async fn watched_harness(otlp: &OtlpReceiver, env: Vec<(String, String)>) -> (Harness, String) {
    let mut env_all = vec![
        ("OTEL_EXPORTER_OTLP_ENDPOINT".into(), otlp.endpoint()),
        ("OTEL_BSP_SCHEDULE_DELAY".into(), "100".into()),
        ("BRIDLE_OTEL_CAPTURE_CONTENT".into(), "true".into()),
        ("BRIDLE_LOG".into(), "debug".into()),
    ];
    env_all.extend(env);
    let h = Harness::start_with(Options {
        env_all,
        ..Default::default()
    })
    .await
    .unwrap();
    let canary = fresh_canary();
    h.bao
        .put_kv(
            &format!("{}/canary", h.prefix),
            serde_json::json!({ "value": canary }),
        )
        .await
        .unwrap();
    (h, canary)
}

/// Follows the run to its end, which must be a success; its events and how it finished.
async fn succeeded(h: &Harness, run_id: &str) -> (Vec<pb::RunEvent>, pb::RunFinished) {
    let events = follow(h, run_id, Duration::from_secs(120), |_| async {})
        .await
        .unwrap();
    let Some(Kind::RunFinished(f)) = events.last().unwrap().kind.clone() else {
        panic!("no RunFinished")
    };
    assert_eq!(
        f.status,
        pb::RunStatus::Succeeded as i32,
        "{f:?}\n{}",
        h.logs()
    );
    (events, f)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_secret_a_tool_prints_reaches_no_event_span_log_redis_key_or_model_request() {
    let otlp = OtlpReceiver::start().await.unwrap();
    let (h, canary) = watched_harness(&otlp, vec![]).await;

    let leaky = r#"
import base64, os, sys, urllib.parse
c = os.environ["CANARY"]
for out in (sys.stdout, sys.stderr):
    print("plain:", c, file=out)
    print("base64:", base64.b64encode(c.encode()).decode(), file=out)
    print("url:", urllib.parse.quote(c, safe=""), file=out)
    print("hex:", c.encode().hex(), c.encode().hex().upper(), file=out)
    print("basic:", base64.b64encode(("user:" + c).encode()).decode(), file=out)
    print("json:", "".join("\\u%04x" % ord(ch) for ch in c), file=out)
open("/workspace/keep.txt", "w").write(c + "\n")
with open("/run/secrets/canary") as f:
    print("file:", f.read().strip())
"#;
    let extra = format!(
        r#"apiVersion: bridle.dev/v1
kind: Tool
metadata:
  name: leaky
spec:
  description: Prints the canary it is given.
  risk: read_only
  parameters:
    type: object
    properties: {{}}
  timeout: 30s
  container:
    image: bridle-sandbox:python
    command: ["python3", "-c", {leaky}]
    env:
      CANARY: secret://canary
    secretFiles:
      canary: secret://canary
    stdin: false
---
apiVersion: bridle.dev/v1
kind: Agent
metadata:
  name: canary
spec:
  route: main
  instructions: You run tools.
  tools: [leaky, python]
  budget:
    maxSteps: 5
"#,
        leaky = serde_json::to_string(leaky).unwrap()
    );
    let yaml = format!("{}---\n{extra}", h.manifests_yaml());
    h.apply("canary.yaml", &yaml)
        .await
        .unwrap_or_else(|e| panic!("apply: {e}"));

    h.mock
        .enqueue(Reply::tool_calls(&[("call_leak", "leaky", "{}")]));
    // A later call of the same run, with no secret of its own, prints what the first left in
    // the workspace: the run's redaction set must still catch it.
    h.mock.enqueue(Reply::tool_calls(&[(
        "call_cat",
        "python",
        r#"{"code": "print(open('/workspace/keep.txt').read())"}"#,
    )]));
    h.mock.enqueue(Reply::text("done"));
    let run_id = h.start_run("canary", "print the canary").await;
    let (events, _) = succeeded(&h, &run_id).await;
    // The tool really printed something, and it came back redacted.
    let outputs = tool_outputs(&events);
    assert_eq!(outputs.len(), 2, "{outputs:?}");
    for o in &outputs {
        assert!(
            o.contains("[REDACTED]"),
            "a tool output was not redacted: {o}"
        );
    }
    assert!(outputs[0].contains("plain:") && outputs[0].contains("file:"));

    // Let the spans of the run's end arrive, then stop everything so each log is complete.
    let trace_id = h.trace_id_of(&run_id).await;
    bridle_testkit::wait_for("the run's root span", Duration::from_secs(30), || async {
        otlp.spans()
            .iter()
            .any(|s| s.trace_id() == trace_id && s.span.name == "invoke_agent canary")
            .then_some(())
    })
    .await
    .unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;

    let forms = forms(&canary);
    let mut leaks = Vec::new();
    let mut scanned = [0usize; 5];
    for (i, place, text) in sinks(&h, &otlp, &events).await {
        scan(&place, &text, &forms, &mut leaks);
        scanned[i] += 1;
    }
    assert!(leaks.is_empty(), "the canary leaked:\n{}", leaks.join("\n"));
    // The scan saw real material in every place.
    let [redis_keys, event_count, span_count, log_lines, requests] = scanned;
    assert!(redis_keys > 5, "{redis_keys} redis keys");
    assert!(event_count >= 8, "{event_count} events");
    assert!(span_count >= 8, "{span_count} spans");
    assert!(log_lines >= 20, "{log_lines} log lines");
    assert_eq!(requests, 3, "three model requests");
    // Content capture was on: the tool result is on a span, redacted.
    assert!(
        otlp.spans()
            .iter()
            .any(|s| format!("{:?}", s.span).contains("[REDACTED]")),
        "no span carried the redacted tool output: is content capture on?"
    );
}

/// The boundary, not the filter: a tool whose program the model writes cannot be given a secret
/// at all, so model-written code never holds one to re-encode (reversed, split, one byte per
/// exit code — forms no redaction can follow).
#[tokio::test(flavor = "multi_thread")]
async fn model_written_code_is_never_given_a_secret() {
    let h = Harness::start().await.unwrap();
    for (name, kind) in [
        (
            "coder",
            "  code:\n    language: python\n    env:\n      TOKEN: secret://canary\n",
        ),
        (
            "shell",
            "  container:\n    image: bridle-sandbox:python\n    command: [sh, -c, \"{{cmd}}\"]\n    secretFiles:\n      t: secret://canary\n",
        ),
    ] {
        let yaml = format!(
            "apiVersion: bridle.dev/v1\nkind: Tool\nmetadata:\n  name: {name}\nspec:\n  description: Runs what the model writes.\n  parameters:\n    type: object\n    properties:\n      code: {{type: string}}\n      cmd: {{type: string}}\n{kind}"
        );
        let e = h.apply("t.yaml", &yaml).await.unwrap_err();
        assert_eq!(e.code(), tonic::Code::InvalidArgument, "{e:?}");
        assert!(
            e.message().contains("to code the model writes"),
            "{name}: {}",
            e.message()
        );
    }
}

/// Issue 27 item 5, with the boundary: model-written code is given a credential the only way it
/// can be, bound at the egress boundary, and plays the attacker with it — it dumps its
/// environment and every file it can read, calls the API the credential is for and reads what
/// comes back, re-encodes all of it (reversed, hex, base32, ROT13, split, one byte per exit
/// code) and keeps a copy in the workspace for a later call. The API really got the value; and
/// the value is in no sink in any form, reversed included, because the sandbox never had it.
#[tokio::test(flavor = "multi_thread")]
async fn a_credential_bound_at_the_boundary_reaches_no_sink_in_any_form() {
    let otlp = OtlpReceiver::start().await.unwrap();
    let api = bridle_testkit::https_api::EchoApi::start().await.unwrap();
    let (h, canary) = watched_harness(
        &otlp,
        vec![
            // The API listens on loopback: the platform lets tools reach it.
            (
                "BRIDLE_TOOLS_EGRESS_PRIVATE_ALLOW".into(),
                "[\"127.0.0.1\"]".into(),
            ),
            (
                "BRIDLE_TOOLS_EGRESS_UPSTREAM_CA_FILE".into(),
                api.ca_file.path().display().to_string(),
            ),
        ],
    )
    .await;
    let port = api.port;
    let extra = format!(
        r#"apiVersion: bridle.dev/v1
kind: Tool
metadata:
  name: attacker
spec:
  description: Runs the code the model writes, with an API credential bound at the boundary.
  risk: read_only
  parameters:
    type: object
    properties:
      code: {{type: string}}
  timeout: 60s
  code:
    language: python
    egress: ["localhost:{port}"]
    credentials:
      - host: localhost
        port: {port}
        secret: secret://canary
---
apiVersion: bridle.dev/v1
kind: Agent
metadata:
  name: thief
spec:
  route: main
  instructions: You run tools.
  tools: [attacker]
  budget:
    maxSteps: 5
"#
    );
    let yaml = format!("{}---\n{extra}", h.manifests_yaml());
    h.apply("thief.yaml", &yaml)
        .await
        .unwrap_or_else(|e| panic!("apply: {e}"));

    let steal = format!(
        r#"
import base64, codecs, os, sys, urllib.request
loot = "".join(os.environ.values())
for root, _, files in os.walk("/run"):
    for f in files:
        try:
            loot += open(os.path.join(root, f), errors="replace").read()
        except OSError:
            pass
loot += urllib.request.urlopen("https://localhost:{port}/user", timeout=20).read().decode()
open("/workspace/loot.txt", "w").write(loot)
b = loot.encode()
print("api:", loot[-200:])
print("reversed:", loot[::-1][:400])
print("hex:", b.hex()[:400])
print("base32:", base64.b32encode(b).decode()[:400])
print("rot13:", codecs.encode(loot, "rot13")[:400])
print("split:", " ".join(loot[-200:]))
sys.exit(b[-1] if b else 0)
"#
    );
    h.mock.enqueue(Reply::tool_calls(&[(
        "call_steal",
        "attacker",
        &serde_json::json!({ "code": steal }).to_string(),
    )]));
    h.mock.enqueue(Reply::tool_calls(&[(
        "call_again",
        "attacker",
        r#"{"code": "print(open('/workspace/loot.txt').read()[::-1])"}"#,
    )]));
    h.mock.enqueue(Reply::text("done"));
    let run_id = h.start_run("thief", "find the token").await;
    let (events, _) = succeeded(&h, &run_id).await;
    // The credential was really used: the API got it, once.
    assert_eq!(api.seen(), vec![format!("Bearer {canary}")]);
    let outputs = tool_outputs(&events);
    assert_eq!(outputs.len(), 2, "{outputs:?}");
    assert!(
        outputs[0].contains("api:"),
        "the attack ran: {}",
        outputs[0]
    );
    tokio::time::sleep(Duration::from_millis(800)).await;

    let mut forms = forms(&canary);
    let reversed: String = canary.chars().rev().collect();
    forms.push(("reversed", reversed.clone()));
    forms.push(("reversed prefix", reversed[..8].to_string()));
    let b32 = base32_of(canary.as_bytes());
    forms.push(("base32", b32[..16].to_string()));
    let rot13: String = canary
        .chars()
        .map(|c| match c {
            'a'..='m' | 'A'..='M' => (c as u8 + 13) as char,
            'n'..='z' | 'N'..='Z' => (c as u8 - 13) as char,
            _ => c,
        })
        .collect();
    forms.push(("rot13", rot13));
    let split: String = canary[..8].chars().flat_map(|c| [c, ' ']).collect();
    forms.push(("split", split.trim_end().to_string()));
    let mut leaks = Vec::new();
    let mut scanned = [0usize; 5];
    for (i, place, text) in sinks(&h, &otlp, &events).await {
        scan(&place, &text, &forms, &mut leaks);
        scanned[i] += 1;
    }
    assert!(leaks.is_empty(), "the canary leaked:\n{}", leaks.join("\n"));
    let [redis_values, event_count, span_count, log_lines, requests] = scanned;
    assert!(redis_values > 5 && event_count >= 8 && span_count >= 8 && log_lines >= 20);
    assert_eq!(requests, 3, "three model requests");
}

/// RFC 4648 base32 (what Python's `base64.b32encode` writes).
fn base32_of(b: &[u8]) -> String {
    const T: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    let mut out = String::new();
    let (mut acc, mut bits) = (0u32, 0u32);
    for &x in b {
        acc = (acc << 8) | u32::from(x);
        bits += 8;
        while bits >= 5 {
            bits -= 5;
            out.push(T[((acc >> bits) & 31) as usize] as char);
        }
    }
    if bits > 0 {
        out.push(T[((acc << (5 - bits)) & 31) as usize] as char);
    }
    out
}

/// Issue 27 item 3: a model that learned a value (here from a tool that holds it by opt-in and
/// prints it reversed, a form no redaction follows) writes it in clear in its tool arguments
/// and its final answer. The orchestrator has the tools service scrub every reply of a run that
/// resolved secrets before recording it, so the value reaches no sink from the model's side
/// either, and the tool it called gets the scrubbed arguments.
#[tokio::test(flavor = "multi_thread")]
async fn a_value_the_model_learned_is_scrubbed_from_what_it_writes() {
    let otlp = OtlpReceiver::start().await.unwrap();
    let (h, canary) = watched_harness(&otlp, vec![]).await;
    let extra = r#"apiVersion: bridle.dev/v1
kind: Tool
metadata:
  name: teller
spec:
  description: Prints the token reversed.
  risk: read_only
  allowSecretsWithModelCode: {reason: the test needs a model that learns a value}
  parameters:
    type: object
    properties: {}
  timeout: 30s
  container:
    image: bridle-sandbox:python
    command: ["python3", "-c", "import os; print(os.environ['T'][::-1])"]
    env:
      T: secret://canary
    stdin: false
---
apiVersion: bridle.dev/v1
kind: Agent
metadata:
  name: learner
spec:
  route: main
  instructions: You run tools.
  tools: [teller, python]
  budget:
    maxSteps: 5
"#;
    let yaml = format!("{}---\n{extra}", h.manifests_yaml());
    h.apply("learner.yaml", &yaml)
        .await
        .unwrap_or_else(|e| panic!("apply: {e}"));
    h.mock
        .enqueue(Reply::tool_calls(&[("call_tell", "teller", "{}")]));
    // The model "decoded" it and writes it in clear.
    h.mock.enqueue(Reply::tool_calls(&[(
        "call_use",
        "python",
        &serde_json::json!({ "code": format!("print('got: {canary}')") }).to_string(),
    )]));
    h.mock
        .enqueue(Reply::text(&format!("The token is {canary}.")));
    let run_id = h.start_run("learner", "learn the token").await;
    let (events, f) = succeeded(&h, &run_id).await;
    assert_eq!(f.output, "The token is [REDACTED].", "{f:?}");
    let outputs = tool_outputs(&events);
    let reversed: String = canary.chars().rev().collect();
    assert!(
        outputs[0].contains(&reversed),
        "the model could learn it: {outputs:?}"
    );
    assert!(
        outputs[1].contains(r#"output: "got: [REDACTED]\n""#),
        "the tool got scrubbed arguments: {}",
        outputs[1]
    );
    tokio::time::sleep(Duration::from_millis(800)).await;

    // Every form but the reversed one the tool printed on purpose.
    let forms = forms(&canary);
    let mut leaks = Vec::new();
    for (_, place, text) in sinks(&h, &otlp, &events).await {
        scan(&place, &text, &forms, &mut leaks);
    }
    assert!(leaks.is_empty(), "the canary leaked:\n{}", leaks.join("\n"));
}
