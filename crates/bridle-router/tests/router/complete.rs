use bridle_proto::{
    FinishReason, ListManifestsRequest, ListModelsRequest, Role, ToolChoice, ToolChoiceMode,
    ToolSpec, Usage,
};
use bridle_testkit::mock_openai::{MockOpenAi, Reply, text_completion, tool_call_completion};
use serde_json::json;

use crate::helpers::{Harness, msg, openai_route, request};

#[tokio::test]
async fn complete_translates_the_answer_and_sends_the_key_from_openbao() {
    let h = Harness::start().await;
    let mock = MockOpenAi::start().await.unwrap();
    let key = format!("sk-test-{}", bridle_testkit::unique("k"));
    h.put_secret("openai-key", &key).await;
    h.put_secret("openai-org", "org-from-openbao").await;
    // Header values may be secret references too.
    let headers = "      headers:\n        OpenAI-Organization: secret://openai-org\n        X-Team: research\n";
    let applied = h
        .apply(&openai_route(
            "main",
            &[("primary", "gpt-4o-mini", &mock.base_url())],
            headers,
        ))
        .await;
    assert_eq!(applied.applied.len(), 1);
    assert_eq!(
        (applied.applied[0].kind(), applied.applied[0].action()),
        (
            bridle_proto::ManifestKind::ModelRoute,
            bridle_proto::ManifestAction::Created
        )
    );
    assert_eq!(applied.applied[0].service, "router");

    // A tool call from a dated snapshot: priced by the longest matching table entry.
    mock.enqueue(Reply::Completion(tool_call_completion(
        "gpt-4o-mini-2024-07-18",
        &[("call_abc123", "get_weather", r#"{"city":"Paris"}"#)],
    )));
    let mut req = request(
        "main",
        vec![
            msg(Role::System, "be brief"),
            msg(Role::User, "Weather in Paris?"),
        ],
    );
    req.tools = vec![ToolSpec {
        name: "get_weather".into(),
        description: "Current weather of a city".into(),
        parameters_json_schema:
            r#"{"type":"object","properties":{"city":{"type":"string"}},"required":["city"]}"#
                .into(),
        ..Default::default()
    }];
    req.tool_choice = Some(ToolChoice {
        mode: ToolChoiceMode::Auto as i32,
        name: String::new(),
    });
    req.max_output_tokens = Some(256);
    let r = h.complete(req).await.unwrap();

    let m = r.message.clone().unwrap();
    assert_eq!(m.role, Role::Assistant as i32);
    assert_eq!(m.tool_calls.len(), 1);
    assert_eq!(
        (m.tool_calls[0].id.as_str(), m.tool_calls[0].name.as_str()),
        ("call_abc123", "get_weather")
    );
    assert_eq!(m.tool_calls[0].arguments_json, r#"{"city":"Paris"}"#);
    assert_eq!(r.finish_reason, FinishReason::ToolCalls as i32);
    assert_eq!(
        (r.provider.as_str(), r.model.as_str(), r.target.as_str()),
        ("openai", "gpt-4o-mini-2024-07-18", "primary")
    );
    assert!(!r.scripted);
    assert_eq!(
        r.usage,
        Some(Usage {
            input_tokens: 82,
            output_tokens: 17,
            ..Default::default()
        })
    );
    // gpt-4o-mini: $0.15 and $0.60 per Mtok -> 82*150 + 17*600 nano-USD.
    let cost = r.cost.unwrap();
    assert!(cost.known);
    assert_eq!(cost.nano_usd, 82 * 150 + 17 * 600);
    assert_eq!(r.attempts.len(), 1);
    assert_eq!(
        (r.attempts[0].http_status, r.attempts[0].error.as_str()),
        (200, "")
    );
    assert_eq!(r.response_id, "chatcmpl-abc123");

    let sent = mock.requests();
    assert_eq!(sent.len(), 1);
    assert_eq!(
        (sent[0].method.as_str(), sent[0].path.as_str()),
        ("POST", "/v1/chat/completions")
    );
    assert_eq!(
        sent[0].authorization(),
        Some(format!("Bearer {key}").as_str())
    );
    assert_eq!(sent[0].headers["openai-organization"], "org-from-openbao");
    assert_eq!(sent[0].headers["x-team"], "research");
    let body = &sent[0].body;
    assert_eq!(body["model"], "gpt-4o-mini");
    assert_eq!(
        body["messages"],
        json!([{"role": "system", "content": "be brief"}, {"role": "user", "content": "Weather in Paris?"}])
    );
    assert_eq!(
        body["tools"],
        json!([{"type": "function", "function": {"name": "get_weather", "description": "Current weather of a city",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}])
    );
    assert_eq!(body["tool_choice"], "auto");
    assert_eq!(body["max_completion_tokens"], 256);
    assert!(body.get("stream").is_none());

    // The next turn sends the tool call and its result back in OpenAI's shape.
    let mut cached = text_completion("gpt-4o-mini", "It is sunny in Paris.");
    cached["usage"] = json!({"prompt_tokens": 2000, "completion_tokens": 10, "total_tokens": 2010,
        "prompt_tokens_details": {"cached_tokens": 1024}, "completion_tokens_details": {"reasoning_tokens": 0}});
    mock.enqueue(Reply::Completion(cached));
    let mut tool_msg = msg(Role::Tool, "sunny, 21C");
    tool_msg.tool_call_id = "call_abc123".into();
    let r2 = h
        .complete(request(
            "main",
            vec![msg(Role::User, "Weather in Paris?"), m, tool_msg],
        ))
        .await
        .unwrap();
    assert_eq!(r2.message.unwrap().text, "It is sunny in Paris.");
    assert_eq!(r2.finish_reason, FinishReason::Stop as i32);
    assert_eq!(r2.usage.unwrap().cache_read_tokens, 1024);
    // 976 fresh input at 150, 1024 cached at 75, 10 output at 600.
    assert_eq!(r2.cost.unwrap().nano_usd, 976 * 150 + 1024 * 75 + 10 * 600);
    let body = &mock.requests()[1].body;
    assert_eq!(
        body["messages"][1],
        json!({"role": "assistant", "content": null, "tool_calls": [{"id": "call_abc123", "type": "function",
            "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}}]})
    );
    assert_eq!(
        body["messages"][2],
        json!({"role": "tool", "tool_call_id": "call_abc123", "content": "sunny, 21C"})
    );
}

#[tokio::test]
async fn unknown_routes_are_not_found_per_tenant() {
    let h = Harness::start().await;
    let e = h
        .complete(request("nope", vec![msg(Role::User, "hi")]))
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::NotFound);
    assert_eq!(
        e.message(),
        "model route 'nope' is not defined for tenant 'default'"
    );

    h.apply(&openai_route(
        "main",
        &[("primary", "gpt-4o", "http://127.0.0.1:9/v1")],
        "",
    ))
    .await;
    let mut req = request("main", vec![msg(Role::User, "hi")]);
    req.scope.as_mut().unwrap().tenant = "acme".into();
    let e = h.complete(req).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::NotFound);
    assert_eq!(
        e.message(),
        "model route 'main' is not defined for tenant 'acme'"
    );

    let e = h.complete(request("main", vec![])).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument);
    assert!(e.message().starts_with("messages:"), "{}", e.message());
}

#[tokio::test]
async fn list_models_shows_targets_with_known_prices_and_unknown_models_cost_unknown() {
    let h = Harness::start().await;
    let mock = MockOpenAi::start().await.unwrap();
    h.put_secret("openai-key", "sk-test-list").await;
    h.apply(&openai_route(
        "main",
        &[
            ("a", "gpt-4.1", &mock.base_url()),
            ("b", "my-finetune", &mock.base_url()),
        ],
        "",
    ))
    .await;

    let l = h
        .router
        .clone()
        .list_models(ListModelsRequest {
            tenant: String::new(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(l.routes.len(), 1);
    let r = &l.routes[0];
    assert_eq!(
        (r.name.as_str(), r.tenant.as_str(), r.strategy()),
        ("main", "default", bridle_proto::RouteStrategy::Fallback)
    );
    assert_eq!(r.targets.len(), 2);
    let price = r.targets[0].price.clone().unwrap();
    assert_eq!(
        (
            price.input_per_mtok_nano_usd,
            price.output_per_mtok_nano_usd
        ),
        (2_000_000_000, 8_000_000_000)
    );
    assert!(price.source.contains("openai.com"), "{}", price.source);
    assert_eq!(
        (r.targets[1].model.as_str(), r.targets[1].price.is_none()),
        ("my-finetune", true)
    );

    let stored = h
        .manifests
        .clone()
        .list_manifests(ListManifestsRequest {
            tenant: String::new(),
            kind: 0,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(stored.into_inner().manifests[0].name, "main");

    // Target a is refused (400: not retried, but failed over) and b answers with a model that
    // has no price.
    let refusing = MockOpenAi::start().await.unwrap();
    h.apply(&openai_route(
        "main",
        &[
            ("a", "gpt-4.1", &refusing.base_url()),
            ("b", "my-finetune", &mock.base_url()),
        ],
        "",
    ))
    .await;
    refusing.enqueue(Reply::error(
        400,
        "This model's maximum context length is 8192 tokens",
    ));
    mock.enqueue(Reply::Completion(text_completion("my-finetune", "hi")));
    let r = h
        .complete(request("main", vec![msg(Role::User, "hi")]))
        .await
        .unwrap();
    assert_eq!(r.target, "b");
    let cost = r.cost.unwrap();
    assert!(!cost.known, "an unpriced model has unknown cost, not zero");
    assert_eq!(r.attempts.len(), 2);
    assert_eq!(r.attempts[0].http_status, 400);
    assert!(
        r.attempts[0].error.contains("maximum context length"),
        "{}",
        r.attempts[0].error
    );
    assert_eq!(refusing.requests().len(), 1, "a 400 is not retried");
}

/// A router whose internal token the broker refuses is misconfigured, not facing an outage:
/// the call fails with INTERNAL (which nobody retries), never UNAVAILABLE.
#[tokio::test]
async fn a_router_the_broker_does_not_accept_is_misconfigured_not_unavailable() {
    use bridle_core::auth::AuthMode;
    use secrecy::SecretString;
    let h = Harness::start_with_broker(
        |b| {
            b.server.auth = AuthMode::Keys;
            b.server.internal_token = Some(SecretString::from("the-right-token".to_string()));
        },
        |r| {
            r.server.internal_token = Some(SecretString::from("a-wrong-internal-token".to_string()))
        },
    )
    .await;
    let a = MockOpenAi::start().await.unwrap();
    h.apply(&openai_route("main", &[("a", "gpt-4o", &a.base_url())], ""))
        .await;
    let e = h
        .complete(request("main", vec![msg(Role::User, "hi")]))
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::Internal, "{}", e.message());
    assert!(a.requests().is_empty());
}
