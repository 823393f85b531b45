//! People log in to the inbox with their identity provider (issue 21): the authorization code
//! flow with PKCE against a local issuer that checks the flow as a real one does, the state
//! bound to the browser and to Redis (once), and the ID token checked like any token.

use bridle_core::auth::AuthMode;
use bridle_testkit::oidc::{LocalIssuer, Signer};
use reqwest::StatusCode;

use crate::browser::Browser;
use crate::helpers::*;

const CLIENT: &str = "bridle-inbox";

async fn start() -> (Harness, Browser, LocalIssuer) {
    let issuer = LocalIssuer::start().await.unwrap();
    let signer = Signer::new("k1").unwrap();
    issuer.publish(&signer);
    let mut claims = issuer.claims();
    claims["preferred_username"] = "Alice Example".into();
    issuer.enable_login(signer, claims);
    let dir = tempfile::tempdir().unwrap();
    let addr_file = dir.path().join("inbox.addr");
    let (file, url) = (addr_file.clone(), issuer.url.clone());
    let h = Harness::start_with(move |o| {
        o.inbox.listen = Some("127.0.0.1:0".parse().unwrap());
        o.inbox.addr_file = Some(file);
        o.server.auth = AuthMode::Keys;
        o.server.oidc = vec![bridle_core::oidc::OidcIssuer {
            issuer: url.clone(),
            audiences: vec![CLIENT.into()],
            ..Default::default()
        }];
        o.inbox.oidc_login = Some(bridle_approvals::OidcLogin {
            issuer: url,
            client_id: CLIENT.into(),
            scopes: vec!["openid".into(), "email".into()],
        });
    })
    .await;
    let addr = std::fs::read_to_string(&addr_file)
        .unwrap()
        .parse()
        .unwrap();
    (h, Browser::new(addr), issuer)
}

/// Follows the issuer's part: its authorization endpoint sends the browser back at once.
async fn at_issuer(location: &str) -> String {
    let r = bridle_core::http_client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .build()
        .unwrap()
        .get(location)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::SEE_OTHER, "{:?}", r.text().await);
    r.headers()
        .get("location")
        .unwrap()
        .to_str()
        .unwrap()
        .to_string()
}

#[tokio::test]
async fn a_person_logs_in_with_the_identity_provider_and_the_flow_is_bound_and_single_use() {
    let (h, mut b, _issuer) = start().await;
    let login = b.get("/login").await;
    assert!(
        login.body.contains("href=\"/login/oidc\""),
        "{}",
        login.body
    );

    let start = b.get("/login/oidc").await;
    assert_eq!(start.status, StatusCode::SEE_OTHER);
    assert!(
        start.location.contains("code_challenge_method=S256"),
        "{}",
        start.location
    );
    assert!(start.location.contains(&format!("client_id={CLIENT}")));
    let back = at_issuer(&start.location).await;
    let callback = back.strip_prefix(b.base()).unwrap().to_string();
    assert!(callback.starts_with("/login/oidc/callback?code="), "{back}");

    // Another browser cannot finish it: the state cookie is not there.
    let saved = b.clone_cookie("bridle_oidc_state");
    b.forget("bridle_oidc_state");
    let stolen = b.get(&callback).await;
    assert_eq!(stolen.status, StatusCode::UNAUTHORIZED);
    assert!(
        stolen.body.contains("not started from this browser"),
        "{}",
        stolen.body
    );
    b.set_cookie("bridle_oidc_state", &saved);

    let done = b.get(&callback).await;
    assert_eq!(done.status, StatusCode::OK, "{}", done.body);
    assert!(
        done.body.contains("Welcome, Alice Example."),
        "{}",
        done.body
    );
    let list = b.get("/approvals").await;
    assert_eq!(list.status, StatusCode::OK, "{}", list.body);
    assert!(list.body.contains("Alice Example"), "{}", list.body);

    // The same code and state again: taken already.
    b.set_cookie("bridle_oidc_state", &saved);
    let again = b.get(&callback).await;
    assert_eq!(again.status, StatusCode::UNAUTHORIZED);
    assert!(
        again.body.contains("expired or was already used"),
        "{}",
        again.body
    );

    // A code the issuer never gave: refused by it, and said so.
    let start = b.get("/login/oidc").await;
    let back = at_issuer(&start.location).await;
    let forged = back
        .strip_prefix(b.base())
        .unwrap()
        .replacen("code=", "code=forged", 1);
    let refused = b.get(&forged).await;
    assert_eq!(refused.status, StatusCode::UNAUTHORIZED);
    assert!(
        refused.body.contains("refused the login"),
        "{}",
        refused.body
    );

    // The issuer said no.
    let denied = b
        .get("/login/oidc/callback?error=access_denied&state=x")
        .await;
    assert_eq!(denied.status, StatusCode::UNAUTHORIZED);
    assert!(
        denied.body.contains("did not log you in (access_denied)"),
        "{}",
        denied.body
    );
    h.stop().await;
}
