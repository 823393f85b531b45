//! The `http` tool kind: one request made by this service. The URL, query and body are
//! templates filled from the arguments (URL placeholders percent-encoded); headers may carry
//! `secret://` tokens resolved for the call. The destination must pass the tool's egress
//! allowlist (by default, the URL's own host) before anything is sent; names are resolved
//! here and pinned, so the connection goes to an address that passed; redirects are not
//! followed (the model sees the 3xx). The response is capped and scrubbed of the call's
//! secrets.

use std::time::Instant;

use bridle_core::manifest::{Host, HttpTool, parse_bytes};
use bridle_core::timeutil::pb_duration;
use bridle_proto::{ToolErrorKind, ToolResult};
use futures::StreamExt as _;
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use serde_json::Value;

use super::sandboxed::allowlist;
use super::{Call, Context};
use crate::egress::Allowlist;
use crate::sandbox::output::Capture;
use crate::{Error, args, secrets};

/// Unreserved characters stay as they are in a URL placeholder's value.
const SEGMENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

fn failed(tool: &str, why: String, started: Instant) -> ToolResult {
    ToolResult {
        output: format!("The request of tool '{tool}' was not sent: {why}"),
        is_error: true,
        error_kind: ToolErrorKind::Failed as i32,
        duration: Some(pb_duration(started.elapsed())),
        ..Default::default()
    }
}

/// Renders the URL template; placeholder values are percent-encoded.
pub fn render_url(
    h: &HttpTool,
    call_args: &serde_json::Map<String, Value>,
) -> Result<url::Url, String> {
    let encoded: serde_json::Map<String, Value> = call_args
        .iter()
        .map(|(k, v)| {
            let raw = match v {
                Value::String(s) => s.clone(),
                Value::Null => String::new(),
                other => other.to_string(),
            };
            (
                k.clone(),
                Value::String(utf8_percent_encode(&raw, SEGMENT).to_string()),
            )
        })
        .collect();
    let mut u = url::Url::parse(&args::render(&h.url, &encoded))
        .map_err(|e| format!("the URL is not valid once filled in: {e}"))?;
    if !matches!(u.scheme(), "http" | "https") {
        return Err(format!("'{}' is not an http(s) URL", u.scheme()));
    }
    for (k, v) in &h.query {
        let value = args::render(v, call_args);
        if !value.is_empty() {
            u.query_pairs_mut().append_pair(k, &value);
        }
    }
    Ok(u)
}

/// The header an http tool's request carries when its call has an idempotency key: the
/// convention of payment and cloud APIs for "this is a retry of the same operation".
pub const IDEMPOTENCY_KEY: &str = "Idempotency-Key";

/// `Idempotency-Key` for a call made with an idempotency key, unless the Tool sets that header
/// itself: the same value for every attempt of the call (a retry after a tools replica died
/// mid-call, or after the answer was lost), different across tenants, tools and calls, and
/// opaque (a hash, so the run's ids do not leave the platform).
fn idempotency_header(h: &HttpTool, call: &Call) -> Option<String> {
    use sha2::{Digest as _, Sha256};
    if call.idempotency_key.is_empty()
        || h.headers
            .keys()
            .any(|k| k.eq_ignore_ascii_case(IDEMPOTENCY_KEY))
    {
        return None;
    }
    let mut d = Sha256::new();
    for part in [
        call.scope.tenant.as_str(),
        call.tool.as_str(),
        call.idempotency_key.as_str(),
    ] {
        d.update((part.len() as u64).to_be_bytes());
        d.update(part.as_bytes());
    }
    Some(format!("bridle-{}", hex::encode(&d.finalize()[..16])))
}

