//! The inbox's pages and forms: each handler resolves the visitor (login, role, tenant),
//! checks a form's origin and token before anything else, and renders or redirects.

use std::sync::Arc;

use axum::extract::{Form, Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use bridle_core::auth::{AuthMode, Principal, Role};
use bridle_proto::{ApprovalState, DecideRequest};
use serde::Deserialize;

use super::pages::{self, Item};
use super::session::{
    self, CSRF_COOKIE, SESSION_COOKIE, Visitor, csrf_ok, same_origin, set_cookie,
};
use super::{Inbox, PAGE};
use crate::Error;
use crate::error::quote;
use crate::record::state_name;
use crate::service::check_name;

type Shared = State<Arc<Inbox>>;

#[derive(Deserialize)]
pub(super) struct ListQuery {
    #[serde(default)]
    tenant: String,
    #[serde(default)]
    state: String,
}

pub(super) async fn list(
    State(i): Shared,
    headers: HeaderMap,
    Query(q): Query<ListQuery>,
) -> Response {
    let v = match i.require(&headers, Role::Viewer).await {
        Ok(v) => v,
        Err(r) => return r,
    };
    let result = async {
        // Checked first: refusing another tenant quotes the name.
        if !q.tenant.is_empty() {
            check_name("tenant", &q.tenant)?;
        }
        let tenant = v.principal.tenant_for(&q.tenant)?;
        bridle_core::ids::check_name(&tenant)
            .map_err(|e| Error::InvalidArgument(format!("tenant: {e}")))?;
        let state = match q.state.as_str() {
            "" | "pending" => ApprovalState::Pending,
            "approved" => ApprovalState::Approved,
            "denied" => ApprovalState::Denied,
            "expired" => ApprovalState::Expired,
            _ => {
                return Err(Error::InvalidArgument(
                    "state: one of pending, approved, denied, expired".into(),
                ));
            }
        };
        let (approvals, _) = i
            .service
            .store()
            .list(&tenant, state, None, 0, PAGE)
            .await?;
        Ok((tenant, state, i.items(approvals).await?))
    }
    .await;
    match result {
        Ok((tenant, state, items)) => {
            let body = pages::list(&v, &i.rights(&v), &tenant, state_name(state), &items);
            i.page(StatusCode::OK, Some(&v), body)
        }
        Err(e) => i.failure(Some(&v), &e),
    }
}

/// The approval, if the visitor may see it (one of another tenant is "not found").
async fn visible(i: &Inbox, v: &Visitor, id: &str) -> Result<Item, Error> {
    bridle_core::ids::check_id("approval id", "apr", id).map_err(|_| Error::NotFound(quote(id)))?;
    let a = i.service.store().get(id).await?;
    if !v.principal.sees(&a.tenant) {
        return Err(Error::NotFound(id.to_string()));
    }
    Ok(i.items(vec![a]).await?.remove(0))
}

pub(super) async fn detail(
    State(i): Shared,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    let v = match i.require(&headers, Role::Viewer).await {
        Ok(v) => v,
        Err(r) => return r,
    };
    match visible(&i, &v, &id).await {
        Ok(item) => i.page(
            StatusCode::OK,
            Some(&v),
            pages::detail(&v, &i.rights(&v), &item, None),
        ),
        Err(e) => i.failure(Some(&v), &e),
    }
}

#[derive(Deserialize)]
pub(super) struct DecideForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    decision: String,
    #[serde(default)]
    reason: String,
    #[serde(default)]
    sha: String,
    #[serde(default)]
    approver: String,
}

fn forged(i: &Inbox, v: Option<&Visitor>, headers: &HeaderMap) -> Response {
    let h = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("-")
            .to_string()
    };
    tracing::warn!(
        origin = h("origin"),
        host = h("host"),
        fetch_site = h("sec-fetch-site"),
        same_origin = same_origin(headers),
        has_csrf_cookie = session::cookie(headers, CSRF_COOKIE).is_some(),
        "inbox form refused (cross-site, or without its token)"
    );
    i.page(
        StatusCode::FORBIDDEN,
        v,
        pages::message(
            v,
            "Refused",
            "This form is out of date or came from another site. Reload the page and try again.",
        ),
    )
}

