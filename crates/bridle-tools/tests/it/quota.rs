//! A run's workspace has a size limit (issue 16, item 2): a write past it fails inside the
//! sandbox with ENOSPC while the host and other runs are untouched; the workspace survives a
//! discarded sandbox; nothing (mount, loop device, image) outlives the run, the instance, or
//! an instance that died; a quota above the ceiling is refused.

use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};

use bridle_proto::{ApplyRequest, ManifestDocument};
use bridle_tools::workspace::mounts::{loops_under, mounts_under};
use serde_json::json;

use crate::helpers::{Harness, On, Setup, TENANT, code_tool, eventually};

const QUOTA: u64 = 8 << 20;

/// Writes `n` MiB into the workspace; dd says why it stopped.
fn write_mib(file: &str, n: u32) -> serde_json::Value {
    json!({ "code": format!("dd if=/dev/zero of={file} bs=1M count={n} status=none; s=$?; echo exit=$s; exit $s") })
}

/// Image files of run workspaces under `root`, with the host space each takes.
fn images(root: &Path) -> Vec<(PathBuf, u64, u64)> {
    let host = std::fs::metadata(root).unwrap().dev();
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let m = std::fs::symlink_metadata(e.path()).unwrap();
            // Never into a workspace: its files live in an image, not on the host's disk.
            if m.is_dir() && m.dev() == host {
                stack.push(e.path());
            } else if e.path().extension().is_some_and(|x| x == "img") {
                out.push((e.path(), m.len(), m.blocks() * 512));
            }
        }
    }
    out
}

async fn a_write_past_the_quota_fails_in_the_sandbox_while_another_run_writes(on: On) {
    let h = Harness::start_with(
        Setup::on(
            on,
            Setup {
                images: vec!["bash"],
                ..Setup::default()
            },
        )
        .await,
    )
    .await;
    h.apply(&code_tool("sh", "bash", "      workspace: 8Mi"))
        .await;
    let (full, other) = tokio::join!(
        h.call("run_full", "sh", write_mib("big", 20)),
        h.call("run_other", "sh", write_mib("mine", 4)),
    );
    assert!(full.is_error, "{full:?}");
    assert!(
        full.stderr.contains("No space left on device"),
        "the tool sees ENOSPC: {full:?}"
    );
    assert_eq!(full.stdout, "exit=1\n", "{full:?}");
    assert_eq!(other.stdout, "exit=0\n", "the other run writes: {other:?}");
    assert_eq!(other.files_written, vec!["mine"]);
    let ls = h.call("run_other", "sh", json!({"code": "ls"})).await;
    assert_eq!(ls.stdout, "mine\n", "only its own file: {ls:?}");

    // On the host, each run's workspace is an image no larger than the quota, taking no
    // more than that of the host's disk.
    let imgs = images(h.workspaces.path());
    assert_eq!(imgs.len(), 2, "{imgs:?}");
    for (path, len, used) in &imgs {
        assert_eq!(*len, QUOTA, "{}", path.display());
        assert!(*used <= QUOTA, "{} takes {used} bytes", path.display());
    }
    h.stop().await;
}

#[tokio::test]
async fn the_workspace_survives_a_timed_out_call() {
    let h = Harness::start_with(Setup {
        images: vec!["bash"],
        ..Setup::default()
    })
    .await;
    h.apply(&code_tool("sh", "bash", "      workspace: 8Mi"))
        .await;
    let first = h
        .call("run_t", "sh", json!({"code": "echo kept > notes.txt"}))
        .await;
    assert_eq!(first.files_written, vec!["notes.txt"], "{first:?}");
    let mut slow = h.request_in("run_t", "sh", json!({"code": "sleep 60"}));
    slow.timeout = Some(prost_types::Duration {
        seconds: 1,
        nanos: 0,
    });
    let slow = h.execute(slow).await.unwrap().result.unwrap();
    assert!(slow.timed_out, "{slow:?}");
    let after = h
        .call(
            "run_t",
            "sh",
            json!({"code": "cat notes.txt; df -k . | tail -1"}),
        )
        .await;
    assert_ne!(
        after.sandbox_id, first.sandbox_id,
        "the sandbox was discarded"
    );
    assert!(after.stdout.starts_with("kept\n"), "{after:?}");
    assert!(
        after.stdout.contains("/workspace"),
        "still its own filesystem: {after:?}"
    );
    h.stop().await;
}

#[tokio::test]
async fn end_run_and_shutdown_leave_no_mount_loop_device_or_image() {
    // The root outlives the harness, to look at it after the shutdown.
    let dir = tempfile::Builder::new()
        .prefix("bridle-tools-end")
        .tempdir()
        .unwrap();
    let root = dir.path().to_path_buf();
    let h = Harness::start_with(Setup {
        images: vec!["bash"],
        workspace_root: Some(root.clone()),
        ..Setup::default()
    })
    .await;
    h.apply(&code_tool("sh", "bash", "      workspace: 8Mi"))
        .await;
    let r = h.call("run_e", "sh", write_mib("f", 1)).await;
    assert_eq!(r.stdout, "exit=0\n", "{r:?}");
    // The instance's own folder, the run's filesystem and its bind into the sandbox.
    assert_eq!(mounts_under(&root).len(), 3, "{:?}", mounts_under(&root));
    assert_eq!(loops_under(&root).len(), 1);
    assert_eq!(images(&root).len(), 1);

    assert_eq!(h.end_run("run_e").await, 1);
    let r2 = root.clone();
    eventually("the run's mounts, loop device and image to go", 30, || {
        let root = r2.clone();
        async move {
            (mounts_under(&root).len() == 1
                && loops_under(&root).is_empty()
                && images(&root).is_empty())
            .then_some(())
        }
    })
    .await;
    let ws = root.clone();
    h.stop().await;
    assert_eq!(
        mounts_under(&ws),
        Vec::<PathBuf>::new(),
        "shutdown unmounts all"
    );
    assert_eq!(
        std::fs::read_dir(&ws).unwrap().count(),
        0,
        "the instance's folder and lock are gone"
    );
}

