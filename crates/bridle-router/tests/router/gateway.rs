//! The HTTP fronts driven by the official `openai` and `anthropic` Python SDKs (from PyPI;
//! scripts/install-deps.sh installs them), against mock upstreams that speak each provider's
//! real wire format.

use std::net::SocketAddr;
use std::time::Duration;

use bridle_core::auth::{ApiKeyStore, AuthMode, Role};
use bridle_testkit::mock_anthropic::{
    self, MockAnthropic, fixture, fixture_text, tool_use_message,
};
use bridle_testkit::mock_openai::{MockOpenAi, Reply, text_completion, tool_call_completion};
use secrecy::SecretString;
use serde_json::{Value, json};

use crate::helpers::{Harness, anthropic_route, openai_route};

/// Runs `tests/sdk/<script>` against the gateway and returns what it printed.
async fn run_sdk(script: &str, base_url: &str, key: &str) -> Value {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/sdk")
        .join(script);
    let run = tokio::process::Command::new("python3")
        .arg(&path)
        .arg(base_url)
        .arg(key)
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(120), run)
        .await
        .expect("the SDK script did not finish in 120s")
        .expect("cannot run python3 (scripts/install-deps.sh installs what these tests need)");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "{script} failed (the openai and anthropic packages come from scripts/install-deps.sh):\n{stderr}"
    );
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "{script} printed no JSON ({e}):\n{}\n{stderr}",
            String::from_utf8_lossy(&out.stdout)
        )
    })
}

/// A router with API keys required and an HTTP front, routes `gpt` and `claude` on mocks, and
/// a key with the operator role.
pub async fn gateway() -> (Harness, MockOpenAi, MockAnthropic, String) {
    let h = Harness::start_with(|o| {
        o.http_listen = Some(SocketAddr::from(([127, 0, 0, 1], 0)));
        o.server.auth = AuthMode::Keys;
        o.server.internal_token = Some(SecretString::from("internal-token-for-tests".to_string()));
    })
    .await;
    let gpt = MockOpenAi::start().await.unwrap();
    let claude = MockAnthropic::start().await.unwrap();
    h.put_secret("openai-key", "sk-test-gateway").await;
    h.put_secret("anthropic-key", "sk-ant-test-gateway").await;
    h.apply_direct(&openai_route(
        "gpt",
        &[("a", "gpt-4o-mini", &gpt.base_url())],
        "",
    ))
    .await;
    h.apply_direct(&anthropic_route(
        "claude",
        &[("a", "claude-sonnet-4-20250514", &claude.base_url())],
        "",
    ))
    .await;
    let conn = bridle_core::redis_util::connect(&h.redis.url())
        .await
        .unwrap();
    let store = ApiKeyStore::new(conn, &bridle_core::redis_util::Keys::new(&h.prefix));
    let (key, _) = store
        .create("default", "sdk-test", &[Role::Operator])
        .await
        .unwrap();
    (h, gpt, claude, key)
}

fn args(v: &Value) -> Value {
    serde_json::from_str(v.as_str().unwrap()).unwrap()
}

