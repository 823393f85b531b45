//! Every service as replicas, each in a container of its own with its own address on a Docker
//! network, finding its peers by DNS name (`dns:///tools:50053`: Docker's resolver answers a
//! network alias with every container that carries it, as a Kubernetes headless Service
//! does). Images are this test run's binaries (deploy/images/build.sh, as the compose test
//! builds them).
//!
//! A load of runs (default 500; `BRIDLE_CLUSTER_RUNS`) goes through two replicas of each
//! service while the test, in turn: kills -9 one replica of each service (and starts them
//! again, as a restart policy would); starts one more orchestrator and one more router and
//! checks each serves within 30 s (its own log); cuts a tools replica off the network and
//! restores it; restarts Redis. The model is a mock speaking OpenAI's wire format that answers
//! each call after 50 ms; every run calls an HTTP tool whose effects a counter server records
//! by the request's `Idempotency-Key`; every fifth run also writes a file in its
//! `/workspace` with a code tool in one call and reads it back in the next. It asserts: every
//! run ends, and succeeded; none is lost or duplicated (the tenant lists exactly the runs
//! started, whatever StartRun retries happened); each tool effect happened exactly once; every
//! code run read back what it wrote.
//!
//! Run alone: `bash scripts/test.sh -E 'binary(cluster)'` (the README's "Scaling out").
//! Needs what the compose test needs (Docker, debootstrap or built bases, root for the shared
//! workspace mount); without it the test fails saying what is missing.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::print_stderr
)]

#[allow(dead_code)]
mod compose_support;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bridle_proto as pb;
use bridle_testkit::mock_openai::{MockOpenAi, Reply, text_completion, tool_call_completion};
use compose_support::{
    build_test_images, missing_prerequisite, release_workspace, run, share_workspace,
};
use serde_json::{Value, json};
use tokio::process::Command;
use tonic::transport::Channel;

/// Label on everything the test makes, with the cluster's id: what the guard removes.
const LABEL: &str = "dev.bridle.cluster";
const PORTS: [(&str, u16); 5] = [
    ("orchestrator", 50051),
    ("router", 50052),
    ("tools", 50053),
    ("approvals", 50054),
    ("secrets", 50055),
];

fn port_of(svc: &str) -> u16 {
    PORTS.iter().find(|(s, _)| *s == svc).unwrap().1
}

fn log(start: Instant, what: impl std::fmt::Display) {
    eprintln!("[cluster {:>5.1}s] {what}", start.elapsed().as_secs_f64());
}

async fn docker(args: &[&str]) -> (bool, String, String) {
    run(Command::new("docker").args(args), Duration::from_secs(120)).await
}

async fn docker_ok(args: &[&str]) -> String {
    let (ok, out, err) = docker(args).await;
    assert!(ok, "docker {args:?} failed: {out}{err}");
    out.trim().to_string()
}

/// The network, the containers and the sandboxes' folder of one cluster; all removed on drop.
struct Cluster {
    id: String,
    net: String,
    workspace: PathBuf,
    namespace: String,
    /// Environment of each service (what every replica of it starts with).
    env: HashMap<&'static str, Vec<(String, String)>>,
    /// Replicas started so far, per service (names `<id>-<svc>-<n>`).
    replicas: Mutex<HashMap<&'static str, usize>>,
}

impl Cluster {
    fn name(&self, svc: &str, n: usize) -> String {
        format!("{}-{svc}-{n}", self.id)
    }

    fn common(&self) -> Vec<String> {
        vec![
            "--network".into(),
            self.net.clone(),
            "--label".into(),
            format!("{LABEL}={}", self.id),
            "--read-only".into(),
            "--tmpfs".into(),
            "/tmp".into(),
            "--cap-drop".into(),
            "ALL".into(),
            "--security-opt".into(),
            "no-new-privileges:true".into(),
        ]
    }

