//! Errors quote input only up to a bound: a megabyte in a field gets the usual error, short
//! enough for any gRPC client's metadata limit (16 KiB in most), not the megabyte back.

use bridle_core::auth::{ApiKeyStore, AuthMode, Role};
use bridle_core::redact::preview;
use bridle_core::redis_util::Keys;
use bridle_proto::{
    ApplyRequest, DecideRequest, GetApprovalRequest, ListApprovalsRequest, ManifestDocument,
    RiskClass, WatchApprovalsRequest,
};
use tonic::metadata::MetadataValue;

use crate::browser::Browser;
use crate::helpers::*;
use crate::inbox::with_inbox;

fn huge() -> String {
    "x".repeat(1 << 20)
}

/// The error is `code` and short; `what` names the case.
fn bounded<T: std::fmt::Debug>(what: &str, r: Result<T, tonic::Status>, code: tonic::Code) {
    let s = r.expect_err(what);
    assert_eq!(s.code(), code, "{what}: {}", preview(s.message(), 300));
    assert!(
        s.message().len() < 1024,
        "{what}: {} bytes: {}",
        s.message().len(),
        preview(s.message(), 300)
    );
}

#[tokio::test]
async fn grpc_errors_quote_input_only_up_to_a_bound() {
    let h = Harness::start().await;
    let mut c = h.client.clone();
    let invalid = tonic::Code::InvalidArgument;
    let call = || request(&new_run(), "c1", "ls", RiskClass::ReadOnly, "{}", &["ls"]);
    let with = |change: &dyn Fn(&mut bridle_proto::EvaluateRequest)| {
        let mut r = call();
        change(&mut r);
        r
    };

    for (what, req) in [
        ("agent", with(&|r| r.scope.as_mut().unwrap().agent = huge())),
        (
            "tenant",
            with(&|r| r.scope.as_mut().unwrap().tenant = huge()),
        ),
        ("run", with(&|r| r.scope.as_mut().unwrap().run_id = huge())),
        (
            "scope.tool",
            with(&|r| r.scope.as_mut().unwrap().tool = huge()),
        ),
        ("tool", with(&|r| r.tool.as_mut().unwrap().name = huge())),
        ("call", with(&|r| r.call_id = huge())),
    ] {
        bounded(what, c.evaluate(req).await, invalid);
    }

    let a = h.pending(&new_run(), "c1", "{}").await;
    let decision = |change: &dyn Fn(&mut DecideRequest)| {
        let mut d = decide(&a.id, true, "alice");
        change(&mut d);
        d
    };
    for (what, req) in [
        ("decide id", decision(&|d| d.id = huge())),
        ("reason", decision(&|d| d.reason = huge())),
        ("approver", decision(&|d| d.approver = huge())),
        ("sha", decision(&|d| d.arguments_sha256 = huge())),
    ] {
        bounded(what, c.decide(req).await, invalid);
    }
    bounded(
        "get id",
        c.get(GetApprovalRequest { id: huge() }).await,
        invalid,
    );
    bounded(
        "list tenant",
        c.list(ListApprovalsRequest {
            tenant: huge(),
            ..Default::default()
        })
        .await,
        invalid,
    );
    bounded(
        "list run",
        c.list(ListApprovalsRequest {
            tenant: "acme".into(),
            run_id: huge(),
            ..Default::default()
        })
        .await,
        invalid,
    );
    bounded(
        "watch tenant",
        c.watch(WatchApprovalsRequest {
            tenant: huge(),
            from_offset: 0,
        })
        .await
        .map(|_| ()),
        invalid,
    );

    // Policies: a long source name, a long word in the Cedar text, long annotations.
    let long = "y".repeat(200_000);
    let policy = |source: &str, cedar: &str| ManifestDocument {
        source: source.into(),
        first_line: 1,
        yaml: format!(
            "apiVersion: bridle.dev/v1\nkind: Policy\nmetadata:\n  name: p\n  tenant: acme\nspec:\n  cedar: |\n    {cedar}\n"
        ),
    };
    for (what, doc) in [
        (
            "source",
            policy(
                &huge(),
                "permit(principal, action, resource) when { nope };",
            ),
        ),
        (
            "a long word",
            policy(
                "p.yaml",
                &format!("permit(principal, action, resource) when {{ {long} }};"),
            ),
        ),
        (
            "a long string",
            policy(
                "p.yaml",
                &format!("permit(principal, action, resource) when {{ \"{long}\" }};"),
            ),
        ),
        (
            "a long id, twice",
            policy(
                "p.yaml",
                &format!(
                    "@id(\"{half}\") permit(principal, action, resource); @id(\"{half}\") permit(principal, action, resource);",
                    half = &long[..100_000]
                ),
            ),
        ),
        (
            "a long annotation",
            policy(
                "p.yaml",
                &format!("@{long}(\"x\") permit(principal, action, resource);"),
            ),
        ),
    ] {
        bounded(
            what,
            h.manifests()
                .await
                .apply(ApplyRequest {
                    actor: None,
                    documents: vec![doc],
                    dry_run: true,
                    tenant: "acme".into(),
                })
                .await,
            invalid,
        );
    }

    // However many problems a text has, ten are listed and the rest counted.
    let many: String = (0..50)
        .map(|i| format!("permit(principal, action, resource) when {{ principal.nope{i} }};\n"))
        .collect();
    let e = h
        .manifests()
        .await
        .apply(ApplyRequest {
            actor: None,
            documents: vec![ManifestDocument {
                source: "many.yaml".into(),
                first_line: 0,
                yaml: format!(
                    "apiVersion: bridle.dev/v1\nkind: Policy\nmetadata:\n  name: p\n  tenant: acme\nspec:\n  cedar: {}\n",
                    serde_json::to_string(&many).unwrap()
                ),
            }],
            dry_run: true,
            tenant: "acme".into(),
        })
        .await
        .unwrap_err();
    let m = e.message();
    assert_eq!(m.matches("nope").count(), 10, "{m}");
    assert!(m.contains("and 40 more problems not listed"), "{m}");
    h.stop().await;
}

