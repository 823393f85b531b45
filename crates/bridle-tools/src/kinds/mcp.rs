//! The `mcp` tool kind: discovering a server's tools and calling one, over whichever of the
//! three transports the manifest names.

use std::sync::Arc;
use std::time::Instant;

use bridle_core::manifest::{McpStdio, McpTool, Tool};
use bridle_core::redact::Redactor;
use bridle_core::timeutil::pb_duration;
use bridle_proto::{Scope, ToolErrorKind, ToolResult};
use rmcp::model::{CallToolRequestParams, CallToolResponse};
use rmcp::service::{Peer, RoleClient};

use super::sandboxed::{allowlist, limits};
use super::{Call, Context};
use crate::egress::Allowlist;
use crate::mcp::{Exposed, Mcp, client, expose, result_text, server_error};
use crate::sandbox::container::Sandbox;
use crate::sandbox::output::Capture;
use crate::sandbox::profile::Profile;
use crate::sandbox::runs::Lease;
use crate::workspace::Snapshot;
use crate::{Error, secrets};

/// Output kept from a local or HTTP server's answer (sandboxed servers use their limits).
const DEFAULT_OUTPUT: usize = 64 * 1024;

/// The MCP session with a sandboxed server (its sandbox's main process), made on the first
/// call and kept in the sandbox ([`Sandbox::session`]) for the calls after it.
struct StdioSession {
    client: client::Client,
    stderr: client::StderrTail,
}

/// The session kept in `sb`, when one was made.
fn stdio_session(sb: &Sandbox) -> Option<&StdioSession> {
    sb.session.as_ref()?.downcast_ref()
}

enum Session {
    /// A server in the run's sandbox (or an ephemeral one for discovery).
    Sandboxed(Box<Lease>),
    Shared(Arc<client::Client>, String),
    Owned(client::Client),
}

struct Opened {
    session: Session,
    redactor: Redactor,
    slack: usize,
    output_bytes: usize,
    label: String,
    /// The end of the server's stderr (sandboxed and local servers), for errors.
    stderr: Option<client::StderrTail>,
}

impl Opened {
    fn peer(&self) -> Option<Peer<RoleClient>> {
        match &self.session {
            Session::Sandboxed(l) => l
                .sandbox()
                .and_then(stdio_session)
                .map(|m| m.client.peer().clone()),
            Session::Shared(c, _) => Some(c.peer().clone()),
            Session::Owned(c) => Some(c.peer().clone()),
        }
    }

    /// Ends the session's use; a sandboxed server that failed or overran is removed, a shared
    /// session that failed is dropped. Returns what the egress proxy refused the server
    /// during the call.
    async fn finish(self, ex: &Context<'_>, ok: bool) -> Vec<String> {
        let mut refused = Vec::new();
        match self.session {
            Session::Sandboxed(lease) => {
                if let Some(g) = lease.sandbox().and_then(|s| s.gate.as_ref()) {
                    refused = g.close();
                }
                lease.release(ok).await;
            }
            Session::Shared(_, key) if !ok => ex.mcp.drop_shared(&key).await,
            Session::Shared(..) => {}
            Session::Owned(c) => {
                let _ = tokio::time::timeout(std::time::Duration::from_secs(5), c.cancel()).await;
            }
        }
        refused
    }
}

fn stdio_profile(
    ex: &Context<'_>,
    tenant: &str,
    tool: &str,
    s: &McpStdio,
) -> Result<Arc<Profile>, Error> {
    let plain: Vec<(String, String)> = s
        .env
        .iter()
        .filter(|(_, v)| !bridle_core::manifest::SecretRef::is_reference(v))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    Ok(Arc::new(Profile::server(
        &s.image,
        limits("spec.mcp.stdio", tool, &s.limits)?,
        super::sandboxed::runtime(ex, tenant, "spec.mcp.stdio", tool, s.runtime.as_deref())?,
        !s.egress.is_empty(),
        s.command.clone(),
        plain,
    )))
}

/// Registers a stdio server's pool so it fills before the first call.
pub fn prepare(ex: &Context<'_>, tool: &Tool) {
    if let Some(s) = tool.spec.mcp.as_ref().and_then(|m| m.stdio.as_ref())
        && s.pool.warm > 0
        && !s
            .env
            .values()
            .any(|v| bridle_core::manifest::SecretRef::is_reference(v))
        && let Ok(p) = stdio_profile(
            ex,
            crate::registry::tool_tenant(tool),
            &tool.metadata.name,
            s,
        )
    {
        ex.sandboxes.pool.prepare(&p, s.pool.warm as usize);
    }
}

