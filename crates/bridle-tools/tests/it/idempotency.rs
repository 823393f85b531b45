//! The same idempotency key runs the tool once; duplicates get the stored result.

use bridle_proto::ExecuteRequest;
use serde_json::json;

use crate::helpers::{Harness, now_secs, python_tool};

fn random_call(h: &Harness, key: &str, code: &str) -> ExecuteRequest {
    let mut req = h.request("py", json!({ "code": code }));
    req.idempotency_key = key.into();
    req
}

#[tokio::test]
async fn the_same_key_twice_runs_once_and_replays_the_stored_result() {
    let h = Harness::start().await;
    h.apply(&python_tool("py", "")).await;
    let since = now_secs() - 1;
    let code = "import random; print(random.randrange(10**15))";

    let first = h
        .execute(random_call(&h, "run_1/1/call_1", code))
        .await
        .unwrap();
    assert!(!first.replayed);
    let second = h
        .execute(random_call(&h, "run_1/1/call_1", code))
        .await
        .unwrap();
    assert!(second.replayed);
    assert_eq!(
        first.result, second.result,
        "the replay is the stored result, random number included"
    );

    // Another key runs again and (almost surely) prints another number.
    let third = h
        .execute(random_call(&h, "run_1/1/call_2", code))
        .await
        .unwrap();
    assert!(!third.replayed);
    assert_ne!(third.result.unwrap().stdout, first.result.unwrap().stdout);

    // Both calls ran (two numbers), in the run's one sandbox.
    assert_eq!(h.created_since(since).await, 1);
    h.stop().await;
}

#[tokio::test]
async fn a_concurrent_duplicate_waits_for_the_running_call() {
    let h = Harness::start().await;
    h.apply(&python_tool("py", "")).await;
    let since = now_secs() - 1;
    let code = "import random, time; time.sleep(2); print(random.randrange(10**15))";
    let (a, b) = tokio::join!(
        h.execute(random_call(&h, "run_1/2/call_1", code)),
        h.execute(random_call(&h, "run_1/2/call_1", code)),
    );
    let (a, b) = (a.unwrap(), b.unwrap());
    assert_eq!(a.result, b.result);
    assert!(
        a.replayed != b.replayed,
        "exactly one ran: {} {}",
        a.replayed,
        b.replayed
    );
    assert_eq!(h.created_since(since).await, 1);
    h.stop().await;
}

#[tokio::test]
async fn invalid_arguments_do_not_burn_the_key() {
    let h = Harness::start().await;
    h.apply(&python_tool("py", "")).await;
    let mut bad = h.request("py", json!({ "code": 1 }));
    bad.idempotency_key = "run_1/3/call_1".into();
    let r = h.execute(bad).await.unwrap();
    assert!(r.result.unwrap().is_error);
    let good = h
        .execute(random_call(&h, "run_1/3/call_1", "print('ran')"))
        .await
        .unwrap();
    assert!(!good.replayed);
    assert_eq!(good.result.unwrap().stdout, "ran\n");
    h.stop().await;
}
