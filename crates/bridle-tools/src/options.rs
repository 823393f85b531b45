use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::mcp::LocalServer;
use crate::quota::Quotas;
use bridle_core::manifest::{parse_bytes, parse_quota};

use bridle_core::config::{self, ServerOptions};

/// Options of the tool service (`BRIDLE_TOOLS_*` env, or keys in its config file).
#[derive(Clone, Debug, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(default)]
pub struct Options {
    #[serde(flatten)]
    pub server: ServerOptions,
    pub redis_url: String,
    /// Prefix of every Redis key this service writes.
    pub key_prefix: String,
    /// The secrets broker that resolves `secret://` values of tool environments.
    pub secrets_url: String,
    /// Docker engine ("unix:///var/run/docker.sock", "tcp://host:2375"); unset = DOCKER_HOST,
    /// else the local socket.
    pub docker_host: Option<String>,
    /// How long a completed call's result is kept for replays of its idempotency key.
    #[serde(with = "humantime_serde")]
    #[schemars(with = "String")]
    pub idempotency_ttl: Duration,
    /// Label namespace of the containers this service creates (`<ns>.run`, `<ns>.managed`...);
    /// EndRun only ever touches containers labelled with it.
    pub label_namespace: String,
    /// Host folder of run workspaces and sandbox folders. It must be on the Docker engine's
    /// host (they are bind-mounted into sandboxes); unset = `<tmp>/bridle-tools`.
    pub workspace_root: Option<PathBuf>,
    /// Warm sandboxes this instance keeps at most, over all profiles.
    pub pool_max_warm: usize,
    /// Warm sandboxes started at once.
    pub pool_parallel_starts: usize,
    /// A profile nobody asked for this long loses its warm sandboxes.
    #[serde(with = "humantime_serde")]
    #[schemars(with = "String")]
    pub pool_idle_ttl: Duration,
    /// A run with no call for this long is ended as if EndRun came (its sandboxes and
    /// workspace are removed), in case the orchestrator never sends EndRun.
    #[serde(with = "humantime_serde")]
    #[schemars(with = "String")]
    pub run_idle_ttl: Duration,
    /// A sandbox of another instance (same `label_namespace`) stopped this long is removed, at
    /// start and every 30s: an instance killed without draining leaves its sandboxes behind.
    #[serde(with = "humantime_serde")]
    #[schemars(with = "String")]
    pub orphan_grace: Duration,
    /// Let every tenant's tools reach any loopback, private or link-local address their
    /// egress rules allow (a laptop's setting; default false). Cloud metadata endpoints, this
    /// service's own port and its Redis and secrets broker stay refused.
    pub egress_allow_private: bool,
    /// Non-public destinations every tenant's tools may reach when their egress rules allow
    /// them: address blocks (`10.20.0.0/16`), addresses, or names, each with an optional port
    /// (`10.20.0.5:8080`, `db.internal:5432`). Empty by default: a tenant's rule can never
    /// open the platform's own network by itself.
    pub egress_private_allow: Vec<String>,
    /// The same, per tenant: tenant name -> entries, added to `egress_private_allow`.
    pub egress_private_allow_tenants: BTreeMap<String, Vec<String>>,
    /// PEM certificates trusted, besides the system's roots, when the egress proxy connects
    /// to a host a Tool's `credentials` are bound to (a private CA's hosts).
    pub egress_upstream_ca_file: Option<PathBuf>,
    /// Local MCP servers manifests may name (`spec.mcp.local`): name -> command and env. A
    /// server starts with only the variables its `env` names (and a plain `PATH` unless it
    /// names one), in a process group of its own that is killed whole when it stops. Keys of
    /// `env` keep their case from a TOML file; variables set through `BRIDLE_*` environment
    /// variables arrive lowercased, so set a server's environment in the file.
    pub mcp_local_servers: BTreeMap<String, LocalServer>,
    /// How long an MCP server has to answer `initialize`. A server that fails to start is
    /// not tried again for 5 s, doubling to 5 min while it keeps failing.
    #[serde(with = "humantime_serde")]
    #[schemars(with = "String")]
    pub mcp_init_timeout: Duration,
    /// How long an MCP server's tool list is used before it is read again (sooner when a
    /// server sends `notifications/tools/list_changed`).
    #[serde(with = "humantime_serde")]
    #[schemars(with = "String")]
    pub mcp_tools_ttl: Duration,
    /// Size of a run's /workspace when neither its Tool (`limits.workspace`) nor its Agent
    /// (`spec.workspace.quota`) sets one ("1Gi").
    pub workspace_quota_default: String,
    /// The largest workspace quota a Tool or an Agent may set; larger ones are refused at
    /// apply ("10Gi").
    pub workspace_quota_max: String,
    /// The address other tools replicas dial to forward a run's calls to this one
    /// ("http://10.1.2.3:50053"). Unset: the listen address when it names one, else the
    /// `POD_IP` environment variable with the bound port; a replica listening on every address
    /// with neither cannot be forwarded to (calls reaching another replica for its runs fail
    /// saying so), which only matters with several replicas.
    pub advertise_url: Option<String>,
    /// How long a replica's announcement lasts without renewal (renewed every third of it):
    /// a replica that dies has its runs taken over this long after, at their next call.
    #[serde(with = "humantime_serde")]
    #[schemars(with = "String")]
    pub replica_lease: Duration,
    /// The largest snapshot of a run's /workspace kept (after each call that changed it) so
    /// that another replica can carry the run on if this one dies ("64Mi"). A larger workspace
    /// is not kept, and the run is told so when it moves.
    pub workspace_snapshot_max: String,
    /// Where workspace snapshots go: `redis` (the only store built; an object store is not).
    pub workspace_snapshot_store: String,
    /// The OCI runtime of every sandbox whose Tool names none (`runsc` for gVisor); unset =
    /// the engine's default. The engine must have it (checked at start when the engine
    /// answers, and before every sandbox is made: never a fallback to another runtime).
    pub sandbox_runtime: Option<String>,
    /// Tenants bound to a runtime: tenant -> runtime (`*` = every tenant not named). Their
    /// sandboxes always run under it, and a Tool of theirs naming another is refused at apply.
    pub sandbox_runtime_tenants: BTreeMap<String, String>,
    /// The host uid (and gid) the sandbox user (65534) is on the engine's host: 65534 with a
    /// rootful engine; with a rootless one, the engine user's subordinate range start + 65533
    /// (`scripts/rootless-engine.sh` prints it). Workspace files are given to it.
    pub sandbox_host_uid: u32,
    /// The host group of a rootless engine's user: the instance folder under `workspace_root`
    /// is made 0710 with it, so the engine can reach the folders it mounts and no other host
    /// user can. Unset (a rootful engine): 0700.
    pub engine_gid: Option<u32>,
    /// Sandbox limits the engine cannot enforce that the platform accepts running without
    /// (`memory`, `swap`, `cpu`, `pids`; a rootless engine on cgroup v1 enforces none). Empty:
    /// the service refuses to start on such an engine, naming them. Every one listed is logged
    /// at start; the Tools' limits stay in their manifests but do not hold.
    pub sandbox_limits_unenforced: Vec<String>,
    /// What a run's /workspace is: `quota` (default), a filesystem of the run's quota that
    /// this service formats and loop-mounts (it needs root, mount and loop devices, and its
    /// mounts must reach the engine); `folder`, a plain folder the engine binds into each
    /// sandbox made for the run, with no mount by this service (so it can run without any
    /// privilege, as in the Helm chart's default tools pod). Folders have no quota of their
    /// own: `folder` needs `workspace` in `sandbox_limits_unenforced`, and sandboxes cannot be
    /// warm (a Tool's `pool.warm` is refused at apply).
    pub workspace_mode: crate::workspace::Mode,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            server: ServerOptions {
                // A tool call may legitimately run for minutes; the per-call wall-clock limit
                // is the tool's own timeout, so the server-wide deadline sits above it.
                request_timeout: Duration::from_secs(600),
                ..ServerOptions::with_port(50053)
            },
            redis_url: "redis://127.0.0.1:6379".into(),
            key_prefix: "bridle".into(),
            secrets_url: "http://127.0.0.1:50055".into(),
            docker_host: None,
            idempotency_ttl: Duration::from_secs(7 * 24 * 3600),
            label_namespace: "dev.bridle".into(),
            workspace_root: None,
            pool_max_warm: 16,
            pool_parallel_starts: 2,
            pool_idle_ttl: Duration::from_secs(30 * 60),
            run_idle_ttl: Duration::from_secs(2 * 3600),
            orphan_grace: Duration::from_secs(60),
            egress_allow_private: false,
            egress_private_allow: Vec::new(),
            egress_private_allow_tenants: BTreeMap::new(),
            egress_upstream_ca_file: None,
            mcp_local_servers: BTreeMap::new(),
            mcp_init_timeout: Duration::from_secs(30),
            mcp_tools_ttl: Duration::from_secs(300),
            workspace_quota_default: "1Gi".into(),
            workspace_quota_max: "10Gi".into(),
            advertise_url: None,
            replica_lease: Duration::from_secs(15),
            workspace_snapshot_max: "64Mi".into(),
            workspace_snapshot_store: "redis".into(),
            sandbox_runtime: None,
            sandbox_runtime_tenants: BTreeMap::new(),
            sandbox_host_uid: crate::user::SANDBOX_UID,
            engine_gid: None,
            sandbox_limits_unenforced: Vec::new(),
            workspace_mode: crate::workspace::Mode::Quota,
        }
    }
}