async fn open(
    ex: &Context<'_>,
    scope: &Scope,
    tool: &Tool,
    m: &McpTool,
    for_tool: &str,
    agent_quota: Option<u64>,
) -> Result<Opened, Error> {
    let name = tool.metadata.name.as_str();
    let mcp_err = |reason: String| Error::Mcp {
        tool: name.to_string(),
        reason,
    };
    if let Some(s) = &m.stdio {
        let profile = stdio_profile(ex, &scope.tenant, name, s)?;
        let quota = ex.sandboxes.quotas.for_call(
            name,
            "spec.mcp.stdio",
            &s.limits,
            &scope.agent,
            agent_quota,
        )?;
        let mut wanted = secrets::env_refs(name, &s.env)?;
        wanted.extend(secrets::file_refs(name, &s.secret_files)?);
        wanted.extend(secrets::credential_refs(name, &s.credentials)?);
        let resolved = secrets::resolve(ex.secrets, ex.run_secrets, scope, name, &wanted).await?;
        let mut secret_env: Vec<(String, String)> = secrets::env_with(&s.env, &resolved)
            .into_iter()
            .filter(|(k, _)| {
                s.env
                    .get(k)
                    .is_some_and(|v| bridle_core::manifest::SecretRef::is_reference(v))
            })
            .collect();
        if !s.credentials.is_empty() {
            secret_env.extend(crate::egress::ca_env());
        }
        let mut lease = ex
            .sandboxes
            .lease(scope, &profile, s.pool.warm as usize, secret_env, quota)
            .await?;
        let Some(sb) = lease.sandbox_mut() else {
            return Err(mcp_err("no sandbox".into()));
        };
        sb.slot
            .write_secrets(secrets::files_with(&s.secret_files, &resolved))
            .await?;
        if stdio_session(sb).is_none() {
            let taken = sb.stdio.lock().unwrap_or_else(|p| p.into_inner()).take();
            let Some(stdio) = taken else {
                lease.release(false).await;
                return Err(mcp_err("the server's stdio is not attached".into()));
            };
            match client::over_stdio(stdio, &ex.mcp.connect).await {
                Ok((client, stderr)) => {
                    sb.session = Some(Box::new(StdioSession { client, stderr }))
                }
                Err(reason) => {
                    lease.release(false).await;
                    return Err(mcp_err(reason));
                }
            }
        }
        if let Some(a) = allowlist(ex, "spec.mcp.stdio", name, &scope.tenant, &s.egress)?
            && let Some(g) = &sb.gate
        {
            let a = Arc::unwrap_or_clone(a)
                .with_injections(secrets::injections(&s.credentials, &resolved));
            g.open(Arc::new(a), for_tool);
        }
        let label = sb.short.clone();
        let output_bytes = sb.profile.limits.output_bytes;
        let stderr = stdio_session(sb).map(|m| m.stderr.clone());
        return Ok(Opened {
            session: Session::Sandboxed(Box::new(lease)),
            slack: resolved.slack(),
            redactor: resolved.redactor,
            output_bytes,
            label,
            stderr,
        });
    }
    if let Some(local) = &m.local {
        let Some(server) = ex.mcp.local.get(local) else {
            let known: Vec<&str> = ex.mcp.local.keys().map(String::as_str).collect();
            return Err(Error::McpUnknown(format!(
                "tool '{name}': spec.mcp.local: '{local}' is not a local MCP server of this tool service (configured: {})",
                if known.is_empty() {
                    "none".to_string()
                } else {
                    known.join(", ")
                }
            )));
        };
        let key = format!("local\0{}\0{local}", scope.tenant);
        let c = ex
            .mcp
            .shared(&key, || async {
                client::local_process(server, &ex.mcp.connect)
                    .await
                    .map(|(c, p)| (c, Some(p)))
            })
            .await
            .map_err(mcp_err)?;
        let stderr = ex.mcp.stderr_of(&key).await;
        return Ok(Opened {
            session: Session::Shared(c, key),
            redactor: ex.run_secrets.redactor(scope).0,
            slack: 0,
            output_bytes: DEFAULT_OUTPUT,
            label: format!("mcp:local:{local}"),
            stderr,
        });
    }
    let Some(url) = &m.url else {
        return Err(mcp_err("the manifest names no server".into()));
    };
    // The server's address is the tenant's to name, as an http tool's URL is; whether it may
    // be a non-public one is the platform's. Resolved once, and the session connects to
    // exactly the addresses checked.
    let (dest, pinned) = {
        let u = url::Url::parse(url).map_err(|e| mcp_err(format!("spec.mcp.url: {e}")))?;
        let (allow, dest, port) = Allowlist::for_url(&u, ex.egress.clone(), &scope.tenant)
            .map_err(|e| mcp_err(format!("spec.mcp.url: {e}")))?;
        let addrs = allow
            .addresses(&dest, port, tool.spec.timeout())
            .await
            .map_err(|why| {
                tracing::warn!(tool = name, %why, "egress refused");
                mcp_err(why)
            })?;
        (dest, addrs)
    };
    let wanted = secrets::header_refs(name, &m.headers, m.bearer.as_deref())?;
    let resolved = secrets::resolve(ex.secrets, ex.run_secrets, scope, name, &wanted).await?;
    let headers: Vec<(String, String)> = m
        .headers
        .iter()
        .map(|(k, v)| (k.clone(), resolved.expand(v)))
        .collect();
    let bearer = m
        .bearer
        .as_deref()
        .and_then(|b| bridle_core::manifest::SecretRef::parse(b).ok())
        .and_then(|r| resolved.value(&r).map(str::to_string));
    let host = dest.to_string();
    let unavailable = |reason: String| {
        Error::Core(bridle_core::Error::unavailable(
            format!("MCP server {url} of tool '{name}'"),
            reason,
        ))
    };
    if m.oauth.is_some() {
        // The tenant's grant: one shared session per tenant and server, every request of it
        // carrying the current access token (refreshed as it nears expiry).
        let http = client::pinned_http(url, tool.spec.timeout(), &pinned)?;
        let authorized = ex
            .oauth
            .authorized(&scope.tenant, name, url, http, &pinned)
            .await?;
        let key = Mcp::spec_key(&scope.tenant, tool, m);
        let connected = || async {
            client::streamable_http_with(url, &headers, authorized, &ex.mcp.connect)
                .await
                .map(|c| (c, None))
        };
        let c = ex.mcp.shared(&key, connected).await.map_err(|reason| {
            if reason.contains("Auth required") {
                crate::mcp::oauth::needs_login(
                    name,
                    &scope.tenant,
                    url,
                    "the server refused the kept token and it could not be refreshed",
                )
            } else {
                unavailable(reason)
            }
        })?;
        return Ok(Opened {
            session: Session::Shared(c, key),
            slack: resolved.slack(),
            redactor: resolved.redactor,
            output_bytes: DEFAULT_OUTPUT,
            label: format!("mcp:{host}"),
            stderr: None,
        });
    }
    let connect = || {
        client::streamable_http(
            url,
            &headers,
            bearer.as_deref(),
            tool.spec.timeout(),
            &pinned,
            &ex.mcp.connect,
        )
    };
    let session = if wanted.is_empty() {
        let key = Mcp::spec_key(&scope.tenant, tool, m);
        let connected = || async { connect().await.map(|c| (c, None)) };
        let c = ex.mcp.shared(&key, connected).await.map_err(unavailable)?;
        Session::Shared(c, key)
    } else {
        Session::Owned(connect().await.map_err(unavailable)?)
    };
    Ok(Opened {
        session,
        slack: resolved.slack(),
        redactor: resolved.redactor,
        output_bytes: DEFAULT_OUTPUT,
        label: format!("mcp:{host}"),
        stderr: None,
    })
}