pub async fn run(ex: &Context<'_>, h: &HttpTool, call: &Call) -> Result<ToolResult, Error> {
    let started = Instant::now();
    let url = match render_url(h, &call.args) {
        Ok(u) => u,
        Err(why) => return Ok(failed(&call.tool, why, started)),
    };
    let host = url.host_str().unwrap_or_default().to_string();
    let port = url.port_or_known_default().unwrap_or(443);
    let tenant = &call.scope.tenant;
    let allow = match allowlist(ex, "spec.http", &call.tool, tenant, &h.egress)? {
        Some(a) => a,
        None => std::sync::Arc::new(
            Allowlist::parse(&[format!("{host}:{port}")], ex.egress.clone(), tenant).map_err(
                |reason| Error::BadTool {
                    tool: call.tool.to_string(),
                    reason: format!("spec.http.url: {reason}"),
                },
            )?,
        ),
    };
    let dest = Host::parse(&host);
    if let Some(why) = allow.refusal(&dest, port) {
        return Ok(failed(&call.tool, why, started));
    }
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    let addrs = match allow.resolve(&dest, port, call.timeout).await {
        Ok(a) => a,
        Err(why) => return Ok(failed(&call.tool, why, started)),
    };
    let addrs = match allow.admit(&dest, port, addrs) {
        Ok(a) => a,
        Err(why) => {
            tracing::warn!(tool = %call.tool, %why, "egress refused");
            return Ok(failed(&call.tool, why, started));
        }
    };

    let wanted = secrets::header_refs(&call.tool, &h.headers, h.bearer.as_deref())?;
    let resolved =
        secrets::resolve(ex.secrets, ex.run_secrets, &call.scope, &call.tool, &wanted).await?;
    let client = bridle_core::http_client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .resolve_to_addrs(bare, &addrs)
        .timeout(call.timeout)
        .build()
        .map_err(|e| Error::Core(bridle_core::Error::internal(format!("http client: {e}"))))?;
    let method = reqwest::Method::from_bytes(h.method.as_bytes()).map_err(|_| Error::BadTool {
        tool: call.tool.to_string(),
        reason: format!("spec.http.method: '{}' is not a method", h.method),
    })?;
    let mut req = client.request(method.clone(), url.clone());
    for (k, v) in &h.headers {
        req = req.header(k.as_str(), resolved.expand(v));
    }
    if let Some(key) = idempotency_header(h, call) {
        req = req.header(IDEMPOTENCY_KEY, key);
    }
    if let Some(b) = &h.bearer
        && let Ok(r) = bridle_core::manifest::SecretRef::parse(b)
        && let Some(v) = resolved.value(&r)
    {
        req = req.bearer_auth(v);
    }
    match &h.body {
        Some(t) => req = req.body(args::render(t, &call.args)),
        None if matches!(method.as_str(), "POST" | "PUT" | "PATCH") => {
            req = req.json(&Value::Object(call.args.clone()));
        }
        None => {}
    }
    let cap = parse_bytes(&h.response_limit)
        .ok()
        .and_then(|b| usize::try_from(b).ok())
        .unwrap_or(64 * 1024);
    let resp = match req.send().await {
        Ok(r) => r,
        Err(e) => {
            let why = if e.is_timeout() {
                format!("no answer within {}", call.timeout_text())
            } else {
                format!("the request failed: {}", crate::error::root_cause(&e))
            };
            let mut r = failed(&call.tool, why, started);
            r.timed_out = e.is_timeout();
            if r.timed_out {
                r.error_kind = ToolErrorKind::TimedOut as i32;
            }
            return Ok(r);
        }
    };
    let status = resp.status();
    let location = resp
        .headers()
        .get(reqwest::header::LOCATION)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let mut body = Capture::new(cap, resolved.slack());
    let mut stream = resp.bytes_stream();
    while let Some(chunk) = stream.next().await {
        match chunk {
            Ok(b) => {
                body.push(&b);
                if body.is_full() {
                    // The rest is not needed; its size is not known.
                    break;
                }
            }
            Err(e) => {
                tracing::debug!(error = %e, "http tool: response body ended early");
                break;
            }
        }
    }
    let body = body.finish(&resolved.redactor);
    let mut output = body.text.clone();
    if !status.is_success() {
        if !output.is_empty() && !output.ends_with('\n') {
            output.push('\n');
        }
        output.push_str(&format!("[HTTP {status}]"));
        if let Some(l) = location {
            output.push_str(&format!(
                " (Location: {}; redirects are not followed)",
                resolved.redactor.redact(&l)
            ));
        }
    } else if output.is_empty() {
        output = format!("(empty response, HTTP {status})");
    }
    Ok(ToolResult {
        output,
        is_error: !status.is_success(),
        error_kind: if status.is_success() {
            ToolErrorKind::Unspecified
        } else {
            ToolErrorKind::Failed
        } as i32,
        stdout: body.text,
        stdout_truncated: body.truncated,
        duration: Some(pb_duration(started.elapsed())),
        sandbox_id: format!("http:{host}"),
        http_status: u32::from(status.as_u16()),
        ..Default::default()
    })
}
