//! HTTP tools and egress: a test HTTP server on the host's loopback stands for "the outside";
//! a sandbox reaches it only through the service's proxy and only when its allowlist says so.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use bridle_proto::ToolErrorKind;
use serde_json::json;

use crate::helpers::{Harness, code_tool};

/// A test HTTP server; counts the requests it got.
pub struct Upstream {
    pub addr: SocketAddr,
    pub hits: Arc<AtomicUsize>,
    _task: tokio::task::JoinHandle<()>,
}

impl Upstream {
    pub async fn start() -> Self {
        let hits = Arc::new(AtomicUsize::new(0));
        let app = axum::Router::new()
            .route("/hello", get(|| async { "hello from the host" }))
            .route(
                "/items/{id}",
                get(|Path(id): Path<String>, headers: HeaderMap| async move {
                    let auth = headers
                        .get(header::AUTHORIZATION)
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or("")
                        .to_string();
                    axum::Json(json!({"id": id, "auth": auth}))
                }),
            )
            .route(
                "/key",
                axum::routing::post(|headers: HeaderMap| async move {
                    let key = headers
                        .get("idempotency-key")
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or("")
                        .to_string();
                    axum::Json(json!({ "key": key }))
                }),
            )
            .route(
                "/redirect",
                get(|| async { (StatusCode::FOUND, [(header::LOCATION, "/hello")]) }),
            )
            .route(
                "/missing",
                get(|| async { (StatusCode::NOT_FOUND, "no such thing").into_response() }),
            )
            .layer(axum::middleware::from_fn_with_state(
                hits.clone(),
                |State(h): State<Arc<AtomicUsize>>, req, next: axum::middleware::Next| async move {
                    h.fetch_add(1, Ordering::SeqCst);
                    next.run(req).await
                },
            ));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        // The test's runtime ends the server with the test.
        #[allow(clippy::disallowed_methods)]
        let task = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        Self {
            addr,
            hits,
            _task: task,
        }
    }

    pub fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }
}

fn http_tool(name: &str, url: &str, extra: &str) -> String {
    format!(
        "apiVersion: bridle.dev/v1\nkind: Tool\nmetadata:\n  name: {name}\nspec:\n  description: Fetches.\n  parameters:\n    type: object\n    properties:\n      id: {{type: string}}\n      host: {{type: string}}\n  http:\n    url: \"{url}\"\n{extra}"
    )
}

/// The Idempotency-Key an http tool's request carried, as the upstream saw it.
async fn sent_key(h: &Harness, tool: &str, key: &str) -> String {
    let mut req = h.request_in("run_k", tool, json!({ "id": "1" }));
    req.idempotency_key = key.into();
    let r = h.execute(req).await.unwrap().result.unwrap();
    assert_eq!(r.http_status, 200, "{r:?}");
    let v: serde_json::Value = serde_json::from_str(&r.output).unwrap();
    v["key"].as_str().unwrap().to_string()
}

