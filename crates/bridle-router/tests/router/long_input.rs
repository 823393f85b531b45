//! Errors about a request's input quote it bounded: a megabyte-long name gives a short error,
//! which a standard gRPC client (16 KiB of metadata) receives as the real error rather than as
//! RESOURCE_EXHAUSTED, and an HTTP client reads without downloading the megabyte back.

use std::net::SocketAddr;

use bridle_proto::{Role, ToolChoice, ToolChoiceMode, ToolSpec};
use serde_json::{Value, json};

use crate::helpers::{Harness, msg, request};

const LONG: usize = 1 << 20;

/// The longest error these tests accept: the quoted name (80 characters) and the sentence.
const SHORT: usize = 400;

fn short(e: &tonic::Status, code: tonic::Code, starts: &str) {
    let m = e.message();
    let head: String = m.chars().take(200).collect();
    assert_eq!(e.code(), code, "{head}");
    assert!(m.len() < SHORT, "{} bytes: {head}", m.len());
    assert!(m.starts_with(starts), "{head}");
}

#[tokio::test]
async fn grpc_errors_quote_long_names_bounded() {
    let h = Harness::start_with(|o| o.agent_rpm = 1).await;
    h.apply(crate::scripted::ROUTE).await;
    let long = "x".repeat(LONG);
    let hi = || vec![msg(Role::User, "hi")];

    let e = h.complete(request(&long, hi())).await.unwrap_err();
    short(&e, tonic::Code::NotFound, "model route 'xxxx");

    let mut r = request("demo", hi());
    r.scope.as_mut().unwrap().tenant = long.clone();
    let e = h.complete(r).await.unwrap_err();
    // No tenant can have such a name: refused as a name (the one tenant rule checks it first).
    short(&e, tonic::Code::InvalidArgument, "scope.tenant: 'xxx");

    let mut r = request("demo", hi());
    r.tools = vec![ToolSpec {
        name: long.clone(),
        parameters_json_schema: "{nope".into(),
        ..Default::default()
    }];
    let e = h.complete(r).await.unwrap_err();
    short(&e, tonic::Code::InvalidArgument, "tools[0] 'xxx");

    let mut r = request("demo", hi());
    r.tool_choice = Some(ToolChoice {
        mode: ToolChoiceMode::Named as i32,
        name: long.clone(),
    });
    let e = h.complete(r).await.unwrap_err();
    short(&e, tonic::Code::InvalidArgument, "tool_choice.name: 'xxx");

    // An agent over its limit (one request a minute).
    let mut r = request("demo", hi());
    r.scope.as_mut().unwrap().agent = long.clone();
    h.complete(r.clone()).await.unwrap();
    let e = h.complete(r).await.unwrap_err();
    short(&e, tonic::Code::ResourceExhausted, "rate limit: agent 'xxx");
}

#[tokio::test]
async fn http_errors_quote_long_input_bounded() {
    let h = Harness::start_with(|o| {
        o.http_listen = Some(SocketAddr::from(([127, 0, 0, 1], 0)));
    })
    .await;
    h.apply(crate::scripted::ROUTE).await;
    let http = h.http.clone().unwrap();
    let c = bridle_core::http_client::new();
    let long = "x".repeat(LONG);
    let hi = json!([{"role": "user", "content": "hi"}]);
    let check = |status: u16, body: Value, want: u16, starts: &str| {
        let m = body["error"]["message"].as_str().unwrap().to_string();
        let head: String = m.chars().take(200).collect();
        assert_eq!(status, want, "{head}");
        assert!(m.len() < SHORT, "{} bytes: {head}", m.len());
        assert!(m.starts_with(starts), "{head}");
    };
    let post = |path: &str, body: Value| c.post(format!("{http}{path}")).json(&body).send();

    let r = post(
        "/v1/chat/completions",
        json!({"model": long, "messages": hi}),
    )
    .await
    .unwrap();
    check(
        r.status().as_u16(),
        r.json().await.unwrap(),
        404,
        "model route 'xxx",
    );
    let r = post(
        "/v1/messages",
        json!({"model": long, "max_tokens": 5, "messages": hi}),
    )
    .await
    .unwrap();
    check(
        r.status().as_u16(),
        r.json().await.unwrap(),
        404,
        "model route 'xxx",
    );

    let r = post(
        "/v1/chat/completions",
        json!({"model": "demo", "messages": [{"role": long, "content": "hi"}]}),
    )
    .await
    .unwrap();
    check(
        r.status().as_u16(),
        r.json().await.unwrap(),
        400,
        "messages[0].role: 'xxx",
    );
    let r = post(
        "/v1/messages",
        json!({"model": "demo", "max_tokens": 5, long.clone(): 1, "messages": hi}),
    )
    .await
    .unwrap();
    check(r.status().as_u16(), r.json().await.unwrap(), 400, "xxx");

    let r = c
        .post(format!("{http}/v1/chat/completions"))
        .header("x-bridle-agent", "x".repeat(8000))
        .json(&json!({"model": "demo", "messages": hi}))
        .send()
        .await
        .unwrap();
    check(
        r.status().as_u16(),
        r.json().await.unwrap(),
        400,
        "x-bridle-agent: 'xxx",
    );

    let r = c
        .get(format!("{http}/v1/{}", "x".repeat(8000)))
        .send()
        .await
        .unwrap();
    check(
        r.status().as_u16(),
        r.json().await.unwrap(),
        404,
        "this gateway serves",
    );
}

/// The refusal of an API key acting for another tenant quotes that tenant: bounded too.
#[tokio::test]
async fn a_refused_tenant_is_quoted_bounded() {
    let (h, _gpt, _claude, key) = crate::gateway::gateway().await;
    let mut req = tonic::Request::new(request("gpt", vec![msg(Role::User, "hi")]));
    req.get_mut().scope.as_mut().unwrap().tenant = "x".repeat(LONG);
    req.metadata_mut()
        .insert("authorization", format!("Bearer {key}").parse().unwrap());
    let e = h.router.clone().complete(req).await.unwrap_err();
    // The name is checked before the key's tenant: a refusal never quotes an invalid name.
    short(&e, tonic::Code::InvalidArgument, "scope.tenant: 'xxx");

    let mut req = tonic::Request::new(request("gpt", vec![msg(Role::User, "hi")]));
    req.get_mut().scope.as_mut().unwrap().tenant = "other".into();
    req.metadata_mut()
        .insert("authorization", format!("Bearer {key}").parse().unwrap());
    let e = h.router.clone().complete(req).await.unwrap_err();
    short(
        &e,
        tonic::Code::PermissionDenied,
        "API key 'sdk-test' belongs to tenant 'default'",
    );
}