pub(super) async fn decide(
    State(i): Shared,
    headers: HeaderMap,
    Path(id): Path<String>,
    Form(f): Form<DecideForm>,
) -> Response {
    let v = match i.require(&headers, Role::Viewer).await {
        Ok(v) => v,
        Err(r) => return r,
    };
    if !same_origin(&headers) || !csrf_ok(&v, &f.csrf) {
        return forged(&i, Some(&v), &headers);
    }
    if let Err(e) = v.principal.require(Role::Approver) {
        return i.failure(Some(&v), &Error::Core(e));
    }
    let approve = match f.decision.as_str() {
        "approve" => true,
        "deny" => false,
        _ => {
            return i.failure(
                Some(&v),
                &Error::InvalidArgument("decision: approve or deny".into()),
            );
        }
    };
    let item = match visible(&i, &v, &id).await {
        Ok(item) => item,
        Err(e) => return i.failure(Some(&v), &e),
    };
    let requested = if f.approver.trim().is_empty() {
        "inbox"
    } else {
        f.approver.trim()
    };
    let approver = crate::service::Decider::of(&v.principal, i.auth.mode(), requested);
    let req = DecideRequest {
        id: id.clone(),
        approve,
        reason: f.reason.trim().to_string(),
        // The hash the page showed: a decision never applies to other arguments.
        arguments_sha256: f.sha,
        approver: String::new(),
    };
    match i.service.decide_as(&req, &approver).await {
        Ok(_) => Redirect::to(&format!("/approvals/{id}")).into_response(),
        Err(e @ (Error::Refused(_) | Error::InvalidArgument(_) | Error::Duty(_))) => {
            let status = if matches!(e, Error::Duty(_)) {
                StatusCode::FORBIDDEN
            } else if matches!(e, Error::Refused(_)) {
                StatusCode::CONFLICT
            } else {
                StatusCode::BAD_REQUEST
            };
            // Show the approval as it is now, with why the decision was refused.
            let item = visible(&i, &v, &id).await.unwrap_or(item);
            let body = pages::detail(&v, &i.rights(&v), &item, Some(&e.to_string()));
            i.page(status, Some(&v), body)
        }
        Err(e) => i.failure(Some(&v), &e),
    }
}

pub(super) async fn login_page(State(i): Shared, headers: HeaderMap) -> Response {
    if i.auth.mode() == AuthMode::Off {
        return Redirect::to("/approvals").into_response();
    }
    let v = Inbox::double_submit(&headers, Principal::nobody());
    i.page(
        StatusCode::OK,
        Some(&v),
        pages::login(&v.csrf, None, i.oidc.is_some()),
    )
}

#[derive(Deserialize)]
pub(super) struct LoginForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    api_key: String,
}

pub(super) async fn login(
    State(i): Shared,
    headers: HeaderMap,
    Form(f): Form<LoginForm>,
) -> Response {
    if i.auth.mode() == AuthMode::Off {
        return Redirect::to("/approvals").into_response();
    }
    let v = Inbox::double_submit(&headers, Principal::nobody());
    if !same_origin(&headers) || v.new_csrf_cookie.is_some() || !csrf_ok(&v, &f.csrf) {
        return forged(&i, Some(&v), &headers);
    }
    match i.login(&f.api_key).await {
        Ok((sid, _)) => {
            let mut r = Redirect::to("/approvals").into_response();
            let age = i.session_ttl.as_secs().max(1);
            if let Ok(c) = HeaderValue::from_str(&set_cookie(SESSION_COOKIE, &sid, age, i.secure)) {
                r.headers_mut().append(header::SET_COOKIE, c);
            }
            r
        }
        Err(Error::Core(bridle_core::Error::Unauthenticated(m))) => login_again(&i, &v, &m),
        Err(e) => i.failure(None, &e),
    }
}

