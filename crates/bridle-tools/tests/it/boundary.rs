//! Issue 27 item 2: a credential bound at the egress boundary. The sandbox runs code the
//! model writes and calls an HTTPS API through the proxy; the proxy adds the credential and
//! scrubs it from the answer. The sandbox never holds the value: not in its environment, its
//! files or anything it reads back, in any form (checked reversed, which no redaction
//! catches, so a value that reached the sandbox would show).

use bridle_testkit::https_api::EchoApi;
use serde_json::json;

use crate::helpers::{Harness, Setup, code_tool};
use crate::secrets_and_list::broker_with;

#[tokio::test]
async fn a_credential_bound_at_the_boundary_is_used_but_never_seen_by_the_sandbox() {
    let token = format!("ghp-{}", bridle_testkit::unique("v"));
    let api = EchoApi::start().await.unwrap();
    let ((_bao, _redis), url, broker) = broker_with(&[("api-token", &token)]).await;
    let h = Harness::start_with(Setup {
        secrets_url: url,
        egress_upstream_ca_file: Some(api.ca_file.path().to_path_buf()),
        ..Setup::default()
    })
    .await;
    let port = api.port;
    // Model-written code with a credential: allowed without any opt-in, as it never holds it.
    h.apply(&code_tool(
        "gh",
        "python",
        &format!(
            "    egress: [\"localhost:{port}\"]\n    credentials:\n      - host: localhost\n        port: {port}\n        pathPrefix: /v1/\n        secret: secret://api-token\n"
        ),
    ))
    .await;
    let code = format!(
        r#"
import os, urllib.request
def get(url, headers={{}}):
    try:
        req = urllib.request.Request(url, headers=headers)
        return urllib.request.urlopen(req, timeout=20).read().decode()
    except Exception as e:
        return "refused " + str(e)
# The sandbox cannot choose the header: its own value is replaced.
print(get("https://localhost:{port}/v1/me", {{"Authorization": "Bearer made-up"}}))
# Outside the path prefix: no credential.
print(get("https://localhost:{port}/other"))
# Plain http to the bound host: refused, the credential is for https only.
print(get("http://localhost:{port}/v1/me"))
seen = "".join(os.environ.values())
for root, _, files in os.walk("/run"):
    for f in files:
        try:
            seen += open(os.path.join(root, f), errors="replace").read()
        except OSError:
            pass
print("REVERSED", seen[::-1])
"#
    );
    let r = h.call("run_b", "gh", json!({ "code": code })).await;
    let lines: Vec<&str> = r.stdout.lines().collect();
    let first: serde_json::Value =
        serde_json::from_str(lines[0]).unwrap_or_else(|e| panic!("{e}: {r:?}"));
    assert_eq!(first["auth"], "Bearer [REDACTED]", "{r:?}");
    assert_eq!(
        (first["b64"].as_str(), first["hex"].as_str()),
        (Some("[REDACTED]"), Some("[REDACTED]")),
        "{r:?}"
    );
    let second: serde_json::Value =
        serde_json::from_str(lines[1]).unwrap_or_else(|e| panic!("{e}: {r:?}"));
    assert_eq!(
        second["auth"], "",
        "no credential outside the prefix: {r:?}"
    );
    assert_eq!(lines[2], "refused HTTP Error 403: Forbidden", "{r:?}");
    assert!(r.output.contains("sent over https only"), "{}", r.output);
    // The API got the real value, once, and the made-up one never.
    assert_eq!(api.seen(), vec![format!("Bearer {token}"), String::new()]);
    // Nothing in the sandbox held it, in any form a reversal would not hide.
    let reversed: String = token.chars().rev().collect();
    assert!(r.stdout.contains("REVERSED"), "{r:?}");
    assert!(
        !r.stdout.contains(&reversed),
        "the sandbox held the value: {r:?}"
    );
    assert!(!r.stdout.contains(&token) && !r.output.contains(&token));

    // A key that goes in the query instead: any the code put there is replaced.
    h.apply(&code_tool(
        "q",
        "python",
        &format!(
            "    egress: [\"localhost:{port}\"]\n    credentials:\n      - host: localhost\n        port: {port}\n        query: api_key\n        secret: secret://api-token\n"
        ),
    ))
    .await;
    let code = format!(
        "import urllib.request\nprint(urllib.request.urlopen('https://localhost:{port}/v1/q?x=1&api_key=made-up', timeout=20).status)"
    );
    let r = h.call("run_b", "q", json!({ "code": code })).await;
    assert_eq!(r.stdout.trim(), "200", "{r:?}");
    assert_eq!(
        api.requests().last().cloned(),
        Some((String::new(), format!("/v1/q?x=1&api_key={token}")))
    );
    h.stop().await;
    broker.trigger();
}