impl Options {
    /// The platform's egress rules ([`crate::egress::Platform`]); the error names the option.
    pub fn egress_platform(&self) -> Result<crate::egress::Platform, String> {
        let mut p = crate::egress::Platform::new(
            self.egress_allow_private,
            &self.egress_private_allow,
            &self.egress_private_allow_tenants,
        )?
        .with_upstream_tls(crate::egress::inject::upstream_tls(
            self.egress_upstream_ca_file.as_deref(),
        )?);
        // Every address the options name: one Redis or each sentinel or cluster seed (the
        // data nodes they lead to are not named here: a NetworkPolicy covers those), and each
        // address of the secrets broker's peer URL.
        let redis = "this platform's Redis (redis_url)";
        match bridle_core::redis_util::RedisUrl::parse(&self.redis_url) {
            Ok(bridle_core::redis_util::RedisUrl::Single(u)) => p.protect_service(redis, &u, 6379),
            Ok(bridle_core::redis_util::RedisUrl::Sentinel { sentinels: a, .. })
            | Ok(bridle_core::redis_util::RedisUrl::Cluster { seeds: a, .. }) => {
                for addr in a {
                    p.protect_service(redis, &format!("redis://{addr}"), 6379);
                }
            }
            Err(_) => {}
        }
        let broker = "this platform's secrets broker (secrets_url)";
        match bridle_core::peers::PeerUrl::parse(&self.secrets_url) {
            Ok(bridle_core::peers::PeerUrl::Single(u)) => p.protect_service(broker, &u, 80),
            Ok(bridle_core::peers::PeerUrl::Dns(hp)) => {
                p.protect_service(broker, &format!("http://{hp}"), 80)
            }
            Ok(bridle_core::peers::PeerUrl::List(entries)) => {
                for e in entries {
                    p.protect_service(broker, &format!("http://{}", e.at), 80);
                }
            }
            Err(_) => {}
        }
        Ok(p)
    }

