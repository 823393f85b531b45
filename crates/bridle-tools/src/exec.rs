//! One `Execute`: find the tool (a Tool manifest, or one tool of an MCP server by its
//! exposed name), replay or claim the idempotency key, check the arguments, dispatch on the
//! kind, store the result for replays. Everything around the kinds (lookup, validation,
//! idempotency) is shared.

use std::sync::Arc;
use std::time::Duration;

use bridle_core::client::Traced as Channel;
use bridle_core::ids::ToolName;
use bridle_core::manifest::Tool;
use bridle_core::timeutil::std_duration;
use bridle_proto::secrets_client::SecretsClient;
use bridle_proto::{
    ExecuteRequest, ExecuteResponse, Scope, TimeoutLimit, ToolErrorKind, ToolResult, ToolSpec,
};
use serde_json::{Map, Value};

use crate::idempotency::{Begin, Idempotency, MAX_KEY_LEN};
use crate::kinds::{Call, Context, code, container, http, mcp as mcp_kind, sandboxed};
use crate::mcp::{Exposed, Mcp, SEPARATOR, exposed_proto};
use crate::registry::{Registry, spec_proto, tenant_or_default, tool_tenant};
use crate::sandbox::runs::Sandboxes;
use crate::sandbox::{Backend, Cleanup};
use crate::{Error, args};

/// The longest wall-clock limit a call can have, whatever the request or the tool says.
const MAX_TIMEOUT: Duration = Duration::from_secs(24 * 3600);

pub struct Executor {
    pub registry: Registry,
    pub idempotency: Idempotency,
    /// What makes and removes sandboxes (EndRun's sweep by label goes through it).
    pub backend: Arc<dyn Backend>,
    pub secrets: SecretsClient<Channel>,
    /// Each live run's redaction set.
    pub run_secrets: crate::secrets::RunSecrets,
    pub label_namespace: String,
    pub cleanup: Cleanup,
    pub sandboxes: Arc<Sandboxes>,
    pub mcp: Mcp,
    /// OAuth flows and grants of remote MCP servers (`spec.mcp.oauth`).
    pub oauth: crate::mcp::oauth::OAuth,
    /// What the platform lets tools reach beyond their tenants' rules, and what never.
    pub egress: Arc<crate::egress::Platform>,
    /// Which OCI runtime each tenant's sandboxes run under.
    pub runtimes: Arc<crate::sandbox::Runtimes>,
}

/// What a name refers to.
pub enum Target {
    Manifest(Tool),
    Mcp(Tool, Exposed),
}

impl Target {
    fn tool(&self) -> &Tool {
        match self {
            Target::Manifest(t) | Target::Mcp(t, _) => t,
        }
    }

    fn parameters(&self) -> &Value {
        match self {
            Target::Manifest(t) => &t.spec.parameters,
            Target::Mcp(_, e) => &e.schema,
        }
    }
}