#[tokio::test]
async fn a_key_of_one_tenant_naming_a_long_other_tenant_is_not_quoted_back() {
    let (h, addr) = with_inbox(AuthMode::Keys).await;
    let conn = bridle_core::redis_util::connect(&h.redis.url())
        .await
        .unwrap();
    let keys = ApiKeyStore::new(conn, &Keys::new(&h.prefix));
    let (alice, _) = keys
        .create("acme", "alice", &[Role::Approver])
        .await
        .unwrap();
    let mut req = tonic::Request::new(ListApprovalsRequest {
        tenant: huge(),
        ..Default::default()
    });
    req.metadata_mut().insert(
        "authorization",
        MetadataValue::try_from(format!("Bearer {alice}")).unwrap(),
    );
    bounded(
        "list tenant",
        h.client.clone().list(req).await,
        tonic::Code::InvalidArgument,
    );

    // The inbox: a long id in the path, a long tenant in the query.
    let mut b = Browser::new(addr);
    let login = b.get("/login").await;
    let csrf = crate::browser::hidden(&login.body, "csrf");
    let r = b
        .post("/login", &[("csrf", &csrf), ("api_key", &alice)], None)
        .await;
    assert!(r.status.is_redirection(), "{}", r.body);
    let long = "z".repeat(60_000);
    for path in [
        format!("/approvals/apr_{long}"),
        format!("/approvals/{long}"),
        format!("/approvals?tenant={long}"),
    ] {
        let r = b.get(&path).await;
        assert!(r.status.is_client_error(), "{}", r.status);
        assert!(r.body.len() < 4096, "{} bytes", r.body.len());
    }
    h.stop().await;
}
