use std::time::Duration;

use bridle_proto::Role;
use bridle_testkit::mock_openai::{MockOpenAi, Reply};

use crate::helpers::{Harness, WAIT, msg, openai_route, request};

async fn target(h: &Harness, route: &str) -> String {
    h.complete(request(route, vec![msg(Role::User, "hi")]))
        .await
        .unwrap()
        .target
}

#[tokio::test]
async fn routes_are_cached_for_their_ttl_and_new_routes_are_seen_at_once() {
    let (a, b) = (
        MockOpenAi::start().await.unwrap(),
        MockOpenAi::start().await.unwrap(),
    );
    a.set_default(Some(Reply::text("a")));
    b.set_default(Some(Reply::text("b")));

    // A long TTL: an update is not read back while the cached route is fresh.
    let h = Harness::start_with(|o| o.route_cache_ttl = Duration::from_secs(600)).await;
    h.put_secret("openai-key", "sk-test-cache").await;
    h.apply(&openai_route("main", &[("a", "gpt-4o", &a.base_url())], ""))
        .await;
    assert_eq!(target(&h, "main").await, "a");
    h.apply(&openai_route("main", &[("b", "gpt-4o", &b.base_url())], ""))
        .await;
    assert_eq!(target(&h, "main").await, "a", "served from the cache");
    // A route that was not found is not cached: once applied it answers.
    let e = h
        .complete(request("later", vec![msg(Role::User, "hi")]))
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::NotFound);
    h.apply(&openai_route(
        "later",
        &[("b", "gpt-4o", &b.base_url())],
        "",
    ))
    .await;
    assert_eq!(target(&h, "later").await, "b");

    // A short TTL: the update arrives once the cached copy expires.
    let h = Harness::start_with(|o| o.route_cache_ttl = Duration::from_millis(200)).await;
    h.put_secret("openai-key", "sk-test-cache").await;
    h.apply(&openai_route("main", &[("a", "gpt-4o", &a.base_url())], ""))
        .await;
    assert_eq!(target(&h, "main").await, "a");
    h.apply(&openai_route("main", &[("b", "gpt-4o", &b.base_url())], ""))
        .await;
    let updated = async {
        while target(&h, "main").await != "b" {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    tokio::time::timeout(WAIT, updated).await.unwrap();
}
