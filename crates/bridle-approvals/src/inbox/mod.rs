//! The web inbox: server-rendered pages on a second listener (HTTP, axum) where people see
//! pending calls — agent, tool, arguments, run context — and approve or deny them with a
//! reason. Decisions go through the same code as gRPC Decide (bound to the arguments hash the
//! page showed, audited, refused when replayed or expired).
//!
//! Routes: `GET /approvals[?tenant=&state=]`, `GET /approvals/{id}`, `POST /approvals/{id}`
//! (decide), `GET|POST /login`, `GET /login/oidc` and `/login/oidc/callback` (with
//! `inbox.oidc_login`), `POST /logout`, `GET /inbox.css`. Every response carries a
//! Content-Security-Policy without scripts, `nosniff`, `Referrer-Policy: same-origin`,
//! `no-store` and `frame-ancestors 'none'`.

mod handlers;
mod http;
mod oidc_login;
mod pages;
mod session;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::Request;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use bridle_core::Shutdown;
use bridle_core::auth::{AuthMode, Authenticator, Role};
use bridle_core::redis_util::RedisConn;

pub use pages::esc;
use pages::{Item, Rights};
use session::{CSRF_COOKIE, Visitor, set_cookie};

use crate::Error;
use crate::keys::ApprovalKeys;
use crate::options::InboxOptions;
use crate::service::ApprovalsService;

const PAGE: usize = 100;
/// The pre-login CSRF cookie lives a day; it is only a form token.
const CSRF_COOKIE_AGE: u64 = 24 * 3600;

pub struct Inbox {
    service: Arc<ApprovalsService>,
    auth: Authenticator,
    conn: RedisConn,
    keys: ApprovalKeys,
    session_ttl: Duration,
    secure: bool,
    /// People's login through their identity provider, when configured.
    oidc: Option<oidc_login::OidcFlow>,
}

impl Inbox {
    pub fn new(service: Arc<ApprovalsService>, auth: Authenticator, opts: &InboxOptions) -> Self {
        let store = service.store();
        Self {
            conn: store.conn(),
            keys: store.keys().clone(),
            service,
            auth,
            session_ttl: opts.session_ttl,
            secure: opts.secure_cookies,
            oidc: None,
        }
    }

    fn rights(&self, v: &Visitor) -> Rights {
        Rights {
            decide: v.principal.has(Role::Approver),
            name_field: self.auth.mode() == AuthMode::Off,
        }
    }

