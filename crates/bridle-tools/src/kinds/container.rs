//! The `container` tool kind: the manifest's command (placeholders filled from the
//! arguments) run in the run's sandbox, the arguments on stdin as JSON.

use bridle_core::manifest::ContainerTool;
use bridle_proto::ToolResult;

use super::sandboxed::{self, Command, Settings};
use super::{Call, Context};
use crate::{Error, args};

pub fn settings(c: &ContainerTool) -> Settings<'_> {
    Settings {
        field: "spec.container",
        image: c.image.clone(),
        env: &c.env,
        secret_files: &c.secret_files,
        limits: &c.limits,
        runtime: c.runtime.as_deref(),
        pool: &c.pool,
        egress: &c.egress,
        credentials: &c.credentials,
        workdir: c.workdir.clone(),
    }
}

pub async fn run(ex: &Context<'_>, c: &ContainerTool, call: &Call) -> Result<ToolResult, Error> {
    let argv: Vec<String> = c
        .command
        .iter()
        .map(|a| args::render(a, &call.args))
        .collect();
    let stdin = if c.stdin {
        Some(
            serde_json::to_vec(&call.args)
                .map_err(|e| Error::Core(bridle_core::Error::internal(e)))?,
        )
    } else {
        None
    };
    sandboxed::run(
        ex,
        call,
        settings(c),
        Command {
            argv,
            stdin,
            env: vec![],
        },
    )
    .await
}
