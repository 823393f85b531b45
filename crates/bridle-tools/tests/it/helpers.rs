//! A tool service per test: its own Redis, its own container label namespace (so tests run in
//! parallel and each counts and removes only its own containers), the real Docker engine and
//! the locally built sandbox image.

use std::time::Duration;

use bridle_core::Shutdown;
use bridle_core::config::ServerOptions;
use bridle_proto::manifests_client::ManifestsClient;
use bridle_proto::tools_client::ToolsClient;
use bridle_proto::{ApplyRequest, ExecuteRequest, ExecuteResponse, ManifestDocument, Scope};
use bridle_testkit::RedisServer;
use tonic::transport::Channel;

pub const TENANT: &str = "acme";

/// Where a suite's sandboxes run: the local engine under runc or gVisor, a rootless Docker
/// engine started by scripts/rootless-engine.sh (with the limits it cannot enforce accepted),
/// or the Helm chart's rootless engine sidecar with the settings the chart gives it and the
/// tools service (helm/tests/pod_engine.py).
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum On {
    Runc,
    Runsc,
    Rootless,
    Pod,
}

pub struct Harness {
    pub ns: String,
    /// The engine's address when not the local one (a rootless engine).
    pub docker_host: Option<String>,
    /// The service's gRPC address.
    pub addr: std::net::SocketAddr,
    /// Its Redis, "redis://127.0.0.1:port".
    pub redis_url: String,
    /// Host folder of this test's workspaces.
    pub workspaces: tempfile::TempDir,
    pub tools: ToolsClient<Channel>,
    pub manifests: ManifestsClient<Channel>,
    pub shutdown: Shutdown,
    /// The service's workspace root (unmounted when the harness is dropped).
    root: Option<std::path::PathBuf>,
    _redis: RedisServer,
}

pub struct Setup {
    pub secrets_url: String,
    pub docker_host: Option<String>,
    pub mcp_local_servers: std::collections::BTreeMap<String, bridle_tools::mcp::LocalServer>,
    /// `mcp_init_timeout` (default: the service's).
    pub mcp_init_timeout: Option<std::time::Duration>,
    /// `mcp_tools_ttl` (default: the service's).
    pub mcp_tools_ttl: Option<std::time::Duration>,
    pub images: Vec<&'static str>,
    /// `workspace_quota_max` (default: the service's).
    pub quota_max: Option<&'static str>,
    /// The workspace root to use (default: a fresh temporary folder).
    pub workspace_root: Option<std::path::PathBuf>,
    /// The platform's egress allowlist for every tenant (default: 127.0.0.1, where the
    /// tests' own servers listen).
    pub egress_private_allow: Vec<String>,
    /// ... and per tenant (default: none).
    pub egress_private_allow_tenants: std::collections::BTreeMap<String, Vec<String>>,
    /// Extra roots for the hosts credentials are bound to (the tests' own CA).
    pub egress_upstream_ca_file: Option<std::path::PathBuf>,
    /// `sandbox_runtime` (default: the engine's default runtime).
    pub runtime: Option<String>,
    /// `sandbox_runtime_tenants` (default: none).
    pub runtime_tenants: std::collections::BTreeMap<String, String>,
    /// A rootless engine's mapping and group, and the limits it cannot enforce.
    pub sandbox_host_uid: Option<u32>,
    pub engine_gid: Option<u32>,
    pub limits_unenforced: Vec<String>,
    /// Where the test's workspace folder is made (default: the system's temporary folder).
    pub workspace_parent: Option<std::path::PathBuf>,
    /// `workspace_mode` (default: the service's, `quota`).
    pub workspace_mode: bridle_tools::workspace::Mode,
}

