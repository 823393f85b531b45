//! A small OIDC issuer for tests: signing keys generated in the test (ECDSA P-256), its
//! discovery document and JWKS served on loopback, tokens signed with [`Signer::sign`].

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, EncodingKey, Header, encode};
use serde_json::{Value, json};

/// One signing key: its id, the private half for signing, the public half as a JWK.
pub struct Signer {
    pub kid: String,
    key: EncodingKey,
    jwk: Value,
}

impl Signer {
    pub fn new(kid: &str) -> anyhow::Result<Self> {
        let pair = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
        let raw = pair.public_key_raw();
        // Uncompressed point: 0x04 || X || Y.
        anyhow::ensure!(
            raw.len() == 65 && raw[0] == 4,
            "not an uncompressed P-256 point"
        );
        Ok(Self {
            kid: kid.into(),
            key: EncodingKey::from_ec_der(&pair.serialize_der()),
            jwk: json!({
                "kty": "EC", "crv": "P-256", "use": "sig", "alg": "ES256", "kid": kid,
                "x": URL_SAFE_NO_PAD.encode(&raw[1..33]),
                "y": URL_SAFE_NO_PAD.encode(&raw[33..65]),
            }),
        })
    }

    /// An ES256 JWT of `claims`, with this key's `kid`.
    pub fn sign(&self, claims: &Value) -> anyhow::Result<String> {
        let mut h = Header::new(Algorithm::ES256);
        h.kid = Some(self.kid.clone());
        Ok(encode(&h, claims, &self.key)?)
    }
}

/// The issuer: serves its discovery document and whichever keys it publishes now.
pub struct LocalIssuer {
    /// The issuer (`iss`), also where its discovery document is.
    pub url: String,
    published: Arc<Mutex<Vec<Value>>>,
    fetches: Arc<AtomicUsize>,
    down: Arc<std::sync::atomic::AtomicBool>,
}

impl LocalIssuer {
    pub async fn start() -> anyhow::Result<Self> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let url = format!("http://{}", listener.local_addr()?);
        let published: Arc<Mutex<Vec<Value>>> = Arc::default();
        let fetches = Arc::new(AtomicUsize::new(0));
        let down = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (p, f, u, d) = (
            published.clone(),
            fetches.clone(),
            url.clone(),
            down.clone(),
        );
        let app = axum::Router::new()
            .route(
                "/.well-known/openid-configuration",
                axum::routing::get(move || {
                    let u = u.clone();
                    async move { axum::Json(json!({"issuer": u, "jwks_uri": format!("{u}/jwks")})) }
                }),
            )
            .route(
                "/jwks",
                axum::routing::get(move || {
                    let (p, f, d) = (p.clone(), f.clone(), d.clone());
                    async move {
                        use axum::response::IntoResponse as _;
                        f.fetch_add(1, Ordering::SeqCst);
                        if d.load(Ordering::SeqCst) {
                            return axum::http::StatusCode::SERVICE_UNAVAILABLE.into_response();
                        }
                        let keys = p.lock().unwrap_or_else(|e| e.into_inner()).clone();
                        axum::Json(json!({ "keys": keys })).into_response()
                    }
                }),
            );
        #[allow(clippy::disallowed_methods)]
        tokio::spawn(async move { axum::serve(listener, app).await });
        Ok(Self {
            url,
            published,
            fetches,
            down,
        })
    }

    /// Adds a key to the JWKS.
    pub fn publish(&self, s: &Signer) {
        self.published
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(s.jwk.clone());
    }

    /// While down, the JWKS answers 503.
    pub fn set_down(&self, down: bool) {
        self.down.store(down, Ordering::SeqCst);
    }

    /// How many times the JWKS was fetched.
    pub fn fetches(&self) -> usize {
        self.fetches.load(Ordering::SeqCst)
    }

    /// Claims good for five minutes: audience `bridle`, subject `u-123`, tenant `acme`, roles
    /// `viewer` and `owner`, groups `sre` and `staff`, email `alice@example.com`.
    pub fn claims(&self) -> Value {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or_default();
        json!({
            "iss": self.url, "aud": "bridle", "sub": "u-123", "exp": now + 300, "nbf": now - 5,
            "tenant": "acme", "roles": ["viewer", "owner"], "groups": ["sre", "staff"],
            "email": "alice@example.com",
        })
    }
}
