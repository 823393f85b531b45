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
/// A person's login at the issuer: the key that signs their ID token and its claims.
struct Login {
    signer: Signer,
    claims: Value,
}

/// An authorization code the issuer handed out, waiting for its token request.
struct Grant {
    client_id: String,
    redirect_uri: String,
    challenge: String,
    nonce: String,
}

#[derive(Default)]
struct Flows {
    login: Option<Login>,
    codes: std::collections::HashMap<String, Grant>,
}

pub struct LocalIssuer {
    /// The issuer (`iss`), also where its discovery document is.
    pub url: String,
    flows: Arc<Mutex<Flows>>,
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
        let flows: Arc<Mutex<Flows>> = Arc::default();
        let (fa, ft) = (flows.clone(), flows.clone());
        let app = axum::Router::new()
            .route(
                "/.well-known/openid-configuration",
                axum::routing::get(move || {
                    let u = u.clone();
                    async move {
                        axum::Json(json!({
                            "issuer": u, "jwks_uri": format!("{u}/jwks"),
                            "authorization_endpoint": format!("{u}/authorize"),
                            "token_endpoint": format!("{u}/token"),
                            "response_types_supported": ["code"],
                            "code_challenge_methods_supported": ["S256"],
                        }))
                    }
                }),
            )
            .route(
                "/authorize",
                axum::routing::get(
                    move |axum::extract::Query(q): axum::extract::Query<
                        std::collections::HashMap<String, String>,
                    >| {
                        let flows = fa.clone();
                        async move { authorize(&flows, &q) }
                    },
                ),
            )
            .route(
                "/token",
                axum::routing::post(
                    move |axum::extract::Form(f): axum::extract::Form<
                        std::collections::HashMap<String, String>,
                    >| {
                        let flows = ft.clone();
                        async move { token(&flows, &f) }
                    },
                ),
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
            flows,
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

    /// Lets a person log in: `/authorize` signs them in at once (no page), and `/token` gives
    /// an ID token of `claims` signed by `signer` (with `aud` the client and the flow's
    /// `nonce`). Publish the signer too, for the token to verify.
    pub fn enable_login(&self, signer: Signer, claims: Value) {
        self.flows.lock().unwrap_or_else(|e| e.into_inner()).login = Some(Login { signer, claims });
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

fn oauth_error(status: u16, error: &str) -> axum::response::Response {
    use axum::response::IntoResponse as _;
    (
        axum::http::StatusCode::from_u16(status).unwrap_or(axum::http::StatusCode::BAD_REQUEST),
        axum::Json(json!({ "error": error })),
    )
        .into_response()
}

/// The authorization endpoint: checks the request as a real issuer would (code flow, PKCE
/// S256), then sends the browser back with a code at once.
fn authorize(
    flows: &Mutex<Flows>,
    q: &std::collections::HashMap<String, String>,
) -> axum::response::Response {
    use axum::response::IntoResponse as _;
    let get = |k: &str| q.get(k).cloned().unwrap_or_default();
    if get("response_type") != "code"
        || get("code_challenge_method") != "S256"
        || get("code_challenge").is_empty()
        || get("client_id").is_empty()
        || !get("scope").split(' ').any(|s| s == "openid")
    {
        return oauth_error(400, "invalid_request");
    }
    let mut f = flows.lock().unwrap_or_else(|e| e.into_inner());
    if f.login.is_none() {
        return oauth_error(403, "access_denied");
    }
    let code = crate::unique("code");
    f.codes.insert(
        code.clone(),
        Grant {
            client_id: get("client_id"),
            redirect_uri: get("redirect_uri"),
            challenge: get("code_challenge"),
            nonce: get("nonce"),
        },
    );
    let sep = if get("redirect_uri").contains('?') {
        '&'
    } else {
        '?'
    };
    let to = format!(
        "{}{sep}code={code}&state={}",
        get("redirect_uri"),
        percent_encode(&get("state"))
    );
    axum::response::Redirect::to(&to).into_response()
}

fn percent_encode(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// The token endpoint: a code once, for the client and redirect it was given to, with the
/// verifier of its challenge.
fn token(
    flows: &Mutex<Flows>,
    form: &std::collections::HashMap<String, String>,
) -> axum::response::Response {
    use axum::response::IntoResponse as _;
    use sha2::Digest as _;
    let get = |k: &str| form.get(k).cloned().unwrap_or_default();
    if get("grant_type") != "authorization_code" {
        return oauth_error(400, "unsupported_grant_type");
    }
    let mut f = flows.lock().unwrap_or_else(|e| e.into_inner());
    let Some(g) = f.codes.remove(&get("code")) else {
        return oauth_error(400, "invalid_grant");
    };
    let challenge = URL_SAFE_NO_PAD.encode(sha2::Sha256::digest(get("code_verifier").as_bytes()));
    if g.client_id != get("client_id")
        || g.redirect_uri != get("redirect_uri")
        || g.challenge != challenge
    {
        return oauth_error(400, "invalid_grant");
    }
    let Some(login) = &f.login else {
        return oauth_error(400, "invalid_grant");
    };
    let mut claims = login.claims.clone();
    claims["aud"] = json!(g.client_id);
    if !g.nonce.is_empty() {
        claims["nonce"] = json!(g.nonce);
    }
    match login.signer.sign(&claims) {
        Ok(id_token) => axum::Json(json!({
            "id_token": id_token, "access_token": crate::unique("at"), "token_type": "Bearer",
            "expires_in": 300,
        }))
        .into_response(),
        Err(_) => oauth_error(500, "server_error"),
    }
}
