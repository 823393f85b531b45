//! The MCP endpoint: an agent's tools offered to outside MCP clients (IDEs, desktop
//! assistants) over streamable HTTP at `/mcp/<agent>`, every call governed as the agent's own.
//!
//! A `tools/call` is a run with `StartRunRequest.tool_call` set: the run's one step is that
//! call, so it goes through the same policy check, approval gate, credential broker,
//! sandboxes, idempotent execution, checkpoints and trace as a call the agent's model asked
//! for, and it is listed, watched, audited and cancelled like any run. The caller waits for
//! the run to end up to `mcp.call_wait`; a call still waiting for a person's approval then
//! answers with a pending result naming the run, and the client asks again with the
//! `bridle_result` tool. While it waits, a client that sent a progress token is told that the
//! call awaits an approval, and which.
//!
//! The endpoint is stateless (no MCP session is kept between requests), so any orchestrator
//! replica answers any request: the state is the run, in Redis. Requests authenticate as gRPC
//! calls do (`authorization: Bearer <API key>`); the key's tenant is the tenant (a key bound
//! to no tenant may name one with `?tenant=`); listing needs the viewer role, calling the
//! operator role.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use bridle_core::Shutdown;
use bridle_core::auth::{Authenticator, Principal, Role};
use bridle_core::ids::AgentName;
use bridle_proto as pb;
use bridle_proto::orchestrator_server::Orchestrator as _;
use bridle_proto::run_event::Kind;
use futures::StreamExt as _;
use rmcp::ErrorData as McpError;
use rmcp::model::{
    CallToolRequestParams, CallToolResponse, CallToolResult, ContentBlock, Implementation,
    InitializeResult, ListToolsResult, PaginatedRequestParams, ProgressNotificationParam,
    ServerCapabilities, ServerConfig, Tool, ToolAnnotations,
};
use rmcp::service::{RequestContext, RoleServer};
use rmcp::transport::streamable_http_server::session::never::NeverSessionManager;
use rmcp::transport::streamable_http_server::{StreamableHttpServerConfig, StreamableHttpService};
use serde_json::{Value, json};

use crate::options::McpOptions;
use crate::service::OrchestratorService;

/// The tool every agent's endpoint adds: the result of a call that was still pending.
pub const RESULT_TOOL: &str = "bridle_result";

/// Who calls, for which tenant and agent: set by [`admit`] on the HTTP request, read by the
/// handler from the request parts rmcp hands it.
#[derive(Clone, Debug)]
struct Caller {
    principal: Principal,
    tenant: bridle_core::ids::TenantId,
    agent: AgentName,
    /// The HTTP request's W3C trace context: the runs it starts join the client's trace.
    traceparent: Option<String>,
}

/// The MCP server handler (one per request: the endpoint is stateless).
#[derive(Clone)]
struct Endpoint {
    svc: Arc<OrchestratorService>,
    call_wait: Duration,
}

fn caller(cx: &RequestContext<RoleServer>) -> Result<Caller, McpError> {
    cx.extensions
        .get::<http::request::Parts>()
        .and_then(|p| p.extensions.get::<Caller>())
        .cloned()
        .ok_or_else(|| McpError::internal_error("the request was not authenticated", None))
}

fn request<T>(c: &Caller, msg: T) -> tonic::Request<T> {
    let mut r = tonic::Request::new(msg);
    r.extensions_mut().insert(c.principal.clone());
    if let Some(tp) = c
        .traceparent
        .as_deref()
        .and_then(|t| tonic::metadata::MetadataValue::try_from(t).ok())
    {
        r.metadata_mut().insert("traceparent", tp);
    }
    r
}

fn text(t: impl Into<String>) -> Vec<ContentBlock> {
    vec![ContentBlock::text(t)]
}

/// MCP's annotations for a Bridle risk class.
fn annotations(risk: i32) -> ToolAnnotations {
    match pb::RiskClass::try_from(risk).unwrap_or(pb::RiskClass::Destructive) {
        pb::RiskClass::ReadOnly => ToolAnnotations::new().read_only(true),
        pb::RiskClass::Mutating => ToolAnnotations::new().read_only(false).destructive(false),
        pb::RiskClass::Destructive | pb::RiskClass::Unspecified => {
            ToolAnnotations::new().read_only(false).destructive(true)
        }
    }
}