    /// The workspace quota options in bytes; the error names the option.
    pub fn quotas(&self) -> Result<Quotas, String> {
        let default = parse_quota(&self.workspace_quota_default)
            .map_err(|e| format!("workspace_quota_default: {e}"))?;
        let max = parse_quota(&self.workspace_quota_max)
            .map_err(|e| format!("workspace_quota_max: {e}"))?;
        if default > max {
            return Err(format!(
                "workspace_quota_default: {} is above workspace_quota_max ({})",
                self.workspace_quota_default, self.workspace_quota_max
            ));
        }
        Ok(Quotas { default, max })
    }

    /// `workspace_snapshot_max` in bytes; the error names the option.
    pub fn snapshot_max(&self) -> Result<u64, String> {
        parse_bytes(&self.workspace_snapshot_max)
            .map_err(|e| format!("workspace_snapshot_max: {e}"))
    }

    /// The address other replicas dial (see `advertise_url`), once bound to `bound`;
    /// `pod_ip` is the `POD_IP` environment variable.
    pub fn advertise(&self, bound: std::net::SocketAddr, pod_ip: Option<&str>) -> Option<String> {
        if let Some(u) = &self.advertise_url {
            return Some(u.clone());
        }
        let scheme = if self.server.tls_cert.is_some() {
            "https"
        } else {
            "http"
        };
        if !bound.ip().is_unspecified() {
            return Some(format!("{scheme}://{bound}"));
        }
        let ip: std::net::IpAddr = pod_ip?.trim().parse().ok()?;
        Some(format!(
            "{scheme}://{}",
            std::net::SocketAddr::new(ip, bound.port())
        ))
    }

    /// Which runtime each tenant's sandboxes run under.
    pub fn runtimes(&self) -> crate::sandbox::Runtimes {
        crate::sandbox::Runtimes::new(
            self.sandbox_runtime.clone(),
            self.sandbox_runtime_tenants.clone(),
        )
    }