    /// An HTML page, with the visitor's new CSRF cookie when one was made.
    fn page(&self, status: StatusCode, v: Option<&Visitor>, body: String) -> Response {
        let mut r = (
            status,
            [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
            body,
        )
            .into_response();
        if let Some(t) = v.and_then(|v| v.new_csrf_cookie.as_deref())
            && let Ok(c) =
                HeaderValue::from_str(&set_cookie(CSRF_COOKIE, t, CSRF_COOKIE_AGE, self.secure))
        {
            r.headers_mut().append(header::SET_COOKIE, c);
        }
        r
    }

    fn failure(&self, v: Option<&Visitor>, e: &Error) -> Response {
        let f = failure(e);
        self.page(f.status, v, pages::message(v, f.title, &f.text))
    }

    /// The visitor, or the response to send instead (the login page, or an error).
    async fn require(&self, headers: &HeaderMap, role: Role) -> Result<Visitor, Response> {
        match self.visitor(headers).await {
            Ok(Some(v)) => match v.principal.require(role) {
                Ok(()) => Ok(v),
                Err(e) => Err(self.failure(Some(&v), &Error::Core(e))),
            },
            Ok(None) => Err(Redirect::to("/login").into_response()),
            Err(e) => Err(self.failure(None, &e)),
        }
    }

    async fn items(&self, approvals: Vec<bridle_proto::Approval>) -> Result<Vec<Item>, Error> {
        let ids: Vec<String> = approvals.iter().map(|a| a.id.clone()).collect();
        let contexts = self.service.store().run_contexts(&ids).await?;
        Ok(approvals
            .into_iter()
            .zip(contexts)
            .map(|(approval, context)| Item { approval, context })
            .collect())
    }
}

/// What a failed inbox request answers.
#[derive(Debug)]
pub(crate) struct Failure {
    pub status: StatusCode,
    pub title: &'static str,
    pub text: String,
}

/// Every error, to its own status: what the visitor did wrong is 4xx with the reason; what is
/// down is 503 ("try again"); a bug is 500, with its details in the log only. No wildcard arm:
/// a new variant must decide (the same table as gRPC's in `bridle_core::error`).
pub(crate) fn failure(e: &Error) -> Failure {
    use bridle_core::Error as Core;
    let says = |status, title| Failure {
        status,
        title,
        text: e.to_string(),
    };
    let down = |text: String| {
        tracing::warn!("inbox request failed: {e}");
        Failure {
            status: StatusCode::SERVICE_UNAVAILABLE,
            title: "Unavailable",
            text,
        }
    };
    let bug = || {
        tracing::error!("inbox request failed (a bug): {e}");
        Failure {
            status: StatusCode::INTERNAL_SERVER_ERROR,
            title: "Internal error",
            text: "Something went wrong inside the approvals service (a bug; the details are \
                   in its log). Repeating the request will not help until it is fixed."
                .into(),
        }
    };
    match e {
        Error::InvalidArgument(_) => says(StatusCode::BAD_REQUEST, "Bad request"),
        Error::NotFound(_) => says(StatusCode::NOT_FOUND, "Not found"),
        Error::Refused(_) => says(StatusCode::CONFLICT, "Refused"),
        Error::Duty(_) => says(StatusCode::FORBIDDEN, "Not yours to decide"),
        Error::AuditUnavailable(_) => down(
            "The audit trail cannot be written right now, so nothing was applied; try again \
             shortly."
                .into(),
        ),
        Error::Policy(_) => {
            down("The policy engine cannot decide right now; try again shortly.".into())
        }
        Error::Core(c) => match c {
            Core::InvalidArgument(_) | Core::Manifest(_) => {
                says(StatusCode::BAD_REQUEST, "Bad request")
            }
            Core::NotFound(_) => says(StatusCode::NOT_FOUND, "Not found"),
            Core::AlreadyExists(_) | Core::FailedPrecondition(_) => {
                says(StatusCode::CONFLICT, "Refused")
            }
            Core::Aborted(_) => Failure {
                status: StatusCode::CONFLICT,
                title: "Changed meanwhile",
                text: "Someone changed this at the same time; reload the page and try again."
                    .into(),
            },
            Core::PermissionDenied(_) => says(StatusCode::FORBIDDEN, "Forbidden"),
            Core::Unauthenticated(_) => says(StatusCode::UNAUTHORIZED, "Not logged in"),
            Core::ResourceExhausted(_) => says(StatusCode::TOO_MANY_REQUESTS, "Too many requests"),
            Core::Refused { .. } => says(StatusCode::TOO_MANY_REQUESTS, "Too many requests"),
            Core::DeadlineExceeded(_) => {
                tracing::warn!("inbox request failed: {e}");
                Failure {
                    status: StatusCode::GATEWAY_TIMEOUT,
                    title: "Timed out",
                    text: "The approvals service took too long to answer; try again shortly."
                        .into(),
                }
            }
            // The reason may hold addresses and internals: the log has it.
            Core::Unavailable { what, .. } => down(format!(
                "The approvals service cannot reach {what} right now; try again shortly."
            )),
            Core::RedisOutOfMemory { .. } => down(
                "The approvals service's database (Redis) is out of memory, so nothing was \
                 applied; try again once memory is freed."
                    .into(),
            ),
            Core::Redis(_) if c.code() == tonic::Code::Unavailable => down(
                "The approvals service cannot reach its database (Redis) right now; try again \
                 shortly."
                    .into(),
            ),
            // Redis refused a command: ours was wrong.
            Core::Redis(_) | Core::Internal(_) | Core::Config(_) => bug(),
        },
    }
}

async fn security_headers(req: Request, next: Next) -> Response {
    let mut r = next.run(req).await;
    let h = r.headers_mut();
    for (k, v) in [
        (
            "content-security-policy",
            "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; \
             frame-ancestors 'none'; base-uri 'none'",
        ),
        ("x-content-type-options", "nosniff"),
        // Not no-referrer: with it browsers send `Origin: null` on the inbox's own forms.
        ("referrer-policy", "same-origin"),
        ("x-frame-options", "DENY"),
        ("cache-control", "no-store"),
    ] {
        h.insert(k, HeaderValue::from_static(v));
    }
    r
}

pub fn router(inbox: Arc<Inbox>, limits: http::Limits) -> Router {
    Router::new()
        .route("/", get(|| async { Redirect::to("/approvals") }))
        .route("/approvals", get(handlers::list))
        .route(
            "/approvals/{id}",
            get(handlers::detail).post(handlers::decide),
        )
        .route("/login", get(handlers::login_page).post(handlers::login))
        .route("/login/oidc", get(handlers::oidc_start))
        .route("/login/oidc/callback", get(handlers::oidc_callback))
        .route("/logout", axum::routing::post(handlers::logout))
        .route(
            "/inbox.css",
            get(|| async {
                (
                    [(header::CONTENT_TYPE, "text/css; charset=utf-8")],
                    pages::CSS,
                )
            }),
        )
        .layer(middleware::from_fn_with_state(limits, http::read_body))
        .layer(middleware::from_fn(security_headers))
        .with_state(inbox)
}

/// Binds the inbox when `opts.listen` is set and serves it on a task owned by `shutdown`.
pub async fn spawn(
    mut inbox: Inbox,
    opts: &InboxOptions,
    shutdown: &Shutdown,
) -> Result<Option<SocketAddr>, bridle_core::Error> {
    let Some(listen) = opts.listen else {
        return Ok(None);
    };
    let (listener, addr) =
        bridle_core::http_server::bind("inbox.listen", listen, opts.addr_file.as_deref()).await?;
    if let Some(o) = &opts.oidc_login {
        // The issuer sends people back to the inbox as they reach it, or, unset, to its own
        // address (a developer's machine).
        let origin = opts
            .public_url
            .clone()
            .unwrap_or_else(|| format!("http://{addr}"));
        inbox.oidc = Some(oidc_login::OidcFlow::new(o.clone(), &origin)?);
    }
    let limits = http::Limits {
        header_read_timeout: opts.header_read_timeout,
        body_read_timeout: opts.body_read_timeout,
        max_body_bytes: opts.max_body_bytes,
    };
    bridle_core::http_server::serve(
        listener,
        router(Arc::new(inbox), limits),
        limits.header_read_timeout,
        "approvals inbox",
        shutdown,
    );
    tracing::info!(%addr, "approvals inbox listening");
    Ok(Some(addr))
}

#[cfg(test)]
mod tests;
