//! The `code` tool kind: python or bash source, taken from one argument, run in the run's
//! sandbox. The source goes to the interpreter on stdin (no size limit of argv, no quoting);
//! the other arguments are in `BRIDLE_ARGS` as JSON.

use bridle_core::manifest::CodeTool;
use bridle_proto::{ToolErrorKind, ToolResult};
use serde_json::Value;

use super::sandboxed::{self, Command, Settings};
use super::{Call, Context};
use crate::Error;

/// Larger arguments do not fit an environment variable (the kernel caps one at 128 KiB).
const MAX_ARGS_ENV: usize = 96 * 1024;

pub fn settings(c: &CodeTool) -> Settings<'_> {
    Settings {
        field: "spec.code",
        image: c.image(),
        env: &c.env,
        secret_files: &c.secret_files,
        limits: &c.limits,
        runtime: c.runtime.as_deref(),
        pool: &c.pool,
        egress: &c.egress,
        credentials: &c.credentials,
        workdir: None,
    }
}

pub async fn run(ex: &Context<'_>, c: &CodeTool, call: &Call) -> Result<ToolResult, Error> {
    let source = match call.args.get(&c.argument) {
        Some(Value::String(s)) => s.clone(),
        _ => {
            return Ok(invalid(format!(
                "Invalid arguments for tool '{}'; nothing was run. '{}' must be a string holding the {} source to run.",
                call.tool,
                c.argument,
                c.language.as_str()
            )));
        }
    };
    let mut rest = call.args.clone();
    rest.remove(&c.argument);
    let args_json = Value::Object(rest).to_string();
    if args_json.len() > MAX_ARGS_ENV {
        return Ok(invalid(format!(
            "Invalid arguments for tool '{}'; nothing was run. The arguments besides '{}' are {} bytes; at most {MAX_ARGS_ENV} fit.",
            call.tool,
            c.argument,
            args_json.len()
        )));
    }
    sandboxed::run(
        ex,
        call,
        settings(c),
        Command {
            argv: c.language.argv(),
            stdin: Some(source.into_bytes()),
            env: vec![("BRIDLE_ARGS".into(), args_json)],
        },
    )
    .await
}

fn invalid(message: String) -> ToolResult {
    ToolResult {
        output: message,
        is_error: true,
        error_kind: ToolErrorKind::InvalidArguments as i32,
        ..Default::default()
    }
}
