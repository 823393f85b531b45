//! Shared setup of the end-to-end tests: real Redis, real OpenBao, the mock OpenAI server, and
//! the five service binaries as separate processes.

#![allow(dead_code, clippy::expect_used, clippy::unwrap_used, clippy::panic)]

use std::time::Duration;

use bridle_e2e::{ServiceProcess, env};
use bridle_proto as pb;
use bridle_testkit::mock_openai::{MockOpenAi, Reply};
use bridle_testkit::{OpenBao, RedisServer};
use futures::TryFutureExt as _;
use tonic::transport::Channel;

/// How to start a harness.
#[derive(Clone, Debug, Default)]
pub struct Options {
    /// Orchestrator processes (default 1); each gets consumer name "orch-<i>".
    pub orchestrators: usize,
    /// Extra `BRIDLE_ORCHESTRATOR_*` settings, e.g. ("claim_idle", "2s").
    pub orchestrator_env: Vec<(String, String)>,
    /// Extra `BRIDLE_APPROVALS_*` settings, e.g. ("approval_retention", "2s").
    pub approvals_env: Vec<(String, String)>,
    /// Extra `BRIDLE_TOOLS_*` settings, e.g. ("egress_allow_private", "true").
    pub tools_env: Vec<(String, String)>,
    /// Redis with an fsync-always AOF, so it can be restarted mid-run.
    pub appendonly: bool,
    /// Environment for every service process (e.g. OTEL_EXPORTER_OTLP_ENDPOINT).
    pub env_all: Vec<(String, String)>,
    /// Mutual TLS between everything, with certificates from deploy/certs/make-dev-ca.sh.
    pub tls: bool,
    /// The services' `redis_url` instead of the harness's own server's (a Sentinel group or a
    /// Cluster the test started; the test keeps it alive).
    pub redis_url: Option<String>,
    /// The services find each other by DNS name (`dns:///localhost:port`) rather than by
    /// address.
    pub peers_by_dns: bool,
}

/// `http(s)://127.0.0.1:port` as `dns:///localhost:port` when `by_dns`.
fn peer_url(addr: &str, by_dns: bool) -> String {
    match addr.rsplit_once(':') {
        Some((_, port)) if by_dns => format!("dns:///localhost:{port}"),
        _ => addr.to_string(),
    }
}

pub struct Harness {
    pub redis: RedisServer,
    pub bao: OpenBao,
    pub mock: MockOpenAi,
    pub prefix: String,
    pub api_key: String,
    pub dir: tempfile::TempDir,
    pub services: Vec<ServiceProcess>,
    pub orchestrators: Vec<ServiceProcess>,
    pub orchestrator: String,
    pub approvals: String,
    /// Certificates folder, when the harness runs with mutual TLS.
    pub certs: Option<std::path::PathBuf>,
    /// How each orchestrator was started (environment, folder), to start it again.
    orchestrator_starts: Vec<(Vec<(String, String)>, std::path::PathBuf)>,
}

impl Harness {
    pub async fn start() -> anyhow::Result<Self> {
        Self::start_with(Options::default()).await
    }