    pub fn workspace_root(&self) -> PathBuf {
        self.workspace_root
            .clone()
            .unwrap_or_else(|| std::env::temp_dir().join("bridle-tools"))
    }
}

impl config::Options for Options {
    const SERVICE: &'static str = "tools";

    fn server(&self) -> &bridle_core::config::ServerOptions {
        &self.server
    }

    fn validate(&self) -> Vec<String> {
        let mut out = Vec::new();
        self.server.validate(&mut out);
        config::check_redis_url("redis_url", &self.redis_url, &mut out);
        config::check_peer_url("secrets_url", &self.secrets_url, &mut out);
        if self.key_prefix.is_empty() || self.key_prefix.contains(['{', '}', ' ']) {
            out.push("key_prefix: must be non-empty, without braces or spaces".into());
        }
        if let Some(h) = &self.docker_host
            && !["unix://", "tcp://", "http://", "https://"]
                .iter()
                .any(|s| h.starts_with(s))
        {
            out.push(format!(
                "docker_host: '{h}' must start with unix://, tcp://, http:// or https://"
            ));
        }
        if let Err(e) = self.egress_platform() {
            out.push(e);
        }
        if self.idempotency_ttl < Duration::from_secs(1) {
            out.push("idempotency_ttl: must be at least 1s".into());
        }
        if let Err(e) = check_label_namespace(&self.label_namespace) {
            out.push(format!("label_namespace: {e}"));
        }
        if let Some(r) = &self.workspace_root
            && !r.is_absolute()
        {
            out.push(format!(
                "workspace_root: '{}' must be an absolute path",
                r.display()
            ));
        }
        if self.pool_max_warm > 1024 {
            out.push("pool_max_warm: must be at most 1024".into());
        }
        if self.pool_parallel_starts == 0 || self.pool_parallel_starts > 64 {
            out.push("pool_parallel_starts: must be between 1 and 64".into());
        }
        if self.run_idle_ttl < Duration::from_secs(60) {
            out.push("run_idle_ttl: must be at least 1m".into());
        }
        if self.orphan_grace < Duration::from_secs(1) {
            out.push("orphan_grace: must be at least 1s".into());
        }
        if let Err(e) = self.quotas() {
            out.push(e);
        }
        match self.snapshot_max() {
            Err(e) => out.push(e),
            Ok(0) => out.push("workspace_snapshot_max: must be more than 0".into()),
            Ok(_) => {}
        }
        if self.workspace_snapshot_store != "redis" {
            out.push(format!(
                "workspace_snapshot_store: '{}' is not built in this version of Bridle; only 'redis' is (an S3-compatible object store is not)",
                self.workspace_snapshot_store
            ));
        }
        if let Some(r) = &self.sandbox_runtime
            && let Err(e) = bridle_core::ids::check_runtime_name(r)
        {
            out.push(format!("sandbox_runtime: {e}"));
        }
        for (tenant, r) in &self.sandbox_runtime_tenants {
            if tenant != crate::sandbox::runtime::EVERY_TENANT
                && bridle_core::ids::check_name(tenant).is_err()
            {
                out.push(format!(
                    "sandbox_runtime_tenants.{tenant}: not a tenant name (or '*' for every tenant)"
                ));
            }
            if let Err(e) = bridle_core::ids::check_runtime_name(r) {
                out.push(format!("sandbox_runtime_tenants.{tenant}: {e}"));
            }
        }
        for l in &self.sandbox_limits_unenforced {
            if !crate::sandbox::engine::LIMITS.contains(&l.as_str())
                && l != crate::workspace::QUOTA_LIMIT
            {
                out.push(format!(
                    "sandbox_limits_unenforced: '{l}' is not a sandbox limit (memory, swap, cpu, pids, workspace)"
                ));
            }
        }
        let quota_accepted = self
            .sandbox_limits_unenforced
            .iter()
            .any(|l| l == crate::workspace::QUOTA_LIMIT);
        match self.workspace_mode {
            crate::workspace::Mode::Folder if !quota_accepted => out.push(
                "workspace_mode: 'folder' workspaces have no quota (a run can fill the disk its folder is on): add 'workspace' to sandbox_limits_unenforced to accept that, or use 'quota'".into(),
            ),
            crate::workspace::Mode::Quota if quota_accepted => out.push(
                "sandbox_limits_unenforced: 'workspace' is enforced with workspace_mode 'quota'; list it only with 'folder'".into(),
            ),
            _ => {}
        }
        if self.replica_lease < Duration::from_secs(1) {
            out.push("replica_lease: must be at least 1s".into());
        }
        if let Some(u) = &self.advertise_url {
            match url::Url::parse(u) {
                Ok(p) if matches!(p.scheme(), "http" | "https") && p.host().is_some() && p.port_or_known_default().is_some() => {}
                _ => out.push(format!(
                    "advertise_url: '{u}' must be an http:// or https:// address with a host (e.g. http://10.1.2.3:50053)"
                )),
            }
        }
        for (name, s) in &self.mcp_local_servers {
            if bridle_core::ids::check_name(name).is_err() {
                out.push(format!(
                    "mcp_local_servers.{name}: not a valid name (lowercase letters, digits, '-', '_', '.')"
                ));
            }
            if s.command.is_empty() {
                out.push(format!(
                    "mcp_local_servers.{name}.command: must not be empty"
                ));
            }
        }
        out
    }
}

