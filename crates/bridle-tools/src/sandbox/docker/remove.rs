//! Removing Docker sandboxes: one by id, those of a run by label (EndRun), and those other
//! instances of this service left behind.

use std::collections::BTreeMap;
use std::time::Duration;

use bollard::Docker;
use bollard::query_parameters::{ListContainersOptionsBuilder, RemoveContainerOptionsBuilder};

use super::super::engine::{Engine, OP_TIMEOUT, is_not_found};

/// Force-removes a container; returns true when it existed. Failures are logged: the caller
/// has nothing better to do with them, and EndRun sweeps what is left.
pub(super) async fn remove_now(docker: &Docker, id: &str) -> bool {
    let opts = RemoveContainerOptionsBuilder::new()
        .force(true)
        .v(true)
        .build();
    match tokio::time::timeout(OP_TIMEOUT, docker.remove_container(id, Some(opts))).await {
        Ok(Ok(())) => true,
        Ok(Err(e)) if is_not_found(&e) => false,
        Ok(Err(e)) => {
            tracing::warn!(container = %id, error = %e, "cannot remove container");
            false
        }
        Err(_) => {
            tracing::warn!(container = %id, "removing the container took longer than {OP_TIMEOUT:?}");
            false
        }
    }
}

/// Removes the sandboxes of other instances of this service (same label namespace) that have
/// stopped more than `grace` ago: an instance killed without draining leaves its sandboxes
/// behind, and their agents end them when the instance's connection drops, but nobody removes
/// them. An instance reads a stopped sandbox's state and removes it at once, so one stopped
/// for `grace` is nobody's. Returns how many were removed.
pub(super) async fn sweep_orphans(
    engine: &Engine,
    ns: &str,
    instance: &str,
    grace: Duration,
) -> u32 {
    use bollard::query_parameters::InspectContainerOptions;
    let Ok(docker) = engine.client().await else {
        return 0;
    };
    let filters = std::collections::HashMap::from([
        ("label".to_string(), vec![format!("{ns}.managed=true")]),
        (
            "status".to_string(),
            vec!["exited".to_string(), "dead".to_string()],
        ),
    ]);
    let opts = ListContainersOptionsBuilder::new()
        .all(true)
        .filters(&filters)
        .build();
    let Ok(Ok(found)) = tokio::time::timeout(OP_TIMEOUT, docker.list_containers(Some(opts))).await
    else {
        return 0;
    };
    let now = time::OffsetDateTime::now_utc();
    let mut removed = 0;
    for c in found {
        let Some(id) = c.id else { continue };
        let theirs = c
            .labels
            .as_ref()
            .and_then(|l| l.get(&format!("{ns}.instance")))
            .is_some_and(|i| i != instance);
        if !theirs {
            continue;
        }
        let Ok(Ok(info)) = tokio::time::timeout(
            OP_TIMEOUT,
            docker.inspect_container(&id, None::<InspectContainerOptions>),
        )
        .await
        else {
            continue;
        };
        let finished = info.state.and_then(|s| s.finished_at).and_then(|t| {
            time::OffsetDateTime::parse(&t, &time::format_description::well_known::Rfc3339).ok()
        });
        let stopped_for = finished.map(|f| now - f);
        if stopped_for.is_some_and(|d| d >= grace) && remove_now(&docker, &id).await {
            removed += 1;
        }
    }
    if removed > 0 {
        tracing::info!(
            count = removed,
            "removed sandboxes that instances gone without draining left behind"
        );
    }
    removed
}

/// Removes every container carrying all of `labels`, running or not (EndRun: the run's
/// sandboxes this instance lost track of, or that another instance made). Returns how many.
pub(super) async fn remove_labelled(engine: &Engine, labels: &BTreeMap<String, String>) -> u32 {
    let filters = std::collections::HashMap::from([(
        "label".to_string(),
        labels.iter().map(|(k, v)| format!("{k}={v}")).collect(),
    )]);
    let mut removed = 0;
    if let Ok(docker) = engine.client().await {
        let opts = ListContainersOptionsBuilder::new()
            .all(true)
            .filters(&filters)
            .build();
        if let Ok(Ok(found)) =
            tokio::time::timeout(OP_TIMEOUT, docker.list_containers(Some(opts))).await
        {
            for c in found {
                if let Some(id) = c.id
                    && remove_now(&docker, &id).await
                {
                    removed += 1;
                }
            }
        }
    }
    removed
}
