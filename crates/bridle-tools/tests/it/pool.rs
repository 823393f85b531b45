//! Warm pools: started ahead of demand when a tool is listed, handed to one run each,
//! removed with the run, and refilled.

use std::collections::HashSet;

use bridle_proto::ListToolsRequest;
use serde_json::json;

use crate::helpers::{Harness, TENANT, code_tool, eventually};

async fn warm_ids(ns: &str) -> HashSet<String> {
    let out = tokio::process::Command::new("docker")
        .args([
            "ps",
            "-q",
            "--no-trunc",
            "--filter",
            &format!("label={ns}.pool=warm"),
        ])
        .output()
        .await
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .map(|s| s[..12].to_string())
        .collect()
}

async fn labels_of(id: &str) -> std::collections::HashMap<String, String> {
    let out = tokio::process::Command::new("docker")
        .args(["inspect", "--format", "{{json .Config.Labels}}", id])
        .output()
        .await
        .unwrap();
    serde_json::from_slice(&out.stdout).unwrap()
}

#[tokio::test]
async fn warm_sandboxes_serve_one_run_each_and_are_replaced() {
    let h = Harness::start().await;
    h.apply(&code_tool("py", "python", "    pool: {warm: 2}\n"))
        .await;
    // Listing the tool (what the orchestrator does when a run starts) fills its pool.
    h.tools
        .clone()
        .list_tools(ListToolsRequest {
            tenant: TENANT.into(),
            names: vec!["py".into()],
            ..Default::default()
        })
        .await
        .unwrap();
    let ns = h.ns.clone();
    let warm = eventually("two warm sandboxes", 120, || {
        let ns = ns.clone();
        async move {
            let ids = warm_ids(&ns).await;
            (ids.len() == 2).then_some(ids)
        }
    })
    .await;

    let a = h.call("run_1", "py", json!({"code": "print('a')"})).await;
    let b = h.call("run_2", "py", json!({"code": "print('b')"})).await;
    assert_eq!((a.stdout.as_str(), b.stdout.as_str()), ("a\n", "b\n"));
    // Both were started ahead of demand (a sandbox made for a run carries the run's label).
    for r in [&a, &b] {
        let labels = labels_of(&r.sandbox_id).await;
        assert_eq!(
            labels.get(&format!("{ns}.pool")).map(String::as_str),
            Some("warm"),
            "{r:?}"
        );
        assert!(!labels.contains_key(&format!("{ns}.run")), "{labels:?}");
    }
    assert!(
        warm.contains(&a.sandbox_id),
        "the oldest warm one first: {a:?} {warm:?}"
    );
    assert_ne!(a.sandbox_id, b.sandbox_id, "never shared between runs");

    // Run 1's next call is in its own sandbox again.
    let a2 = h.call("run_1", "py", json!({"code": "print('a2')"})).await;
    assert_eq!(a2.sandbox_id, a.sandbox_id);

    assert_eq!(h.end_run("run_1").await, 1);
    assert_eq!(h.end_run("run_2").await, 1);
    let used: HashSet<String> = [a.sandbox_id.clone(), b.sandbox_id.clone()].into();
    let refilled = eventually("the pool to be refilled", 120, || {
        let ns = ns.clone();
        async move {
            let ids = warm_ids(&ns).await;
            (ids.len() == 2).then_some(ids)
        }
    })
    .await;
    assert!(
        refilled.is_disjoint(&used),
        "used sandboxes never return to the pool"
    );
    h.stop().await;
}
