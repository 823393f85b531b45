//! The web inbox over HTTP: pending calls listed (escaped), decisions through forms bound to
//! the arguments hash, CSRF-safe, and with auth on: API-key login, roles and tenants.

use std::net::SocketAddr;

use bridle_core::auth::{ApiKeyStore, AuthMode, Role};
use bridle_core::redis_util::Keys;
use bridle_proto::{ApprovalState, DecideRequest, RiskClass};
use reqwest::StatusCode;
use secrecy::SecretString;
use tonic::metadata::MetadataValue;

use crate::browser::{Browser, hidden};
use crate::helpers::*;

const TOKEN: &str = "internal-token-for-tests-0123456789";

pub async fn with_inbox(auth: AuthMode) -> (Harness, SocketAddr) {
    let dir = tempfile::tempdir().unwrap();
    let addr_file = dir.path().join("inbox.addr");
    let file = addr_file.clone();
    let h = Harness::start_with(move |o| {
        o.inbox.listen = Some("127.0.0.1:0".parse().unwrap());
        o.inbox.addr_file = Some(file);
        o.server.auth = auth;
        o.server.internal_token = Some(SecretString::from(TOKEN));
    })
    .await;
    let addr = std::fs::read_to_string(&addr_file)
        .unwrap()
        .parse()
        .unwrap();
    (h, addr)
}

fn with_token<T>(msg: T, token: &str) -> tonic::Request<T> {
    let mut r = tonic::Request::new(msg);
    r.metadata_mut().insert(
        "authorization",
        MetadataValue::try_from(format!("Bearer {token}")).unwrap(),
    );
    r
}

fn as_service<T>(msg: T) -> tonic::Request<T> {
    let mut r = tonic::Request::new(msg);
    r.metadata_mut()
        .insert("x-bridle-service-token", MetadataValue::from_static(TOKEN));
    r.metadata_mut().insert(
        "x-bridle-service",
        MetadataValue::from_static("orchestrator"),
    );
    r
}

#[tokio::test]
async fn decisions_through_forms_are_bound_csrf_safe_and_once() {
    let (h, addr) = with_inbox(AuthMode::Off).await;
    let run = new_run();
    let evil = r#"{"table":"</pre><script>alert(1)</script>"}"#;
    let a = h.pending(&run, "c1", evil).await;
    let mut b = Browser::new(addr);

    let list = b.get("/approvals?tenant=acme").await;
    assert_eq!(list.status, StatusCode::OK);
    assert!(
        list.body.contains(&format!("data-approval=\"{}\"", a.id)),
        "{}",
        list.body
    );
    assert!(!list.body.contains("<script>"), "{}", list.body);
    assert!(
        list.body.contains("&lt;/pre&gt;&lt;script&gt;"),
        "{}",
        list.body
    );
    let csp = list.headers["content-security-policy"].to_str().unwrap();
    assert!(csp.contains("default-src 'none'") && csp.contains("frame-ancestors 'none'"));
    assert_eq!(list.headers["cache-control"], "no-store");
    let csrf = hidden(&list.body, "csrf");
    let sha = hidden(&list.body, "sha");
    assert_eq!(sha, a.arguments_sha256);
    let path = format!("/approvals/{}", a.id);

    // A form without the token, with another token, or from another site changes nothing.
    for (form, origin) in [
        (vec![("decision", "approve"), ("sha", sha.as_str())], None),
        (
            vec![
                ("csrf", "00ff"),
                ("decision", "approve"),
                ("sha", sha.as_str()),
            ],
            None,
        ),
        (
            vec![
                ("csrf", csrf.as_str()),
                ("decision", "approve"),
                ("sha", sha.as_str()),
            ],
            Some("http://evil.example"),
        ),
    ] {
        let r = b.post(&path, &form, origin).await;
        assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.body);
    }
    assert_eq!(
        get(&mut h.client.clone(), &a.id).await.unwrap().state,
        ApprovalState::Pending as i32
    );

    // Arguments other than those the page showed: refused.
    let other = "0".repeat(64);
    let r = b
        .post(
            &path,
            &[("csrf", &csrf), ("decision", "approve"), ("sha", &other)],
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::CONFLICT);
    assert!(r.body.contains("changed"), "{}", r.body);

    let origin = format!("http://{addr}");
    let r = b
        .post(
            &path,
            &[
                ("csrf", &csrf),
                ("decision", "approve"),
                ("sha", &sha),
                ("reason", "looks right"),
                ("approver", "alice"),
            ],
            Some(&origin),
        )
        .await;
    assert_eq!(
        (r.status, r.location.as_str()),
        (StatusCode::SEE_OTHER, path.as_str())
    );
    let stored = get(&mut h.client.clone(), &a.id).await.unwrap();
    assert_eq!(
        (
            stored.state,
            stored.decided_by.as_str(),
            stored.reason.as_str()
        ),
        (ApprovalState::Approved as i32, "alice", "looks right")
    );
    let page = b.get(&path).await;
    assert!(
        page.body.contains("by alice — looks right"),
        "{}",
        page.body
    );

    // Replayed: refused, with the state it is in.
    let r = b
        .post(
            &path,
            &[("csrf", &csrf), ("decision", "deny"), ("sha", &sha)],
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::CONFLICT);
    assert!(r.body.contains("already approved by alice"), "{}", r.body);
    h.stop().await;
}

