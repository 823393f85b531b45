//! Router replicas as separate processes (the real binary), sharing the harness's Redis and
//! secrets broker.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;

use bridle_proto::router_client::RouterClient;
use tokio::process::{Child, Command};
use tonic::transport::Channel;

use crate::helpers::{Harness, WAIT};

pub struct Replica {
    pub child: Child,
    _dir: tempfile::TempDir,
    /// Its gRPC address ("127.0.0.1:port").
    pub grpc: String,
    pub http: String,
    pub router: RouterClient<Channel>,
    /// Its log (stderr, JSON), with a line per gRPC call it received.
    pub log: PathBuf,
}

async fn read_addr(path: &PathBuf) -> String {
    bridle_testkit::wait_for("a router replica's address file", WAIT, || async {
        std::fs::read_to_string(path)
            .ok()
            .filter(|s| !s.trim().is_empty())
    })
    .await
    .unwrap()
    .trim()
    .to_string()
}

impl Replica {
    /// How many calls of `method` ("/bridle.v1.Router/ListModels") this replica received.
    pub fn calls(&self, method: &str) -> usize {
        std::fs::read_to_string(&self.log)
            .unwrap()
            .lines()
            .filter(|l| l.contains("call received") && l.contains(method))
            .count()
    }

    /// Starts `bridle-router` with the harness's Redis, key prefix and broker, an HTTP front,
    /// and `env` (BRIDLE_ROUTER_* settings) on top.
    pub async fn start(h: &Harness, env: &[(&str, &str)]) -> Replica {
        Self::start_at(h, env, "127.0.0.1:0").await
    }

    /// [`Replica::start`] with its gRPC listener on `listen` (a replica restarted where
    /// another was).
    pub async fn start_at(h: &Harness, env: &[(&str, &str)], listen: &str) -> Replica {
        let dir = tempfile::tempdir().unwrap();
        let grpc_file = dir.path().join("grpc");
        let http_file = dir.path().join("http");
        let log = dir.path().join("log");
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_bridle-router"));
        cmd.arg("--listen")
            .arg(listen)
            .arg("--addr-file")
            .arg(&grpc_file)
            .env("BRIDLE_ROUTER_REDIS_URL", h.redis.url())
            .env("BRIDLE_ROUTER_KEY_PREFIX", &h.prefix)
            .env("BRIDLE_ROUTER_SECRETS_URL", &h.secrets_url)
            .env("BRIDLE_ROUTER_HTTP_LISTEN", "127.0.0.1:0")
            .env("BRIDLE_ROUTER_HTTP_ADDR_FILE", &http_file)
            .env("BRIDLE_AUTH", "off")
            // Each call it takes is logged, so a test can count which replica served what.
            .env("BRIDLE_LOG", "warn,bridle_core::server=debug")
            .env("BRIDLE_LOG_FORMAT", "json")
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .kill_on_drop(true);
        for (k, v) in env {
            cmd.env(k, v);
        }
        let child = cmd.spawn().unwrap();
        let grpc = read_addr(&grpc_file).await;
        let http = read_addr(&http_file).await;
        let ch = tonic::transport::Endpoint::from_shared(format!("http://{grpc}"))
            .unwrap()
            .timeout(WAIT)
            .connect()
            .await
            .unwrap();
        Replica {
            child,
            _dir: dir,
            grpc,
            http: format!("http://{http}"),
            router: RouterClient::new(ch),
            log,
        }
    }
}