/// The server's tools as exposed (discovered once per server definition and tenant).
pub async fn tools(
    ex: &Context<'_>,
    tenant: &str,
    tool: &Tool,
) -> Result<Arc<Vec<Exposed>>, Error> {
    let Some(m) = &tool.spec.mcp else {
        return Ok(Arc::new(vec![]));
    };
    let key = Mcp::spec_key(tenant, tool, m);
    if let Some(c) = ex.mcp.cached(&key) {
        return Ok(c);
    }
    prepare(ex, tool);
    let scope = Scope {
        tenant: tenant.to_string(),
        tool: tool.metadata.name.clone(),
        ..Default::default()
    };
    let opened = open(ex, &scope, tool, m, &tool.metadata.name, None).await?;
    let listed = match opened.peer() {
        Some(p) => tokio::time::timeout(ex.mcp.connect.init_timeout, p.list_all_tools()).await,
        None => {
            opened.finish(ex, false).await;
            return Err(Error::Mcp {
                tool: tool.metadata.name.clone(),
                reason: "no session".into(),
            });
        }
    };
    let listed = match listed {
        Ok(Ok(l)) => {
            opened.finish(ex, true).await;
            l
        }
        Ok(Err(e)) => {
            opened.finish(ex, false).await;
            return Err(Error::Mcp {
                tool: tool.metadata.name.clone(),
                reason: format!("tools/list: {e}"),
            });
        }
        Err(_) => {
            opened.finish(ex, false).await;
            return Err(Error::Mcp {
                tool: tool.metadata.name.clone(),
                reason: "tools/list did not answer in time".into(),
            });
        }
    };
    let exposed = Arc::new(expose(
        m.prefix(&tool.metadata.name),
        m,
        tool.spec.risk,
        listed,
    ));
    ex.mcp.remember(key, exposed.clone());
    Ok(exposed)
}