impl Executor {
    /// What the tool kinds use of the service.
    fn kinds(&self) -> Context<'_> {
        Context {
            sandboxes: &self.sandboxes,
            mcp: &self.mcp,
            oauth: &self.oauth,
            secrets: &self.secrets,
            run_secrets: &self.run_secrets,
            egress: &self.egress,
            runtimes: &self.runtimes,
            cleanup: self.cleanup.shutdown(),
        }
    }

    /// The tool called `name`: a manifest, or `<prefix>__<tool>` of an MCP server.
    pub async fn resolve(&self, tenant: &str, name: &str) -> Result<Option<Target>, Error> {
        if let Some(t) = self.registry.get(tenant, name).await? {
            if t.spec.mcp.is_some() {
                let names: Vec<String> = mcp_kind::tools(&self.kinds(), tenant, &t)
                    .await?
                    .iter()
                    .map(|e| e.name.clone())
                    .collect();
                return Err(Error::InvalidArgument(format!(
                    "tool '{name}' is an MCP server; call one of its tools: {}",
                    names.join(", ")
                )));
            }
            return Ok(Some(Target::Manifest(t)));
        }
        if !name.contains(SEPARATOR) {
            return Ok(None);
        }
        // Usually the prefix is the manifest's name; a custom prefix needs a look at all.
        let mut candidates = Vec::new();
        if let Some((prefix, _)) = name.split_once(SEPARATOR)
            && let Some(t) = self.registry.get(tenant, prefix).await?
        {
            candidates.push(t);
        }
        let custom = candidates
            .iter()
            .all(|t| t.spec.mcp.as_ref().is_none_or(|m| m.prefix.is_some()));
        if custom {
            let (all, _) = self.registry.list(tenant, &[]).await?;
            candidates.extend(all.into_iter().filter(|t| {
                t.spec.mcp.as_ref().is_some_and(|m| {
                    name.starts_with(&format!("{}{SEPARATOR}", m.prefix(&t.metadata.name)))
                })
            }));
        }
        for t in candidates {
            let Some(m) = &t.spec.mcp else { continue };
            if !name.starts_with(&format!("{}{SEPARATOR}", m.prefix(&t.metadata.name))) {
                continue;
            }
            if let Some(e) = mcp_kind::tools(&self.kinds(), tenant, &t)
                .await?
                .iter()
                .find(|e| e.name == name)
            {
                return Ok(Some(Target::Mcp(t.clone(), e.clone())));
            }
        }
        Ok(None)
    }

    /// ToolSpecs for ListTools: MCP servers are expanded into their tools; a name may also be
    /// an exposed MCP tool. Warm pools of the listed tools start filling.
    pub async fn list(
        &self,
        tenant: &str,
        names: &[String],
    ) -> Result<(Vec<ToolSpec>, Vec<String>), Error> {
        let mut specs = Vec::new();
        let mut missing = Vec::new();
        if names.is_empty() {
            let (all, _) = self.registry.list(tenant, &[]).await?;
            for t in all {
                match self.specs_of(tenant, &t).await {
                    Ok(mut s) => specs.append(&mut s),
                    // One broken server must not hide every other tool.
                    Err(e) => {
                        tracing::warn!(tool = %t.metadata.name, error = %e, "cannot list the tools of an MCP server")
                    }
                }
            }
            return Ok((specs, missing));
        }
        for n in names {
            match self.registry.get(tenant, n).await? {
                Some(t) => specs.append(&mut self.specs_of(tenant, &t).await?),
                None => match self.resolve(tenant, n).await? {
                    Some(Target::Mcp(t, e)) => specs.push(exposed_proto(&t, &e)),
                    Some(Target::Manifest(t)) => specs.push(spec_proto(&t)),
                    None => missing.push(n.clone()),
                },
            }
        }
        Ok((specs, missing))
    }

    async fn specs_of(&self, tenant: &str, t: &Tool) -> Result<Vec<ToolSpec>, Error> {
        self.prepare(t);
        if t.spec.mcp.is_some() {
            let exposed = mcp_kind::tools(&self.kinds(), tenant, t).await?;
            return Ok(exposed.iter().map(|e| exposed_proto(t, e)).collect());
        }
        Ok(vec![spec_proto(t)])
    }

    /// Starts filling the warm pool of a tool's sandbox, ahead of its first call.
    fn prepare(&self, t: &Tool) {
        let settings = match (&t.spec.container, &t.spec.code) {
            (Some(c), _) => container::settings(c),
            (_, Some(c)) => code::settings(c),
            _ => {
                mcp_kind::prepare(&self.kinds(), t);
                return;
            }
        };
        if settings.pool.warm > 0
            && let Ok(p) =
                sandboxed::profile(&self.kinds(), tool_tenant(t), &t.metadata.name, &settings)
        {
            self.sandboxes.pool.prepare(&p, settings.pool.warm as usize);
        }
    }

    pub async fn execute(&self, mut req: ExecuteRequest) -> Result<ExecuteResponse, Error> {
        let mut scope = req.scope.take().unwrap_or_default();
        scope.tenant = tenant_or_default(&scope.tenant).to_string();
        let name = if req.tool.is_empty() {
            scope.tool.clone()
        } else {
            req.tool.clone()
        };
        if name.is_empty() {
            return Err(Error::InvalidArgument(
                "tool: the name of the tool to run is required".into(),
            ));
        }
        let name =
            ToolName::parse(&name).map_err(|e| Error::InvalidArgument(format!("tool: {e}")))?;
        if req.idempotency_key.len() > MAX_KEY_LEN {
            return Err(Error::InvalidArgument(format!(
                "idempotency_key: longer than {MAX_KEY_LEN} bytes"
            )));
        }
        scope.tool = name.to_string();
        let target =
            self.resolve(&scope.tenant, &name)
                .await?
                .ok_or_else(|| Error::UnknownTool {
                    tenant: scope.tenant.clone(),
                    tool: name.to_string(),
                })?;
        let (timeout, timeout_limit) = effective_timeout(
            target.tool().spec.timeout(),
            std_duration(req.timeout.as_ref()),
            req.timeout_limit(),
        );

        let claim = if req.idempotency_key.is_empty() {
            None
        } else {
            match self
                .idempotency
                .begin(
                    &scope.tenant,
                    &name,
                    &req.idempotency_key,
                    timeout,
                    self.cleanup.shutdown(),
                )
                .await
                .map_err(|e| e.doing("the tool call was not run"))?
            {
                Begin::Replay(result) => {
                    tracing::info!(tool = %name, tenant = %scope.tenant, "replayed a completed call");
                    return Ok(ExecuteResponse {
                        result: Some(result),
                        replayed: true,
                    });
                }
                Begin::Claimed(c) => Some(c),
            }
        };

        let validator = self
            .registry
            .validator(&scope.tenant, &name, target.parameters())?;
        let parsed = args::parse(&name, &req.arguments_json).and_then(|m| {
            let v = Value::Object(m);
            args::check(&name, &validator, target.parameters(), &v).map(|()| v)
        });
        let args = match parsed {
            Ok(Value::Object(m)) => m,
            Ok(_) => Map::new(),
            // Nothing ran: the claim is released and nothing is stored, so the corrected
            // call can use the same key.
            Err(message) => {
                if let Some(c) = claim {
                    c.release().await;
                }
                return Ok(ExecuteResponse {
                    result: Some(self.scrubbed(&scope, invalid_arguments(message))),
                    replayed: false,
                });
            }
        };

        let call = Call {
            scope,
            tool: name,
            args,
            call_id: req.call_id,
            timeout,
            timeout_limit,
            agent_quota: (req.workspace_quota_bytes > 0).then_some(req.workspace_quota_bytes),
            idempotency_key: req.idempotency_key,
        };
        let mut result = self.run_kind(&target, &call).await?;
        if result.timed_out {
            result.timeout_limit = call.timeout_limit as i32;
        }
        let result = self.scrubbed(&call.scope, result);
        tracing::info!(
            tool = %call.tool,
            tenant = %call.scope.tenant,
            run = %call.scope.run_id,
            call = %call.call_id,
            exit_code = result.exit_code,
            is_error = result.is_error,
            timed_out = result.timed_out,
            oom_killed = result.oom_killed,
            sandbox = %result.sandbox_id,
            "tool call finished"
        );
        if let Some(claim) = claim {
            // The tool ran: its result goes back even if storing it fails (a retry would run
            // it again, which is what the marker's expiry allows anyway).
            if let Err(e) = claim.complete(&result).await {
                tracing::error!(tool = %call.tool, error = %e, "cannot store the result for idempotent replay");
            }
        }
        Ok(ExecuteResponse {
            result: Some(result),
            replayed: false,
        })
    }

    /// The result as it may leave this service: every text in it scrubbed of every value the
    /// run resolved. The kinds scrub what they capture too; this is the one place that holds
    /// for every path out, messages built from the model's own arguments included.
    fn scrubbed(&self, scope: &Scope, mut r: ToolResult) -> ToolResult {
        let (redactor, _) = self.run_secrets.redactor(scope);
        if redactor.is_empty() {
            return r;
        }
        r.run_holds_secrets = true;
        for text in [
            &mut r.output,
            &mut r.stdout,
            &mut r.stderr,
            &mut r.sandbox_id,
        ]
        .into_iter()
        .chain(r.files_written.iter_mut())
        {
            *text = redactor.redact(text);
        }
        r
    }

    async fn run_kind(&self, target: &Target, call: &Call) -> Result<ToolResult, Error> {
        let t = match target {
            Target::Mcp(t, e) => return mcp_kind::run(&self.kinds(), t, e, call).await,
            Target::Manifest(t) => t,
        };
        let s = &t.spec;
        if let Some(c) = &s.container {
            container::run(&self.kinds(), c, call).await
        } else if let Some(c) = &s.code {
            code::run(&self.kinds(), c, call).await
        } else if let Some(h) = &s.http {
            http::run(&self.kinds(), h, call).await
        } else {
            Err(Error::BadTool {
                tool: call.tool.to_string(),
                reason: format!("kind '{}' cannot be run by this tool service", s.kind()),
            })
        }
    }
}

