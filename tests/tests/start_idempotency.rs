//! StartRun's idempotency key when the request that claimed it died before the run was
//! written and queued (a replica killed, Redis restarted): a retry with the key creates the
//! run under the claimed id, instead of being told of a run that does not exist. Found by the
//! cluster test (tests/cluster.rs), where a Redis restart left keys naming missing runs.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::time::Duration;

use bridle_proto as pb;
use bridle_testkit::mock_openai::Reply;
use support::{Harness, follow};

async fn start(h: &Harness, key: &str) -> pb::StartRunResponse {
    h.orchestrator()
        .await
        .start_run(pb::StartRunRequest {
            agent: "analyst".into(),
            input: "hi".into(),
            idempotency_key: key.into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_key_claimed_by_a_start_that_died_still_gets_its_run() {
    let h = Harness::start().await.unwrap();
    h.apply("test.yaml", &h.manifests_yaml()).await.unwrap();
    h.mock.enqueue(Reply::text("first"));
    let first = start(&h, "k-1").await;
    let id = first.run.unwrap().id;
    assert!(first.created);
    follow(&h, &id, Duration::from_secs(60), |_| async {})
        .await
        .unwrap();
    let mut c = h.redis.client().await.unwrap();
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{}:idem:*", h.prefix))
        .query_async(&mut c)
        .await
        .unwrap();
    assert_eq!(keys.len(), 1, "{keys:?}");
    let value: String = redis::cmd("GET")
        .arg(&keys[0])
        .query_async(&mut c)
        .await
        .unwrap();
    assert_eq!(value, id, "a created run's key is confirmed");

    // As a StartRun that claimed the key and died before writing the run leaves it.
    let lost = "run_01lostlostlostlostlostlost".to_string();
    let _: () = redis::cmd("SET")
        .arg(&keys[0])
        .arg(format!("pending:{lost}"))
        .query_async(&mut c)
        .await
        .unwrap();
    h.mock.enqueue(Reply::text("second"));
    let retry = start(&h, "k-1").await;
    let run = retry.run.unwrap();
    assert_eq!(run.id, lost, "the key's run, created by the retry");
    assert!(!retry.created);
    let events = follow(&h, &lost, Duration::from_secs(60), |_| async {})
        .await
        .unwrap_or_else(|e| {
            panic!(
                "the run the key names must exist and end: {e}\n{}",
                h.logs()
            )
        });
    assert!(!events.is_empty());
    let value: String = redis::cmd("GET")
        .arg(&keys[0])
        .query_async(&mut c)
        .await
        .unwrap();
    assert_eq!(value, lost, "confirmed once created");
    // And the same key again: the same run, nothing new.
    let again = start(&h, "k-1").await;
    assert_eq!(again.run.unwrap().id, lost);
    assert!(!again.created);
}
