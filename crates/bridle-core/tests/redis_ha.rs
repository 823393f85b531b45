//! `RedisConn` against real Sentinel groups and Clusters: commands, pipelines, Lua scripts and
//! blocking stream reads work the same on each, a Sentinel failover is followed without a new
//! connection, and an unreachable sentinel or seed is named.

#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::time::Duration;

use bridle_core::Error;
use bridle_core::redis_util::{self, RedisConn};
use bridle_testkit::{RedisCluster, SentinelGroup};
use redis::AsyncCommands as _;

/// What the stores do: plain commands, a MULTI pipeline and a script over one hash tag, and a
/// blocking XREADGROUP on a connection of its own.
async fn exercise(url: &str, conn: &mut RedisConn, tag: &str) {
    let k = format!("t:{{{tag}}}");
    let _: () = conn.set(format!("{k}:a"), "1").await.unwrap();
    let (a, n): (String, i64) = redis::pipe()
        .atomic()
        .get(format!("{k}:a"))
        .incr(format!("{k}:n"), 2)
        .query_async(conn)
        .await
        .unwrap();
    assert_eq!((a.as_str(), n), ("1", 2));
    let script = redis::Script::new(
        "redis.call('SET', KEYS[2], redis.call('GET', KEYS[1]) .. ARGV[1]); return redis.call('GET', KEYS[2])",
    );
    let got: String = script
        .key(format!("{k}:a"))
        .key(format!("{k}:b"))
        .arg("!")
        .invoke_async(conn)
        .await
        .unwrap();
    assert_eq!(got, "1!");

    let stream = format!("{k}:s");
    let _: () = redis::cmd("XGROUP")
        .arg("CREATE")
        .arg(&stream)
        .arg("g")
        .arg("$")
        .arg("MKSTREAM")
        .query_async(conn)
        .await
        .unwrap();
    let mut blocking = redis_util::blocking_connection(url, Duration::from_secs(5))
        .await
        .unwrap();
    let reader = {
        let stream = stream.clone();
        async move {
            let r: redis::streams::StreamReadReply = redis::cmd("XREADGROUP")
                .arg("GROUP")
                .arg("g")
                .arg("c")
                .arg("BLOCK")
                .arg(5000)
                .arg("STREAMS")
                .arg(&stream)
                .arg(">")
                .query_async(&mut blocking)
                .await
                .unwrap();
            r
        }
    };
    let writer = async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let _: String = conn.xadd(&stream, "*", &[("f", "v")]).await.unwrap();
    };
    let (r, ()) = tokio::join!(reader, writer);
    assert_eq!(r.keys.len(), 1, "the blocked read got the entry: {r:?}");
    assert_eq!(r.keys[0].ids.len(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_sentinel_connection_follows_a_failover_by_itself() {
    let g = SentinelGroup::start().await.unwrap();
    let url = g.url();
    let mut conn = redis_util::connect(&url).await.unwrap();
    assert_eq!(conn.kind(), "sentinel");
    exercise(&url, &mut conn, "before").await;
    let first = g.primary_port().await.unwrap();

    let new = g.failover().await.unwrap();
    assert_ne!(new, first);
    // The same connection value, not a new one: it finds the new primary by itself.
    let mut writes = 0;
    for i in 0..20 {
        let r: Result<(), _> = conn.set(format!("after:{{x}}:{i}"), i).await;
        // A write caught by the old primary's clients being dropped may fail once (it may have
        // run); every later one lands on the new primary.
        if r.is_ok() {
            writes += 1;
        }
    }
    assert!(writes >= 19, "{writes} of 20 writes after the failover");
    exercise(&url, &mut conn, "after").await;
    let mut direct = redis::Client::open(format!("redis://127.0.0.1:{new}/"))
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let v: Option<String> = direct.get("t:{after}:b").await.unwrap();
    assert_eq!(v.as_deref(), Some("1!"), "written to the new primary");
    let role: Vec<redis::Value> = redis::cmd("ROLE").query_async(&mut direct).await.unwrap();
    assert_eq!(
        role.first(),
        Some(&redis::Value::BulkString(b"master".to_vec()))
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_cluster_connection_routes_commands_scripts_and_blocking_reads() {
    let c = RedisCluster::start().await.unwrap();
    let url = c.url();
    let mut conn = redis_util::connect(&url).await.unwrap();
    assert_eq!(conn.kind(), "cluster");
    // Tags that hash to different slots, so more than one node is used.
    for tag in ["alpha", "beta", "gamma", "delta", "epsilon", "zeta"] {
        exercise(&url, &mut conn, tag).await;
    }
    let per_node = c.keys_per_node().await.unwrap();
    assert!(
        per_node.iter().filter(|n| **n > 0).count() >= 2,
        "keys spread over the nodes: {per_node:?}"
    );
    // A script over keys of two slots is refused, not split (the client splits a plain MGET,
    // but a script or transaction must run on one node): the reason every key family keeps
    // one hash tag per atomic operation.
    let e = redis::Script::new("return redis.call('GET', KEYS[1])")
        .key("t:{alpha}:a")
        .key("t:{beta}:a")
        .invoke_async::<Option<String>>(&mut conn)
        .await
        .unwrap_err();
    assert!(e.to_string().to_uppercase().contains("CROSSSLOT"), "{e}");
}

#[tokio::test]
async fn a_sentinel_that_does_not_answer_is_named_and_the_others_are_used() {
    let g = SentinelGroup::start().await.unwrap();
    let down = bridle_testkit::ports::refusing_port().unwrap();
    let ports = g.sentinel_ports();
    let url = format!(
        "redis+sentinel://127.0.0.1:{},127.0.0.1:{}/{}",
        down.port, ports[0], g.master
    );
    // One sentinel of two answering is enough to start.
    let mut conn = redis_util::connect(&url).await.unwrap();
    let _: () = conn.set("k:{x}", 1).await.unwrap();
    // None answering fails, naming each.
    let down2 = bridle_testkit::ports::refusing_port().unwrap();
    let url = format!(
        "redis+sentinel://127.0.0.1:{},127.0.0.1:{}/{}",
        down.port, down2.port, g.master
    );
    let e = redis_util::connect(&url).await.unwrap_err();
    assert!(matches!(e, Error::Unavailable { .. }), "{e:?}");
    let msg = e.to_string();
    for p in [down.port, down2.port] {
        assert!(msg.contains(&format!("127.0.0.1:{p}: ")), "{msg}");
    }
    // Sentinels that answer but know no such group.
    let url = format!("redis+sentinel://127.0.0.1:{}/nosuchgroup", ports[0]);
    let e = redis_util::connect(&url).await.unwrap_err();
    assert!(matches!(e, Error::Unavailable { .. }), "{e:?}");
    assert!(
        e.to_string().contains("redis primary of 'nosuchgroup'"),
        "{e}"
    );
}