    pub async fn start_with(o: Options) -> anyhow::Result<Self> {
        bridle_testkit::docker::ensure_sandbox_image("python").await?;
        let redis = RedisServer::start_with(o.appendonly).await?;
        let bao = OpenBao::start().await?;
        let mock = MockOpenAi::start().await?;
        let prefix = bridle_testkit::unique("e2e");
        // A fresh key per test: finding it at the mock proves it came out of OpenBao.
        let api_key = format!("sk-e2e{}", bridle_testkit::unique("").replace('-', ""));
        bao.put_kv(
            &format!("{prefix}/openai-api-key"),
            serde_json::json!({ "value": api_key }),
        )
        .await?;
        let dir = tempfile::tempdir()?;
        let redis_url = o.redis_url.clone().unwrap_or_else(|| redis.url());
        let mut services = Vec::new();

        let certs = if o.tls {
            let certs = dir.path().join("certs");
            let script =
                bridle_testkit::paths::workspace_root().join("deploy/certs/make-dev-ca.sh");
            let ok = tokio::process::Command::new("bash")
                .arg(script)
                .arg(&certs)
                .status()
                .await?
                .success();
            anyhow::ensure!(ok, "make-dev-ca.sh failed");
            Some(certs)
        } else {
            None
        };
        // With TLS every service gets its own certificate; addresses become https.
        let tls_env = |bin: &str| -> Vec<(String, String)> {
            let Some(c) = &certs else { return vec![] };
            let svc = bin.trim_start_matches("bridle-");
            let up = svc.to_uppercase();
            vec![
                (
                    format!("BRIDLE_{up}_TLS_CERT"),
                    c.join(format!("{svc}.pem")).display().to_string(),
                ),
                (
                    format!("BRIDLE_{up}_TLS_KEY"),
                    c.join(format!("{svc}.key")).display().to_string(),
                ),
                (
                    format!("BRIDLE_{up}_TLS_CA"),
                    c.join("ca.pem").display().to_string(),
                ),
            ]
        };
        let start = |bin: &'static str, mut env: Vec<(String, String)>, dir: std::path::PathBuf| {
            env.extend(tls_env(bin));
            let tls = certs.is_some();
            async move {
                let mut p = ServiceProcess::start(bin, &env, &dir).await?;
                if tls {
                    p.addr = p.addr.replacen("http://", "https://", 1);
                }
                Ok::<_, anyhow::Error>(p)
            }
        };
        let all = |mut v: Vec<(String, String)>| {
            v.extend(o.env_all.iter().cloned());
            v
        };
        let secrets = start(
            "bridle-secrets",
            all(env(
                "secrets",
                &[
                    ("vault_addr", &bao.addr()),
                    ("vault_token", bao.root_token()),
                    ("path_prefix", &prefix),
                    ("redis_url", &redis_url),
                    ("key_prefix", &prefix),
                    // The e2e key has no SecretBinding: the path convention resolves it.
                    ("unbound", "convention"),
                ],
            )),
            dir.path().to_path_buf(),
        )
        .await?;
        let common = |svc: &str, extra: &[(&str, &str)]| {
            let mut pairs: Vec<(&str, &str)> =
                vec![("redis_url", &redis_url), ("key_prefix", &prefix)];
            pairs.extend_from_slice(extra);
            all(env(svc, &pairs))
        };
        // The web inbox on a free port, its address in a file (see `inbox_url`).
        let inbox_file = dir
            .path()
            .join("approvals-inbox.addr")
            .display()
            .to_string();
        let mut approvals_env = common(
            "approvals",
            &[
                ("inbox__listen", "127.0.0.1:0"),
                ("inbox__addr_file", &inbox_file),
            ],
        );
        approvals_env.extend(
            o.approvals_env
                .iter()
                .map(|(k, v)| (format!("BRIDLE_APPROVALS_{}", k.to_uppercase()), v.clone())),
        );
        let approvals = start("bridle-approvals", approvals_env, dir.path().to_path_buf()).await?;
        let secrets_url = peer_url(&secrets.addr, o.peers_by_dns);
        let mut tools_env = common("tools", &[("secrets_url", &secrets_url)]);
        tools_env.extend(
            o.tools_env
                .iter()
                .map(|(k, v)| (format!("BRIDLE_TOOLS_{}", k.to_uppercase()), v.clone())),
        );
        let tools = start("bridle-tools", tools_env, dir.path().to_path_buf()).await?;
        let router = start(
            "bridle-router",
            common("router", &[("secrets_url", &secrets_url)]),
            dir.path().to_path_buf(),
        )
        .await?;
        let mut orchestrators = Vec::new();
        let mut orchestrator_starts = Vec::new();
        let (router_url, tools_url, approvals_url) = (
            peer_url(&router.addr, o.peers_by_dns),
            peer_url(&tools.addr, o.peers_by_dns),
            peer_url(&approvals.addr, o.peers_by_dns),
        );
        for i in 0..o.orchestrators.max(1) {
            let consumer = format!("orch-{i}");
            let mut env = common(
                "orchestrator",
                &[
                    ("router_url", &router_url),
                    ("tools_url", &tools_url),
                    ("approvals_url", &approvals_url),
                    ("secrets_url", &secrets_url),
                    ("workers", "4"),
                    ("consumer", &consumer),
                ],
            );
            env.extend(o.orchestrator_env.iter().map(|(k, v)| {
                (
                    format!("BRIDLE_ORCHESTRATOR_{}", k.to_uppercase()),
                    v.clone(),
                )
            }));
            let dir_i = dir.path().join(&consumer);
            std::fs::create_dir_all(&dir_i)?;
            orchestrator_starts.push((env.clone(), dir_i.clone()));
            orchestrators.push(start("bridle-orchestrator", env, dir_i).await?);
        }
        let (orch_addr, appr_addr) = (orchestrators[0].addr.clone(), approvals.addr.clone());
        services.extend([secrets, approvals, tools, router]);
        Ok(Self {
            redis,
            bao,
            mock,
            prefix,
            api_key,
            dir,
            services,
            orchestrators,
            orchestrator: orch_addr,
            approvals: appr_addr,
            certs,
            orchestrator_starts,
        })
    }

    /// Starts orchestrator `i` again, as it was first started (after `kill`); without TLS.
    pub async fn restart_orchestrator(&mut self, i: usize) -> anyhow::Result<()> {
        anyhow::ensure!(self.certs.is_none(), "restart_orchestrator: not with TLS");
        let (env, dir) = &self.orchestrator_starts[i];
        self.orchestrators[i] = ServiceProcess::start("bridle-orchestrator", env, dir).await?;
        Ok(())
    }

    /// A channel to one of the services, over mutual TLS (as the `cli` certificate) when the
    /// harness runs with it.
    pub async fn channel(
        &self,
        url: impl Into<String>,
        service: &str,
    ) -> Result<Channel, tonic::transport::Error> {
        let mut ep = tonic::transport::Endpoint::from_shared(url.into())?;
        if let Some(c) = &self.certs {
            bridle_core::config::install_crypto_provider();
            let read = |f: &str| std::fs::read(c.join(f)).unwrap_or_default();
            ep = ep.tls_config(
                tonic::transport::ClientTlsConfig::new()
                    .ca_certificate(tonic::transport::Certificate::from_pem(read("ca.pem")))
                    .identity(tonic::transport::Identity::from_pem(
                        read("cli.pem"),
                        read("cli.key"),
                    ))
                    .domain_name(service),
            )?;
        }
        ep.connect().await
    }

    pub async fn orchestrator(&self) -> pb::orchestrator_client::OrchestratorClient<Channel> {
        // Any live orchestrator: a test may have killed the first.
        for o in &self.orchestrators {
            if let Ok(c) = self
                .channel(o.addr.clone(), "orchestrator")
                .map_ok(pb::orchestrator_client::OrchestratorClient::new)
                .await
            {
                return c;
            }
        }
        self.channel(self.orchestrator.clone(), "orchestrator")
            .map_ok(pb::orchestrator_client::OrchestratorClient::new)
            .await
            .expect("orchestrator")
    }

    pub async fn manifests(&self) -> pb::manifests_client::ManifestsClient<Channel> {
        for o in &self.orchestrators {
            if let Ok(c) = self
                .channel(o.addr.clone(), "orchestrator")
                .map_ok(pb::manifests_client::ManifestsClient::new)
                .await
            {
                return c;
            }
        }
        self.channel(self.orchestrator.clone(), "orchestrator")
            .map_ok(pb::manifests_client::ManifestsClient::new)
            .await
            .expect("orchestrator")
    }

    /// The approvals service's web inbox, "http://127.0.0.1:port".
    pub fn inbox_url(&self) -> String {
        let addr = std::fs::read_to_string(self.dir.path().join("approvals-inbox.addr"))
            .expect("the approvals service writes its inbox address at start");
        format!("http://{}", addr.trim())
    }

    pub async fn approvals(&self) -> pb::approvals_client::ApprovalsClient<Channel> {
        self.channel(self.approvals.clone(), "approvals")
            .map_ok(pb::approvals_client::ApprovalsClient::new)
            .await
            .expect("approvals")
    }

    /// The store of the services' API keys, to make keys as `bridle keys` does.
    pub async fn api_keys(&self) -> bridle_core::auth::ApiKeyStore {
        let redis = bridle_core::redis_util::connect(&self.redis.url())
            .await
            .unwrap();
        bridle_core::auth::ApiKeyStore::new(
            redis,
            &bridle_core::redis_util::Keys::new(&self.prefix),
        )
    }

    /// Applies YAML through the orchestrator, as `bridle apply` does.
    pub async fn apply(
        &self,
        source: &str,
        yaml: &str,
    ) -> Result<pb::ApplyResponse, tonic::Status> {
        let docs = bridle_core_docs(source, yaml);
        self.manifests()
            .await
            .apply(pb::ApplyRequest {
                actor: None,
                documents: docs,
                dry_run: false,
                tenant: String::new(),
            })
            .await
            .map(|r| r.into_inner())
    }

    /// The logs of every service, for a failing test's message.
    pub fn logs(&self) -> String {
        self.services
            .iter()
            .chain(&self.orchestrators)
            .map(|s| format!("--- {} ({}) ---\n{}", s.name, s.addr, s.log_tail(30)))
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// The consumer ("orch-<i>-<worker>") holding a pending work task, if any, in any work
    /// partition.
    pub async fn holder(&self) -> Option<String> {
        self.holder_among(0..bridle_orchestrator::MAX_WORK_PARTITIONS)
            .await
    }

    /// The consumer holding a pending task in one of `partitions`.
    pub async fn holder_among(
        &self,
        partitions: impl IntoIterator<Item = usize>,
    ) -> Option<String> {
        let mut c = self.redis.client().await.ok()?;
        for p in partitions {
            let key = if p == 0 {
                format!("{}:work:{{steps}}", self.prefix)
            } else {
                format!("{}:work:{{steps-{p}}}", self.prefix)
            };
            // A partition nobody uses has no group: XPENDING fails, and it holds nothing.
            let pending: Option<Vec<(String, String, u64, u64)>> = redis::cmd("XPENDING")
                .arg(&key)
                .arg("workers")
                .arg("-")
                .arg("+")
                .arg(10)
                .query_async(&mut c)
                .await
                .ok();
            if let Some(first) = pending.and_then(|p| p.into_iter().next()) {
                return Some(first.1);
            }
        }
        None
    }

    /// Index of the orchestrator process whose worker holds the pending task.
    pub async fn holder_index(&self) -> Option<usize> {
        index_of(&self.holder().await?)
    }

    /// The same for a task of one partition (a cancelled run's step elsewhere may still be
    /// pending while its model call winds down).
    pub async fn holder_index_in(&self, partition: usize) -> Option<usize> {
        index_of(&self.holder_among([partition]).await?)
    }

    /// Starts a run of `agent` and returns its id.
    pub async fn start_run(&self, agent: &str, input: &str) -> String {
        self.orchestrator()
            .await
            .start_run(pb::StartRunRequest {
                agent: agent.into(),
                input: input.into(),
                ..Default::default()
            })
            .await
            .expect("start run")
            .into_inner()
            .run
            .expect("run")
            .id
    }

    /// The first approval of run `run_id` (tenant "default"), once the run has parked on it;
    /// panics with the services' logs after `timeout`.
    pub async fn parked_approval(&self, run_id: &str, timeout: Duration) -> pb::Approval {
        let approvals = self.approvals().await;
        bridle_testkit::wait_for("the run to park", timeout, || {
            let mut c = approvals.clone();
            let run_id = run_id.to_string();
            async move {
                let r = c
                    .list(pb::ListApprovalsRequest {
                        tenant: "default".into(),
                        run_id,
                        ..Default::default()
                    })
                    .await
                    .ok()?
                    .into_inner();
                r.approvals.into_iter().next()
            }
        })
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", self.logs()))
    }

    /// The run's trace id, as the orchestrator recorded it.
    pub async fn trace_id_of(&self, run_id: &str) -> String {
        self.orchestrator()
            .await
            .get_run(pb::GetRunRequest {
                run_id: run_id.into(),
            })
            .await
            .expect("get run")
            .into_inner()
            .trace_id
    }

    /// The mock's answers for the standard agent's governed run: a python call, then a
    /// delete-dataset call of `dataset` (which waits for an approval), then `answer`.
    pub fn enqueue_governed_run(&self, dataset: &str, answer: &str) {
        self.mock.enqueue(Reply::tool_calls(&[(
            "call_py",
            "python",
            r#"{"code": "print(6 * 7)"}"#,
        )]));
        let args = format!(r#"{{"dataset": "{dataset}"}}"#);
        self.mock
            .enqueue(Reply::tool_calls(&[("call_del", "delete-dataset", &args)]));
        self.mock.enqueue(Reply::text(answer));
    }

    /// Manifests for the standard test agent, with the route pointing at the mock.
    pub fn manifests_yaml(&self) -> String {
        format!(
            r#"apiVersion: bridle.dev/v1
kind: Tool
metadata:
  name: python
spec:
  description: Runs Python code and returns what it prints.
  risk: read_only
  parameters:
    type: object
    properties:
      code: {{type: string}}
    required: [code]
    additionalProperties: false
  timeout: 30s
  container:
    image: bridle-sandbox:python
    command: ["python3", "-c", "{{{{code}}}}"]
    stdin: false
---
apiVersion: bridle.dev/v1
kind: Tool
metadata:
  name: delete-dataset
spec:
  description: Deletes a dataset. Cannot be undone.
  risk: destructive
  parameters:
    type: object
    properties:
      dataset: {{type: string}}
    required: [dataset]
  container:
    image: bridle-sandbox:python
    command: ["python3", "-c", "import sys; print('deleted', sys.argv[1])", "{{{{dataset}}}}"]
    stdin: false
---
apiVersion: bridle.dev/v1
kind: ModelRoute
metadata:
  name: main
spec:
  targets:
    - name: mock
      provider: openai
      model: gpt-4o-mini
      baseUrl: {base}
      apiKey: secret://openai-api-key
---
apiVersion: bridle.dev/v1
kind: Agent
metadata:
  name: analyst
spec:
  route: main
  instructions: You analyse data with Python.
  tools: [python, delete-dataset]
  budget:
    maxSteps: 5
"#,
            base = self.mock.base_url()
        )
    }
}

/// `env_all` that turns API keys on in every service, with a fresh internal token for their
/// calls to one another.
pub fn keys_on() -> Vec<(String, String)> {
    vec![
        ("BRIDLE_AUTH".into(), "keys".into()),
        (
            "BRIDLE_INTERNAL_TOKEN".into(),
            format!("internal-{}", bridle_testkit::unique("t")),
        ),
    ]
}

/// `msg` as a request carrying API key `key`.
pub fn with_key<T>(key: &str, msg: T) -> tonic::Request<T> {
    let mut r = tonic::Request::new(msg);
    r.metadata_mut()
        .insert("authorization", format!("Bearer {key}").parse().unwrap());
    r
}

/// Splits YAML into request documents (line numbers kept), as the CLI does.
pub fn bridle_core_docs(source: &str, yaml: &str) -> Vec<pb::ManifestDocument> {
    let mut docs = Vec::new();
    let mut current = String::new();
    let mut first = 1u32;
    for (i, line) in yaml.lines().enumerate() {
        if line.trim_end() == "---" {
            if !current.trim().is_empty() {
                docs.push(pb::ManifestDocument {
                    source: source.into(),
                    yaml: std::mem::take(&mut current),
                    first_line: first,
                });
            }
            current.clear();
            first = i as u32 + 2;
            continue;
        }
        current.push_str(line);
        current.push('\n');
    }
    if !current.trim().is_empty() {
        docs.push(pb::ManifestDocument {
            source: source.into(),
            yaml: current,
            first_line: first,
        });
    }
    docs
}

pub fn kind_name(ev: &pb::RunEvent) -> &'static str {
    use pb::run_event::Kind::*;
    match &ev.kind {
        Some(RunCreated(_)) => "RunCreated",
        Some(StepStarted(_)) => "StepStarted",
        Some(ModelCompleted(_)) => "ModelCompleted",
        Some(PolicyEvaluated(_)) => "PolicyEvaluated",
        Some(ApprovalRequested(_)) => "ApprovalRequested",
        Some(ApprovalResolved(_)) => "ApprovalResolved",
        Some(ToolStarted(_)) => "ToolStarted",
        Some(ToolFinished(_)) => "ToolFinished",
        Some(StepFinished(_)) => "StepFinished",
        Some(RunFinished(_)) => "RunFinished",
        Some(ContextCompacted(_)) => "ContextCompacted",
        Some(Notice(_)) => "Notice",
        None => "None",
    }
}