impl Default for Setup {
    fn default() -> Self {
        // Nothing listens there: tests without secrets must not need the broker.
        Self {
            secrets_url: "http://127.0.0.1:9".into(),
            docker_host: None,
            mcp_local_servers: Default::default(),
            mcp_init_timeout: None,
            mcp_tools_ttl: None,
            images: vec!["python"],
            quota_max: None,
            workspace_root: None,
            egress_private_allow: vec!["127.0.0.1".into()],
            egress_private_allow_tenants: Default::default(),
            egress_upstream_ca_file: None,
            runtime: None,
            runtime_tenants: Default::default(),
            sandbox_host_uid: None,
            engine_gid: None,
            limits_unenforced: vec![],
            workspace_parent: None,
            workspace_mode: Default::default(),
        }
    }
}

impl Setup {
    /// `base` with its sandboxes `on` the given engine and runtime.
    pub async fn on(on: On, base: Setup) -> Setup {
        match on {
            On::Runc => base,
            On::Runsc => Setup {
                runtime: Some("runsc".into()),
                ..base
            },
            On::Rootless => {
                let e = crate::rootless::rootless_engine("dockerd").await;
                Setup {
                    docker_host: Some(e.host),
                    sandbox_host_uid: Some(e.sandbox_uid),
                    engine_gid: Some(e.gid),
                    limits_unenforced: e.unenforced,
                    workspace_parent: Some(e.shared),
                    ..base
                }
            }
            On::Pod => {
                let e = bridle_testkit::pod_engine::start().await.unwrap();
                Setup {
                    docker_host: Some(e.host),
                    sandbox_host_uid: Some(e.sandbox_host_uid),
                    // This service runs as root, not as the tools container's uid (which the
                    // engine's namespace maps): the engine reaches its folders through the
                    // pod's fsGroup, which it has as a supplementary group.
                    engine_gid: Some(e.tools_gid),
                    limits_unenforced: e.limits_unenforced,
                    workspace_parent: Some(e.workspace_parent),
                    workspace_mode: serde_json::from_value(serde_json::json!(e.workspace_mode))
                        .unwrap(),
                    ..base
                }
            }
        }
    }
}

impl Harness {
    pub async fn start() -> Self {
        Self::start_with(Setup::default()).await
    }

    /// A service whose sandboxes run `on` the given engine and runtime. A runtime or engine
    /// that is missing fails the test at start.
    pub async fn start_on(on: On) -> Self {
        Self::start_with(Setup::on(on, Setup::default()).await).await
    }