#[tokio::test]
async fn with_auth_people_log_in_with_api_keys_and_need_the_approver_role() {
    let (h, addr) = with_inbox(AuthMode::Keys).await;
    let conn = bridle_core::redis_util::connect(&h.redis.url())
        .await
        .unwrap();
    let keys = ApiKeyStore::new(conn, &Keys::new(&h.prefix));
    let (alice, alice_rec) = keys
        .create("acme", "alice", &[Role::Approver])
        .await
        .unwrap();
    let (victor, _) = keys
        .create("acme", "victor", &[Role::Viewer])
        .await
        .unwrap();
    let (gary, _) = keys
        .create("globex", "gary", &[Role::Approver])
        .await
        .unwrap();

    // Evaluate is for services.
    let req = destructive(&new_run(), "c1", r#"{"table":"orders"}"#);
    let e = h
        .client
        .clone()
        .evaluate(with_token(req.clone(), &alice))
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::PermissionDenied, "{e:?}");
    let a = h
        .client
        .clone()
        .evaluate(as_service(req))
        .await
        .unwrap()
        .into_inner()
        .approval
        .unwrap();
    let path = format!("/approvals/{}", a.id);

    let mut b = Browser::new(addr);
    let r = b.get("/approvals").await;
    assert_eq!(
        (r.status, r.location.as_str()),
        (StatusCode::SEE_OTHER, "/login")
    );
    let login = b.get("/login").await;
    let pre = hidden(&login.body, "csrf");
    let r = b
        .post("/login", &[("csrf", &pre), ("api_key", "bk_wrong")], None)
        .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert!(r.body.contains("not valid"), "{}", r.body);
    let r = b.post("/login", &[("api_key", &alice)], None).await;
    assert_eq!(
        r.status,
        StatusCode::FORBIDDEN,
        "login needs the form's token too"
    );

    // A viewer sees the call but has no form, and cannot post one.
    let mut v = Browser::new(addr);
    let pre_v = hidden(&v.get("/login").await.body, "csrf");
    let r = v
        .post("/login", &[("csrf", &pre_v), ("api_key", &victor)], None)
        .await;
    assert_eq!(
        (r.status, r.location.as_str()),
        (StatusCode::SEE_OTHER, "/approvals")
    );
    let page = v.get("/approvals").await;
    assert!(
        page.body.contains(&a.id) && !page.body.contains("class=\"decide\""),
        "{}",
        page.body
    );
    let vcsrf = hidden(&page.body, "csrf");
    let r = v
        .post(
            &path,
            &[
                ("csrf", &vcsrf),
                ("decision", "approve"),
                ("sha", &a.arguments_sha256),
            ],
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert!(
        r.body.contains("does not have the approver role"),
        "{}",
        r.body
    );

    // Another tenant's approver does not even see it.
    let mut g = Browser::new(addr);
    let pre_g = hidden(&g.get("/login").await.body, "csrf");
    g.post("/login", &[("csrf", &pre_g), ("api_key", &gary)], None)
        .await;
    assert_eq!(g.get(&path).await.status, StatusCode::NOT_FOUND);
    let page = g.get("/approvals?tenant=acme").await;
    assert_eq!(page.status, StatusCode::FORBIDDEN, "{}", page.body);

    // The approver decides; the decision records who from the login, not from the form.
    let r = b
        .post("/login", &[("csrf", &pre), ("api_key", &alice)], None)
        .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER);
    let page = b.get("/approvals").await;
    assert!(!page.body.contains("name=\"approver\""), "{}", page.body);
    let csrf = hidden(&page.body, "csrf");
    assert_ne!(csrf, pre, "the session has its own token");
    let r = b
        .post(
            &path,
            &[
                ("csrf", &csrf),
                ("decision", "deny"),
                ("sha", &a.arguments_sha256),
                ("approver", "mallory"),
            ],
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", r.body);
    let stored = h
        .client
        .clone()
        .get(with_token(
            bridle_proto::GetApprovalRequest { id: a.id.clone() },
            &alice,
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(stored.state, ApprovalState::Denied as i32);
    assert_eq!(stored.decided_by, format!("alice ({})", alice_rec.id));

    // Logging out ends the session.
    let r = b.post("/logout", &[("csrf", &csrf)], None).await;
    assert_eq!(
        (r.status, r.location.as_str()),
        (StatusCode::SEE_OTHER, "/login")
    );
    assert_eq!(b.get("/approvals").await.location, "/login");
    h.stop().await;
}

#[tokio::test]
async fn grpc_decide_needs_the_approver_role_and_records_the_key() {
    let (h, _) = with_inbox(AuthMode::Keys).await;
    let conn = bridle_core::redis_util::connect(&h.redis.url())
        .await
        .unwrap();
    let keys = ApiKeyStore::new(conn, &Keys::new(&h.prefix));
    let (alice, rec) = keys
        .create("acme", "alice", &[Role::Approver])
        .await
        .unwrap();
    let (victor, _) = keys
        .create("acme", "victor", &[Role::Viewer])
        .await
        .unwrap();
    let (gary, _) = keys
        .create("globex", "gary", &[Role::Approver])
        .await
        .unwrap();
    let a = h
        .client
        .clone()
        .evaluate(as_service(request(
            &new_run(),
            "c1",
            "rm",
            RiskClass::Destructive,
            "{}",
            &["rm"],
        )))
        .await
        .unwrap()
        .into_inner()
        .approval
        .unwrap();
    let decide = |approver: &str| DecideRequest {
        id: a.id.clone(),
        approve: true,
        reason: "ok".into(),
        approver: approver.into(),
        ..Default::default()
    };
    let mut c = h.client.clone();
    let e = c
        .decide(tonic::Request::new(decide("x")))
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::Unauthenticated);
    let e = c
        .decide(with_token(decide("x"), &victor))
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::PermissionDenied, "{e:?}");
    let e = c.decide(with_token(decide("x"), &gary)).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::NotFound, "{e:?}");
    // Listing another tenant is refused; one's own is the default.
    let e = c
        .list(with_token(
            bridle_proto::ListApprovalsRequest {
                tenant: "acme".into(),
                ..Default::default()
            },
            &gary,
        ))
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::PermissionDenied);
    let mine = c
        .list(with_token(
            bridle_proto::ListApprovalsRequest::default(),
            &victor,
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(mine.approvals.len(), 1);

    let done = c
        .decide(with_token(decide("mallory"), &alice))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(done.decided_by, format!("alice ({})", rec.id));
    let audit = h.audit().await;
    assert_eq!(
        audit.last().unwrap()["actor"],
        format!("alice ({})", rec.id)
    );
    h.stop().await;
}