/// Each ToolFinished event of `events`, as text (its output and fields), in order.
pub fn tool_outputs(events: &[pb::RunEvent]) -> Vec<String> {
    events
        .iter()
        .filter_map(|e| match &e.kind {
            Some(pb::run_event::Kind::ToolFinished(t)) => Some(format!("{t:?}")),
            _ => None,
        })
        .collect()
}

/// Follows a run until it finishes, approving every approval it asks for (as "alice", reason
/// "fine"). Bounded by `timeout`.
pub async fn follow_approving(
    h: &Harness,
    run_id: &str,
    timeout: Duration,
) -> anyhow::Result<Vec<pb::RunEvent>> {
    let approvals = h.approvals().await;
    follow(h, run_id, timeout, |ev| {
        let mut approvals = approvals.clone();
        async move {
            if let Some(pb::run_event::Kind::ApprovalRequested(a)) = &ev.kind {
                approvals
                    .decide(pb::DecideRequest {
                        id: a.approval_id.clone(),
                        approve: true,
                        reason: "fine".into(),
                        approver: "alice".into(),
                        ..Default::default()
                    })
                    .await
                    .unwrap();
            }
        }
    })
    .await
}

/// Follows a run until it finishes, calling `on_event` for each event. Bounded by `timeout`.
pub async fn follow<F, Fut>(
    h: &Harness,
    run_id: &str,
    timeout: Duration,
    mut on_event: F,
) -> anyhow::Result<Vec<pb::RunEvent>>
where
    F: FnMut(pb::RunEvent) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    use futures::StreamExt as _;
    let mut events = Vec::new();
    let fut = async {
        let mut after = 0;
        let mut failures = 0;
        loop {
            // Resume from the last offset when the connection or the service hiccups, as
            // `bridle run --watch` does.
            let stream = h
                .orchestrator()
                .await
                .watch_run(pb::WatchRunRequest {
                    run_id: run_id.into(),
                    from_offset: after,
                    follow: true,
                })
                .await;
            let mut s = match stream {
                Ok(s) => s.into_inner(),
                Err(e) if e.code() == tonic::Code::Unavailable && failures < 20 => {
                    failures += 1;
                    tokio::time::sleep(Duration::from_millis(250)).await;
                    continue;
                }
                Err(e) => return Err(e.into()),
            };
            while let Some(ev) = s.next().await {
                let ev = match ev {
                    Ok(ev) => ev,
                    Err(e) if e.code() == tonic::Code::Unavailable && failures < 20 => {
                        failures += 1;
                        tokio::time::sleep(Duration::from_millis(250)).await;
                        break;
                    }
                    Err(e) => return Err(e.into()),
                };
                after = ev.offset;
                let done = matches!(ev.kind, Some(pb::run_event::Kind::RunFinished(_)));
                events.push(ev.clone());
                on_event(ev).await;
                if done {
                    return Ok::<_, anyhow::Error>(());
                }
            }
        }
    };
    match tokio::time::timeout(timeout, fut).await {
        Ok(r) => r.map(|_| events),
        Err(_) => anyhow::bail!(
            "run {run_id} did not finish within {timeout:?}; events so far: {:?}\n{}",
            events.iter().map(kind_name).collect::<Vec<_>>(),
            h.logs()
        ),
    }
}

/// The orchestrator process index in a consumer name ("orch-1-...").
fn index_of(consumer: &str) -> Option<usize> {
    consumer
        .strip_prefix("orch-")?
        .split('-')
        .next()?
        .parse()
        .ok()
}