    /// Starts replica `n` of a Bridle service; returns its container name.
    async fn start(&self, svc: &'static str, n: usize, extra_env: &[(&str, &str)]) -> String {
        let name = self.name(svc, n);
        let mut args: Vec<String> = vec!["run".into(), "-d".into(), "--name".into(), name.clone()];
        args.extend(self.common());
        args.extend(["--network-alias".into(), svc.into()]);
        for (k, v) in &self.env[svc] {
            args.extend(["-e".into(), format!("{k}={v}")]);
        }
        for (k, v) in extra_env {
            args.extend(["-e".into(), format!("{k}={v}")]);
        }
        if svc == "tools" {
            // Where the other tools replicas forward this one's runs: its container name,
            // which Docker's resolver answers on the network (a pod's IP in Kubernetes).
            args.extend([
                "-e".into(),
                format!("BRIDLE_TOOLS_ADVERTISE_URL=http://{name}:50053"),
            ]);
        }
        if svc == "orchestrator" {
            // Published on loopback for the test's client.
            args.extend(["-p".into(), "127.0.0.1::50051".into()]);
        }
        if svc == "tools" {
            let ws = self.workspace.display().to_string();
            args.extend(
                [
                    "--user",
                    "0:0",
                    "--cap-add",
                    "SYS_ADMIN",
                    // Restoring a workspace taken over from a dead replica (docker-compose.yml).
                    "--cap-add",
                    "CHOWN",
                    "--cap-add",
                    "DAC_OVERRIDE",
                    "--cap-add",
                    "FOWNER",
                    "--security-opt",
                    "apparmor=unconfined",
                    "--security-opt",
                    "label=disable",
                    "--device-cgroup-rule",
                    "c 10:237 rwm",
                    "--device-cgroup-rule",
                    "b 7:* rwm",
                    "-v",
                    "/var/run/docker.sock:/var/run/docker.sock",
                    "-v",
                    "/dev:/dev",
                ]
                .map(String::from),
            );
            args.extend([
                "--mount".into(),
                format!("type=bind,source={ws},target={ws},bind-propagation=rshared"),
            ]);
        }
        args.push(format!("bridle/{svc}:test"));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        docker_ok(&args).await;
        *self.replicas.lock().unwrap().entry(svc).or_default() += 1;
        name
    }