/// A Docker label prefix: lowercase letters, digits, '.' and '-', starting and ending with a
/// letter or digit (the reverse-DNS style Docker recommends).
fn check_label_namespace(ns: &str) -> Result<(), String> {
    let ok_edge = |c: Option<char>| c.is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
    if ns.is_empty() || ns.len() > 100 {
        return Err("must be 1 to 100 characters".into());
    }
    if !ok_edge(ns.chars().next()) || !ok_edge(ns.chars().last()) {
        return Err(format!(
            "'{ns}' must start and end with a lowercase letter or digit"
        ));
    }
    if let Some(bad) = ns
        .chars()
        .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '.' | '-')))
    {
        return Err(format!(
            "'{ns}' contains '{bad}'; use lowercase letters, digits, '.' and '-'"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use bridle_core::config::Options as _;

    use super::*;

    /// The defaults, plus the internal token every keys-mode service needs (without it the
    /// only complaint is that one: see `the_defaults_need_a_service_identity`).
    fn known() -> Options {
        let mut o = Options::default();
        o.server.internal_token = Some("a-token-of-enough-length".to_string().into());
        o
    }

    #[test]
    fn the_defaults_need_a_service_identity() {
        let problems = Options::default().validate();
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(
            problems[0].starts_with("auth: 'keys' (the default) needs"),
            "{problems:?}"
        );
    }

    #[test]
    fn defaults_are_valid() {
        let o = known();
        assert_eq!(o.validate(), Vec::<String>::new());
        assert_eq!(o.server.listen.port(), 50053);
        assert_eq!(o.idempotency_ttl, Duration::from_secs(604_800));
    }

    #[test]
    fn bad_values_name_their_key() {
        let o = Options {
            docker_host: Some("/var/run/docker.sock".into()),
            label_namespace: "Dev_Bridle".into(),
            idempotency_ttl: Duration::ZERO,
            ..known()
        };
        let problems = o.validate();
        assert!(
            problems.iter().any(|p| p.starts_with("docker_host: ")),
            "{problems:?}"
        );
        assert!(
            problems.iter().any(|p| p.starts_with("label_namespace: ")),
            "{problems:?}"
        );
        assert!(
            problems.iter().any(|p| p.starts_with("idempotency_ttl: ")),
            "{problems:?}"
        );
    }

    #[test]
    fn runtime_options_are_checked_by_name() {
        let o = Options {
            sandbox_runtime: Some("run sc".into()),
            sandbox_runtime_tenants: BTreeMap::from([
                ("*".to_string(), "runsc".to_string()),
                ("Bad Tenant".to_string(), "runsc".to_string()),
                ("acme".to_string(), "".to_string()),
            ]),
            ..known()
        };
        assert_eq!(
            o.validate(),
            vec![
                "sandbox_runtime: 'run sc' is not a runtime name (letters, digits, '.', '-', '_'; at most 128)".to_string(),
                "sandbox_runtime_tenants.Bad Tenant: not a tenant name (or '*' for every tenant)".to_string(),
                "sandbox_runtime_tenants.acme: '' is not a runtime name (letters, digits, '.', '-', '_'; at most 128)".to_string(),
            ]
        );
    }

    #[test]
    fn workspace_folders_need_their_missing_quota_accepted_by_name() {
        use crate::workspace::Mode;
        let folder = |unenforced: &[&str]| Options {
            workspace_mode: Mode::Folder,
            sandbox_limits_unenforced: unenforced.iter().map(|s| s.to_string()).collect(),
            ..known()
        };
        assert_eq!(
            folder(&[]).validate(),
            vec![
                "workspace_mode: 'folder' workspaces have no quota (a run can fill the disk its folder is on): add 'workspace' to sandbox_limits_unenforced to accept that, or use 'quota'"
            ]
        );
        assert_eq!(
            folder(&["workspace", "pids"]).validate(),
            Vec::<String>::new()
        );
        let quota = Options {
            sandbox_limits_unenforced: vec!["workspace".into(), "disk".into()],
            ..known()
        };
        assert_eq!(
            quota.validate(),
            vec![
                "sandbox_limits_unenforced: 'disk' is not a sandbox limit (memory, swap, cpu, pids, workspace)",
                "sandbox_limits_unenforced: 'workspace' is enforced with workspace_mode 'quota'; list it only with 'folder'",
            ]
        );
    }

    #[test]
    fn an_object_store_for_snapshots_is_refused_by_name() {
        let o = Options {
            workspace_snapshot_store: "s3".into(),
            advertise_url: Some("10.1.2.3:50053".into()),
            ..known()
        };
        assert_eq!(
            o.validate(),
            vec![
                "workspace_snapshot_store: 's3' is not built in this version of Bridle; only 'redis' is (an S3-compatible object store is not)",
                "advertise_url: '10.1.2.3:50053' must be an http:// or https:// address with a host (e.g. http://10.1.2.3:50053)",
            ]
        );
    }

    #[test]
    fn the_advertised_address_is_the_listen_address_or_the_pods() {
        let o = known();
        let any: std::net::SocketAddr = "0.0.0.0:50053".parse().unwrap();
        assert_eq!(o.advertise(any, None), None);
        assert_eq!(
            o.advertise(any, Some("10.1.2.3")).as_deref(),
            Some("http://10.1.2.3:50053")
        );
        assert_eq!(
            o.advertise("127.0.0.1:4000".parse().unwrap(), Some("10.1.2.3"))
                .as_deref(),
            Some("http://127.0.0.1:4000")
        );
        let set = Options {
            advertise_url: Some("http://tools-0.tools:50053".into()),
            ..known()
        };
        assert_eq!(
            set.advertise(any, None).as_deref(),
            Some("http://tools-0.tools:50053")
        );
    }

    #[test]
    fn a_default_quota_above_the_ceiling_is_refused() {
        let o = Options {
            workspace_quota_default: "2Gi".into(),
            workspace_quota_max: "1Gi".into(),
            ..known()
        };
        assert_eq!(
            o.validate(),
            vec!["workspace_quota_default: 2Gi is above workspace_quota_max (1Gi)"]
        );
        assert_eq!(
            known().quotas(),
            Ok(Quotas {
                default: 1 << 30,
                max: 10 << 30
            })
        );
    }

    /// Here and not with the egress tests: `egress_platform` is the options', and the egress
    /// module sits below the options and never names them.
    #[test]
    fn every_address_the_options_name_is_protected_whatever_the_url_form() {
        use bridle_core::manifest::Host;
        let sa = |s: &str| s.parse::<std::net::SocketAddr>().unwrap();
        let o = Options {
            redis_url: "redis+sentinel://10.0.0.1:26379,10.0.0.2:26380/mymaster".into(),
            secrets_url: "dns:///secrets.bridle.svc:50055".into(),
            egress_allow_private: true,
            ..Default::default()
        };
        let p = o.egress_platform().unwrap();
        let any = Host::Name("x.example".into());
        let err = p
            .admit("acme", &any, 26380, vec![sa("10.0.0.2:26380")])
            .unwrap_err();
        assert!(err.contains("this platform's Redis (redis_url)"), "{err}");
        let err = p
            .admit("acme", &Host::parse("secrets.bridle.svc"), 50055, vec![])
            .unwrap_err();
        assert!(err.contains("secrets broker"), "{err}");
        let o = Options {
            redis_url: "redis+cluster://10.0.1.1:6379,10.0.1.2:6379".into(),
            secrets_url: "http://10.0.2.1:50055,http://10.0.2.2:50055".into(),
            egress_allow_private: true,
            ..Default::default()
        };
        let p = o.egress_platform().unwrap();
        for a in ["10.0.1.2:6379", "10.0.2.2:50055"] {
            assert!(
                p.admit("acme", &any, sa(a).port(), vec![sa(a)]).is_err(),
                "{a}"
            );
        }
        assert!(
            p.admit("acme", &any, 6380, vec![sa("10.0.1.2:6380")])
                .is_ok()
        );
    }
}