    pub async fn start_with(setup: Setup) -> Self {
        if let Some(filter) = std::env::var_os("TEST_LOG") {
            // TEST_LOG=1, or a filter ("bridle_tools=debug,bridle_core=debug").
            let filter = filter.to_string_lossy().to_string();
            let filter = if filter.contains('=') {
                filter
            } else {
                "bridle_tools=debug".to_string()
            };
            // Test-only: the subscriber lives as long as the test process.
            std::mem::forget(bridle_core::telemetry::init_with(
                "tools-test",
                bridle_core::telemetry::LogFormat::Text,
                &filter,
            ));
        }
        if setup.docker_host.is_none() {
            for flavour in &setup.images {
                bridle_testkit::docker::ensure_sandbox_image(flavour)
                    .await
                    .unwrap();
            }
        }
        let workspaces = match &setup.workspace_parent {
            None => tempfile::Builder::new()
                .prefix("bridle-tools-test")
                .tempdir()
                .unwrap(),
            Some(parent) => {
                // Short: the agent's socket path below it must fit in a sockaddr_un.
                let d = tempfile::Builder::new()
                    .prefix("t")
                    .tempdir_in(parent)
                    .unwrap();
                // A rootless engine's user must pass through it to the folders it mounts.
                use std::os::unix::fs::PermissionsExt as _;
                std::fs::set_permissions(d.path(), std::fs::Permissions::from_mode(0o711)).unwrap();
                d
            }
        };
        let redis = RedisServer::start().await.unwrap();
        let ns = bridle_testkit::unique("t");
        let root = setup
            .workspace_root
            .clone()
            .unwrap_or_else(|| workspaces.path().to_path_buf());
        let opts = bridle_tools::Options {
            server: ServerOptions::unauthenticated(0),
            redis_url: redis.url(),
            key_prefix: bridle_testkit::unique("tools"),
            secrets_url: setup.secrets_url,
            docker_host: setup.docker_host.clone(),
            label_namespace: ns.clone(),
            workspace_root: Some(root.clone()),
            mcp_local_servers: setup.mcp_local_servers,
            mcp_init_timeout: setup
                .mcp_init_timeout
                .unwrap_or(bridle_tools::Options::default().mcp_init_timeout),
            mcp_tools_ttl: setup
                .mcp_tools_ttl
                .unwrap_or(bridle_tools::Options::default().mcp_tools_ttl),
            egress_private_allow: setup.egress_private_allow,
            egress_private_allow_tenants: setup.egress_private_allow_tenants,
            egress_upstream_ca_file: setup.egress_upstream_ca_file,
            sandbox_runtime: setup.runtime,
            sandbox_runtime_tenants: setup.runtime_tenants,
            sandbox_host_uid: setup
                .sandbox_host_uid
                .unwrap_or(bridle_tools::Options::default().sandbox_host_uid),
            engine_gid: setup.engine_gid,
            sandbox_limits_unenforced: setup.limits_unenforced,
            workspace_mode: setup.workspace_mode,
            // A lower ceiling is the default as well (the default may not be above it).
            workspace_quota_max: setup
                .quota_max
                .map(str::to_string)
                .unwrap_or_else(|| bridle_tools::Options::default().workspace_quota_max),
            workspace_quota_default: setup
                .quota_max
                .map(str::to_string)
                .unwrap_or_else(|| bridle_tools::Options::default().workspace_quota_default),
            ..Default::default()
        };
        let shutdown = Shutdown::new();
        let addr = bridle_tools::start(opts, shutdown.clone()).await.unwrap();
        let url = format!("http://{addr}");
        Self {
            ns,
            docker_host: setup.docker_host,
            addr,
            redis_url: redis.url(),
            workspaces,
            tools: ToolsClient::connect(url.clone()).await.unwrap(),
            manifests: ManifestsClient::connect(url).await.unwrap(),
            shutdown,
            root: Some(root),
            _redis: redis,
        }
    }

    pub async fn apply(&self, yaml: &str) {
        self.apply_tenant(TENANT, yaml).await;
    }

    pub async fn apply_tenant(&self, tenant: &str, yaml: &str) {
        self.try_apply_tenant(tenant, yaml).await.unwrap();
    }

    pub async fn try_apply_tenant(&self, tenant: &str, yaml: &str) -> Result<(), tonic::Status> {
        let req = ApplyRequest {
            actor: None,
            documents: vec![ManifestDocument {
                source: "test.yaml".into(),
                yaml: yaml.into(),
                first_line: 1,
            }],
            dry_run: false,
            tenant: tenant.into(),
        };
        self.manifests.clone().apply(req).await.map(|_| ())
    }

    pub fn request(&self, tool: &str, args: serde_json::Value) -> ExecuteRequest {
        ExecuteRequest {
            scope: Some(Scope {
                tenant: TENANT.into(),
                agent: "agent".into(),
                run_id: "run_1".into(),
                ..Default::default()
            }),
            tool: tool.into(),
            arguments_json: args.to_string(),
            call_id: "call_1".into(),
            ..Default::default()
        }
    }

    pub async fn execute(&self, req: ExecuteRequest) -> Result<ExecuteResponse, tonic::Status> {
        self.tools
            .clone()
            .execute(req)
            .await
            .map(|r| r.into_inner())
    }

    /// A request of `run` (tenant TENANT).
    pub fn request_in(&self, run: &str, tool: &str, args: serde_json::Value) -> ExecuteRequest {
        let mut r = self.request(tool, args);
        r.scope.as_mut().unwrap().run_id = run.into();
        r
    }

