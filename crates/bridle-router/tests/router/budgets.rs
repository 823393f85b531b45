//! Spend budgets and the spend ledger against real Redis, router replicas as separate
//! processes, and the mock OpenAI server answering with a known usage.

use std::sync::{Arc, Mutex};

use bridle_proto::{Role, SpendRequest};
use bridle_testkit::mock_openai::{MockOpenAi, Reply, text_completion};
use serde_json::{Value, json};

use crate::helpers::{Harness, msg, request, route_with};
use crate::replicas::Replica;

/// $1 per million tokens in and out: a token costs 1000 nano-USD.
const PRICE: &str = "      price: {input: 1, output: 1}\n";
/// The gateway's "hi" is a 6-byte message: its worst case reserves 6 + 8 input tokens and its
/// 10 output tokens; the mock reports exactly that, so reservations equal real costs.
const CALL_NANO: i64 = 24 * 1000;

fn usage_reply(prompt: u64, completion: u64) -> Reply {
    let mut c = text_completion("gpt-4o-mini", "ok");
    c["usage"] = json!({"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion});
    Reply::Completion(c)
}

fn budget(name: &str, usd: f64, extra: &str) -> String {
    format!(
        "apiVersion: bridle.dev/v1\nkind: Budget\nmetadata:\n  name: {name}\nspec:\n  usd: {usd}\n  period: day\n{extra}"
    )
}

async fn chat(http: &str, end_user: Option<&str>) -> (u16, Value) {
    let mut body = json!({"model": "metered", "max_tokens": 10, "messages": [{"role": "user", "content": "hi"}]});
    if let Some(u) = end_user {
        body["user"] = json!(u);
    }
    let resp = bridle_core::http_client::new()
        .post(format!("{http}/v1/chat/completions"))
        .json(&body)
        .send()
        .await
        .unwrap();
    (resp.status().as_u16(), resp.json().await.unwrap())
}

/// Issue 21: 200 concurrent calls against a budget with room for 100, through two router
/// processes, let through at most 100 + 2; the ledger's total is the sum of the calls' costs.
#[tokio::test]
async fn a_budget_under_contention_admits_no_more_than_its_room_across_replicas() {
    let h = Harness::start().await;
    let mock = MockOpenAi::start().await.unwrap();
    mock.set_default(Some(usage_reply(14, 10)));
    mock.set_recording(true);
    h.put_secret("openai-key", "sk-test-budgets").await;
    let room = 100;
    let limit_usd = (room * CALL_NANO) as f64 / 1e9;
    h.apply(&route_with(
        "metered",
        "",
        &[("a", "gpt-4o-mini", &mock.base_url())],
        PRICE,
    ))
    .await;
    h.apply(&budget("daily", limit_usd, "  warnAtPercent: 0\n"))
        .await;
    let (p1, p2) = (Replica::start(&h, &[]).await, Replica::start(&h, &[]).await);

    let calls: Vec<_> = (0..200)
        .map(|i| {
            let http = if i % 2 == 0 {
                p1.http.clone()
            } else {
                p2.http.clone()
            };
            async move { chat(&http, None).await }
        })
        .collect();
    let (mut ok, mut refused) = (0i64, 0);
    for (status, body) in futures::future::join_all(calls).await {
        match status {
            200 => ok += 1,
            429 => {
                refused += 1;
                let m = body["error"]["message"].as_str().unwrap();
                assert!(
                    m.starts_with(
                        "spend budget 'daily' ($0.002400 per day (UTC)) would be exceeded: "
                    ),
                    "{m}"
                );
            }
            s => panic!("unexpected status {s}: {body}"),
        }
    }
    let overshoot = ok - room;
    eprintln!(
        "budget contention: 200 concurrent calls, room for {room}, 2 replicas: {ok} admitted, {refused} refused, overshoot {overshoot} call(s)"
    );
    assert!(
        ok <= room + 2,
        "{ok} calls admitted past a budget with room for {room}"
    );
    assert!(ok >= 1, "no call admitted");
    assert_eq!(
        mock.requests().len() as i64,
        ok,
        "a refused call never reaches the provider"
    );

    // The ledger holds exactly the admitted calls' costs.
    let spend = h
        .router
        .clone()
        .spend(SpendRequest {
            by: vec!["model".into()],
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(spend.calls, ok);
    assert_eq!(spend.total_nano_usd, ok * CALL_NANO);
    assert_eq!(spend.rows.len(), 1, "{spend:?}");
    assert_eq!(spend.rows[0].values, vec!["gpt-4o-mini".to_string()]);
}

/// Per-end-user budgets count each end user apart, a failed call gives its reservation back,
/// and passing the warning level raises the event, the webhook and says it once.
#[tokio::test]
async fn end_user_budgets_count_each_end_user_and_warn_once() {
    let hooks: Arc<Mutex<Vec<Value>>> = Arc::default();
    let got = hooks.clone();
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |axum::Json(v): axum::Json<Value>| {
            let got = got.clone();
            async move {
                got.lock().unwrap().push(v);
                "ok"
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let hook = format!("http://{}/hook", listener.local_addr().unwrap());
    #[allow(
        clippy::disallowed_methods,
        reason = "the webhook receiver lives as long as the test"
    )]
    tokio::spawn(async move { axum::serve(listener, app).await });

    let h = Harness::start_with(|o| o.http_listen = Some("127.0.0.1:0".parse().unwrap())).await;
    let http = h.http.clone().unwrap();
    let mock = MockOpenAi::start().await.unwrap();
    mock.set_default(Some(usage_reply(14, 10)));
    h.put_secret("openai-key", "sk-test-budgets").await;
    // Room for two calls per end user; a warning past half of it.
    h.apply(&route_with(
        "metered",
        "",
        &[("a", "gpt-4o-mini", &mock.base_url())],
        PRICE,
    ))
    .await;
    h.apply(&budget(
        "per-end-user",
        (2 * CALL_NANO) as f64 / 1e9,
        &format!("  per: endUser\n  warnAtPercent: 50\n  webhook: {hook}\n"),
    ))
    .await;

    // A failed call reserves, then gives it all back.
    mock.enqueue(Reply::error(400, "bad request"));
    let (status, _) = chat(&http, Some("alice")).await;
    assert_eq!(status, 400);
    for _ in 0..2 {
        let (status, body) = chat(&http, Some("alice")).await;
        assert_eq!(status, 200, "{body}");
    }
    let (status, body) = chat(&http, Some("alice")).await;
    assert_eq!(status, 429, "{body}");
    let m = body["error"]["message"].as_str().unwrap();
    assert!(
        m.starts_with("spend budget 'per-end-user' for endUser 'alice' ($0.000048 per day (UTC)) would be exceeded: $0.000048 is spent or reserved"),
        "{m}"
    );
    assert!(m.contains("it has room again at "), "{m}");
    // Bob has a budget of his own; a call naming no end user is not counted by it.
    let (status, body) = chat(&http, Some("bob")).await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = chat(&http, None).await;
    assert_eq!(status, 200, "{body}");
    // Over gRPC too, with the same refusal.
    let mut req = request("metered", vec![msg(Role::User, "hi")]);
    req.end_user = "alice".into();
    req.max_output_tokens = Some(10);
    let e = h.complete(req).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::ResourceExhausted, "{e:?}");
    assert!(e.metadata().get("retry-after").is_some());
    // And for a program, as google.rpc details: which budget, for whom, and when it has room.
    {
        use tonic_types::StatusExt;
        assert_eq!(
            e.get_details_error_info().unwrap().reason,
            "BUDGET_EXCEEDED"
        );
        let delay = e
            .get_details_retry_info()
            .and_then(|r| r.retry_delay)
            .expect("RetryInfo with a delay");
        // A calendar day: its end, at most a day away.
        assert!(
            delay >= std::time::Duration::from_secs(1)
                && delay <= std::time::Duration::from_secs(86_400),
            "{delay:?}"
        );
        let q = e.get_details_quota_failure().expect("QuotaFailure");
        let v = &q.violations[0];
        assert_eq!(
            v.subject,
            "tenant:default/budget:per-end-user/endUser:alice"
        );
        assert_eq!(v.quota_metric, "spend_nano_usd");
        assert_eq!(v.quota_id, "per-end-user");
        assert_eq!(v.quota_value, 2 * CALL_NANO);
    }

    // Alice passed 50% once (warned once, not again at 100%), Bob once.
    let warned = bridle_testkit::wait_for("two webhook posts", crate::helpers::WAIT, || {
        let hooks = hooks.clone();
        async move {
            let v = hooks.lock().unwrap().clone();
            (v.len() >= 2).then_some(v)
        }
    })
    .await
    .unwrap();
    let mut values: Vec<&str> = warned
        .iter()
        .map(|v| v["value"].as_str().unwrap())
        .collect();
    values.sort_unstable();
    assert_eq!(values, ["alice", "bob"], "{warned:?}");
    assert_eq!(warned[0]["budget"], "per-end-user");
    assert_eq!(warned[0]["limitNanoUsd"], 2 * CALL_NANO);
    let mut redis = redis::Client::open(h.redis.url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let n: usize = redis::cmd("XLEN")
        .arg(format!("{}:router:budget:events", h.prefix))
        .query_async(&mut redis)
        .await
        .unwrap();
    assert_eq!(n, 2);

    // The ledger by end user: Alice 2 calls, Bob 1, none 1; the failed call cost nothing.
    let spend = h
        .router
        .clone()
        .spend(SpendRequest {
            by: vec!["end_user".into()],
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let rows: Vec<(String, i64, i64)> = spend
        .rows
        .iter()
        .map(|r| (r.values[0].clone(), r.nano_usd, r.calls))
        .collect();
    assert_eq!(
        rows,
        [
            ("alice".to_string(), 2 * CALL_NANO, 2),
            (String::new(), CALL_NANO, 1),
            ("bob".to_string(), CALL_NANO, 1),
        ]
    );
    assert_eq!(spend.total_nano_usd, 4 * CALL_NANO);
    let e = h
        .router
        .clone()
        .spend(SpendRequest {
            by: vec!["team".into()],
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument);
    assert!(e.message().contains("'team' is not a dimension"), "{e:?}");
}
