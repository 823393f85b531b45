//! The test harness. A setup that fails should fail the test loudly, hence the unwraps.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use bridle_core::Shutdown;
use bridle_core::config::ServerOptions;
use bridle_proto::complete_chunk::Chunk;
use bridle_proto::manifests_client::ManifestsClient;
use bridle_proto::router_client::RouterClient;
use bridle_proto::{
    ApplyRequest, CompleteChunk, CompleteRequest, CompleteResponse, ManifestDocument, Message,
    Role, Scope,
};
use bridle_testkit::{OpenBao, RedisServer};
use futures::StreamExt as _;
use secrecy::SecretString;
use tonic::transport::{Channel, Endpoint};

/// Every wait in these tests ends by this.
pub const WAIT: Duration = Duration::from_secs(60);

pub struct Harness {
    pub redis: RedisServer,
    pub bao: OpenBao,
    pub prefix: String,
    pub router: RouterClient<Channel>,
    pub manifests: ManifestsClient<Channel>,
    /// The HTTP gateway, "http://127.0.0.1:port", when the options asked for one.
    pub http: Option<String>,
    /// The secrets broker's address, for more router replicas.
    pub secrets_url: String,
    shutdown: Shutdown,
}

async fn client(addr: std::net::SocketAddr) -> Channel {
    Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .timeout(WAIT)
        .connect()
        .await
        .unwrap()
}

impl Harness {
    /// Redis, OpenBao, the secrets broker and the router, all on free ports, with fast retries.
    pub async fn start() -> Self {
        Self::start_with(|_| {}).await
    }

    /// [`Harness::start`] with the router's options changed by `change`.
    pub async fn start_with(change: impl FnOnce(&mut bridle_router::Options)) -> Self {
        Self::start_with_broker(|_| {}, change).await
    }

    /// [`Harness::start_with`], with the secrets broker's options changed by `broker` too.
    pub async fn start_with_broker(
        broker: impl FnOnce(&mut bridle_secrets::Options),
        change: impl FnOnce(&mut bridle_router::Options),
    ) -> Self {
        let redis = RedisServer::start().await.unwrap();
        let bao = OpenBao::start().await.unwrap();
        let prefix = bridle_testkit::unique("router");
        let shutdown = Shutdown::new();
        let mut secrets_opts = bridle_secrets::Options {
            server: ServerOptions::unauthenticated(0),
            vault_addr: bao.addr(),
            vault_token: Some(SecretString::from(bao.root_token().to_string())),
            path_prefix: prefix.clone(),
            redis_url: redis.url(),
            key_prefix: prefix.clone(),
            // No SecretBinding: provider keys follow the path convention.
            unbound: bridle_secrets::Unbound::Convention,
            ..Default::default()
        };
        broker(&mut secrets_opts);
        let secrets = bridle_secrets::start(secrets_opts, shutdown.clone())
            .await
            .unwrap();
        let mut opts = bridle_router::Options {
            server: ServerOptions::unauthenticated(0),
            redis_url: redis.url(),
            key_prefix: prefix.clone(),
            secrets_url: format!("http://{secrets}"),
            retry_base_delay: Duration::from_millis(10),
            retry_max_delay: Duration::from_secs(5),
            // Tests reapply routes and use them at once; routes.rs has the cache's own tests.
            route_cache_ttl: Duration::ZERO,
            ..Default::default()
        };
        change(&mut opts);
        let at = bridle_router::start_all(opts, shutdown.clone())
            .await
            .unwrap();
        let ch = client(at.grpc).await;
        Self {
            redis,
            bao,
            prefix,
            router: RouterClient::new(ch.clone()),
            manifests: ManifestsClient::new(ch),
            http: at.http.map(|a| format!("http://{a}")),
            secrets_url: format!("http://{secrets}"),
            shutdown,
        }
    }

    /// Stores manifests straight in the router's Redis store (as its Manifests service would),
    /// for routers that want API keys on every gRPC call.
    pub async fn apply_direct(&self, yaml: &str) {
        use bridle_core::manifest::{Owner, ParseOptions, parse_all, split_documents};
        let docs = split_documents("test.yaml", yaml);
        let ms = parse_all(&docs, &ParseOptions::default()).unwrap();
        let conn = bridle_core::redis_util::connect(&self.redis.url())
            .await
            .unwrap();
        let store = bridle_core::store::ManifestStore::new(
            conn,
            &bridle_core::redis_util::Keys::new(&self.prefix),
            Owner::Router,
        );
        store
            .put_all(&ms, &bridle_proto::Actor::default())
            .await
            .unwrap();
    }