#[derive(Deserialize)]
pub(super) struct CsrfForm {
    #[serde(default)]
    csrf: String,
}

pub(super) async fn logout(
    State(i): Shared,
    headers: HeaderMap,
    Form(f): Form<CsrfForm>,
) -> Response {
    let v = match i.visitor(&headers).await {
        Ok(Some(v)) => v,
        _ => return Redirect::to("/login").into_response(),
    };
    if !same_origin(&headers) || !csrf_ok(&v, &f.csrf) {
        return forged(&i, Some(&v), &headers);
    }
    if let Err(e) = i.logout(&headers).await {
        return i.failure(Some(&v), &e);
    }
    let mut r = Redirect::to("/login").into_response();
    if let Ok(c) = HeaderValue::from_str(&set_cookie(SESSION_COOKIE, "", 0, i.secure)) {
        r.headers_mut().append(header::SET_COOKIE, c);
    }
    r
}

/// `GET /login/oidc`: off to the identity provider, with the flow's state in a cookie.
pub(super) async fn oidc_start(State(i): Shared) -> Response {
    if i.auth.mode() == AuthMode::Off {
        return Redirect::to("/approvals").into_response();
    }
    match i.oidc_start().await {
        Ok((location, state)) => {
            let mut r = Redirect::to(&location).into_response();
            let c = super::session::set_cookie_same_site(
                super::oidc_login::STATE_COOKIE,
                &state,
                super::oidc_login::FLOW_TTL.as_secs(),
                i.secure,
                "Lax",
            );
            if let Ok(c) = HeaderValue::from_str(&c) {
                r.headers_mut().append(header::SET_COOKIE, c);
            }
            r
        }
        Err(e) => i.failure(None, &e),
    }
}

#[derive(Deserialize)]
pub(super) struct OidcReturn {
    #[serde(default)]
    code: String,
    #[serde(default)]
    state: String,
    #[serde(default)]
    error: String,
}

/// `GET /login/oidc/callback`: the identity provider sent the person back.
pub(super) async fn oidc_callback(
    State(i): Shared,
    headers: HeaderMap,
    Query(q): Query<OidcReturn>,
) -> Response {
    let v = Inbox::double_submit(&headers, Principal::nobody());
    if !q.error.is_empty() {
        let m = format!(
            "the identity provider did not log you in ({})",
            quote(&q.error)
        );
        return login_again(&i, &v, &m);
    }
    match i.oidc_finish(&headers, &q.state, &q.code).await {
        Ok((sid, p)) => {
            // A page, not a redirect: the session cookie is SameSite=Strict, and a redirect
            // chain that began on the issuer's site would not carry it to the next page.
            let mut r = i.page(StatusCode::OK, None, pages::logged_in(&p.name));
            let age = i.session_ttl.as_secs().max(1);
            for c in [
                set_cookie(SESSION_COOKIE, &sid, age, i.secure),
                super::session::set_cookie_same_site(
                    super::oidc_login::STATE_COOKIE,
                    "",
                    0,
                    i.secure,
                    "Lax",
                ),
            ] {
                if let Ok(c) = HeaderValue::from_str(&c) {
                    r.headers_mut().append(header::SET_COOKIE, c);
                }
            }
            r
        }
        Err(Error::Core(bridle_core::Error::Unauthenticated(m))) => login_again(&i, &v, &m),
        Err(e) => i.failure(None, &e),
    }
}

/// The login page again (401), saying why the login failed.
fn login_again(i: &Inbox, v: &super::session::Visitor, why: &str) -> Response {
    i.page(
        StatusCode::UNAUTHORIZED,
        Some(v),
        pages::login(&v.csrf, Some(why), i.oidc.is_some()),
    )
}
