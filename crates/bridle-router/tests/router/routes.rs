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

/// Issue 21: every change of a manifest is in its history, newest first, with who made it,
/// its generation and the YAML it left (so the previous version is the change before it).
#[tokio::test]
async fn a_routes_history_lists_its_changes_newest_first() {
    let h = Harness::start().await;
    let v1 = openai_route("main", &[("a", "gpt-4o-mini", "http://127.0.0.1:9")], "");
    let v2 = openai_route("main", &[("b", "gpt-4o", "http://127.0.0.1:9")], "");
    h.apply(&v1).await;
    h.apply(&v1).await; // unchanged: not a change
    h.apply(&v2).await;
    let deleted = h
        .manifests
        .clone()
        .delete_manifest(bridle_proto::DeleteManifestRequest {
            kind: bridle_proto::ManifestKind::ModelRoute.into(),
            name: "main".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .deleted;
    assert!(deleted);
    let changes = h
        .manifests
        .clone()
        .history(bridle_proto::HistoryRequest {
            kind: bridle_proto::ManifestKind::ModelRoute.into(),
            name: "main".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .changes;
    let summary: Vec<(&str, u64)> = changes
        .iter()
        .map(|c| (c.action().as_str_name(), c.generation))
        .collect();
    assert_eq!(
        summary,
        [
            ("MANIFEST_ACTION_DELETED", 0),
            ("MANIFEST_ACTION_UPDATED", 2),
            ("MANIFEST_ACTION_CREATED", 1)
        ]
    );
    assert!(changes[1].yaml.contains("gpt-4o\n"), "{}", changes[1].yaml);
    assert!(
        changes[2].yaml.contains("gpt-4o-mini"),
        "{}",
        changes[2].yaml
    );
    assert!(changes[0].yaml.is_empty());
    assert!(changes.iter().all(|c| c.at_ms > 0));
    // Auth is off here: the changes are the anonymous caller's.
    assert_eq!(
        changes[0].actor.as_ref().unwrap().kind(),
        bridle_proto::ActorKind::Anonymous
    );
}