    pub async fn put_secret(&self, name: &str, value: &str) {
        self.bao
            .put_kv(
                &format!("{}/{name}", self.prefix),
                serde_json::json!({"value": value}),
            )
            .await
            .unwrap();
    }

    /// Applies YAML through the router's Manifests service.
    pub async fn apply(&self, yaml: &str) -> bridle_proto::ApplyResponse {
        let req = ApplyRequest {
            actor: None,
            documents: vec![ManifestDocument {
                source: "test.yaml".into(),
                yaml: yaml.into(),
                first_line: 1,
            }],
            dry_run: false,
            tenant: String::new(),
        };
        self.manifests
            .clone()
            .apply(req)
            .await
            .unwrap()
            .into_inner()
    }

    pub async fn complete(&self, req: CompleteRequest) -> Result<CompleteResponse, tonic::Status> {
        self.router
            .clone()
            .complete(req)
            .await
            .map(|r| r.into_inner())
    }

    /// Runs a stream to its end: the deltas, then the final response or the error.
    pub async fn stream(
        &self,
        req: CompleteRequest,
    ) -> (Vec<Chunk>, Result<CompleteResponse, tonic::Status>) {
        let mut s = match self.router.clone().complete_stream(req).await {
            Ok(s) => s.into_inner(),
            Err(e) => return (vec![], Err(e)),
        };
        let mut deltas = Vec::new();
        let collect = async {
            while let Some(item) = s.next().await {
                match item {
                    Ok(CompleteChunk {
                        chunk: Some(Chunk::Done(resp)),
                    }) => return Ok(resp),
                    Ok(CompleteChunk { chunk: Some(c) }) => deltas.push(c),
                    Ok(CompleteChunk { chunk: None }) => {}
                    Err(e) => return Err(e),
                }
            }
            Err(tonic::Status::internal(
                "the stream ended without a done chunk",
            ))
        };
        let end = tokio::time::timeout(WAIT, collect)
            .await
            .expect("the stream did not end in time");
        (deltas, end)
    }
}

impl Drop for Harness {
    fn drop(&mut self) {
        self.shutdown.trigger();
    }
}

pub fn msg(role: Role, text: &str) -> Message {
    Message {
        role: role as i32,
        text: text.into(),
        ..Default::default()
    }
}

pub fn request(route: &str, messages: Vec<Message>) -> CompleteRequest {
    CompleteRequest {
        scope: Some(Scope {
            tenant: "default".into(),
            agent: "tester".into(),
            ..Default::default()
        }),
        route: route.into(),
        messages,
        ..Default::default()
    }
}

/// A route with a strategy and extra spec lines (limits, ...), of OpenAI targets as
/// [`openai_route`] writes them.
pub fn route_with(name: &str, spec: &str, targets: &[(&str, &str, &str)], extra: &str) -> String {
    openai_route(name, targets, extra).replacen("spec:\n", &format!("spec:\n{spec}"), 1)
}

/// A ModelRoute of Anthropic targets `(name, model, base_url)` sharing `secret://anthropic-key`.
pub fn anthropic_route(name: &str, targets: &[(&str, &str, &str)], extra: &str) -> String {
    let mut y = format!(
        "apiVersion: bridle.dev/v1\nkind: ModelRoute\nmetadata:\n  name: {name}\nspec:\n  targets:\n"
    );
    for (t, model, url) in targets {
        y.push_str(&format!(
            "    - name: {t}\n      provider: anthropic\n      model: {model}\n      baseUrl: {url}\n      apiKey: secret://anthropic-key\n{extra}"
        ));
    }
    y
}

/// A ModelRoute of OpenAI targets `(name, model, base_url)` sharing the key `secret://openai-key`.
pub fn openai_route(name: &str, targets: &[(&str, &str, &str)], extra: &str) -> String {
    let mut y = format!(
        "apiVersion: bridle.dev/v1\nkind: ModelRoute\nmetadata:\n  name: {name}\nspec:\n  targets:\n"
    );
    for (t, model, url) in targets {
        y.push_str(&format!(
            "    - name: {t}\n      provider: openai\n      model: {model}\n      baseUrl: {url}\n      apiKey: secret://openai-key\n{extra}"
        ));
    }
    y
}