pub async fn run(
    ex: &Context<'_>,
    tool: &Tool,
    target: &Exposed,
    call: &Call,
) -> Result<ToolResult, Error> {
    let Some(m) = &tool.spec.mcp else {
        return Err(Error::BadTool {
            tool: call.tool.to_string(),
            reason: "not an MCP tool".into(),
        });
    };
    let opened = open(ex, &call.scope, tool, m, &call.tool, call.agent_quota).await?;
    let ws = match &opened.session {
        Session::Sandboxed(l) => l.workspace(),
        _ => None,
    };
    let before = match &ws {
        Some(w) => Some(Snapshot::take(w.clone()).await),
        None => None,
    };
    let started = Instant::now();
    let Some(peer) = opened.peer() else {
        opened.finish(ex, false).await;
        return Err(Error::Mcp {
            tool: tool.metadata.name.clone(),
            reason: "no session".into(),
        });
    };
    let mut params = CallToolRequestParams::new(target.server_name.clone());
    params.arguments = Some(call.args.clone());
    let answer = tokio::time::timeout(call.timeout, peer.call_tool_once(params)).await;
    let duration = started.elapsed();
    let files_written = match (&ws, &before) {
        (Some(w), Some(b)) => Snapshot::take(w.clone()).await.written_since(b),
        _ => vec![],
    };
    let mut result = ToolResult {
        duration: Some(pb_duration(duration)),
        sandbox_id: opened.label.clone(),
        files_written: files_written
            .iter()
            .map(|f| opened.redactor.redact(f))
            .collect(),
        ..Default::default()
    };
    let (text, is_error, ok) = match answer {
        Ok(Ok(CallToolResponse::Complete(r))) => (result_text(&r), r.is_error == Some(true), true),
        Ok(Ok(_)) => (
            "the MCP server asked for input or started a task; Bridle supports direct results only"
                .into(),
            true,
            true,
        ),
        Ok(Err(e)) => {
            let transport = !matches!(e, rmcp::ServiceError::McpError(_));
            let mut text = server_error(&e);
            // The server refused the grant mid-session, and refreshing it did not help.
            if let (Some(url), Some(_)) = (&m.url, &m.oauth)
                && transport
                && text.ends_with("Auth required")
            {
                text = crate::mcp::oauth::needs_login(
                    &tool.metadata.name,
                    &call.scope.tenant,
                    url,
                    "the server refused the kept token and it could not be refreshed",
                )
                .to_string();
            }
            // A server that died mid-call: its last words say why.
            if transport && let Some(t) = &opened.stderr {
                text = client::with_stderr(text, t);
            }
            (text, true, !transport)
        }
        Err(_) => {
            result.timed_out = true;
            (
                format!(
                    "[timed out after {}: the call was abandoned]",
                    call.timeout_text()
                ),
                true,
                false,
            )
        }
    };
    let mut cap = Capture::new(opened.output_bytes, opened.slack);
    cap.push(text.as_bytes());
    let captured = cap.finish(&opened.redactor);
    result.output = if captured.text.is_empty() {
        "(no output)".into()
    } else {
        captured.text.clone()
    };
    result.stdout = captured.text;
    result.stdout_truncated = captured.truncated;
    result.is_error = is_error;
    result.error_kind = if result.timed_out {
        ToolErrorKind::TimedOut
    } else if is_error {
        ToolErrorKind::Failed
    } else {
        ToolErrorKind::Unspecified
    } as i32;
    for why in opened.finish(ex, ok).await {
        result
            .output
            .push_str(&format!("\n[egress refused: {why}]"));
    }
    Ok(result)
}
