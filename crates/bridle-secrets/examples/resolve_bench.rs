//! Resolve latency and throughput through the broker (gRPC, the binding looked up in a real
//! Redis, the grant checked, the value from the cache after the first read from a real
//! OpenBao): one call at a time, then many at once; and, for comparison, every call reading
//! Vault (`cache_ttl = 0`). Prints p50/p95/p99/max and calls per second.
//!
//!   cargo run --release -p bridle-secrets --example resolve_bench
//!   BENCH_N=20000 BENCH_CONCURRENCY=64 cargo run --release -p bridle-secrets --example resolve_bench
//!
//! A benchmark, not a test: nothing here passes or fails on time.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stdout,
    clippy::panic
)]

use std::time::{Duration, Instant};

use bridle_core::Shutdown;
use bridle_core::client::{Outgoing, Traced};
use bridle_core::config::ServerOptions;
use bridle_proto::manifests_client::ManifestsClient;
use bridle_proto::secrets_client::SecretsClient;
use bridle_proto::{ApplyRequest, ManifestDocument, ResolveRequest, Scope};
use secrecy::SecretString;

fn env(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn request() -> ResolveRequest {
    ResolveRequest {
        scope: Some(Scope {
            tenant: "bench".into(),
            agent: "a".into(),
            provider: "main/openai".into(),
            ..Default::default()
        }),
        names: vec!["openai-key".into()],
        refresh: false,
    }
}

fn report(what: &str, mut took: Vec<Duration>, wall: Duration) {
    took.sort();
    let q = |p: f64| took[((took.len() as f64 * p) as usize).min(took.len() - 1)];
    println!(
        "{what:<34} n={:<6} p50={:>8.1?} p95={:>8.1?} p99={:>8.1?} max={:>8.1?} {:>8.0} calls/s",
        took.len(),
        q(0.50),
        q(0.95),
        q(0.99),
        took[took.len() - 1],
        took.len() as f64 / wall.as_secs_f64()
    );
}

async fn run(c: &SecretsClient<Traced>, n: usize, concurrency: usize) -> (Vec<Duration>, Duration) {
    let start = Instant::now();
    let per = n / concurrency;
    let tasks = (0..concurrency).map(|_| {
        let mut c = c.clone();
        async move {
            let mut out = Vec::with_capacity(per);
            for _ in 0..per {
                let t = Instant::now();
                let r = c.resolve(request()).await.unwrap().into_inner();
                out.push(t.elapsed());
                assert_eq!(r.secrets[0].value, "sk-bench-value");
            }
            out
        }
    });
    let took = futures::future::join_all(tasks).await.concat();
    (took, start.elapsed())
}

#[tokio::main]
async fn main() {
    let n = env("BENCH_N", 5000);
    let concurrency = env("BENCH_CONCURRENCY", 32);
    let redis = bridle_testkit::RedisServer::start().await.unwrap();
    let bao = bridle_testkit::OpenBao::start().await.unwrap();
    bao.put_kv(
        "bench/openai",
        serde_json::json!({"value": "sk-bench-value"}),
    )
    .await
    .unwrap();
    for cache_ttl in [Duration::from_secs(60), Duration::ZERO] {
        let shutdown = Shutdown::new();
        let addr = bridle_secrets::start(
            bridle_secrets::Options {
                server: ServerOptions::unauthenticated(0),
                redis_url: redis.url(),
                key_prefix: "bench".into(),
                vault_addr: bao.addr(),
                vault_token: Some(SecretString::from(bao.root_token().to_string())),
                cache_ttl,
                ..Default::default()
            },
            shutdown.clone(),
        )
        .await
        .unwrap();
        let url = format!("http://{addr}");
        let yaml = "apiVersion: bridle.dev/v1\nkind: SecretBinding\nmetadata: {name: openai-key}\nspec:\n  path: bench/openai\n  grants: [{provider: main/openai}]\n";
        ManifestsClient::connect(url.clone())
            .await
            .unwrap()
            .apply(ApplyRequest {
                actor: None,
                documents: vec![ManifestDocument {
                    source: "bench.yaml".into(),
                    first_line: 1,
                    yaml: yaml.into(),
                }],
                dry_run: false,
                tenant: "bench".into(),
            })
            .await
            .unwrap();
        let ch = bridle_core::client::traced(
            "secrets",
            &url,
            Duration::from_secs(30),
            Outgoing::new("router", &ServerOptions::default()),
        )
        .unwrap();
        let c = SecretsClient::new(ch);
        let label = if cache_ttl.is_zero() {
            "every call reads Vault"
        } else {
            "cached"
        };
        let n = if cache_ttl.is_zero() { n / 5 } else { n };
        run(&c, 200, 1).await; // warm up connections and the cache
        let (took, wall) = run(&c, n, 1).await;
        report(&format!("{label}, 1 at a time"), took, wall);
        let (took, wall) = run(&c, n, concurrency).await;
        report(&format!("{label}, {concurrency} at once"), took, wall);
        shutdown.drain(Duration::from_secs(5)).await;
    }
}