    /// Runs a tool in `run`; the call must succeed at the gRPC level.
    pub async fn call(
        &self,
        run: &str,
        tool: &str,
        args: serde_json::Value,
    ) -> bridle_proto::ToolResult {
        self.execute(self.request_in(run, tool, args))
            .await
            .unwrap()
            .result
            .unwrap()
    }

    pub async fn end_run(&self, run: &str) -> u32 {
        self.tools
            .clone()
            .end_run(bridle_proto::EndRunRequest {
                scope: Some(Scope {
                    tenant: TENANT.into(),
                    run_id: run.into(),
                    ..Default::default()
                }),
            })
            .await
            .unwrap()
            .into_inner()
            .containers_removed
    }

    /// Files and folders under this test's workspace root (all slots of the instance).
    pub fn host_entries(&self) -> Vec<std::path::PathBuf> {
        fn walk(p: &std::path::Path, out: &mut Vec<std::path::PathBuf>) {
            if let Ok(rd) = std::fs::read_dir(p) {
                for e in rd.flatten() {
                    out.push(e.path());
                    if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                        walk(&e.path(), out);
                    }
                }
            }
        }
        let mut out = Vec::new();
        walk(self.workspaces.path(), &mut out);
        out
    }

    /// Runs `code` with the python tool; the call must succeed at the gRPC level.
    pub async fn python(&self, code: &str) -> bridle_proto::ToolResult {
        let r = self
            .execute(self.request("py", serde_json::json!({ "code": code })))
            .await
            .unwrap();
        r.result.unwrap()
    }

    /// Containers of this test that exist now (running or not).
    pub async fn containers(&self) -> Vec<String> {
        docker(
            self.docker_host.as_deref(),
            &[
                "ps",
                "-aq",
                "--filter",
                &format!("label={}.managed=true", self.ns),
            ],
        )
        .await
    }

    /// Containers of this test created between `since` (unix seconds) and now.
    pub async fn created_since(&self, since: i64) -> usize {
        let until = now_secs() + 1;
        docker(
            self.docker_host.as_deref(),
            &[
                "events",
                "--since",
                &since.to_string(),
                "--until",
                &until.to_string(),
                "--filter",
                "type=container",
                "--filter",
                "event=create",
                "--filter",
                &format!("label={}.managed=true", self.ns),
                "--format",
                "{{.ID}}",
            ],
        )
        .await
        .len()
    }

    /// Waits until this test has no container left.
    pub async fn wait_no_containers(&self) {
        let (ns, host) = (self.ns.clone(), self.docker_host.clone());
        bridle_testkit::wait_for(
            "the test's containers to be removed",
            Duration::from_secs(60),
            || {
                let (ns, host) = (ns.clone(), host.clone());
                async move {
                    docker(
                        host.as_deref(),
                        &["ps", "-aq", "--filter", &format!("label={ns}.managed=true")],
                    )
                    .await
                    .is_empty()
                    .then_some(())
                }
            },
        )
        .await
        .unwrap();
    }

    /// Drains the service; dropping the harness then removes what is left (mounts,
    /// containers).
    pub async fn stop(self) {
        self.shutdown.drain(Duration::from_secs(10)).await;
    }
}

impl Drop for Harness {
    fn drop(&mut self) {
        // Mounts outlive the process that made them: a test that ends without draining (a
        // failed one) must not leave its workspaces mounted on the machine.
        if let Some(root) = &self.root {
            for m in bridle_tools::workspace::mounts::mounts_under(root) {
                let _ = bridle_tools::workspace::mounts::unmount(&m);
            }
        }
        // A failed test must not leave containers behind either.
        let cli = || {
            let mut c = std::process::Command::new("docker");
            if let Some(h) = &self.docker_host {
                c.env("DOCKER_HOST", h);
            }
            c
        };
        let ids = cli()
            .args([
                "ps",
                "-aq",
                "--filter",
                &format!("label={}.managed=true", self.ns),
            ])
            .output()
            .map(|o| {
                String::from_utf8_lossy(&o.stdout)
                    .split_whitespace()
                    .map(str::to_string)
                    .collect::<Vec<_>>()
            })
            .unwrap_or_default();
        if !ids.is_empty() {
            let _ = cli().arg("rm").arg("-f").args(&ids).output();
        }
    }
}

