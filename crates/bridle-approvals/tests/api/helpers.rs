use std::collections::HashMap;
use std::time::Duration;

use bridle_approvals::keys::ApprovalKeys;
use bridle_core::Shutdown;
use bridle_core::config::ServerOptions;
use bridle_core::redis_util::Keys;
use bridle_proto::approvals_client::ApprovalsClient;
use bridle_proto::manifests_client::ManifestsClient;
use bridle_proto::{
    Approval, ApprovalEvent, DecideRequest, EvaluateRequest, EvaluateResponse, GetApprovalRequest,
    RiskClass, Scope, ToolSpec, WatchApprovalsRequest,
};
use bridle_testkit::RedisServer;
use tonic::Streaming;
use tonic::transport::Channel;

pub type Client = ApprovalsClient<Channel>;

pub const WAIT: Duration = Duration::from_secs(15);

pub struct Harness {
    pub redis: RedisServer,
    pub prefix: String,
    /// gRPC address, "http://127.0.0.1:port".
    pub addr: String,
    pub client: Client,
    pub shutdown: Shutdown,
    pub keys: ApprovalKeys,
}

impl Harness {
    /// A fresh Redis and a service with the default sweep interval (5s).
    pub async fn start() -> Self {
        Self::start_sweeping(Duration::from_secs(5)).await
    }

    pub async fn start_sweeping(sweep: Duration) -> Self {
        Self::start_with(|o| o.sweep_interval = sweep).await
    }

    /// A fresh Redis and a service with options changed by `change`.
    pub async fn start_with(change: impl FnOnce(&mut bridle_approvals::Options)) -> Self {
        let redis = RedisServer::start().await.unwrap();
        let prefix = bridle_testkit::unique("apr");
        let mut opts = options(&redis, &prefix, Duration::from_secs(5));
        change(&mut opts);
        let (addr, client, shutdown) = service_with(opts).await;
        let keys = ApprovalKeys::new(&Keys::new(&prefix));
        Harness {
            redis,
            prefix,
            addr,
            client,
            shutdown,
            keys,
        }
    }

    pub async fn redis(&self) -> redis::aio::MultiplexedConnection {
        self.redis.client().await.unwrap()
    }

    pub async fn evaluate(&self, req: EvaluateRequest) -> EvaluateResponse {
        self.client
            .clone()
            .evaluate(req)
            .await
            .unwrap()
            .into_inner()
    }

    /// Evaluates a call that needs approval and returns the approval.
    pub async fn pending(&self, run: &str, call: &str, args: &str) -> Approval {
        let r = self.evaluate(destructive(run, call, args)).await;
        r.approval.expect("REQUIRE_APPROVAL carries the approval")
    }

    /// Every audit record, oldest first.
    pub async fn audit(&self) -> Vec<HashMap<String, String>> {
        let entries: Vec<(String, HashMap<String, String>)> = redis::cmd("XRANGE")
            .arg(self.keys.audit())
            .arg("-")
            .arg("+")
            .query_async(&mut self.redis().await)
            .await
            .unwrap();
        entries.into_iter().map(|(_, f)| f).collect()
    }

    pub async fn watch(&self, from_offset: u64, tenant: &str) -> Streaming<ApprovalEvent> {
        self.client
            .clone()
            .watch(WatchApprovalsRequest {
                from_offset,
                tenant: tenant.into(),
            })
            .await
            .unwrap()
            .into_inner()
    }

    pub async fn stop(self) {
        assert!(self.shutdown.drain(WAIT).await, "service did not drain");
    }

    pub async fn manifests(&self) -> ManifestsClient<Channel> {
        ManifestsClient::connect(self.addr.clone()).await.unwrap()
    }
}

pub fn options(redis: &RedisServer, prefix: &str, sweep: Duration) -> bridle_approvals::Options {
    bridle_approvals::Options {
        server: ServerOptions::unauthenticated(0),
        redis_url: redis.url(),
        key_prefix: prefix.to_string(),
        sweep_interval: sweep,
        ..Default::default()
    }
}

/// A service with `opts`: its address, a client, and its shutdown.
pub async fn service_with(opts: bridle_approvals::Options) -> (String, Client, Shutdown) {
    let shutdown = Shutdown::new();
    let addr = bridle_approvals::start(opts, shutdown.clone())
        .await
        .unwrap();
    let addr = format!("http://{addr}");
    let client = ApprovalsClient::connect(addr.clone()).await.unwrap();
    (addr, client, shutdown)
}

/// One more service (a replica) on the same Redis and prefix.
pub async fn service(redis: &RedisServer, prefix: &str, sweep: Duration) -> (Client, Shutdown) {
    let (_, client, shutdown) = service_with(options(redis, prefix, sweep)).await;
    (client, shutdown)
}

pub fn new_run() -> String {
    bridle_core::ids::new_run_id()
}

/// A call of `tool` by agent "analyst" of tenant "acme", granted `granted`.
pub fn request(
    run: &str,
    call: &str,
    tool: &str,
    risk: RiskClass,
    args: &str,
    granted: &[&str],
) -> EvaluateRequest {
    EvaluateRequest {
        scope: Some(Scope {
            tenant: "acme".into(),
            agent: "analyst".into(),
            run_id: run.into(),
            ..Default::default()
        }),
        step: 1,
        call_id: call.into(),
        tool: Some(ToolSpec {
            name: tool.into(),
            risk: risk as i32,
            ..Default::default()
        }),
        arguments_json: args.into(),
        granted_tools: granted.iter().map(|s| s.to_string()).collect(),
        ..Default::default()
    }
}

/// A granted destructive call: always needs approval.
pub fn destructive(run: &str, call: &str, args: &str) -> EvaluateRequest {
    request(
        run,
        call,
        "delete_table",
        RiskClass::Destructive,
        args,
        &["delete_table", "query"],
    )
}

pub async fn next(stream: &mut Streaming<ApprovalEvent>) -> ApprovalEvent {
    tokio::time::timeout(WAIT, stream.message())
        .await
        .expect("an event within the wait")
        .expect("stream ok")
        .expect("stream still open")
}

/// (offset, kind, approval id) of each event, for comparing sequences.
pub fn kinds(events: &[ApprovalEvent]) -> Vec<(u64, i32, String)> {
    events
        .iter()
        .map(|e| {
            (
                e.offset,
                e.kind,
                e.approval
                    .as_ref()
                    .map(|a| a.id.clone())
                    .unwrap_or_default(),
            )
        })
        .collect()
}

/// A decision with reason "checked".
pub fn decide(id: &str, approve: bool, approver: &str) -> DecideRequest {
    DecideRequest {
        id: id.into(),
        approve,
        approver: approver.into(),
        reason: "checked".into(),
        ..Default::default()
    }
}

pub async fn get(c: &mut Client, id: &str) -> Result<bridle_proto::Approval, tonic::Status> {
    c.get(GetApprovalRequest { id: id.into() })
        .await
        .map(|r| r.into_inner())
}
