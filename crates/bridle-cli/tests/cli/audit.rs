//! `bridle audit export` against a real Redis: what the approvals scripts appended comes out
//! as JSON lines, field for field, and an export resumes after the last id it printed.

use bridle_testkit::RedisServer;

use crate::support::{bridle, run};

/// Appends `n` audit entries one millisecond apart from `start_ms`, as the scripts write them.
async fn seed(redis: &RedisServer, prefix: &str, start_ms: u64, n: u64) -> Vec<String> {
    let key = format!("{prefix}:approvals:{{approvals}}:audit");
    let mut c = redis.client().await.unwrap();
    let mut ids = Vec::new();
    for i in 0..n {
        let id: String = redis::cmd("XADD")
            .arg(&key)
            .arg(format!("{}-0", start_ms + i))
            .arg("time")
            .arg(format!("t{i}"))
            .arg("action")
            .arg("decide")
            .arg("tenant")
            .arg("acme")
            .arg("reason")
            .arg(format!("say \"no\" ✓ {i}\n"))
            .arg("approval")
            .arg(format!("apr_{i}"))
            .query_async(&mut c)
            .await
            .unwrap();
        ids.push(id);
    }
    ids
}

fn lines(stdout: &str) -> Vec<serde_json::Value> {
    stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn an_export_writes_every_entry_in_the_window_and_resumes_after_the_last_id() {
    let redis = RedisServer::start().await.unwrap();
    let prefix = bridle_testkit::unique("cli-audit");
    let now_ms = u64::try_from(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis(),
    )
    .unwrap();
    // 3 entries two hours old, then 1,200 (more than one page) ten minutes old.
    let old = seed(&redis, &prefix, now_ms - 2 * 3600 * 1000, 3).await;
    let recent = seed(&redis, &prefix, now_ms - 600 * 1000, 1200).await;
    let export = |extra: &[&str]| {
        let mut c = bridle();
        c.args([
            "audit",
            "export",
            "--redis-url",
            &redis.url(),
            "--key-prefix",
            &prefix,
        ]);
        c.args(extra);
        c
    };

    // The last hour: the recent entries only, oldest first, fields intact.
    let all = run(&mut export(&["--since", "1h"])).await;
    assert_eq!(all.code, Some(0), "{all}");
    let got = lines(&all.stdout);
    assert_eq!(got.len(), 1200, "{}", all.stderr);
    let ids: Vec<&str> = got.iter().map(|v| v["id"].as_str().unwrap()).collect();
    assert_eq!(ids, recent.iter().map(String::as_str).collect::<Vec<_>>());
    assert_eq!(got[7]["reason"], "say \"no\" ✓ 7\n");
    assert_eq!(got[7]["approval"], "apr_7");
    assert_eq!(got[7]["tenant"], "acme");
    let last = recent.last().unwrap();
    assert!(
        all.stderr
            .contains(&format!("last id {last} (resume with --after {last})")),
        "{all}"
    );

    // An export stopped after entry 500 resumes with the 501st.
    let resumed = run(&mut export(&["--since", "1h", "--after", &recent[499]])).await;
    assert_eq!(resumed.code, Some(0), "{resumed}");
    let rest = lines(&resumed.stdout);
    assert_eq!(rest.len(), 700);
    assert_eq!(rest[0]["id"], recent[500].as_str());

    // --until bounds the window (exclusive): just the old entries.
    let three_hours_ago = humantime::format_rfc3339(
        std::time::UNIX_EPOCH + std::time::Duration::from_millis(now_ms - 3 * 3600 * 1000),
    )
    .to_string();
    let window = run(&mut export(&["--since", &three_hours_ago, "--until", "1h"])).await;
    assert_eq!(window.code, Some(0), "{window}");
    let w = lines(&window.stdout);
    assert_eq!(
        w.iter()
            .map(|v| v["id"].as_str().unwrap())
            .collect::<Vec<_>>(),
        old.iter().map(String::as_str).collect::<Vec<_>>()
    );

    // Resuming after the newest entry writes nothing and says so.
    let done = run(&mut export(&["--since", "1h", "--after", last])).await;
    assert_eq!(done.code, Some(0), "{done}");
    assert!(done.stdout.is_empty(), "{done}");
    assert!(done.stderr.contains("no audit entries"), "{done}");

    // A bad id or time is refused, naming the flag.
    let bad = run(&mut export(&["--since", "1h", "--after", "yesterday"])).await;
    assert_eq!(bad.code, Some(1), "{bad}");
    assert!(
        bad.stderr
            .contains("--after: 'yesterday' is not a stream id"),
        "{bad}"
    );
    let bad = run(&mut export(&["--since", "last week"])).await;
    assert_eq!(bad.code, Some(1), "{bad}");
    assert!(
        bad.stderr.contains("--since: 'last week' is neither"),
        "{bad}"
    );
}
