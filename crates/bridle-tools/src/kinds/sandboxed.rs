//! What `container` and `code` tools share: their sandbox settings become a profile, their
//! secrets are resolved for the call, the command runs in the run's sandbox, and the result
//! is capped, redacted and classified.

use std::collections::BTreeMap;
use std::sync::Arc;

use bridle_core::manifest::{ContainerLimits, PoolSettings};
use bridle_core::timeutil::pb_duration;
use bridle_proto::{ToolErrorKind, ToolResult};

use super::{Call, Context};
use crate::egress::Allowlist;
use crate::sandbox::Limits;
use crate::sandbox::backend::ExecRequest;
use crate::sandbox::call::ExecCall;
use crate::sandbox::output::{Ending, model_output};
use crate::sandbox::profile::Profile;
use crate::{Error, secrets};

/// A sandboxed tool's settings, borrowed from its manifest block.
pub struct Settings<'a> {
    /// "spec.container" or "spec.code", for messages.
    pub field: &'a str,
    pub image: String,
    pub env: &'a BTreeMap<String, String>,
    pub secret_files: &'a BTreeMap<String, String>,
    pub limits: &'a ContainerLimits,
    pub runtime: Option<&'a str>,
    pub pool: &'a PoolSettings,
    pub egress: &'a [String],
    pub credentials: &'a [bridle_core::manifest::CredentialBinding],
    pub workdir: Option<String>,
}

/// The command to run.
pub struct Command {
    pub argv: Vec<String>,
    pub stdin: Option<Vec<u8>>,
    /// Added to the tool's environment (never secret).
    pub env: Vec<(String, String)>,
}

pub fn limits(field: &str, tool: &str, l: &ContainerLimits) -> Result<Limits, Error> {
    Limits::from_manifest(l).map_err(|reason| Error::BadTool {
        tool: tool.to_string(),
        reason: format!("{field}.{reason}"),
    })
}

pub fn allowlist(
    ex: &Context<'_>,
    field: &str,
    tool: &str,
    tenant: &str,
    egress: &[String],
) -> Result<Option<Arc<Allowlist>>, Error> {
    if egress.is_empty() {
        return Ok(None);
    }
    Allowlist::parse(egress, ex.egress.clone(), tenant)
        .map(|a| Some(Arc::new(a)))
        .map_err(|reason| Error::BadTool {
            tool: tool.to_string(),
            reason: format!("{field}.egress: {reason}"),
        })
}

/// The profile of a tool's sandbox (also used to warm its pool ahead of calls).
pub fn profile(
    ex: &Context<'_>,
    tenant: &str,
    tool: &str,
    s: &Settings<'_>,
) -> Result<Arc<Profile>, Error> {
    Ok(Arc::new(Profile::idle(
        &s.image,
        limits(s.field, tool, s.limits)?,
        runtime(ex, tenant, s.field, tool, s.runtime)?,
        !s.egress.is_empty(),
    )))
}

/// The OCI runtime of a tool's sandbox (see [`crate::sandbox::runtime`]).
pub fn runtime(
    ex: &Context<'_>,
    tenant: &str,
    field: &str,
    tool: &str,
    asked: Option<&str>,
) -> Result<Option<String>, Error> {
    ex.runtimes
        .resolve(tenant, asked)
        .map_err(|reason| Error::BadTool {
            tool: tool.to_string(),
            reason: format!("{field}.{reason}"),
        })
}