/// A call's limit: the smaller of the tool's own `timeout` and the caller's (which the caller
/// says is its ceiling or what is left of the run's budget), capped so that deadlines
/// computed from it cannot overflow. A caller can shorten a tool's timeout, never lengthen it.
fn effective_timeout(
    tool: Duration,
    caller: Option<Duration>,
    caller_limit: TimeoutLimit,
) -> (Duration, TimeoutLimit) {
    let (t, limit) = match caller {
        Some(c) if c < tool => (
            c,
            match caller_limit {
                TimeoutLimit::Unspecified | TimeoutLimit::Tool => TimeoutLimit::Caller,
                other => other,
            },
        ),
        _ => (tool, TimeoutLimit::Tool),
    };
    (t.min(MAX_TIMEOUT), limit)
}

fn invalid_arguments(message: String) -> ToolResult {
    ToolResult {
        output: message,
        is_error: true,
        error_kind: ToolErrorKind::InvalidArguments as i32,
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: fn(u64) -> Duration = Duration::from_secs;

    #[test]
    fn the_tools_own_timeout_wins_when_it_is_the_smallest() {
        assert_eq!(
            effective_timeout(S(8), Some(S(600)), TimeoutLimit::Caller),
            (S(8), TimeoutLimit::Tool)
        );
        assert_eq!(
            effective_timeout(S(8), None, TimeoutLimit::Unspecified),
            (S(8), TimeoutLimit::Tool)
        );
    }

    #[test]
    fn a_caller_can_shorten_a_timeout_and_says_why() {
        assert_eq!(
            effective_timeout(S(30), Some(S(5)), TimeoutLimit::RunWallTime),
            (S(5), TimeoutLimit::RunWallTime)
        );
        assert_eq!(
            effective_timeout(S(30), Some(S(5)), TimeoutLimit::Unspecified),
            (S(5), TimeoutLimit::Caller)
        );
    }

    #[test]
    fn no_timeout_exceeds_the_cap() {
        assert_eq!(
            effective_timeout(S(u64::MAX / 4), None, TimeoutLimit::Unspecified).0,
            MAX_TIMEOUT
        );
    }
}
