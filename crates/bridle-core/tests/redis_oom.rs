//! A real Redis past its `maxmemory` (policy `noeviction`): every form in which the stores
//! meet the refusal — a plain command, a Lua script run by EVALSHA, a MULTI and a plain
//! pipeline — is recognised and becomes RESOURCE_EXHAUSTED naming Redis; reads, deletes and
//! acknowledgements still work; a refused script wrote nothing; and writes work again once
//! memory is freed.

#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

use bridle_core::Error;
use bridle_core::error::redis_out_of_memory;
use bridle_core::redis_util::{self, RedisConn};
use bridle_testkit::RedisServer;

/// Fills Redis past a limit of 2 MiB with one 4 MB key.
async fn fill(conn: &mut RedisConn) {
    let _: i64 = redis::cmd("SETRANGE")
        .arg("filler")
        .arg(4_000_000)
        .arg("x")
        .query_async(conn)
        .await
        .unwrap();
    let _: () = redis::cmd("CONFIG")
        .arg("SET")
        .arg("maxmemory-policy")
        .arg("noeviction")
        .query_async(conn)
        .await
        .unwrap();
    let _: () = redis::cmd("CONFIG")
        .arg("SET")
        .arg("maxmemory")
        .arg("2mb")
        .query_async(conn)
        .await
        .unwrap();
}

fn assert_oom(what: &str, r: redis::RedisResult<redis::Value>) {
    let e = match r {
        Err(e) => e,
        Ok(v) => panic!("{what}: Redis accepted it past maxmemory: {v:?}"),
    };
    assert!(redis_out_of_memory(&e), "{what}: not seen as OOM: {e}");
    let s = tonic::Status::from(Error::from(e).doing(what));
    assert_eq!(s.code(), tonic::Code::ResourceExhausted, "{what}: {s:?}");
    assert_eq!(
        s.message(),
        format!("Redis is out of memory (maxmemory reached): {what}; retry when memory is freed")
    );
}

#[tokio::test]
async fn every_form_of_a_redis_out_of_memory_refusal_is_resource_exhausted() {
    let server = RedisServer::start().await.unwrap();
    let mut conn = redis_util::connect(&server.url()).await.unwrap();
    // Like the run checkpoint: a read, then writes, the first one growing memory.
    let script = redis::Script::new(
        "local v = redis.call('GET', KEYS[1]) or '0'
         redis.call('HSET', KEYS[2], 'state', ARGV[1])
         redis.call('SET', KEYS[1], tonumber(v) + 1)
         return tonumber(v) + 1",
    );
    // Loaded while there is memory, so the refused call below is an EVALSHA.
    let one: i64 = script
        .key("t:{a}:version")
        .key("t:{a}:state")
        .arg("first")
        .invoke_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(one, 1);
    let _: String = redis::cmd("XADD")
        .arg("t:s")
        .arg("*")
        .arg("f")
        .arg("v")
        .query_async(&mut conn)
        .await
        .unwrap();

    fill(&mut conn).await;

    assert_oom(
        "a SET",
        redis::cmd("SET")
            .arg("t:k")
            .arg("v")
            .query_async(&mut conn)
            .await,
    );
    assert_oom(
        "a script run by EVALSHA",
        script
            .key("t:{a}:version")
            .key("t:{a}:state")
            .arg("second")
            .invoke_async(&mut conn)
            .await,
    );
    assert_oom(
        "a MULTI",
        redis::pipe()
            .atomic()
            .cmd("INCR")
            .arg("t:{b}:n")
            .cmd("XADD")
            .arg("t:{b}:s")
            .arg("*")
            .arg("f")
            .arg("v")
            .query_async(&mut conn)
            .await,
    );
    assert_oom(
        "a pipeline",
        redis::pipe()
            .cmd("GET")
            .arg("t:k")
            .cmd("XADD")
            .arg("t:s")
            .arg("*")
            .arg("f")
            .arg("v")
            .query_async(&mut conn)
            .await,
    );

    // The refused script wrote nothing: version and state are the first call's.
    let (v, state): (i64, String) = redis::pipe()
        .cmd("GET")
        .arg("t:{a}:version")
        .cmd("HGET")
        .arg("t:{a}:state")
        .arg("state")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!((v, state.as_str()), (1, "first"));
    // What a worker does while waiting still works: reads, deletes.
    let n: i64 = redis::cmd("XLEN")
        .arg("t:s")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(n, 1);

    // Freed: the same script goes through.
    let _: i64 = redis::cmd("DEL")
        .arg("filler")
        .query_async(&mut conn)
        .await
        .unwrap();
    let two: i64 = script
        .key("t:{a}:version")
        .key("t:{a}:state")
        .arg("second")
        .invoke_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(two, 2);
}