pub async fn run(
    ex: &Context<'_>,
    call: &Call,
    s: Settings<'_>,
    cmd: Command,
) -> Result<ToolResult, Error> {
    let profile = profile(ex, &call.scope.tenant, &call.tool, &s)?;
    let quota = ex.sandboxes.quotas.for_call(
        &call.tool,
        s.field,
        s.limits,
        &call.scope.agent,
        call.agent_quota,
    )?;
    let allow = allowlist(ex, s.field, &call.tool, &call.scope.tenant, s.egress)?;
    let mut wanted = secrets::env_refs(&call.tool, s.env)?;
    wanted.extend(secrets::file_refs(&call.tool, s.secret_files)?);
    wanted.extend(secrets::credential_refs(&call.tool, s.credentials)?);
    let resolved =
        secrets::resolve(ex.secrets, ex.run_secrets, &call.scope, &call.tool, &wanted).await?;
    let mut env = secrets::env_with(s.env, &resolved);
    env.extend(cmd.env);
    // The credentials go to the proxy, never into the sandbox.
    let allow = allow.map(|a| {
        Arc::new(
            Arc::unwrap_or_clone(a).with_injections(secrets::injections(s.credentials, &resolved)),
        )
    });
    if allow.is_some() {
        env.extend(crate::egress::proxy_env());
    }
    if !s.credentials.is_empty() {
        env.extend(crate::egress::ca_env());
    }
    env.push(("HOME".into(), "/tmp".into()));
    let output_bytes = profile.limits.output_bytes;
    let request = ExecRequest {
        argv: cmd.argv,
        env,
        workdir: s.workdir,
        stdin: cmd.stdin,
        timeout: call.timeout,
        output_bytes,
        slack: resolved.slack(),
    };
    let result = ex
        .sandboxes
        .exec_call(
            &call.scope,
            ExecCall {
                tool: call.tool.to_string(),
                profile,
                warm: s.pool.warm as usize,
                request,
                secret_files: secrets::files_with(s.secret_files, &resolved),
                allow,
                quota,
                values: ex.run_secrets.redactor(&call.scope).0,
            },
            ex.cleanup,
        )
        .await?;
    let o = result.outcome;
    // The last phase: the output capped and scrubbed of the run's secrets.
    let capture = tracing::info_span!("capture_output", "otel.kind" = "internal");
    let (stdout, stderr) = capture.in_scope(|| {
        (
            o.stdout.finish(&resolved.redactor),
            o.stderr.finish(&resolved.redactor),
        )
    });
    let ending = if o.vanished {
        Ending::Removed
    } else if let Some(code) = o.sandbox_stopped {
        Ending::SandboxStopped { code }
    } else if o.timed_out {
        Ending::TimedOut {
            after: call.timeout_text(),
        }
    } else if o.oom_killed {
        Ending::OomKilled {
            limit: s.limits.memory.clone(),
        }
    } else {
        Ending::Exited(o.exit_code)
    };
    let kind = error_kind(o.exit_code, o.timed_out, o.oom_killed, o.vanished);
    let mut output = model_output(&stdout.text, &stderr.text, &ending);
    if let Some(n) = &result.notice {
        output = format!("{n}\n{output}");
    }
    // What the proxy refused reaches the model with the reason, not only the proxy's log: an
    // agent that reads "not allowed for tenant ..." stops retrying.
    for why in &result.egress_refused {
        output.push_str(&format!("\n[egress refused: {why}]"));
    }
    Ok(ToolResult {
        output,
        is_error: kind != ToolErrorKind::Unspecified,
        error_kind: kind as i32,
        exit_code: o.exit_code,
        stdout: stdout.text,
        stderr: stderr.text,
        stdout_truncated: stdout.truncated,
        stderr_truncated: stderr.truncated,
        duration: Some(pb_duration(o.duration)),
        timed_out: o.timed_out,
        oom_killed: o.oom_killed,
        files_written: result
            .files_written
            .into_iter()
            .map(|f| resolved.redactor.redact(&f))
            .collect(),
        sandbox_id: result.sandbox_id,
        http_status: 0,
        // Filled in where every kind's result leaves the executor.
        timeout_limit: 0,
        run_holds_secrets: false,
    })
}

/// How a finished run is classified.
pub fn error_kind(
    exit_code: i32,
    timed_out: bool,
    oom_killed: bool,
    cancelled: bool,
) -> ToolErrorKind {
    if cancelled {
        ToolErrorKind::Cancelled
    } else if timed_out {
        ToolErrorKind::TimedOut
    } else if oom_killed {
        ToolErrorKind::OomKilled
    } else if exit_code != 0 {
        ToolErrorKind::Failed
    } else {
        ToolErrorKind::Unspecified
    }
}