fn result_tool() -> Tool {
    let schema = json!({
        "type": "object",
        "properties": {
            "run_id": {"type": "string", "description": "The run a pending call named."},
            "wait_seconds": {
                "type": "integer", "minimum": 0,
                "description": "How long to wait for the call to end (at most the server's limit)."
            }
        },
        "required": ["run_id"],
        "additionalProperties": false
    });
    Tool::new(
        RESULT_TOOL,
        "The result of a call that answered 'pending' (it was waiting for a person's approval): waits for it, then returns what the call returned.",
        Arc::new(object(schema)),
    )
    .annotate(ToolAnnotations::new().read_only(true))
}

fn object(v: Value) -> serde_json::Map<String, Value> {
    match v {
        Value::Object(m) => m,
        _ => serde_json::Map::new(),
    }
}

impl Endpoint {
    /// Waits up to `wait` for run `run_id` to end, then answers with what it came to.
    async fn outcome(
        &self,
        c: &Caller,
        run_id: &str,
        wait: Duration,
        cx: &RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, McpError> {
        let deadline = tokio::time::Instant::now() + wait;
        let progress = cx.meta.get_progress_token();
        let watch = self
            .svc
            .watch_run(request(
                c,
                pb::WatchRunRequest {
                    run_id: run_id.to_string(),
                    from_offset: 0,
                    follow: true,
                },
            ))
            .await;
        let mut events = match watch {
            Err(st) => return Ok(CallToolResult::error(text(st.message())).into()),
            Ok(events) => events.into_inner(),
        };
        let mut told = 0u32;
        loop {
            let next = tokio::select! {
                n = events.next() => n,
                () = tokio::time::sleep_until(deadline) => break,
                () = cx.ct.cancelled() => break,
            };
            let ev = match next {
                None | Some(Err(_)) => break,
                Some(Ok(ev)) => ev,
            };
            match ev.kind {
                Some(Kind::RunFinished(_)) => break,
                Some(Kind::ApprovalRequested(a)) => {
                    if let Some(token) = &progress {
                        told += 1;
                        let mut p = ProgressNotificationParam::new(token.clone(), f64::from(told));
                        p.message = Some(format!(
                            "awaiting approval {} of call {} (run {run_id}): {}",
                            a.approval_id, a.tool, a.reason
                        ));
                        // A client that is gone is found out by the wait ending.
                        let _ = cx.peer.notify_progress(p).await;
                    }
                }
                _ => {}
            }
        }
        let run = match self
            .svc
            .get_run(request(
                c,
                pb::GetRunRequest {
                    run_id: run_id.to_string(),
                },
            ))
            .await
        {
            Ok(r) => r.into_inner(),
            Err(st) => return Ok(CallToolResult::error(text(st.message())).into()),
        };
        Ok(answer(&run).into())
    }

    async fn result(
        &self,
        c: &Caller,
        args: Option<serde_json::Map<String, Value>>,
        cx: &RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, McpError> {
        let args = args.unwrap_or_default();
        if let Some(k) = args
            .keys()
            .find(|k| !matches!(k.as_str(), "run_id" | "wait_seconds"))
        {
            return Ok(CallToolResult::error(text(format!(
                "{RESULT_TOOL}: unknown argument '{}' (it takes run_id and wait_seconds)",
                bridle_core::redact::quote(k)
            )))
            .into());
        }
        let Some(run_id) = args.get("run_id").and_then(Value::as_str) else {
            return Ok(CallToolResult::error(text(format!(
                "{RESULT_TOOL}: run_id (a string) is required"
            )))
            .into());
        };
        let wait = match args.get("wait_seconds") {
            None => self.call_wait,
            Some(v) => match v.as_u64() {
                Some(s) => Duration::from_secs(s).min(self.call_wait),
                None => {
                    return Ok(CallToolResult::error(text(format!(
                        "{RESULT_TOOL}: wait_seconds must be a whole number of seconds, 0 or more"
                    )))
                    .into());
                }
            },
        };
        // Only a call made through this agent's endpoint: not any run the key may read.
        match self
            .svc
            .get_run(request(
                c,
                pb::GetRunRequest {
                    run_id: run_id.to_string(),
                },
            ))
            .await
        {
            Ok(r) => {
                let r = r.into_inner();
                if c.agent != r.agent || r.tool_call.is_empty() {
                    return Ok(CallToolResult::error(text(format!(
                        "run {run_id} is not a call made through agent '{}''s MCP endpoint",
                        c.agent
                    )))
                    .into());
                }
            }
            Err(st) => return Ok(CallToolResult::error(text(st.message())).into()),
        }
        self.outcome(c, run_id, wait, cx).await
    }
}

/// What a run came to, as a tool result.
fn answer(run: &pb::Run) -> CallToolResult {
    match pb::RunStatus::try_from(run.status).unwrap_or(pb::RunStatus::Unspecified) {
        pb::RunStatus::Succeeded => CallToolResult::success(text(run.output.clone())),
        pb::RunStatus::Failed => CallToolResult::error(text(run.error.clone())),
        pb::RunStatus::Cancelled => {
            CallToolResult::error(text(format!("the call was cancelled: {}", run.error)))
        }
        status => {
            let state = status
                .as_str_name()
                .trim_start_matches("RUN_STATUS_")
                .to_lowercase();
            let line = if run.pending_approval_id.is_empty() {
                format!(
                    "PENDING: the call has not finished yet (run {}, {state}). Call {RESULT_TOOL} with {{\"run_id\": \"{}\"}} to wait for its result.",
                    run.id, run.id
                )
            } else {
                format!(
                    "PENDING: the call is waiting for a person to approve it (approval {}, run {}); it runs once approved. Call {RESULT_TOOL} with {{\"run_id\": \"{}\"}} to wait for its result.",
                    run.pending_approval_id, run.id, run.id
                )
            };
            let mut r = CallToolResult::success(text(line));
            r.structured_content = Some(json!({
                "status": state,
                "run_id": run.id,
                "approval_id": run.pending_approval_id,
            }));
            r
        }
    }
}

impl rmcp::ServerHandler for Endpoint {
    fn get_info(&self) -> ServerConfig {
        InitializeResult::new(ServerCapabilities::builder().enable_tools().build())
            .with_server_info(Implementation::new(
                "bridle",
                bridle_core::telemetry::VERSION,
            ))
            .with_instructions(format!(
                "Tools of a Bridle agent. Every call is checked by the agent's policy and may wait for a person's approval; a call that answers PENDING gives a run id to pass to {RESULT_TOOL}."
            ))
    }

    async fn list_tools(
        &self,
        _request: Option<PaginatedRequestParams>,
        cx: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, McpError> {
        let c = caller(&cx)?;
        let tools = self
            .svc
            .agent_tools(&c.tenant, &c.agent)
            .await
            .map_err(|e| McpError::invalid_request(e.to_string(), None))?;
        let mut out: Vec<Tool> = tools
            .into_iter()
            .filter(|t| t.name != RESULT_TOOL)
            .map(|t| {
                let schema = serde_json::from_str::<Value>(&t.schema)
                    .ok()
                    .filter(Value::is_object)
                    .unwrap_or_else(|| json!({"type": "object"}));
                Tool::new(t.name, t.description, Arc::new(object(schema)))
                    .annotate(annotations(t.risk))
            })
            .collect();
        out.push(result_tool());
        Ok(ListToolsResult::with_all_items(out))
    }

    async fn call_tool(
        &self,
        req: CallToolRequestParams,
        cx: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, McpError> {
        let c = caller(&cx)?;
        if req.name == RESULT_TOOL {
            return self.result(&c, req.arguments, &cx).await;
        }
        let arguments = Value::Object(req.arguments.unwrap_or_default()).to_string();
        let started = self
            .svc
            .start_run(request(
                &c,
                pb::StartRunRequest {
                    agent: c.agent.to_string(),
                    tenant: c.tenant.to_string(),
                    tool_call: Some(pb::ToolCall {
                        id: String::new(),
                        name: req.name.to_string(),
                        arguments_json: arguments,
                    }),
                    ..Default::default()
                },
            ))
            .await;
        let run = match started {
            Ok(r) => r.into_inner().run.unwrap_or_default(),
            Err(st) => return Ok(CallToolResult::error(text(st.message())).into()),
        };
        tracing::info!(run = %run.id, agent = %c.agent, tool = %req.name, caller = %c.principal.name, "MCP call started a run");
        self.outcome(&c, &run.id, self.call_wait, &cx).await
    }
}

/// The JSON error body of a request refused before MCP sees it.
fn refuse(status: StatusCode, message: &str) -> Response {
    let mut r = (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        json!({"error": message}).to_string(),
    )
        .into_response();
    if status == StatusCode::UNAUTHORIZED {
        r.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Bearer realm=\"bridle\""),
        );
    }
    r
}

/// What the middleware needs: who may call, and how big a body may be.
#[derive(Clone)]
struct Gate {
    auth: Authenticator,
    max_body: usize,
}

/// Middleware: reads the body (bounded), authenticates the request and names its tenant and
/// agent. The body is read first, whatever the answer: a request refused before its body was
/// read would have its connection closed under a client still sending it.
async fn admit(State(gate): State<Gate>, req: Request, next: Next) -> Response {
    let (parts, body) = req.into_parts();
    let body = match axum::body::to_bytes(body, gate.max_body).await {
        Ok(b) => b,
        Err(_) => {
            return refuse(
                StatusCode::PAYLOAD_TOO_LARGE,
                &format!(
                    "the request body is larger than {} bytes (mcp.max_body_bytes), or was cut off",
                    gate.max_body
                ),
            );
        }
    };
    let mut req = Request::from_parts(parts, axum::body::Body::from(body));
    let auth = gate.auth;
    let path = req.uri().path().to_string();
    let Some(agent) = path.strip_prefix("/mcp/").map(|a| a.trim_end_matches('/')) else {
        return refuse(
            StatusCode::NOT_FOUND,
            "no such endpoint: MCP is served at /mcp/<agent>",
        );
    };
    let agent = match AgentName::parse(agent) {
        Ok(a) => a,
        Err(e) => return refuse(StatusCode::NOT_FOUND, &format!("agent in the path: {e}")),
    };
    let principal = match auth.authenticate(req.headers()).await {
        Ok(p) => p,
        Err(bridle_core::Error::Unauthenticated(m)) => {
            return refuse(StatusCode::UNAUTHORIZED, &m);
        }
        Err(bridle_core::Error::PermissionDenied(m)) => return refuse(StatusCode::FORBIDDEN, &m),
        Err(e) => {
            return refuse(
                StatusCode::SERVICE_UNAVAILABLE,
                &format!("cannot authenticate the request now: {e}"),
            );
        }
    };
    let requested = req
        .uri()
        .query()
        .unwrap_or_default()
        .split('&')
        .find_map(|kv| kv.strip_prefix("tenant="))
        .unwrap_or_default()
        .to_string();
    let tenant = match principal
        .require(Role::Viewer)
        .and_then(|()| principal.tenant_for(&requested))
    {
        Ok(t) => t,
        Err(e) => return refuse(StatusCode::FORBIDDEN, &e.to_string()),
    };
    let traceparent = bridle_core::telemetry::traceparent_of(req.headers());
    req.extensions_mut().insert(Caller {
        principal,
        tenant,
        agent,
        traceparent,
    });
    next.run(req).await
}

/// Binds `opts.listen` when set and serves the endpoint on tasks owned by `shutdown`.
pub(crate) async fn spawn(
    svc: Arc<OrchestratorService>,
    auth: Authenticator,
    opts: &McpOptions,
    shutdown: &Shutdown,
) -> Result<Option<std::net::SocketAddr>, bridle_core::Error> {
    let Some(listen) = opts.listen else {
        return Ok(None);
    };
    let (listener, addr) =
        bridle_core::http_server::bind("mcp.listen", listen, opts.addr_file.as_deref()).await?;
    let endpoint = Endpoint {
        svc,
        call_wait: opts.call_wait,
    };
    let config = StreamableHttpServerConfig::default()
        .with_legacy_session_mode(false)
        .with_json_response(true)
        .with_allowed_hosts(opts.allowed_hosts.clone())
        .with_max_request_body_bytes(opts.max_body_bytes)
        .with_cancellation_token(shutdown.token().child_token());
    let mcp = StreamableHttpService::new(
        move || Ok(endpoint.clone()),
        Arc::new(NeverSessionManager::default()),
        config,
    );
    let app = axum::Router::new()
        .route_service("/mcp/{agent}", mcp)
        .fallback(|| async {
            refuse(
                StatusCode::NOT_FOUND,
                "no such endpoint: MCP is served at /mcp/<agent>",
            )
        })
        .layer(axum::middleware::from_fn_with_state(
            Gate {
                auth,
                max_body: opts.max_body_bytes,
            },
            admit,
        ));
    bridle_core::http_server::serve(
        listener,
        app,
        opts.header_read_timeout,
        "MCP endpoint",
        shutdown,
    );
    tracing::info!(%addr, "orchestrator MCP endpoint listening");
    Ok(Some(addr))
}
