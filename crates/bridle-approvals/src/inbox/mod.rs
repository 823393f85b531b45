//! The web inbox: server-rendered pages on a second listener (HTTP, axum) where people see
//! pending calls — agent, tool, arguments, run context — and approve or deny them with a
//! reason. Decisions go through the same code as gRPC Decide (bound to the arguments hash the
//! page showed, audited, refused when replayed or expired).
//!
//! Routes: `GET /approvals[?tenant=&state=]`, `GET /approvals/{id}`, `POST /approvals/{id}`
//! (decide), `GET|POST /login`, `POST /logout`, `GET /inbox.css`. Every response carries a
//! Content-Security-Policy without scripts, `nosniff`, `Referrer-Policy: same-origin`,
//! `no-store` and `frame-ancestors 'none'`.

mod handlers;
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
use redis::aio::ConnectionManager;

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
    conn: ConnectionManager,
    keys: ApprovalKeys,
    session_ttl: Duration,
    secure: bool,
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
        let (status, title) = match e {
            Error::NotFound(_) => (StatusCode::NOT_FOUND, "Not found"),
            Error::Refused(_) => (StatusCode::CONFLICT, "Refused"),
            Error::InvalidArgument(_) => (StatusCode::BAD_REQUEST, "Bad request"),
            Error::Core(bridle_core::Error::PermissionDenied(_)) => {
                (StatusCode::FORBIDDEN, "Forbidden")
            }
            Error::Core(bridle_core::Error::Unauthenticated(_)) => {
                (StatusCode::UNAUTHORIZED, "Not logged in")
            }
            _ => {
                tracing::warn!("inbox request failed: {e}");
                (StatusCode::SERVICE_UNAVAILABLE, "Unavailable")
            }
        };
        let text = match status {
            StatusCode::SERVICE_UNAVAILABLE => {
                "The approvals service cannot answer right now; try again shortly.".to_string()
            }
            _ => e.to_string(),
        };
        self.page(status, v, pages::message(v, title, &text))
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

pub fn router(inbox: Arc<Inbox>) -> Router {
    Router::new()
        .route("/", get(|| async { Redirect::to("/approvals") }))
        .route("/approvals", get(handlers::list))
        .route(
            "/approvals/{id}",
            get(handlers::detail).post(handlers::decide),
        )
        .route("/login", get(handlers::login_page).post(handlers::login))
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
        .layer(middleware::from_fn(security_headers))
        .with_state(inbox)
}

/// Binds the inbox when `opts.listen` is set and serves it on a task owned by `shutdown`.
pub async fn spawn(
    inbox: Inbox,
    opts: &InboxOptions,
    shutdown: &Shutdown,
) -> Result<Option<SocketAddr>, bridle_core::Error> {
    let Some(listen) = opts.listen else {
        return Ok(None);
    };
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|e| bridle_core::Error::Config(format!("inbox.listen {listen}: {e}")))?;
    let addr = listener
        .local_addr()
        .map_err(|e| bridle_core::Error::Config(format!("inbox.listen {listen}: {e}")))?;
    if let Some(path) = &opts.addr_file {
        std::fs::write(path, addr.to_string()).map_err(|e| {
            bridle_core::Error::Config(format!("inbox.addr_file {}: {e}", path.display()))
        })?;
    }
    let app = router(Arc::new(inbox));
    let stop = shutdown.token();
    let s = shutdown.clone();
    shutdown.spawn(async move {
        let served = axum::serve(listener, app)
            .with_graceful_shutdown(async move { stop.cancelled().await })
            .await;
        if let Err(e) = served {
            tracing::error!("inbox server failed: {e}");
            s.trigger();
        }
    });
    tracing::info!(%addr, "approvals inbox listening");
    Ok(Some(addr))
}

#[cfg(test)]
mod tests;