/// What an instance killed with SIGKILL leaves: its lock file (free: its owner is gone), a
/// run's loop-mounted image, and that filesystem bound into a slot.
async fn leave_a_dead_instance(root: &Path) -> PathBuf {
    let dead = root.join("01deadinstance");
    std::fs::create_dir_all(dead.join("runs/r")).unwrap();
    std::fs::create_dir_all(dead.join("slot/ws")).unwrap();
    std::fs::write(root.join("01deadinstance.lock"), "").unwrap();
    let img = dead.join("runs/r.img");
    std::fs::File::create(&img).unwrap().set_len(QUOTA).unwrap();
    let sh = |cmd: String| async move {
        let out = tokio::process::Command::new("sh")
            .args(["-c", &cmd])
            .output()
            .await
            .unwrap();
        assert!(out.status.success(), "{cmd}: {out:?}");
    };
    sh(format!("mke2fs -q -F -t ext4 {}", img.display())).await;
    sh(format!(
        "mount -o loop {} {} && mount --bind {} {}",
        img.display(),
        dead.join("runs/r").display(),
        dead.join("runs/r").display(),
        dead.join("slot/ws").display()
    ))
    .await;
    assert_eq!(loops_under(&dead).len(), 1);
    dead
}

#[tokio::test]
async fn a_dead_instances_mounts_loop_devices_and_images_are_released() {
    let root = tempfile::Builder::new()
        .prefix("bridle-tools-dead")
        .tempdir()
        .unwrap();
    let dead = leave_a_dead_instance(root.path()).await;
    let h = Harness::start_with(Setup {
        workspace_root: Some(root.path().to_path_buf()),
        ..Setup::default()
    })
    .await;
    eventually("the dead instance's workspaces to be released", 30, || {
        let dead = dead.clone();
        async move {
            let lock = dead.with_extension("lock");
            (mounts_under(&dead).is_empty()
                && loops_under(&dead).is_empty()
                && !dead.exists()
                && !lock.exists())
            .then_some(())
        }
    })
    .await;
    // A live instance's folder is not touched: this one's lock is held.
    let mine: Vec<_> = std::fs::read_dir(root.path())
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(mine.len(), 2, "{mine:?}");
    h.stop().await;
}

fn apply_request(yaml: &str) -> ApplyRequest {
    ApplyRequest {
        actor: None,
        documents: vec![ManifestDocument {
            source: "t.yaml".into(),
            yaml: yaml.into(),
            first_line: 1,
        }],
        dry_run: true,
        tenant: TENANT.into(),
    }
}

#[tokio::test]
async fn a_quota_above_the_ceiling_is_refused_at_apply_and_at_call() {
    let h = Harness::start_with(Setup {
        quota_max: Some("16Mi"),
        images: vec!["bash"],
        ..Setup::default()
    })
    .await;
    let e = h
        .manifests
        .clone()
        .apply(apply_request(&code_tool(
            "sh",
            "bash",
            "      workspace: 32Mi",
        )))
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument);
    assert!(
        e.message().contains(
            "t.yaml:20: Tool 'sh': spec.code.limits.workspace: 32Mi is above this tools service's ceiling of 16Mi (its workspace_quota_max option); ask for less or raise the ceiling"
        ),
        "{}",
        e.message()
    );
    let listed = h
        .tools
        .clone()
        .list_tools(bridle_proto::ListToolsRequest {
            tenant: TENANT.into(),
            names: vec![],
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(listed.workspace_quota_max_bytes, 16 << 20);

    // An Agent's quota reaches the service with each call; above the ceiling, nothing runs.
    h.apply(&code_tool("sh", "bash", "")).await;
    let mut req = h.request_in("run_q", "sh", json!({"code": "true"}));
    req.workspace_quota_bytes = 32 << 20;
    let e = h.execute(req).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::FailedPrecondition);
    assert_eq!(
        e.message(),
        "agent 'agent' (spec.workspace.quota) asks for a workspace quota of 32Mi, above this tools service's ceiling of 16Mi (its workspace_quota_max option); ask for less or raise the ceiling"
    );
    // Under it, the Agent's quota sizes the run's workspace.
    let mut req = h.request_in(
        "run_q",
        "sh",
        json!({"code": "df -k --output=size . | tail -1"}),
    );
    req.workspace_quota_bytes = 4 << 20;
    let r = h.execute(req).await.unwrap().result.unwrap();
    let kib: u64 = r.stdout.trim().parse().unwrap_or(0);
    assert!(kib > 3 * 1024 && kib <= 4 * 1024, "{r:?}");
    h.stop().await;
}

crate::under_each_runtime!(a_write_past_the_quota_fails_in_the_sandbox_while_another_run_writes);
crate::on_rootless_engine!(a_write_past_the_quota_fails_in_the_sandbox_while_another_run_writes);
