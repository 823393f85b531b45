//! A minimal HTTP "browser" for the inbox tests: keeps cookies (and checks their flags), follows
//! no redirect, posts forms.

use std::collections::HashMap;
use std::net::SocketAddr;

use reqwest::StatusCode;
use reqwest::header::{COOKIE, LOCATION, ORIGIN, SET_COOKIE};

/// A minimal browser: keeps cookies, follows nothing.
pub struct Browser {
    http: reqwest::Client,
    base: String,
    cookies: HashMap<String, String>,
}

pub struct Page {
    pub status: StatusCode,
    pub location: String,
    pub body: String,
    pub headers: reqwest::header::HeaderMap,
}

impl Browser {
    pub fn new(addr: SocketAddr) -> Self {
        Self {
            http: bridle_core::http_client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .no_proxy()
                .build()
                .unwrap(),
            base: format!("http://{addr}"),
            cookies: HashMap::new(),
        }
    }

    fn cookie_header(&self) -> String {
        self.cookies
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join("; ")
    }

    async fn finish(&mut self, r: reqwest::Response) -> Page {
        for c in r.headers().get_all(SET_COOKIE) {
            let c = c.to_str().unwrap();
            let (k, rest) = c.split_once('=').unwrap();
            let v = rest.split(';').next().unwrap();
            // The OIDC state cookie must come back with the issuer's redirect: Lax.
            let same_site = if k == "bridle_oidc_state" {
                "SameSite=Lax"
            } else {
                "SameSite=Strict"
            };
            assert!(c.contains("HttpOnly") && c.contains(same_site), "{c}");
            if v.is_empty() {
                self.cookies.remove(k);
            } else {
                self.cookies.insert(k.to_string(), v.to_string());
            }
        }
        Page {
            status: r.status(),
            location: r
                .headers()
                .get(LOCATION)
                .map(|l| l.to_str().unwrap().to_string())
                .unwrap_or_default(),
            headers: r.headers().clone(),
            body: r.text().await.unwrap(),
        }
    }

    /// The inbox's base URL (`http://127.0.0.1:port`).
    pub fn base(&self) -> &str {
        &self.base
    }

    /// A cookie's value (empty when absent).
    pub fn clone_cookie(&self, name: &str) -> String {
        self.cookies.get(name).cloned().unwrap_or_default()
    }

    /// Sets a cookie as if the inbox had.
    pub fn set_cookie(&mut self, name: &str, value: &str) {
        self.cookies.insert(name.into(), value.into());
    }

    /// Forgets a cookie (another browser, as far as the inbox can tell).
    pub fn forget(&mut self, name: &str) {
        self.cookies.remove(name);
    }

    pub async fn get(&mut self, path: &str) -> Page {
        let r = self
            .http
            .get(format!("{}{path}", self.base))
            .header(COOKIE, self.cookie_header())
            .send()
            .await
            .unwrap();
        self.finish(r).await
    }

    pub async fn post(&mut self, path: &str, form: &[(&str, &str)], origin: Option<&str>) -> Page {
        let body = url::form_urlencoded::Serializer::new(String::new())
            .extend_pairs(form)
            .finish();
        let mut req = self
            .http
            .post(format!("{}{path}", self.base))
            .header(COOKIE, self.cookie_header())
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body);
        if let Some(o) = origin {
            req = req.header(ORIGIN, o);
        }
        let r = req.send().await.unwrap();
        self.finish(r).await
    }
}

/// The value of the hidden input `name` in the form of approval `id` (or the first form).
pub fn hidden(body: &str, name: &str) -> String {
    let marker = format!("name=\"{name}\" value=\"");
    let start = body
        .find(&marker)
        .unwrap_or_else(|| panic!("{name} in {body}"))
        + marker.len();
    body[start..].split('"').next().unwrap().to_string()
}
