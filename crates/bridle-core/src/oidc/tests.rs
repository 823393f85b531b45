//! Against a small local issuer (the testkit's): keys generated in the test, its discovery
//! document and JWKS served on loopback, tokens signed in the test.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use bridle_testkit::oidc::{LocalIssuer, Signer};
use jsonwebtoken::{EncodingKey, Header, encode};
use serde_json::json;

use super::*;

fn config(issuer: &LocalIssuer) -> OidcIssuer {
    OidcIssuer {
        issuer: issuer.url.clone(),
        audiences: vec!["bridle".into()],
        group_roles: BTreeMap::from([("sre".to_string(), vec!["operator".to_string()])]),
        ..Default::default()
    }
}

fn refused(r: Result<Principal, Error>) -> String {
    match r {
        Err(Error::Unauthenticated(m)) => m,
        other => panic!("expected UNAUTHENTICATED, got {other:?}"),
    }
}

#[tokio::test]
async fn tokens_of_a_trusted_issuer_become_callers_and_bad_ones_are_refused() {
    let issuer = LocalIssuer::start().await.unwrap();
    let key = Signer::new("k1").unwrap();
    issuer.publish(&key);
    let oidc = Oidc::new(&[config(&issuer)]).unwrap();
    let claims = issuer.claims();

    let p = oidc.verify(&key.sign(&claims).unwrap()).await.unwrap();
    assert_eq!(p.id, "oidc:u-123");
    assert_eq!(p.name, "alice@example.com");
    assert_eq!(p.tenant.as_deref(), Some("acme"));
    // "owner" is not a Bridle role; the group sre gives operator.
    assert_eq!(p.roles, vec![Role::Operator, Role::Viewer]);
    assert_eq!(p.kind(), "user");
    assert!(!p.service);

    let with = |f: &dyn Fn(&mut Value)| {
        let mut c = claims.clone();
        f(&mut c);
        key.sign(&c).unwrap()
    };
    let expired = with(&|c| c["exp"] = json!(1_000_000));
    assert!(refused(oidc.verify(&expired).await).contains("expired"));
    let early = with(&|c| c["nbf"] = json!(c["exp"].as_u64().unwrap()));
    assert!(refused(oidc.verify(&early).await).contains("not valid yet"));
    let audience = with(&|c| c["aud"] = json!("someone-else"));
    assert!(refused(oidc.verify(&audience).await).contains("audience"));
    let foreign = with(&|c| c["iss"] = json!("https://evil.example"));
    assert!(refused(oidc.verify(&foreign).await).contains("not one this service trusts"));
    let no_sub = with(&|c| {
        c.as_object_mut().unwrap().remove("sub");
    });
    assert!(refused(oidc.verify(&no_sub).await).contains("'sub'"));

    // Tampered: the payload changed after signing.
    let good = key.sign(&claims).unwrap();
    let parts: Vec<&str> = good.split('.').collect();
    let mut forged: Value =
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[1]).unwrap()).unwrap();
    forged["tenant"] = json!("other");
    let forged = format!(
        "{}.{}.{}",
        parts[0],
        URL_SAFE_NO_PAD.encode(forged.to_string()),
        parts[2]
    );
    assert!(refused(oidc.verify(&forged).await).contains("signature"));

    // Signed by a key the issuer does not publish.
    let stranger = Signer::new("k1").unwrap();
    assert!(refused(oidc.verify(&stranger.sign(&claims).unwrap()).await).contains("signature"));
    let unknown = Signer::new("k-unknown").unwrap();
    let fetches = issuer.fetches();
    assert!(refused(oidc.verify(&unknown.sign(&claims).unwrap()).await).contains("'k-unknown'"));
    // An unknown kid may fetch again, but not more than once per REFETCH_GAP.
    let _ = oidc.verify(&unknown.sign(&claims).unwrap()).await;
    assert!(issuer.fetches() <= fetches + 1);

    // HMAC and "none" are never accepted.
    let mut h = Header::new(Algorithm::HS256);
    h.kid = Some("k1".into());
    let hs = encode(&h, &claims, &EncodingKey::from_secret(b"guessable")).unwrap();
    assert!(refused(oidc.verify(&hs).await).contains("asymmetric"));
    let none = format!(
        "{}.{}.",
        URL_SAFE_NO_PAD.encode(r#"{"alg":"none","typ":"JWT"}"#),
        URL_SAFE_NO_PAD.encode(claims.to_string())
    );
    assert!(refused(oidc.verify(&none).await).contains("not a valid JWT"));
    assert!(refused(oidc.verify("eyJ.not.a-token").await).contains("not a valid JWT"));

    // A token without a tenant claim, from an issuer bound to no tenant, acts for nobody.
    let no_tenant = with(&|c| {
        c.as_object_mut().unwrap().remove("tenant");
    });
    assert!(matches!(
        oidc.verify(&no_tenant).await,
        Err(Error::PermissionDenied(m)) if m.contains("'tenant' claim")
    ));
}