#[tokio::test]
async fn an_http_tool_passes_its_calls_idempotency_key_on_to_the_api() {
    let up = Upstream::start().await;
    let h = Harness::start().await;
    let url = format!("http://127.0.0.1:{}/key", up.addr.port());
    h.apply(&http_tool("post", &url, "    method: POST\n"))
        .await;
    h.apply(&http_tool(
        "own",
        &url,
        "    method: POST\n    headers: {Idempotency-Key: fixed-by-the-tool}\n",
    ))
    .await;

    let first = sent_key(&h, "post", "run_k/1/call_1").await;
    assert!(first.starts_with("bridle-") && first.len() == 39, "{first}");
    // The attempt's answer is lost (its stored result gone, as when the tools replica died
    // before storing it): the retry under the same key sends the same Idempotency-Key, so
    // the API can tell it is the same operation.
    let mut redis = redis::Client::open(h.redis_url.as_str())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let stored: Vec<String> = redis::cmd("KEYS")
        .arg("*:idem:*")
        .query_async(&mut redis)
        .await
        .unwrap();
    assert!(!stored.is_empty(), "the call's result was stored");
    let _: () = redis::cmd("DEL")
        .arg(&stored)
        .query_async(&mut redis)
        .await
        .unwrap();
    let hits = up.hits();
    assert_eq!(sent_key(&h, "post", "run_k/1/call_1").await, first);
    assert_eq!(up.hits(), hits + 1, "the retry reached the API");

    let other = sent_key(&h, "post", "run_k/1/call_2").await;
    assert!(other.starts_with("bridle-") && other != first, "{other}");
    // A call without a key sends none; a Tool that sets the header keeps its own value.
    let r = h.call("run_k", "post", json!({ "id": "1" })).await;
    assert!(r.output.contains(r#""key":"""#), "{r:?}");
    assert_eq!(
        sent_key(&h, "own", "run_k/2/call_1").await,
        "fixed-by-the-tool"
    );
    h.stop().await;
}

#[tokio::test]
async fn http_tools_fill_templates_report_status_and_refuse_other_hosts() {
    let up = Upstream::start().await;
    let h = Harness::start().await;
    let port = up.addr.port();
    h.apply(&http_tool(
        "item",
        &format!("http://127.0.0.1:{port}/items/{{{{id}}}}"),
        "",
    ))
    .await;
    let r = h.call("", "item", json!({"id": "a b/c"})).await;
    assert!(!r.is_error, "{r:?}");
    assert_eq!(r.http_status, 200);
    let v: serde_json::Value = serde_json::from_str(&r.output).unwrap();
    assert_eq!(
        v["id"], "a b/c",
        "the value is one path segment, encoded: {v}"
    );

    h.apply(&http_tool(
        "missing",
        &format!("http://127.0.0.1:{port}/missing"),
        "",
    ))
    .await;
    let r = h.call("", "missing", json!({})).await;
    assert_eq!((r.http_status, r.is_error), (404, true));
    assert_eq!(r.error_kind, ToolErrorKind::Failed as i32);
    assert_eq!(r.output, "no such thing\n[HTTP 404 Not Found]");

    h.apply(&http_tool(
        "redir",
        &format!("http://127.0.0.1:{port}/redirect"),
        "",
    ))
    .await;
    let r = h.call("", "redir", json!({})).await;
    assert_eq!(r.http_status, 302, "redirects are not followed: {r:?}");
    assert!(r.output.contains("Location: /hello"), "{r:?}");

    // The host comes from the arguments: only the allowlist's hosts are reached.
    h.apply(&http_tool(
        "anyhost",
        &format!("http://{{{{host}}}}:{port}/hello"),
        &format!("    egress: [\"127.0.0.1:{port}\"]\n"),
    ))
    .await;
    let before = up.hits();
    let r = h.call("", "anyhost", json!({"host": "127.0.0.1"})).await;
    assert_eq!(r.output, "hello from the host", "{r:?}");
    let r = h.call("", "anyhost", json!({"host": "localhost"})).await;
    assert!(r.is_error, "{r:?}");
    assert_eq!(
        r.output,
        format!(
            "The request of tool 'anyhost' was not sent: 'localhost:{port}' is not in this tool's egress allowlist"
        )
    );
    assert_eq!(up.hits(), before + 1, "the refused call sent nothing");
    h.stop().await;
}

const FETCH: &str = r#"
import os, socket, urllib.request
def get(url):
    try:
        return urllib.request.urlopen(url, timeout=10).read().decode()
    except Exception as e:
        return "refused " + str(e)
"#;

#[tokio::test]
async fn egress_goes_only_through_the_proxy_to_allowed_hosts() {
    let allowed = Upstream::start().await;
    let other = Upstream::start().await;
    let h = Harness::start().await;
    let (pa, pb) = (allowed.addr.port(), other.addr.port());
    h.apply(&code_tool(
        "net",
        "python",
        &format!("    egress: [\"127.0.0.1:{pa}\"]\n"),
    ))
    .await;
    let code = format!(
        r#"{FETCH}
print("allowed:", get("http://127.0.0.1:{pa}/hello"))
print("other:", get("http://127.0.0.1:{pb}/hello"))
# Straight to the host, around the proxy: there is no route.
s = socket.socket()
s.settimeout(3)
try:
    s.connect(("172.17.0.1", {pa}))
    print("direct: connected")
except OSError as e:
    print("direct:", e.errno)
print("interfaces:", sorted(os.listdir("/sys/class/net")))
"#
    );
    let r = h
        .call("run_net", "net", json!({"code": code, "n": 1}))
        .await;
    let lines: Vec<&str> = r.stdout.lines().collect();
    assert_eq!(lines[0], "allowed: hello from the host", "{r:?}");
    assert_eq!(
        lines[1], "other: refused HTTP Error 403: Forbidden",
        "{r:?}"
    );
    assert_eq!(lines[2], "direct: 101", "ENETUNREACH: {r:?}");
    assert_eq!(lines[3], "interfaces: ['lo']", "{r:?}");
    assert_eq!(allowed.hits(), 1);
    assert_eq!(other.hits(), 0, "the refused host got nothing");

    // A tool without an allowlist has no way out at all.
    h.apply(&code_tool("closed", "python", "")).await;
    let r = h
        .call(
            "run_net",
            "closed",
            json!({"code": format!("{FETCH}\nprint(get('http://127.0.0.1:{pa}/hello'))")}),
        )
        .await;
    assert!(r.stdout.starts_with("refused "), "{r:?}");
    assert_eq!(allowed.hits(), 1);
    h.stop().await;
}

/// Issue 29: which non-public addresses a sandbox reaches is the platform's decision (per
/// tenant), told at apply where an address is written down and at connect time always; the
/// platform's own services are never reached; the model reads why.
#[tokio::test]
async fn the_platform_not_the_tenant_decides_which_private_addresses_tools_reach() {
    let allowed = Upstream::start().await;
    let other = Upstream::start().await;
    let (pa, pb) = (allowed.addr.port(), other.addr.port());
    let h = Harness::start_with(crate::helpers::Setup {
        egress_private_allow: vec![],
        egress_private_allow_tenants: [("acme".to_string(), vec![format!("127.0.0.1:{pa}")])]
            .into(),
        ..Default::default()
    })
    .await;
    let rule = |r: &str| format!("    egress: [\"{r}\"]\n");

    // At apply: an address the tenant may not reach, in any spelling, is refused by name.
    let refused = |tenant: &'static str, yaml: String| {
        let h = &h;
        async move {
            h.try_apply_tenant(tenant, &yaml)
                .await
                .expect_err("refused")
                .message()
                .to_string()
        }
    };
    let m = refused("globex", code_tool("net", "python", &rule("127.0.0.1:*"))).await;
    assert!(
        m.contains("spec.code.egress[0]")
            && m.contains("egress to 127.0.0.1:* is not allowed for tenant globex: private address, not in the platform's allowlist"),
        "{m}"
    );
    for (r, why) in [
        ("10.0.0.7:5432", "private address"),
        ("localhost:*", "private address"),
        ("0x7f.1:80", "private address"),
        ("[::ffff:7f00:1]:80", "private address"),
        ("169.254.169.254", "a cloud metadata endpoint"),
        ("metadata.google.internal", "a cloud metadata endpoint"),
    ] {
        let m = refused("globex", code_tool("net", "python", &rule(r))).await;
        assert!(m.contains(why), "{r}: {m}");
    }
    let m = refused("globex", http_tool("lan", "http://10.1.2.3:8080/x", "")).await;
    assert!(
        m.contains("spec.http.url") && m.contains("egress to 10.1.2.3:8080"),
        "{m}"
    );
    // The tenant the platform lets reach 127.0.0.1 may name it, and a public host is anyone's.
    h.apply(&code_tool("net", "python", &rule("127.0.0.1:*")))
        .await;
    h.apply_tenant(
        "globex",
        &code_tool("pub", "python", &rule("api.example.com")),
    )
    .await;

    // At connect time: the tenant's rule says any port; the platform's entry says one.
    // This service's own port and its Redis are refused whatever anyone says.
    let redis_port = url::Url::parse(&h.redis_url).unwrap().port().unwrap();
    let code = format!(
        r#"{FETCH}
print("allowed:", get("http://127.0.0.1:{pa}/hello"))
print("other:", get("http://127.0.0.1:{pb}/hello"))
print("own:", get("http://127.0.0.1:{tools}/"))
print("redis:", get("http://127.0.0.1:{redis_port}/"))
"#,
        tools = h.addr.port()
    );
    let r = h.call("run_p", "net", json!({"code": code})).await;
    let lines: Vec<&str> = r.stdout.lines().collect();
    assert_eq!(lines[0], "allowed: hello from the host", "{r:?}");
    for l in &lines[1..4] {
        assert!(l.ends_with("refused HTTP Error 403: Forbidden"), "{r:?}");
    }
    assert_eq!((allowed.hits(), other.hits()), (1, 0));
    for why in [
        format!(
            "[egress refused: egress to 127.0.0.1:{pb} is not allowed for tenant acme: private address, not in the platform's allowlist]"
        ),
        format!(
            "[egress refused: egress to 127.0.0.1:{} is not allowed for tenant acme: this tools service's own port, which tools may never reach]",
            h.addr.port()
        ),
        format!(
            "[egress refused: egress to 127.0.0.1:{redis_port} is not allowed for tenant acme: this platform's Redis (redis_url), which tools may never reach]"
        ),
    ] {
        assert!(
            r.output.contains(&why),
            "the model reads {why}: {}",
            r.output
        );
    }
    h.stop().await;
}
