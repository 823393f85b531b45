//! Creating and starting a Docker sandbox: the container of a [`SandboxSpec`], built and
//! checked by [`config::build`] (which refuses privileged mode, added capabilities and the
//! Docker socket), under a runtime the engine has, its main process's stdio attached when
//! asked, and the egress forwarder started beside it with `docker exec`.

use std::sync::Arc;

use bollard::Docker;
use bollard::container::LogOutput;
use bollard::exec::{CreateExecOptions, StartExecOptions};
use bollard::query_parameters::{AttachContainerOptionsBuilder, CreateContainerOptionsBuilder};
use futures::StreamExt as _;

use super::super::backend::{Backend, Chunk, ContainerGuard, Created, Failed, MainStdio};
use super::super::config::{self, SandboxSpec};
use super::super::engine::{Engine, OP_TIMEOUT, is_not_found};
use super::super::profile::Profile;
use super::DockerBackend;
use crate::Error;
use crate::egress;
use crate::user::SANDBOX_USER;

/// Creates and starts the container of `spec`, guarded by `me` from the moment it exists.
pub(super) async fn create(
    me: Arc<DockerBackend>,
    profile: &Profile,
    mut spec: SandboxSpec,
) -> Result<Created, Failed> {
    let early = |error| Failed {
        error,
        at_start: false,
    };
    if super::super::runtime::is_gvisor(spec.runtime.as_deref()) {
        spec.limits.pids = spec
            .limits
            .pids
            .saturating_add(super::super::runtime::GVISOR_PIDS_OVERHEAD);
    }
    let body = config::build(&spec)
        .map_err(|refused| refused.for_tool(profile.image.clone()))
        .map_err(early)?;
    let engine = &me.engine;
    let docker = engine.client().await.map_err(early)?;
    if let Some(rt) = &spec.runtime {
        engine.require_runtime(rt).await.map_err(early)?;
    }
    let name = format!(
        "bridle-{}-{}",
        profile.key,
        ulid::Ulid::new().to_string().to_lowercase()
    );
    let opts = CreateContainerOptionsBuilder::new().name(&name).build();
    let created = tokio::time::timeout(OP_TIMEOUT, docker.create_container(Some(opts), body))
        .await
        .map_err(|_| early(engine.timed_out("create a container")))?
        .map_err(|e| {
            early(
                if is_not_found(&e) && e.to_string().to_ascii_lowercase().contains("image") {
                    Error::ImageMissing(profile.image.clone())
                } else {
                    engine.error(
                        &format!("create a container of image '{}'", profile.image),
                        e,
                    )
                },
            )
        })?;
    let backend: Arc<dyn Backend> = me.clone();
    let guard = ContainerGuard::new(backend, created.id.clone(), me.cleanup.clone());
    let id = created.id;
    let stdio = if spec.stdin {
        let attach = AttachContainerOptionsBuilder::new()
            .stdin(true)
            .stdout(true)
            .stderr(true)
            .stream(true)
            .logs(false)
            .build();
        let a = tokio::time::timeout(OP_TIMEOUT, docker.attach_container(&id, Some(attach)))
            .await
            .map_err(|_| early(engine.timed_out("attach to a container")))?
            .map_err(|e| early(engine.error("attach to a sandbox", e)))?;
        let output = a.output.filter_map(|item| {
            futures::future::ready(match item {
                Ok(LogOutput::StdOut { message }) | Ok(LogOutput::Console { message }) => {
                    Some(Ok(Chunk::Stdout(message)))
                }
                Ok(LogOutput::StdErr { message }) => Some(Ok(Chunk::Stderr(message))),
                Ok(LogOutput::StdIn { .. }) => None,
                Err(e) => Some(Err(std::io::Error::other(e.to_string()))),
            })
        });
        Some(MainStdio {
            output: Box::pin(output),
            input: a.input,
        })
    } else {
        None
    };
    let started = tokio::time::timeout(OP_TIMEOUT, docker.start_container(&id, None))
        .await
        .map_err(|_| engine.timed_out("start a container"))
        .and_then(|r| {
            r.map_err(|e| engine.error(&format!("start a sandbox of image '{}'", profile.image), e))
        });
    if let Err(error) = started {
        guard.remove().await;
        return Err(Failed {
            error,
            at_start: true,
        });
    }
    // A forwarder that cannot start drops the guard: the container goes.
    if profile.egress {
        start_forwarder(engine, &docker, &id).await.map_err(early)?;
    }
    Ok(Created { id, guard, stdio })
}

/// Starts the egress forwarder beside the main process (it needs python3 in the image).
async fn start_forwarder(engine: &Engine, docker: &Docker, id: &str) -> Result<(), Error> {
    let exec = docker
        .create_exec(
            id,
            CreateExecOptions::<String> {
                cmd: Some(vec![
                    "python3".into(),
                    "-c".into(),
                    egress::FORWARDER_PY.into(),
                ]),
                user: Some(SANDBOX_USER.into()),
                attach_stdout: Some(true),
                attach_stderr: Some(true),
                ..Default::default()
            },
        )
        .await
        .map_err(|e| engine.error("start the egress forwarder (the image needs python3)", e))?;
    let started = docker
        .start_exec(&exec.id, None::<StartExecOptions>)
        .await
        .map_err(|e| engine.error("start the egress forwarder (the image needs python3)", e))?;
    if let bollard::exec::StartExecResults::Attached { mut output, .. } = started {
        let drain = async { while output.next().await.is_some() {} };
        tokio::time::timeout(OP_TIMEOUT, drain)
            .await
            .map_err(|_| engine.timed_out("start the egress forwarder"))?;
    }
    let done = docker
        .inspect_exec(&exec.id)
        .await
        .map_err(|e| engine.error("inspect the egress forwarder", e))?;
    if done.exit_code != Some(0) {
        return Err(Error::DockerRefused {
            op: "start the egress forwarder".into(),
            message: format!(
                "it exited with {:?}; the image needs python3 for egress",
                done.exit_code
            ),
        });
    }
    Ok(())
}