#[tokio::test]
async fn a_rotated_key_is_fetched_when_a_token_names_it() {
    let issuer = LocalIssuer::start().await.unwrap();
    let old = Signer::new("2026-11").unwrap();
    issuer.publish(&old);
    let mut cfg = config(&issuer);
    cfg.tenant = Some("bound".into());
    let oidc = Oidc::new(&[cfg]).unwrap();
    let claims = issuer.claims();
    let p = oidc.verify(&old.sign(&claims).unwrap()).await.unwrap();
    // The issuer's own tenant wins over the claim.
    assert_eq!(p.tenant.as_deref(), Some("bound"));

    // The issuer rotates; a token with the new kid arrives after the gap between fetches.
    let new = Signer::new("2026-12").unwrap();
    issuer.publish(&new);
    age(&oidc, REFETCH_GAP * 2);
    let p = oidc.verify(&new.sign(&claims).unwrap()).await.unwrap();
    assert_eq!(p.id, "oidc:u-123");
}

/// Makes the first issuer's keys look fetched `by` ago.
fn age(oidc: &Oidc, by: Duration) {
    let mut keys = oidc.issuers[0].keys.write().unwrap();
    let aged = Keys {
        fetched: Instant::now().checked_sub(by),
        by_kid: keys.by_kid.clone(),
        anonymous: keys.anonymous.clone(),
    };
    *keys = Arc::new(aged);
}

#[tokio::test]
async fn while_the_issuer_is_down_known_keys_work_for_a_while_and_unknown_ones_are_refused() {
    let issuer = LocalIssuer::start().await.unwrap();
    let key = Signer::new("k1").unwrap();
    issuer.publish(&key);
    let oidc = Oidc::new(&[config(&issuer)]).unwrap();
    let claims = issuer.claims();
    oidc.verify(&key.sign(&claims).unwrap()).await.unwrap();

    issuer.set_down(true);
    // Due a refresh, which fails: the key fetched before still works.
    age(&oidc, KEYS_REFRESH + REFETCH_GAP);
    oidc.verify(&key.sign(&claims).unwrap()).await.unwrap();
    // A key never seen cannot be checked: refused.
    let unknown = Signer::new("k2").unwrap();
    age(&oidc, KEYS_REFRESH + REFETCH_GAP);
    assert!(matches!(
        oidc.verify(&unknown.sign(&claims).unwrap()).await,
        Err(Error::Unavailable { .. })
    ));
    // Past their life, the old keys stop working too, until the issuer answers again.
    age(&oidc, KEYS_TTL + REFETCH_GAP);
    assert!(matches!(
        oidc.verify(&key.sign(&claims).unwrap()).await,
        Err(Error::Unavailable { .. })
    ));
    issuer.set_down(false);
    age(&oidc, KEYS_TTL + REFETCH_GAP);
    oidc.verify(&key.sign(&claims).unwrap()).await.unwrap();
}

#[test]
fn issuer_options_name_their_problems() {
    let mut out = Vec::new();
    validate(
        &[
            OidcIssuer {
                issuer: "http://login.example.com".into(),
                ..Default::default()
            },
            OidcIssuer {
                issuer: "https://login.example.com".into(),
                audiences: vec!["bridle".into()],
                jwks_uri: Some("ftp://x".into()),
                tenant: Some("Not A Tenant".into()),
                group_roles: BTreeMap::from([("g".to_string(), vec!["boss".to_string()])]),
                ..Default::default()
            },
            OidcIssuer {
                issuer: "https://login.example.com".into(),
                audiences: vec!["bridle".into()],
                tenant_claim: String::new(),
                ..Default::default()
            },
        ],
        &mut out,
    );
    let all = out.join("\n");
    for want in [
        "oidc[0].issuer: 'http://login.example.com' must be an https:// URL",
        "oidc[0].audiences: name at least one audience",
        "oidc[1].jwks_uri: 'ftp://x'",
        "oidc[1].tenant:",
        "oidc[1].group_roles.g: 'boss' is not a role",
        "oidc[2].tenant_claim: set it, or set tenant",
        "oidc[2].issuer: 'https://login.example.com' is listed twice",
    ] {
        assert!(all.contains(want), "missing {want:?} in:\n{all}");
    }
    let mut out = Vec::new();
    validate(
        &[OidcIssuer {
            issuer: "http://127.0.0.1:8080/realms/x".into(),
            audiences: vec!["bridle".into()],
            ..Default::default()
        }],
        &mut out,
    );
    assert!(out.is_empty(), "{out:?}");
}
