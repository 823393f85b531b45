use std::time::Duration;

use bridle_proto::{ListModelsRequest, Role};
use bridle_testkit::mock_openai::{MockOpenAi, Reply};

use crate::helpers::{Harness, msg, openai_route, request, route_with};

async fn targets_of(h: &Harness, n: usize, route: &str) -> Vec<String> {
    let mut out = Vec::new();
    for _ in 0..n {
        let r = h
            .complete(request(route, vec![msg(Role::User, "hi")]))
            .await
            .unwrap();
        out.push(r.target);
    }
    out
}

#[tokio::test]
async fn weighted_spreads_calls_and_weight_zero_is_only_a_fallback() {
    let h = Harness::start().await;
    let (a, b, z) = (
        MockOpenAi::start().await.unwrap(),
        MockOpenAi::start().await.unwrap(),
        MockOpenAi::start().await.unwrap(),
    );
    for m in [&a, &b, &z] {
        m.set_default(Some(Reply::text("ok")));
    }
    h.put_secret("openai-key", "sk-test-weighted").await;
    let mut yaml = route_with(
        "w",
        "  strategy: weighted\n",
        &[
            ("a", "gpt-4o", &a.base_url()),
            ("b", "gpt-4o", &b.base_url()),
            ("z", "gpt-4o", &z.base_url()),
        ],
        "",
    );
    yaml = yaml.replace(
        &format!("baseUrl: {}\n", z.base_url()),
        &format!("baseUrl: {}\n      weight: 0\n", z.base_url()),
    );
    h.apply(&yaml).await;
    let got = targets_of(&h, 60, "w").await;
    let count = |t: &str| got.iter().filter(|g| *g == t).count();
    // Equal weights: both lead (each leads with probability 1/2; all 60 on one side would be a
    // 1 in 2^59 event).
    assert!(count("a") > 0 && count("b") > 0, "{got:?}");
    assert_eq!(count("z"), 0, "weight 0 never leads");
    assert!(z.requests().is_empty());

    // z still answers as a fallback when the others fail.
    a.set_default(Some(Reply::error(400, "bad")));
    b.set_default(Some(Reply::error(400, "bad")));
    let r = h
        .complete(request("w", vec![msg(Role::User, "hi")]))
        .await
        .unwrap();
    assert_eq!(r.target, "z");
}

#[tokio::test]
async fn least_latency_measures_each_target_then_prefers_the_fastest() {
    let h = Harness::start().await;
    let (slow, fast) = (
        MockOpenAi::start().await.unwrap(),
        MockOpenAi::start().await.unwrap(),
    );
    slow.set_default(Some(Reply::Delay(
        Duration::from_secs(1),
        Box::new(Reply::text("slow")),
    )));
    fast.set_default(Some(Reply::text("fast")));
    h.put_secret("openai-key", "sk-test-latency").await;
    h.apply(&route_with(
        "l",
        "  strategy: least_latency\n",
        &[
            ("slow", "gpt-4o", &slow.base_url()),
            ("fast", "gpt-4o", &fast.base_url()),
        ],
        "",
    ))
    .await;
    // Unmeasured targets go first, in manifest order: slow, then fast; then the fastest.
    let got = targets_of(&h, 6, "l").await;
    assert_eq!(got, vec!["slow", "fast", "fast", "fast", "fast", "fast"]);
}

#[tokio::test]
async fn cheapest_tries_the_cheapest_known_price_first_and_fails_over_upward() {
    let h = Harness::start().await;
    let (big, mini, own) = (
        MockOpenAi::start().await.unwrap(),
        MockOpenAi::start().await.unwrap(),
        MockOpenAi::start().await.unwrap(),
    );
    big.set_default(Some(Reply::text("big")));
    mini.set_default(Some(Reply::text("mini")));
    own.set_default(Some(Reply::Completion(
        bridle_testkit::mock_openai::text_completion("my-finetune", "own"),
    )));
    h.put_secret("openai-key", "sk-test-cheapest").await;
    let mut yaml = route_with(
        "c",
        "  strategy: cheapest\n",
        &[
            ("big", "gpt-4o", &big.base_url()),
            ("mini", "gpt-4o-mini", &mini.base_url()),
            ("own", "my-finetune", &own.base_url()),
        ],
        "",
    );
    // A price override makes the fine-tune cheapest, and prices its answers.
    yaml = yaml.replace(
        &format!("baseUrl: {}\n", own.base_url()),
        &format!(
            "baseUrl: {}\n      price: {{input: 0.05, output: 0.1}}\n",
            own.base_url()
        ),
    );
    h.apply(&yaml).await;
    let r = h
        .complete(request("c", vec![msg(Role::User, "hi")]))
        .await
        .unwrap();
    assert_eq!(r.target, "own");
    // The published example's usage: 9 input, 12 output tokens at $0.05 and $0.10 per Mtok.
    assert_eq!(r.cost.unwrap().nano_usd, 9 * 50 + 12 * 100);
    let l = h
        .router
        .clone()
        .list_models(ListModelsRequest::default())
        .await
        .unwrap()
        .into_inner();
    let own_price = l.routes[0].targets[2].price.clone().unwrap();
    assert_eq!(own_price.input_per_mtok_nano_usd, 50_000_000);
    assert!(
        own_price.source.contains("route's own price"),
        "{}",
        own_price.source
    );
    assert_eq!(
        l.routes[0].strategy(),
        bridle_proto::RouteStrategy::Cheapest
    );

    own.set_default(Some(Reply::error(503, "down")));
    let r = h
        .complete(request("c", vec![msg(Role::User, "hi")]))
        .await
        .unwrap();
    assert_eq!(r.target, "mini");
    let order: Vec<&str> = r.attempts.iter().map(|a| a.target.as_str()).collect();
    assert_eq!(order, vec!["own", "own", "own", "mini"]);
}

#[tokio::test]
async fn azure_deployments_get_their_url_and_api_key_header() {
    let h = Harness::start().await;
    let mock = MockOpenAi::start().await.unwrap();
    h.put_secret("openai-key", "azure-key-123").await;
    mock.require_key(Some("azure-key-123"));
    let base = mock.base_url().trim_end_matches("/v1").to_string();
    let yaml = openai_route("az", &[("azure", "gpt-4o", &base)], "")
        + "      azure:\n        deployment: prod-gpt4o\n        apiVersion: 2024-10-21\n";
    h.apply(&yaml).await;
    mock.enqueue(Reply::text("from azure"));
    let r = h
        .complete(request("az", vec![msg(Role::User, "hi")]))
        .await
        .unwrap();
    assert_eq!(r.message.unwrap().text, "from azure");
    let sent = &mock.requests()[0];
    assert_eq!(sent.path, "/openai/deployments/prod-gpt4o/chat/completions");
    assert_eq!(sent.query, "api-version=2024-10-21");
    assert_eq!(sent.headers["api-key"], "azure-key-123");
    assert!(!sent.headers.contains_key("authorization"));
}