#[tokio::test]
async fn the_openai_sdk_works_against_the_gateway() {
    let (h, gpt, claude, key) = gateway().await;
    let mut cached = text_completion("gpt-4o-mini-2024-07-18", "Hello from the mock.");
    cached["usage"] = json!({"prompt_tokens": 2000, "completion_tokens": 10, "total_tokens": 2010,
        "prompt_tokens_details": {"cached_tokens": 1024}, "completion_tokens_details": {"reasoning_tokens": 0}});
    gpt.enqueue(Reply::Completion(cached));
    gpt.enqueue(Reply::text("Streaming works, piece by piece."));
    let calls = tool_call_completion(
        "gpt-4o-mini",
        &[
            ("call_w", "get_weather", r#"{"city":"Paris"}"#),
            ("call_t", "get_time", r#"{"city":"Paris"}"#),
        ],
    );
    gpt.enqueue(Reply::Completion(calls.clone()));
    gpt.enqueue(Reply::Completion(calls));
    gpt.enqueue(Reply::text("Sunny at noon."));
    claude.enqueue(mock_anthropic::Reply::Message(tool_use_message(
        "claude-sonnet-4-20250514",
        "Checking.",
        &[("toolu_1", "get_weather", json!({"city": "Paris"}))],
    )));

    let http = h.http.clone().unwrap();
    let out = run_sdk("openai_sdk.py", &format!("{http}/v1"), &key).await;

    let p = &out["plain"];
    assert_eq!(p["text"], "Hello from the mock.");
    assert_eq!(p["finish_reason"], "stop");
    assert_eq!(p["model"], "gpt");
    assert_eq!(p["usage"]["prompt_tokens"], 2000);
    assert_eq!(p["usage"]["completion_tokens"], 10);
    assert_eq!(p["usage"]["prompt_tokens_details"]["cached_tokens"], 1024);
    // gpt-4o-mini: 976 fresh input tokens at $0.15, 1024 cached at $0.075, 10 output at $0.60.
    assert_eq!(
        p["bridle"]["cost_nano_usd"],
        976 * 150 + 1024 * 75 + 10 * 600
    );
    assert_eq!(p["bridle"]["model"], "gpt-4o-mini-2024-07-18");

    let s = &out["stream"];
    assert_eq!(s["text"], "Streaming works, piece by piece.");
    assert_eq!(s["finish_reason"], "stop");
    assert_eq!(s["usage"]["total_tokens"], 21);
    assert!(s["chunks"].as_u64().unwrap() > 3, "{s}");

    for k in ["stream_tools", "stream_helper"] {
        let t = &out[k];
        assert_eq!(t["finish_reason"], "tool_calls", "{k}");
        let tc = t["tool_calls"].as_array().unwrap();
        assert_eq!(tc.len(), 2, "{k}: {t}");
        assert_eq!(
            (tc[0]["id"].as_str(), tc[0]["name"].as_str()),
            (Some("call_w"), Some("get_weather"))
        );
        assert_eq!(
            (tc[1]["id"].as_str(), tc[1]["name"].as_str()),
            (Some("call_t"), Some("get_time"))
        );
        assert_eq!(args(&tc[0]["arguments"]), json!({"city": "Paris"}));
    }
    assert_eq!(out["tool_results"]["text"], "Sunny at noon.");
    // The tool results reached the provider as OpenAI tool messages.
    let sent = gpt.requests();
    let last = &sent.last().unwrap().body["messages"];
    assert_eq!(last[1]["tool_calls"][1]["function"]["name"], "get_time");
    assert_eq!(
        last[2],
        json!({"role": "tool", "tool_call_id": "call_w", "content": "sunny"})
    );
    assert_eq!(
        sent[0].body["messages"][0],
        json!({"role": "system", "content": "be brief"})
    );
    assert_eq!(sent[1].body["stream"], true);

    // An Anthropic route through the OpenAI front.
    let c = &out["cross"];
    assert_eq!(c["text"], "Checking.");
    assert_eq!(c["finish_reason"], "tool_calls");
    assert_eq!(c["tool_calls"][0]["id"], "toolu_1");
    assert_eq!(
        args(&c["tool_calls"][0]["arguments"]),
        json!({"city": "Paris"})
    );
    let to_claude = &claude.requests()[0].body;
    assert_eq!(to_claude["max_tokens"], 300);
    assert_eq!(
        to_claude["tools"][0]["input_schema"]["required"],
        json!(["city"])
    );

    let nf = &out["not_found"];
    assert_eq!(nf["status"], 404);
    assert_eq!(nf["code"], "model_not_found");
    assert_eq!(nf["param"], "model");
    assert_eq!(
        nf["body"],
        json!({"message": "model route 'nope' is not defined for tenant 'default'",
               "type": "invalid_request_error", "param": "model", "code": "model_not_found"})
    );
    assert_eq!(out["bad_key"]["status"], 401);
    assert!(
        out["bad_key"]["message"]
            .as_str()
            .unwrap()
            .contains("the API key is not valid"),
        "{}",
        out["bad_key"]
    );
    assert_eq!(out["bad_request"]["status"], 400);
    assert!(
        out["bad_request"]["message"].as_str().unwrap().contains(
            "messages[0].content[0].type: 'image_url' parts are not supported by this gateway"
        ),
        "{}",
        out["bad_request"]
    );
    assert_eq!(out["models"], json!(["claude", "gpt"]));
}

#[tokio::test]
async fn the_anthropic_sdk_works_against_the_gateway() {
    let (h, gpt, claude, key) = gateway().await;
    let mut cached = fixture("message.json").unwrap();
    cached["model"] = json!("claude-sonnet-4-20250514");
    cached["usage"] = json!({"input_tokens": 21, "cache_creation_input_tokens": 188,
        "cache_read_input_tokens": 1800, "output_tokens": 393});
    claude.enqueue(mock_anthropic::Reply::Message(cached));
    claude.enqueue(mock_anthropic::Reply::Events(
        fixture_text("stream_basic.txt").unwrap(),
    ));
    claude.enqueue(mock_anthropic::Reply::Events(
        fixture_text("stream_tool_use.txt").unwrap(),
    ));
    claude.enqueue(mock_anthropic::Reply::text(
        "claude-sonnet-4-20250514",
        "It is 15 degrees.",
    ));
    gpt.enqueue(Reply::Completion(tool_call_completion(
        "gpt-4o-mini",
        &[
            ("call_1", "get_weather", r#"{"location":"Paris"}"#),
            ("call_2", "get_weather", r#"{"location":"Lyon"}"#),
        ],
    )));

    let http = h.http.clone().unwrap();
    let out = run_sdk("anthropic_sdk.py", &http, &key).await;

    let p = &out["plain"];
    assert_eq!(
        p["content"],
        json!([{"type": "text", "text": "Hi! My name is Claude."}])
    );
    assert_eq!(p["stop_reason"], "end_turn");
    assert_eq!(p["model"], "claude");
    assert_eq!(p["usage"]["input_tokens"], 21);
    assert_eq!(p["usage"]["cache_creation_input_tokens"], 188);
    assert_eq!(p["usage"]["cache_read_input_tokens"], 1800);
    assert_eq!(p["usage"]["output_tokens"], 393);
    assert_eq!(
        p["bridle"]["cost_nano_usd"],
        21 * 3000 + 188 * 3750 + 1800 * 300 + 393 * 15000
    );
    let sent = &claude.requests()[0];
    assert_eq!(sent.body["system"], "be brief");
    assert_eq!(
        sent.headers["x-api-key"], "sk-ant-test-gateway",
        "the provider key, not the caller's"
    );

    let s = &out["stream"];
    assert_eq!(s["texts"], json!(["Hello", " there", "!"]));
    assert_eq!(
        s["content"],
        json!([{"type": "text", "text": "Hello there!"}])
    );
    assert_eq!(s["stop_reason"], "end_turn");
    assert_eq!(s["usage"]["output_tokens"], 6);

    let t = &out["stream_tools"];
    assert_eq!(t["stop_reason"], "tool_use");
    assert_eq!(
        t["content"][0]["text"],
        "I'll check the current weather in Paris for you."
    );
    assert_eq!(t["content"][1]["type"], "tool_use");
    assert_eq!(t["content"][1]["id"], "toolu_01NRLabsLyVHZPKxbKvkfSMn");
    assert_eq!(t["content"][1]["input"], json!({"location": "Paris"}));
    let partial: String = t["partial_json"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p.as_str().unwrap())
        .collect();
    assert_eq!(partial, r#"{"location": "Paris"}"#);

    assert_eq!(
        out["tool_results"]["content"][0]["text"],
        "It is 15 degrees."
    );
    let back = &claude.requests()[3].body["messages"];
    assert_eq!(back[1]["content"][1]["type"], "tool_use");
    assert_eq!(
        back[2]["content"][0],
        json!({"type": "tool_result", "tool_use_id": "toolu_01NRLabsLyVHZPKxbKvkfSMn", "content": "15 degrees"})
    );

    // An OpenAI route through the Anthropic front: two tool_use blocks.
    let c = &out["cross"];
    assert_eq!(c["stop_reason"], "tool_use");
    let uses: Vec<&Value> = c["content"].as_array().unwrap().iter().collect();
    assert_eq!(uses.len(), 2, "{c}");
    assert_eq!(
        (uses[0]["id"].as_str(), uses[0]["input"].clone()),
        (Some("call_1"), json!({"location": "Paris"}))
    );
    assert_eq!(
        (uses[1]["id"].as_str(), uses[1]["input"].clone()),
        (Some("call_2"), json!({"location": "Lyon"}))
    );
    assert_eq!(c["usage"]["output_tokens"], 17);

    let nf = &out["not_found"];
    assert_eq!(nf["status"], 404);
    assert_eq!(
        nf["body"],
        json!({"type": "error", "error": {"type": "not_found_error", "message": "model route 'nope' is not defined for tenant 'default'"}})
    );
    assert_eq!(out["bad_key"]["status"], 401);
    assert_eq!(
        out["bad_key"]["body"]["error"]["type"],
        "authentication_error"
    );
}

#[tokio::test]
async fn the_fronts_refuse_oversized_bodies_and_unknown_paths_in_their_own_shapes() {
    let h = Harness::start_with(|o| {
        o.http_listen = Some(SocketAddr::from(([127, 0, 0, 1], 0)));
        o.max_request_bytes = 2048;
    })
    .await;
    let gpt = MockOpenAi::start().await.unwrap();
    h.put_secret("openai-key", "sk-test-big").await;
    h.apply(&openai_route(
        "gpt",
        &[("a", "gpt-4o", &gpt.base_url())],
        "",
    ))
    .await;
    let http = h.http.clone().unwrap();
    let big = "x".repeat(4000);
    let c = bridle_core::http_client::new();
    let r = c
        .post(format!("{http}/v1/chat/completions"))
        .json(&json!({"model": "gpt", "messages": [{"role": "user", "content": big}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 413);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"]["code"], "request_too_large");
    let r = c
        .post(format!("{http}/v1/messages"))
        .json(&json!({"model": "gpt", "max_tokens": 5, "messages": [{"role": "user", "content": big}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 413);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"]["type"], "request_too_large");
    assert!(gpt.requests().is_empty());

    let r = c.get(format!("{http}/v2/whatever")).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 404);
    let body: Value = r.json().await.unwrap();
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("not GET /v2/whatever")
    );
    let r = c
        .post(format!("{http}/v1/chat/completions"))
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 400);
    // A model id that is not UTF-8 once decoded: 400 in OpenAI's shape, not axum's text.
    let r = c
        .get(format!("{http}/v1/models/%ff%fe"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 400);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"]["type"], "invalid_request_error", "{body}");
}

/// Every parameter the fronts do not carry to the provider is a 400 naming it, in the API's
/// own shape, through the official SDKs: none is dropped while the call goes ahead without it.
/// The defaults, which change nothing, are accepted.
#[tokio::test]
async fn the_fronts_refuse_by_name_every_parameter_they_would_not_carry() {
    let (h, gpt, claude, key) = gateway().await;
    gpt.enqueue(Reply::text("Defaults are fine."));
    claude.enqueue(mock_anthropic::Reply::text(
        "claude-sonnet-4-20250514",
        "Defaults are fine.",
    ));
    let http = h.http.clone().unwrap();

    let out = run_sdk("openai_params.py", &format!("{http}/v1"), &key).await;
    let refused = out["refused"].as_array().unwrap();
    assert_eq!(refused.len(), 18, "{out}");
    for r in refused {
        let expect = r["expect"].as_str().unwrap();
        let e = &r["error"];
        assert_eq!(e["status"], 400, "{r}");
        assert_eq!(e["param"], expect, "{r}");
        assert_eq!(e["body"]["type"], "invalid_request_error", "{r}");
        let message = e["body"]["message"].as_str().unwrap();
        assert!(message.starts_with(&format!("{expect}: ")), "{r}");
    }
    let code = |i: usize| refused[i]["error"]["code"].as_str().unwrap();
    assert_eq!(code(0), "unsupported_value", "frequency_penalty: 0.5");
    assert_eq!(code(2), "unsupported_parameter", "logit_bias");
    assert_eq!(code(6), "unsupported_value", "n: 2");
    assert_eq!(code(17), "unknown_parameter", "colour");
    assert_eq!(out["defaults"]["text"], "Defaults are fine.");
    let sent = gpt.requests();
    assert_eq!(
        sent.len(),
        1,
        "only the request with the defaults reached the provider"
    );
    assert_eq!(
        sent[0].body["messages"],
        json!([{"role": "user", "content": "hi"}])
    );
    // The end user and the sampling controls reach the provider.
    assert_eq!(sent[0].body["user"], "customer-42");
    assert_eq!(sent[0].body["stop"], json!(["\n\n"]));
    assert_eq!(sent[0].body["seed"], 7);
    assert_eq!(sent[0].body["top_p"], 0.5);
    assert_eq!(sent[0].body["tools"][0]["function"]["strict"], true);
    assert_eq!(sent[0].body["reasoning_effort"], "low");
    assert_eq!(sent[0].body["prompt_cache_key"], "tenant-a");
    assert_eq!(
        sent[0].body["response_format"],
        json!({"type": "json_schema", "json_schema": {"name": "answer",
            "schema": {"type": "object", "properties": {"a": {"type": "string"}}}}})
    );

    let out = run_sdk("anthropic_params.py", &http, &key).await;
    let refused = out["refused"].as_array().unwrap();
    assert_eq!(refused.len(), 8, "{out}");
    for r in refused {
        let expect = r["expect"].as_str().unwrap();
        let e = &r["error"];
        assert_eq!(e["status"], 400, "{r}");
        assert_eq!(e["body"]["type"], "error", "{r}");
        assert_eq!(e["body"]["error"]["type"], "invalid_request_error", "{r}");
        let message = e["body"]["error"]["message"].as_str().unwrap();
        assert!(message.starts_with(&format!("{expect}: ")), "{r}");
    }
    assert_eq!(
        out["defaults"]["content"],
        json!([{"type": "text", "text": "Defaults are fine."}])
    );
    let sent = claude.requests();
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].body["metadata"], json!({"user_id": "customer-42"}));
    assert_eq!(sent[0].body["stop_sequences"], json!(["\n\nHuman:"]));
    assert_eq!(sent[0].body["top_p"], 0.5);
    assert_eq!(
        sent[0].body["thinking"],
        json!({"type": "enabled", "budget_tokens": 1024})
    );
    assert_eq!(sent[0].body["output_config"], json!({"effort": "low"}));
    // The caching breakpoints reach the provider where the caller put them.
    assert_eq!(
        sent[0].body["system"],
        json!([{"type": "text", "text": "Be brief.", "cache_control": {"type": "ephemeral"}}])
    );
    assert_eq!(
        sent[0].body["tools"][0]["cache_control"],
        json!({"type": "ephemeral"})
    );
    assert_eq!(
        sent[0].body["messages"][0]["content"][0]["cache_control"],
        json!({"type": "ephemeral"})
    );
}

/// Structured outputs with the official SDK's `parse` helper: its Pydantic model reaches the
/// provider as a strict JSON Schema response format, and the reply parses into the model.
#[tokio::test]
async fn the_openai_sdks_structured_outputs_reach_the_provider() {
    let (h, gpt, _claude, key) = gateway().await;
    gpt.enqueue(Reply::text(r#"{"city": "Paris", "degrees": 21}"#));
    let http = h.http.clone().unwrap();
    let out = run_sdk("openai_structured.py", &format!("{http}/v1"), &key).await;
    assert_eq!(out["parsed"], json!({"city": "Paris", "degrees": 21}));
    let sent = gpt.requests();
    assert_eq!(sent.len(), 1);
    let format = &sent[0].body["response_format"];
    assert_eq!(format["type"], "json_schema", "{format}");
    assert_eq!(format["json_schema"]["name"], "Answer", "{format}");
    assert_eq!(format["json_schema"]["strict"], true, "{format}");
    let schema = &format["json_schema"]["schema"];
    assert_eq!(
        schema["properties"]["degrees"]["type"], "integer",
        "{format}"
    );
    assert_eq!(schema["required"], json!(["city", "degrees"]), "{format}");
}

/// A control one provider cannot carry is refused by that provider's target, by name, and
/// never sent without it: a seed through the Chat Completions front to an Anthropic route.
/// Out-of-range controls are refused before any provider is called.
#[tokio::test]
async fn a_control_the_provider_cannot_carry_is_refused_by_name() {
    let (h, gpt, claude, key) = gateway().await;
    let http = h.http.clone().unwrap();
    let c = bridle_core::http_client::new();
    let post = |body: Value| {
        c.post(format!("{http}/v1/chat/completions"))
            .bearer_auth(&key)
            .json(&body)
            .send()
    };
    let hi = json!([{"role": "user", "content": "hi"}]);
    let r = post(json!({"model": "claude", "messages": hi, "seed": 7}))
        .await
        .unwrap();
    let status = r.status().as_u16();
    let body: Value = r.json().await.unwrap();
    assert_eq!(status, 400, "{body}");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("seed: Anthropic's Messages API takes no seed"),
        "{body}"
    );
    let r = post(json!({"model": "claude", "messages": hi,
        "response_format": {"type": "json_object"}}))
    .await
    .unwrap();
    let status = r.status().as_u16();
    let body: Value = r.json().await.unwrap();
    assert_eq!(status, 400, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("response_format: Anthropic's Messages API takes no response format"),
        "{body}"
    );
    assert!(claude.requests().is_empty(), "nothing reached Anthropic");

    for (bad, expect) in [
        (json!({"top_p": 0}), "top_p: 0 is not above 0 and at most 1"),
        (
            json!({"stop": [""]}),
            "stop[0]: a stop sequence is 1 to 1000 bytes",
        ),
        (
            json!({"stop": 5}),
            "stop: must be a string or an array of strings",
        ),
        (json!({"seed": 1.5}), "seed: must be an integer"),
        (
            json!({"response_format": {"type": "yaml"}}),
            "response_format.type: 'yaml' is not text, json_object or json_schema",
        ),
        (
            json!({"response_format": {"type": "json_schema"}}),
            "response_format.json_schema: is required with type json_schema",
        ),
        (
            json!({"response_format": {"type": "json_schema", "json_schema": {"name": "a b", "schema": {}}}}),
            "response_format.name: 'a b' is not 1 to 64",
        ),
        (
            json!({"response_format": {"type": "json_schema", "json_schema": {"name": "a", "schema": {}, "colour": 1}}}),
            "response_format.json_schema.colour: unknown parameter",
        ),
    ] {
        let mut req = json!({"model": "gpt", "messages": hi});
        req.as_object_mut()
            .unwrap()
            .extend(bad.as_object().unwrap().clone());
        let r = post(req).await.unwrap();
        let status = r.status().as_u16();
        let body: Value = r.json().await.unwrap();
        assert_eq!(status, 400, "{bad}: {body}");
        assert!(
            body["error"]["message"].as_str().unwrap().contains(expect),
            "{bad}: {body}"
        );
    }
    assert!(gpt.requests().is_empty(), "nothing reached OpenAI");
}

/// The OpenAI Agents SDK's default model, the Responses API, works through the gateway
/// unchanged: an agent with a function tool runs whole and streamed, its tool is called with the
/// model's arguments, and its result reaches the provider as the tool's answer.
#[tokio::test]
async fn the_openai_agents_sdk_runs_an_agent_with_a_tool_through_the_responses_front() {
    let (h, gpt, _claude, key) = gateway().await;
    for city in ["Paris", "Rome"] {
        gpt.enqueue(Reply::tool_calls(&[(
            "call_1",
            "get_weather",
            &format!(r#"{{"city":"{city}"}}"#),
        )]));
        gpt.enqueue(Reply::text(&format!("It is sunny in {city}.")));
    }
    let http = h.http.clone().unwrap();
    let out = run_sdk("openai_agents.py", &format!("{http}/v1"), &key).await;

    assert_eq!(out["plain"]["final"], "It is sunny in Paris.", "{out}");
    assert_eq!(out["plain"]["calls"], json!(["Paris"]), "{out}");
    let s = &out["stream"];
    assert_eq!(s["final"], "It is sunny in Rome.", "{out}");
    assert_eq!(s["calls"], json!(["Rome"]), "{out}");
    let events: Vec<&str> = s["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    for kind in [
        "response.created",
        "response.output_item.added",
        "response.function_call_arguments.delta",
        "response.output_item.done",
        "response.output_text.delta",
        "response.completed",
    ] {
        assert!(events.contains(&kind), "no {kind} in {events:?}");
    }

    let sent = gpt.requests();
    assert_eq!(sent.len(), 4, "two model calls per run");
    let first = &sent[0].body;
    assert_eq!(
        first["messages"][0],
        json!({"role": "system", "content": "Answer in one sentence."})
    );
    assert_eq!(
        first["messages"][1],
        json!({"role": "user", "content": "What is the weather in Paris?"})
    );
    let tool = &first["tools"][0]["function"];
    assert_eq!(tool["name"], "get_weather", "{first}");
    assert_eq!(tool["strict"], true, "the SDK's tools are strict: {first}");
    assert_eq!(tool["parameters"]["required"], json!(["city"]), "{first}");
    // The second call carries the model's call and the tool's result.
    let second = &sent[1].body["messages"];
    assert_eq!(second[2]["tool_calls"][0]["id"], "call_1", "{second}");
    assert_eq!(
        second[3],
        json!({"role": "tool", "tool_call_id": "call_1", "content": "sunny in Paris"})
    );
    assert_eq!(sent[2].body["stream"], true, "the streamed run streams");
}

/// The Responses front with the `openai` SDK itself: plain, streamed with tool calls (the
/// SDK's stream helper rebuilds the response from the events and fails on any out of order),
/// structured output parsed into a Pydantic model, a model looked up by id, and what it refuses.
#[tokio::test]
async fn the_openai_sdk_speaks_the_responses_api_to_the_gateway() {
    let (h, gpt, _claude, key) = gateway().await;
    let mut cached = text_completion("gpt-4o-mini-2024-07-18", "Hi.");
    cached["usage"] = json!({"prompt_tokens": 2000, "completion_tokens": 10, "total_tokens": 2010,
        "prompt_tokens_details": {"cached_tokens": 1024}, "completion_tokens_details": {"reasoning_tokens": 4}});
    gpt.enqueue(Reply::Completion(cached));
    gpt.enqueue(Reply::Completion(tool_call_completion(
        "gpt-4o-mini",
        &[
            ("call_w", "get_weather", r#"{"city":"Paris"}"#),
            ("call_x", "get_weather", r#"{"city":"Lyon"}"#),
        ],
    )));
    gpt.enqueue(Reply::text("Once upon a time, a story was streamed."));
    gpt.enqueue(Reply::text(r#"{"city": "Paris", "degrees": 21}"#));
    let http = h.http.clone().unwrap();
    let out = run_sdk("openai_responses.py", &format!("{http}/v1"), &key).await;

    let p = &out["plain"];
    assert_eq!(p["text"], "Hi.", "{out}");
    assert_eq!(p["status"], "completed");
    assert_eq!(p["model"], "gpt");
    assert!(p["id"].as_str().unwrap().starts_with("resp_"), "{p}");
    assert_eq!(
        p["usage"],
        json!({"input_tokens": 2000, "input_tokens_details": {"cached_tokens": 1024},
            "output_tokens": 10, "output_tokens_details": {"reasoning_tokens": 4}, "total_tokens": 2010})
    );

    let t = &out["stream_tools"];
    assert_eq!(t["status"], "completed", "{t}");
    let calls = t["output"].as_array().unwrap();
    assert_eq!(calls.len(), 2, "{t}");
    for (c, (id, city)) in calls.iter().zip([("call_w", "Paris"), ("call_x", "Lyon")]) {
        assert_eq!(c["type"], "function_call", "{t}");
        assert_eq!(c["call_id"], id, "{t}");
        assert_eq!(c["name"], "get_weather", "{t}");
        assert_eq!(args(&c["arguments"]), json!({ "city": city }), "{t}");
    }

    let s = &out["stream_text"];
    assert_eq!(s["text"], "Once upon a time, a story was streamed.", "{s}");
    assert!(s["deltas"].as_u64().unwrap() > 3, "{s}");
    assert_eq!(s["usage"]["total_tokens"], 21, "{s}");

    assert_eq!(out["parsed"], json!({"city": "Paris", "degrees": 21}));
    assert_eq!(out["model"], "gpt");
    assert_eq!(
        out["missing_model"],
        json!({"status": 404, "code": "model_not_found"})
    );
    let refused = out["refused"].as_array().unwrap();
    assert_eq!(refused.len(), 4);
    for r in refused {
        assert_eq!(r["error"]["status"], 400, "{r}");
        assert_eq!(r["error"]["param"], r["expect"], "{r}");
    }

    let sent = gpt.requests();
    assert_eq!(
        sent.len(),
        4,
        "only the accepted calls reached the provider"
    );
    assert_eq!(
        sent[0].body["messages"],
        json!([{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hello?"}])
    );
    assert_eq!(sent[0].body["max_completion_tokens"], 50);
    assert_eq!(sent[0].body["reasoning_effort"], "low");
    let format = &sent[3].body["response_format"];
    assert_eq!(format["type"], "json_schema", "{format}");
    assert_eq!(format["json_schema"]["name"], "Answer", "{format}");
    assert_eq!(format["json_schema"]["strict"], true, "{format}");
}
