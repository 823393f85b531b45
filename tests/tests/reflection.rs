//! gRPC reflection on every service's port: both protocol versions (v1, and v1alpha, which
//! Python's stock grpcio-reflection client and older tools speak), each listing exactly the
//! services that port serves, so a generic client never picks a method that answers
//! UNIMPLEMENTED.

#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

mod support;

use std::collections::BTreeSet;

use support::Harness;
use tonic::transport::Channel;

const COMMON: [&str; 3] = [
    "grpc.health.v1.Health",
    "grpc.reflection.v1.ServerReflection",
    "grpc.reflection.v1alpha.ServerReflection",
];

/// Each port (by the binary that serves it) and the bridle services it serves.
fn expected(binary: &str) -> BTreeSet<String> {
    let own: &[&str] = match binary {
        "bridle-orchestrator" => &[
            "bridle.v1.Orchestrator",
            "bridle.v1.Manifests",
            "bridle.v1.Admin",
        ],
        "bridle-router" => &["bridle.v1.Router", "bridle.v1.Manifests"],
        "bridle-tools" => &["bridle.v1.Tools", "bridle.v1.Manifests"],
        "bridle-approvals" => &["bridle.v1.Approvals", "bridle.v1.Manifests"],
        "bridle-secrets" => &["bridle.v1.Secrets", "bridle.v1.Manifests"],
        other => panic!("no expectation for {other}"),
    };
    own.iter()
        .chain(COMMON.iter())
        .map(|s| s.to_string())
        .collect()
}

async fn list_v1(ch: Channel) -> BTreeSet<String> {
    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;
    use tonic_reflection::pb::v1::{ServerReflectionRequest, ServerReflectionResponse};
    let req = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut answers = ServerReflectionClient::new(ch)
        .server_reflection_info(futures::stream::iter(vec![req]))
        .await
        .unwrap()
        .into_inner();
    let ServerReflectionResponse {
        message_response: Some(MessageResponse::ListServicesResponse(list)),
        ..
    } = answers.message().await.unwrap().unwrap()
    else {
        panic!("v1: not a list of services");
    };
    list.service.into_iter().map(|s| s.name).collect()
}

async fn list_v1alpha(ch: Channel) -> BTreeSet<String> {
    use tonic_reflection::pb::v1alpha::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1alpha::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1alpha::server_reflection_response::MessageResponse;
    use tonic_reflection::pb::v1alpha::{ServerReflectionRequest, ServerReflectionResponse};
    let req = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut answers = ServerReflectionClient::new(ch)
        .server_reflection_info(futures::stream::iter(vec![req]))
        .await
        .unwrap()
        .into_inner();
    let ServerReflectionResponse {
        message_response: Some(MessageResponse::ListServicesResponse(list)),
        ..
    } = answers.message().await.unwrap().unwrap()
    else {
        panic!("v1alpha: not a list of services");
    };
    list.service.into_iter().map(|s| s.name).collect()
}

/// Python's stock reflection client (grpcio-reflection, v1alpha), as a platform team's script
/// would use it: the services it lists, and that a listed service's methods resolve.
const PYTHON_CLIENT: &str = r#"
import sys, grpc
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import ProtoReflectionDescriptorDatabase
from google.protobuf.descriptor_pool import DescriptorPool
db = ProtoReflectionDescriptorDatabase(grpc.insecure_channel(sys.argv[1]))
services = db.get_services()
pool = DescriptorPool(db)
for s in services:
    if s.startswith("bridle.v1."):
        methods = [m.name for m in pool.FindServiceByName(s).methods]
        assert methods, s
print("\n".join(services))
"#;

fn list_python(addr: &str) -> BTreeSet<String> {
    let out = std::process::Command::new("python3")
        .args(["-c", PYTHON_CLIENT, addr.trim_start_matches("http://")])
        .output()
        .expect("python3 (scripts/install-deps.sh installs grpcio-reflection for it)");
    assert!(
        out.status.success(),
        "the grpcio-reflection client failed (scripts/install-deps.sh installs it):\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn every_port_lists_exactly_its_own_services_over_v1_and_v1alpha() {
    let h = Harness::start().await.unwrap();
    let ports: Vec<(String, String)> = h
        .services
        .iter()
        .chain(&h.orchestrators)
        .map(|p| (p.name.clone(), p.addr.clone()))
        .collect();
    assert_eq!(ports.len(), 5, "{ports:?}");
    for (binary, addr) in ports {
        let want = expected(&binary);
        let ch = h.channel(addr.clone(), "").await.unwrap();
        assert_eq!(list_v1(ch.clone()).await, want, "{binary}: reflection v1");
        assert_eq!(list_v1alpha(ch).await, want, "{binary}: reflection v1alpha");
        let py = tokio::task::spawn_blocking({
            let addr = addr.clone();
            move || list_python(&addr)
        })
        .await
        .unwrap();
        assert_eq!(py, want, "{binary}: grpcio-reflection (Python)");
    }

    // What is listed answers; what is not is not served: the router's ListModels is not on
    // the orchestrator's port, the orchestrator's own is.
    let ch = h.channel(h.orchestrator.clone(), "").await.unwrap();
    let e = bridle_proto::router_client::RouterClient::new(ch.clone())
        .list_models(bridle_proto::ListModelsRequest::default())
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::Unimplemented, "{e:?}");
    bridle_proto::orchestrator_client::OrchestratorClient::new(ch)
        .list_models(bridle_proto::OrchestratorListModelsRequest::default())
        .await
        .unwrap();
}
