//! What the engine says about a Docker sandbox: whether it runs, why it stopped, its OOM
//! kills (read from the engine's events, since an exec's OOM does not mark the container) and
//! its processes.

use std::time::Duration;

use bollard::Docker;
use bollard::query_parameters::EventsOptionsBuilder;
use futures::StreamExt as _;

use super::super::backend::{Process, Stopped};
use super::super::engine::OP_TIMEOUT;

/// Whether container `id` is running.
pub(super) async fn alive(docker: &Docker, id: &str) -> bool {
    match tokio::time::timeout(OP_TIMEOUT, docker.inspect_container(id, None)).await {
        Ok(Ok(i)) => i.state.and_then(|s| s.running).unwrap_or(false),
        _ => false,
    }
}

/// Why the sandbox stopped, once its state says so (waited for up to a second).
pub(super) async fn why_stopped(docker: &Docker, id: &str) -> Stopped {
    for _ in 0..10 {
        let state = tokio::time::timeout(OP_TIMEOUT, docker.inspect_container(id, None)).await;
        let Ok(Ok(i)) = state else {
            return Stopped::Other;
        };
        let Some(s) = i.state else {
            return Stopped::Other;
        };
        if s.running != Some(true) {
            return match (s.oom_killed, s.exit_code) {
                (Some(true), _) => Stopped::OutOfMemory,
                (_, Some(code)) => Stopped::Exited(code),
                _ => Stopped::Other,
            };
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Stopped::Other
}

/// Whether the engine reported an OOM kill in the sandbox since the call started. The event
/// can trail the exit by a moment, so an absent one is looked for a few times.
pub(super) async fn oom_since(docker: &Docker, id: &str, since: std::time::SystemTime) -> bool {
    let secs = |t: std::time::SystemTime| {
        t.duration_since(std::time::UNIX_EPOCH)
            .map(|d| format!("{}.{:09}", d.as_secs(), d.subsec_nanos()))
            .unwrap_or_default()
    };
    let filters = std::collections::HashMap::from([
        ("container".to_string(), vec![id.to_string()]),
        ("event".to_string(), vec!["oom".to_string()]),
    ]);
    for attempt in 0..4 {
        if attempt > 0 {
            tokio::time::sleep(Duration::from_millis(150)).await;
        }
        let opts = EventsOptionsBuilder::new()
            .since(&secs(since - Duration::from_secs(1)))
            .until(&secs(std::time::SystemTime::now()))
            .filters(&filters)
            .build();
        let found =
            tokio::time::timeout(Duration::from_secs(5), docker.events(Some(opts)).next()).await;
        if let Ok(Some(Ok(_))) = found {
            return true;
        }
    }
    false
}

/// The processes in container `id` (`docker top`); None when it cannot be looked at, or the
/// engine's table lacks the PID or command column.
pub(super) async fn processes(docker: &Docker, id: &str) -> Option<Vec<Process>> {
    let top = tokio::time::timeout(OP_TIMEOUT, docker.top_processes(id, None))
        .await
        .ok()?
        .ok()?;
    let titles = top.titles.unwrap_or_default();
    let pid = titles.iter().position(|t| t == "PID")?;
    let cmd = titles.iter().position(|t| t == "CMD" || t == "COMMAND")?;
    Some(
        top.processes
            .unwrap_or_default()
            .into_iter()
            .filter_map(|p| {
                Some(Process {
                    pid: p.get(pid)?.clone(),
                    command: p.get(cmd)?.clone(),
                })
            })
            .collect(),
    )
}