    /// Waits until the replica answers `grpc.health.v1` (the image's probe, run in it: the
    /// images have no shell for a `docker run --health-cmd`).
    async fn healthy(&self, container: &str, within: Duration) {
        let deadline = Instant::now() + within;
        loop {
            let (ok, out, err) =
                docker(&["exec", container, "/usr/local/bin/bridle-health-probe"]).await;
            if ok {
                return;
            }
            if Instant::now() > deadline {
                let (_, logs, logs_err) = docker(&["logs", "--tail", "40", container]).await;
                panic!(
                    "{container} is not serving after {within:?} ({out}{err}):\n{logs}{logs_err}"
                );
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    /// 127.0.0.1:port of an orchestrator replica's published gRPC port.
    async fn published(&self, container: &str) -> String {
        let out = docker_ok(&["port", container, "50051/tcp"]).await;
        let addr = out
            .lines()
            .find(|l| l.starts_with("127.0.0.1:"))
            .unwrap_or_else(|| panic!("{container} publishes no loopback port: {out}"));
        format!("http://{addr}")
    }

    async fn logs(&self, container: &str) -> String {
        let (_, out, err) = docker(&["logs", container]).await;
        format!("{out}{err}")
    }

    fn remove_all(id: &str, net: &str) {
        let sh = |cmd: String| {
            let _ = std::process::Command::new("sh")
                .arg("-c")
                .arg(cmd)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        };
        sh(format!(
            "docker ps -aq --filter label={LABEL}={id} | xargs -r docker rm -f -v"
        ));
        sh(format!("docker network rm {net}"));
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        Cluster::remove_all(&self.id, &self.net);
        let _ = std::process::Command::new("sh")
            .arg("-c")
            .arg(format!(
                "docker ps -aq --filter label={}.managed=true | xargs -r docker rm -f",
                self.namespace
            ))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        release_workspace(&self.workspace);
    }
}

/// Clusters left by a test process that is gone (killed by a timeout).
fn reap_stale() {
    let out = std::process::Command::new("docker")
        .args([
            "ps",
            "-a",
            "--filter",
            &format!("label={LABEL}"),
            "--format",
        ])
        .arg(format!("{{{{.Label \"{LABEL}\"}}}}"))
        .output();
    let Ok(out) = out else { return };
    let ids: HashSet<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| l.trim().to_string())
        .collect();
    for id in ids {
        let pid = id
            .strip_prefix("bridlecl")
            .and_then(|r| r.split('x').next())
            .unwrap_or_default();
        if !pid.is_empty() && !Path::new(&format!("/proc/{pid}")).exists() {
            eprintln!("removing cluster {id} left by a test that is gone");
            Cluster::remove_all(&id, &id);
            release_workspace(Path::new(&format!("/tmp/{id}-tools")));
        }
    }
}

/// The side effects of the HTTP tool: per run key, the requests received by Idempotency-Key.
#[derive(Default)]
struct Effects {
    by_key: Mutex<BTreeMap<String, BTreeMap<String, u32>>>,
}

async fn start_counter(ip: IpAddr) -> (SocketAddr, Arc<Effects>) {
    let effects = Arc::new(Effects::default());
    let app = axum::Router::new()
        .route(
            "/count",
            axum::routing::post(
                |axum::extract::State(e): axum::extract::State<Arc<Effects>>,
                 headers: axum::http::HeaderMap,
                 body: axum::Json<Value>| async move {
                    let key = body["key"].as_str().unwrap_or("").to_string();
                    let idem = headers
                        .get("idempotency-key")
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or("")
                        .to_string();
                    let mut m = e.by_key.lock().unwrap();
                    let calls = m.entry(key.clone()).or_default();
                    *calls.entry(idem).or_default() += 1;
                    // An API that deduplicates by Idempotency-Key: one effect per key.
                    axum::Json(json!({"key": key, "effects": calls.len()}))
                },
            ),
        )
        .with_state(effects.clone());
    let listener = tokio::net::TcpListener::bind((ip, 0)).await.unwrap();
    let addr = listener.local_addr().unwrap();
    // Ends with the test's runtime.
    #[allow(clippy::disallowed_methods)]
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (addr, effects)
}

/// The model: where each run's conversation is (how many assistant turns it has) decides the
/// next answer. Input "job-<n>" is a plain run: count, then answer. "job-<n> code" also
/// writes `/workspace/job-<n>.txt` in one call and reads it in the next.
fn model_reply(req: &Value) -> Reply {
    let messages = req["messages"].as_array().cloned().unwrap_or_default();
    let user = messages
        .iter()
        .find(|m| m["role"] == "user")
        .and_then(|m| m["content"].as_str().map(str::to_string))
        .unwrap_or_default();
    let job = user
        .split_whitespace()
        .next()
        .unwrap_or("job-x")
        .to_string();
    let code = user.contains(" code");
    let turn = messages.iter().filter(|m| m["role"] == "assistant").count();
    let last_tool = messages
        .iter()
        .rev()
        .find(|m| m["role"] == "tool")
        .and_then(|m| m["content"].as_str().map(str::to_string))
        .unwrap_or_default();
    let call = |name: &str, args: Value| {
        let (id, args) = (format!("call_{turn}"), args.to_string());
        Reply::Completion(tool_call_completion(
            "gpt-4o-mini",
            &[(id.as_str(), name, args.as_str())],
        ))
    };
    let reply = match (turn, code) {
        (0, _) => call("count", json!({"key": job})),
        (1, true) => call(
            "python",
            json!({"code": format!("open('/workspace/{job}.txt', 'w').write('payload of {job}')\nprint('written')")}),
        ),
        (2, true) => call(
            "python",
            json!({"code": format!("print(open('/workspace/{job}.txt').read())")}),
        ),
        // A code run's answer quotes its last Python call, and the count call's result too,
        // so the checks can tell a count call the tool reported failed from a lost effect.
        _ if code => {
            let counted = messages
                .iter()
                .find(|m| m["role"] == "tool" && m["tool_call_id"] == "call_0")
                .and_then(|m| m["content"].as_str())
                .unwrap_or_default();
            Reply::Completion(text_completion(
                "gpt-4o-mini",
                &format!("done {job}: {last_tool} [count: {counted}]"),
            ))
        }
        _ => Reply::Completion(text_completion(
            "gpt-4o-mini",
            &format!("done {job}: {last_tool}"),
        )),
    };
    Reply::Delay(Duration::from_millis(50), Box::new(reply))
}

/// The agent and its tools; `counter` and `model` are on the host's address on the cluster's
/// network (its gateway).
fn manifests(counter: SocketAddr, model: &str) -> String {
    format!(
        r#"apiVersion: bridle.dev/v1
kind: Tool
metadata:
  name: count
spec:
  description: Records one effect for a key.
  risk: read_only
  parameters:
    type: object
    properties:
      key: {{type: string}}
    required: [key]
  http:
    method: POST
    url: http://{counter}/count
---
apiVersion: bridle.dev/v1
kind: Tool
metadata:
  name: python
spec:
  description: Runs Python source.
  risk: read_only
  timeout: 60s
  parameters:
    type: object
    properties:
      code: {{type: string}}
    required: [code]
  code:
    language: python
    limits:
      memory: 128Mi
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
      baseUrl: {model}
      apiKey: secret://openai-api-key
---
apiVersion: bridle.dev/v1
kind: Agent
metadata:
  name: worker
spec:
  route: main
  instructions: You do jobs.
  tools: [count, python]
  budget:
    maxSteps: 8
"#
    )
}

/// The test's client: the orchestrator replicas' published addresses, tried in turn.
#[derive(Clone)]
struct Client {
    endpoints: Arc<Mutex<Vec<String>>>,
}

impl Client {
    fn channels(&self) -> Vec<Channel> {
        self.endpoints
            .lock()
            .unwrap()
            .iter()
            .map(|u| {
                tonic::transport::Endpoint::from_shared(u.clone())
                    .unwrap()
                    .connect_timeout(Duration::from_secs(2))
                    .timeout(Duration::from_secs(10))
                    .connect_lazy()
            })
            .collect()
    }

    /// `f` on each replica in turn until one answers (up to `within`); errors other than
    /// unavailable or deadline are returned.
    async fn call<T, F, Fut>(&self, within: Duration, f: F) -> Result<T, tonic::Status>
    where
        F: Fn(pb::orchestrator_client::OrchestratorClient<Channel>) -> Fut,
        Fut: std::future::Future<Output = Result<T, tonic::Status>>,
    {
        let deadline = Instant::now() + within;
        let mut i = rand_index();
        loop {
            let chans = self.channels();
            let c =
                pb::orchestrator_client::OrchestratorClient::new(chans[i % chans.len()].clone());
            i += 1;
            match f(c).await {
                Ok(v) => return Ok(v),
                Err(e)
                    if matches!(
                        e.code(),
                        tonic::Code::Unavailable
                            | tonic::Code::DeadlineExceeded
                            | tonic::Code::Cancelled
                            | tonic::Code::Unknown
                            | tonic::Code::ResourceExhausted
                    ) && Instant::now() < deadline =>
                {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                Err(e) => return Err(e),
            }
        }
    }
}

fn rand_index() -> usize {
    use std::hash::{BuildHasher as _, Hasher as _};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(0);
    h.finish() as usize
}

/// One run of the load, start to end: StartRun under an idempotency key (retried on another
/// replica when one fails), then GetRun until it ends. Returns the run as it ended.
async fn one_run(client: Client, n: usize, code: bool, tenant: String) -> Result<pb::Run, String> {
    let input = if code {
        format!("job-{n} code")
    } else {
        format!("job-{n}")
    };
    let key = format!("cluster-{n}");
    let started = client
        .call(Duration::from_secs(240), |mut c| {
            let req = pb::StartRunRequest {
                agent: "worker".into(),
                input: input.clone(),
                idempotency_key: key.clone(),
                tenant: tenant.clone(),
                ..Default::default()
            };
            async move { c.start_run(req).await.map(|r| r.into_inner()) }
        })
        .await
        .map_err(|e| format!("job-{n}: StartRun: {e}"))?;
    let id = started.run.map(|r| r.id).unwrap_or_default();
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        let run = client
            .call(Duration::from_secs(240), |mut c| {
                let id = id.clone();
                async move {
                    c.get_run(pb::GetRunRequest { run_id: id })
                        .await
                        .map(|r| r.into_inner())
                }
            })
            .await
            .map_err(|e| format!("job-{n} ({id}): GetRun: {e}"))?;
        let status = pb::RunStatus::try_from(run.status).unwrap_or_default();
        if matches!(
            status,
            pb::RunStatus::Succeeded | pb::RunStatus::Failed | pb::RunStatus::Cancelled
        ) {
            return Ok(run);
        }
        if Instant::now() > deadline {
            return Err(format!(
                "job-{n} ({id}) did not end within 10 min: {status:?}"
            ));
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn replicas_of_every_service_survive_kills_a_partition_and_a_redis_restart() {
    if let Some(why) = missing_prerequisite() {
        panic!(
            "the cluster test cannot run: {why}. Run scripts/install-deps.sh (it installs \
             docker-compose and debootstrap and checks that Docker answers)"
        );
    }
    let runs: usize = std::env::var("BRIDLE_CLUSTER_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(500);
    let t0 = Instant::now();
    let root = bridle_testkit::paths::workspace_root();
    let cli = bridle_testkit::paths::binary("bridle").unwrap();
    let bin_dir = cli.parent().unwrap().to_path_buf();
    build_test_images(&root, &bin_dir).await;
    log(t0, "images built");

    reap_stale();
    let unique = bridle_testkit::unique("").replace('-', "");
    let id = format!("bridlecl{}x{}", std::process::id(), &unique[..8]);
    let namespace = format!("dev.bridle.cl{}", &unique[..8]);
    let workspace = PathBuf::from(format!("/tmp/{id}-tools"));
    docker_ok(&[
        "network",
        "create",
        "--label",
        &format!("{LABEL}={id}"),
        &id,
    ])
    .await;
    let gateway: IpAddr = docker_ok(&[
        "network",
        "inspect",
        "-f",
        "{{(index .IPAM.Config 0).Gateway}}",
        &id,
    ])
    .await
    .parse()
    .unwrap();
    let mut cluster = Cluster {
        id: id.clone(),
        net: id.clone(),
        workspace: workspace.clone(),
        namespace: namespace.clone(),
        env: HashMap::new(),
        replicas: Mutex::default(),
    };
    share_workspace(&workspace).unwrap_or_else(|e| panic!("{e}"));

    // The host's side of the cluster's network: the model and the counter server.
    let mock = MockOpenAi::start_on(gateway).await.unwrap();
    mock.set_recording(false);
    mock.set_responder(Some(Arc::new(model_reply)));
    let model = mock.base_url();
    let (counter, effects) = start_counter(gateway).await;

    // Redis (AOF on every write, so its restart loses nothing) and OpenBao.
    let redis = format!("{id}-redis");
    docker_ok(&[
        "run",
        "-d",
        "--name",
        &redis,
        "--network",
        &id,
        "--network-alias",
        "redis",
        "--label",
        &format!("{LABEL}={id}"),
        "-v",
        "/data",
        "bridle/redis:local",
        "redis-server",
        "--appendonly",
        "yes",
        "--appendfsync",
        "always",
        "--dir",
        "/data",
        "--protected-mode",
        "no",
    ])
    .await;
    let bao = format!("{id}-openbao");
    docker_ok(&[
        "run",
        "-d",
        "--name",
        &bao,
        "--network",
        &id,
        "--network-alias",
        "openbao",
        "--label",
        &format!("{LABEL}={id}"),
        "-e",
        "SKIP_SETCAP=true",
        "bridle/openbao:local",
        "bao",
        "server",
        "-dev",
        "-dev-listen-address=0.0.0.0:8200",
        "-dev-root-token-id=cluster-root",
    ])
    .await;
    let api_key = format!("sk-cluster{unique}");
    let stored =
        bridle_testkit::wait_for("OpenBao to take the key", Duration::from_secs(60), || {
            let (bao, value) = (bao.clone(), format!("value={api_key}"));
            async move {
                let (ok, _, _) = docker(&[
                    "exec",
                    "-e",
                    "BAO_ADDR=http://127.0.0.1:8200",
                    "-e",
                    "BAO_TOKEN=cluster-root",
                    &bao,
                    "bao",
                    "kv",
                    "put",
                    "-mount=secret",
                    "bridle/openai-api-key",
                    &value,
                ])
                .await;
                ok.then_some(())
            }
        })
        .await;
    assert!(stored.is_ok(), "{stored:?}");
    mock.require_key(Some(&api_key));

    let peer = |svc: &str| format!("dns:///{svc}:{}", port_of(svc));
    let common = |svc: &str, extra: &[(&str, String)]| {
        let up = svc.to_uppercase();
        let mut v: Vec<(String, String)> = vec![
            (
                format!("BRIDLE_{up}_REDIS_URL"),
                "redis://redis:6379".into(),
            ),
            (format!("BRIDLE_{up}_KEY_PREFIX"), "bridle".into()),
            // New replicas and dead ones are noticed within seconds.
            (format!("BRIDLE_{up}_PEER_RESOLVE_INTERVAL"), "3s".into()),
            ("BRIDLE_LOG".into(), "info".into()),
            // A test network nobody else reaches; auth is not what this test is about.
            ("BRIDLE_AUTH".into(), "off".into()),
        ];
        v.extend(
            extra
                .iter()
                .map(|(k, val)| (format!("BRIDLE_{up}_{}", k.to_uppercase()), val.clone())),
        );
        v
    };
    cluster.env.insert(
        "secrets",
        common(
            "secrets",
            &[
                ("vault_addr", "http://openbao:8200".into()),
                ("vault_token", "cluster-root".into()),
                ("unbound", "convention".into()),
            ],
        ),
    );
    cluster.env.insert("approvals", common("approvals", &[]));
    cluster.env.insert(
        "tools",
        common(
            "tools",
            &[
                ("secrets_url", peer("secrets")),
                ("docker_host", "unix:///var/run/docker.sock".into()),
                ("label_namespace", namespace.clone()),
                ("workspace_root", workspace.display().to_string()),
                ("egress_private_allow", format!("[\"{gateway}\"]")),
            ],
        ),
    );
    cluster.env.insert(
        "router",
        common("router", &[("secrets_url", peer("secrets"))]),
    );
    cluster.env.insert(
        "orchestrator",
        common(
            "orchestrator",
            &[
                ("router_url", peer("router")),
                ("tools_url", peer("tools")),
                ("approvals_url", peer("approvals")),
                ("secrets_url", peer("secrets")),
                // Steps abandoned by a killed replica are claimed again soon.
                ("claim_idle", "10s".into()),
            ],
        ),
    );
    let cluster = cluster;
    let mut started = Vec::new();
    for svc in ["secrets", "approvals", "tools", "router", "orchestrator"] {
        for n in 1..=2 {
            started.push(cluster.start(svc, n, &[]).await);
        }
    }
    for c in &started {
        cluster.healthy(c, Duration::from_secs(120)).await;
    }
    log(t0, "two replicas of every service are healthy");

    let client = Client {
        endpoints: Arc::new(Mutex::new(vec![
            cluster.published(&cluster.name("orchestrator", 1)).await,
            cluster.published(&cluster.name("orchestrator", 2)).await,
        ])),
    };
    let yaml = manifests(counter, &model);
    let docs: Vec<pb::ManifestDocument> =
        bridle_core::manifest::split_documents("cluster.yaml", &yaml)
            .into_iter()
            .map(|d| pb::ManifestDocument {
                source: d.source,
                yaml: d.yaml,
                first_line: d.first_line,
            })
            .collect();
    let chan = client.channels().remove(0);
    pb::manifests_client::ManifestsClient::new(chan)
        .apply(pb::ApplyRequest {
            actor: None,
            documents: docs,
            dry_run: false,
            tenant: String::new(),
        })
        .await
        .unwrap_or_else(|e| panic!("apply: {e}"));

    // The load: `runs` runs, 40 at a time, every fifth a code run.
    let tenant = "default".to_string();
    let done = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let load = {
        let (client, done, tenant) = (client.clone(), done.clone(), tenant.clone());
        // The test awaits it (bounded) before it ends.
        #[allow(clippy::disallowed_methods)]
        tokio::spawn(async move {
            use futures::StreamExt as _;
            futures::stream::iter(0..runs)
                .map(|n| {
                    let (client, done, tenant) = (client.clone(), done.clone(), tenant.clone());
                    async move {
                        let r = one_run(client, n, n % 5 == 0, tenant).await;
                        done.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                        (n, r)
                    }
                })
                .buffer_unordered(40)
                .collect::<Vec<_>>()
                .await
        })
    };
    let progress = |at: usize| {
        let done = done.clone();
        async move {
            let deadline = Instant::now() + Duration::from_secs(600);
            while done.load(std::sync::atomic::Ordering::SeqCst) < at && Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    };
    let step = runs / 6;
    let ended = || done.load(std::sync::atomic::Ordering::SeqCst);

    // 1. kill -9 one replica of each service; a restart policy starts it again.
    progress(step).await;
    for (svc, _) in PORTS {
        docker_ok(&["kill", "-s", "KILL", &cluster.name(svc, 2)]).await;
    }
    log(
        t0,
        format!("killed replica 2 of every service ({} runs ended)", ended()),
    );
    tokio::time::sleep(Duration::from_secs(3)).await;
    for (svc, _) in PORTS {
        docker_ok(&["start", &cluster.name(svc, 2)]).await;
    }
    // Its published port changes when it starts again.
    {
        let p = cluster.published(&cluster.name("orchestrator", 2)).await;
        client.endpoints.lock().unwrap()[1] = p;
    }
    for (svc, _) in PORTS {
        cluster
            .healthy(&cluster.name(svc, 2), Duration::from_secs(120))
            .await;
    }
    log(
        t0,
        format!(
            "replica 2 of every service is back ({} runs ended)",
            ended()
        ),
    );

    // 2. One more orchestrator and one more router: each serves within 30 s.
    progress(2 * step).await;
    let t_added = Instant::now();
    let orch3 = cluster.start("orchestrator", 3, &[]).await;
    let router3 = cluster
        .start(
            "router",
            3,
            &[("BRIDLE_LOG", "info,bridle_router::engine=debug")],
        )
        .await;
    let p = cluster.published(&orch3).await;
    client.endpoints.lock().unwrap().push(p);
    for (c, sign) in [(&orch3, "run finished"), (&router3, "model call succeeded")] {
        let serving = bridle_testkit::wait_for(
            &format!("{c} to serve calls"),
            Duration::from_secs(30),
            || {
                let cluster = &cluster;
                async move { cluster.logs(c).await.contains(sign).then_some(()) }
            },
        )
        .await;
        assert!(
            serving.is_ok(),
            "{c} did not serve within 30 s of its start ({sign:?} not in its log):\n{}",
            cluster.logs(c).await
        );
        log(
            t0,
            format!(
                "{c} served within {:.1}s of being started",
                t_added.elapsed().as_secs_f64()
            ),
        );
    }

    // 3. A tools replica cut off the network, then back.
    progress(3 * step).await;
    let tools1 = cluster.name("tools", 1);
    docker_ok(&["network", "disconnect", &id, &tools1]).await;
    log(t0, format!("{tools1} cut off ({} runs ended)", ended()));
    tokio::time::sleep(Duration::from_secs(15)).await;
    docker_ok(&["network", "connect", "--alias", "tools", &id, &tools1]).await;
    log(
        t0,
        format!("{tools1} back on the network ({} runs ended)", ended()),
    );

    // 4. Redis restarts.
    progress(4 * step).await;
    docker_ok(&["restart", "-t", "5", &redis]).await;
    log(t0, format!("Redis restarted ({} runs ended)", ended()));

    let results = tokio::time::timeout(Duration::from_secs(900), load)
        .await
        .expect("the load ends within 15 min")
        .unwrap();
    log(t0, format!("all {runs} runs ended"));

    // Every run ended, and succeeded, with what its model was told.
    let mut failures = Vec::new();
    let mut code_runs = 0;
    for (n, r) in &results {
        match r {
            Err(e) => failures.push(e.clone()),
            Ok(run) if run.status != pb::RunStatus::Succeeded as i32 => failures.push(format!(
                "job-{n} ({}) ended {:?}: {} {}",
                run.id,
                pb::RunStatus::try_from(run.status).unwrap_or_default(),
                run.error,
                run.output
            )),
            Ok(run) => {
                if n % 5 == 0 {
                    code_runs += 1;
                    let want = format!("payload of job-{n}");
                    if !run.output.contains(&want) {
                        failures.push(format!(
                            "job-{n} ({}) did not read back its file: {}",
                            run.id, run.output
                        ));
                    }
                }
            }
        }
    }
    let mut logs = String::new();
    if !failures.is_empty() {
        // Every error any orchestrator logged, first.
        for n in 1..=3 {
            let c = cluster.name("orchestrator", n);
            let l = cluster.logs(&c).await;
            let errors: Vec<&str> = l
                .lines()
                .filter(|l| l.contains("\"ERROR\""))
                .take(10)
                .collect();
            logs.push_str(&format!("--- errors of {c} ---\n{}\n", errors.join("\n")));
        }
        for c in [
            cluster.name("orchestrator", 1),
            cluster.name("tools", 1),
            cluster.name("tools", 2),
        ] {
            let l = cluster.logs(&c).await;
            let tail: Vec<&str> = l.lines().rev().take(30).collect();
            logs.push_str(&format!(
                "--- {c} ---\n{}\n",
                tail.into_iter().rev().collect::<Vec<_>>().join("\n")
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {runs} runs went wrong; the first ones:\n{}\n{logs}",
        failures.len(),
        failures
            .iter()
            .take(15)
            .cloned()
            .collect::<Vec<_>>()
            .join("\n")
    );

    // None lost, none duplicated: the tenant lists exactly the runs started.
    let mut listed = HashSet::new();
    let mut total = 0;
    let mut token = String::new();
    loop {
        let page = client
            .call(Duration::from_secs(60), |mut c| {
                let req = pb::ListRunsRequest {
                    tenant: tenant.clone(),
                    agent: "worker".into(),
                    page_size: 500,
                    page_token: token.clone(),
                    ..Default::default()
                };
                async move { c.list_runs(req).await.map(|r| r.into_inner()) }
            })
            .await
            .unwrap();
        for r in &page.runs {
            total += 1;
            listed.insert(r.input.clone());
        }
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    assert_eq!(total, runs, "runs listed (duplicates or losses)");
    assert_eq!(listed.len(), runs, "distinct inputs among the runs listed");

    // Each HTTP tool effect happened exactly once (one Idempotency-Key per job), or not at all
    // when the model was told the call failed: a call that reached the tools replica just cut
    // off from the network could not reach the API, and the run's final answer quotes the
    // count tool's result (a code run's after its last Python call's).
    let outputs: HashMap<usize, String> = results
        .iter()
        .filter_map(|(n, r)| r.as_ref().ok().map(|run| (*n, run.output.clone())))
        .collect();
    let by_key = effects.by_key.lock().unwrap();
    let mut wrong = Vec::new();
    let mut requests = 0;
    let mut told_failed = Vec::new();
    for n in 0..runs {
        let key = format!("job-{n}");
        let calls = by_key.get(&key);
        requests += calls.map(|c| c.values().sum::<u32>()).unwrap_or(0);
        let output = outputs.get(&n).map(String::as_str).unwrap_or("");
        match calls {
            Some(c) if c.len() == 1 && !c.contains_key("") => {}
            None if !output.contains("\"effects\"") => {
                told_failed.push(format!("{key}: {output}"));
            }
            other => wrong.push(format!("{key}: {other:?} (its answer: {output})")),
        }
    }
    if !told_failed.is_empty() {
        log(
            t0,
            format!(
                "{} runs were told their count call failed (no effect): {}",
                told_failed.len(),
                told_failed.join("; ")
            ),
        );
    }
    assert!(
        told_failed.len() <= runs / 20,
        "too many count calls failed ({} of {runs}): {}",
        told_failed.len(),
        told_failed.join("; ")
    );
    assert!(
        wrong.is_empty(),
        "effects not exactly once: {}",
        wrong
            .iter()
            .take(10)
            .cloned()
            .collect::<Vec<_>>()
            .join("; ")
    );
    log(
        t0,
        format!(
            "{runs} runs succeeded ({code_runs} read back their files); {requests} requests \
             reached the counter for {} effects; done in {:.0}s",
            runs - told_failed.len(),
            t0.elapsed().as_secs_f64()
        ),
    );
    drop(cluster);
}