/// A `code` tool (`extra` is appended under `code:`).
/// `yaml` (one Tool) opted in to giving secrets to the code the model writes: the tests that
/// check redaction need the tool to hold the value it then prints.
pub fn with_secrets_for_model_code(yaml: &str) -> String {
    yaml.replacen(
        "\nspec:\n",
        "\nspec:\n  allowSecretsWithModelCode: {reason: the test prints the value to check redaction}\n",
        1,
    )
}

pub fn code_tool(name: &str, language: &str, extra: &str) -> String {
    format!(
        r#"apiVersion: bridle.dev/v1
kind: Tool
metadata:
  name: {name}
spec:
  description: Runs {language} source.
  risk: mutating
  timeout: 60s
  parameters:
    type: object
    properties:
      code: {{type: string}}
      n: {{type: integer}}
    required: [code]
  code:
    language: {language}
    limits:
      memory: 128Mi
      output: 4Ki
{extra}"#
    )
}

/// Waits for `f` to return Some, up to `secs`.
pub async fn eventually<T, F, Fut>(what: &str, secs: u64, f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    bridle_testkit::wait_for(what, Duration::from_secs(secs), f)
        .await
        .unwrap()
}

pub fn now_secs() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// The docker CLI, pointed at `host` when set (a rootless engine).
pub fn docker_cli(host: Option<&str>) -> tokio::process::Command {
    let mut c = tokio::process::Command::new("docker");
    if let Some(h) = host {
        c.env("DOCKER_HOST", h);
    }
    c
}

async fn docker(host: Option<&str>, args: &[&str]) -> Vec<String> {
    let out = docker_cli(host).args(args).output().await.unwrap();
    assert!(
        out.status.success(),
        "docker {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .map(str::to_string)
        .collect()
}

/// The python tool: `python3 -c {{code}}`, small limits so tests stay cheap.
pub fn python_tool(name: &str, extra_container: &str) -> String {
    format!(
        r#"apiVersion: bridle.dev/v1
kind: Tool
metadata:
  name: {name}
spec:
  description: Runs a Python snippet and returns what it prints.
  risk: read_only
  tags: [python, test]
  timeout: 60s
  parameters:
    type: object
    properties:
      code:
        type: string
        description: Python source to run.
    required: [code]
    additionalProperties: false
  container:
    image: bridle-sandbox:python
    command: [python3, -c, "{{{{code}}}}"]
    limits:
      memory: 64Mi
      output: 1Ki
{extra_container}"#
    )
}

/// What `bridle_tools::start` answers for options made by `f` from minimal ones (its own Redis
/// and workspace folder): for the tests of what the service refuses at start. A service that
/// did start is shut down again.
pub async fn try_start(
    f: impl FnOnce(&mut bridle_tools::Options),
) -> Result<std::net::SocketAddr, bridle_core::Error> {
    let redis = RedisServer::start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut opts = bridle_tools::Options {
        server: ServerOptions::unauthenticated(0),
        redis_url: redis.url(),
        key_prefix: bridle_testkit::unique("tools"),
        label_namespace: bridle_testkit::unique("t"),
        workspace_root: Some(dir.path().to_path_buf()),
        ..Default::default()
    };
    f(&mut opts);
    let shutdown = Shutdown::new();
    let started = bridle_tools::start(opts, shutdown.clone()).await;
    shutdown.drain(Duration::from_secs(10)).await;
    started
}

/// Applies `yaml` for the test's tenant, which must be refused as invalid; the message.
pub async fn refused_at_apply(h: &Harness, yaml: &str) -> String {
    let err = h.try_apply_tenant(TENANT, yaml).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err:?}");
    err.message().to_string()
}
