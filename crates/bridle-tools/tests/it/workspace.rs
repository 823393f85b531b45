//! A run's workspace: kept across its calls (whatever sandbox they land in), files_written
//! says what each call changed, and EndRun removes it.

use serde_json::json;

use crate::helpers::{Harness, On, Setup, code_tool, eventually};

mod runc {
    use crate::helpers::On;
    #[tokio::test]
    async fn the_workspace_persists_across_calls_and_files_written_lists_changes() {
        super::the_workspace_persists_across_calls_and_files_written_lists_changes(On::Runc).await
    }
    #[tokio::test]
    async fn the_workspace_follows_the_run_into_another_image() {
        super::the_workspace_follows_the_run_into_another_image(On::Runc).await
    }
}
// Workspaces as plain folders the engine binds (no mount, no quota).
crate::in_the_tools_pod!(
    the_workspace_persists_across_calls_and_files_written_lists_changes,
    the_workspace_follows_the_run_into_another_image,
);

async fn the_workspace_persists_across_calls_and_files_written_lists_changes(on: On) {
    let h = Harness::start_on(on).await;
    h.apply(&code_tool("py", "python", "")).await;
    let first = h
        .call(
            "run_ws",
            "py",
            json!({"code": "import os\nos.makedirs('sub', exist_ok=True)\nopen('a.txt','w').write('one')\nopen('sub/b.txt','w').write('two')\nprint(os.getcwd())"}),
        )
        .await;
    assert_eq!(first.stdout, "/workspace\n", "{first:?}");
    assert_eq!(first.files_written, vec!["a.txt", "sub/b.txt"]);

    let second = h
        .call(
            "run_ws",
            "py",
            json!({"code": "print(open('a.txt').read())\nopen('sub/b.txt','a').write('!')"}),
        )
        .await;
    assert_eq!(second.stdout, "one\n", "{second:?}");
    assert_eq!(
        second.files_written,
        vec!["sub/b.txt"],
        "only what this call changed"
    );
    assert_eq!(
        second.sandbox_id, first.sandbox_id,
        "the run's sandbox is reused"
    );

    // The files are on the host until the run ends.
    let has_file = |h: &Harness| h.host_entries().iter().any(|p| p.ends_with("sub/b.txt"));
    assert!(has_file(&h));
    assert_eq!(h.end_run("run_ws").await, 1);
    let root = h.workspaces.path().to_path_buf();
    eventually("the run's workspace to be removed", 30, || {
        let root = root.clone();
        async move {
            let mut stack = vec![root];
            while let Some(d) = stack.pop() {
                for e in std::fs::read_dir(&d).ok()?.flatten() {
                    if e.path().ends_with("a.txt") {
                        return None;
                    }
                    if e.file_type().ok()?.is_dir() {
                        stack.push(e.path());
                    }
                }
            }
            Some(())
        }
    })
    .await;
    let e = h
        .execute(h.request_in("run_ws", "py", json!({"code": "print(1)"})))
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::FailedPrecondition);
    assert_eq!(
        e.message(),
        "run 'run_ws' has ended; its sandboxes and workspace are gone"
    );
    h.stop().await;
}

async fn the_workspace_follows_the_run_into_another_image(on: On) {
    let h = Harness::start_with(
        Setup::on(
            on,
            Setup {
                images: vec!["python", "bash"],
                ..Setup::default()
            },
        )
        .await,
    )
    .await;
    h.apply(&code_tool("py", "python", "")).await;
    h.apply(&code_tool("sh", "bash", "")).await;
    let w = h
        .call(
            "run_x",
            "py",
            json!({"code": "open('from-python.txt','w').write('hi from python')"}),
        )
        .await;
    assert_eq!(w.files_written, vec!["from-python.txt"], "{w:?}");
    let r = h
        .call(
            "run_x",
            "sh",
            json!({"code": "cat from-python.txt; echo; echo $BASH_VERSION > from-bash.txt"}),
        )
        .await;
    assert_eq!(r.stdout, "hi from python\n", "{r:?}");
    assert_ne!(r.sandbox_id, w.sandbox_id, "another image, another sandbox");
    assert_eq!(r.files_written, vec!["from-bash.txt"]);
    let back = h
        .call(
            "run_x",
            "py",
            json!({"code": "import os; print(sorted(os.listdir('.')))"}),
        )
        .await;
    assert_eq!(
        back.stdout, "['from-bash.txt', 'from-python.txt']\n",
        "{back:?}"
    );
    // The bash image's sandbox runs its calls without the agent, so whether it is clean
    // after a call is asked of the engine; the pod's rootless engine, without cgroups, cannot
    // list a sandbox's processes, and such a sandbox is not kept for the run's next call.
    let kept = if on == On::Pod { 1 } else { 2 };
    assert_eq!(h.end_run("run_x").await, kept);
    h.stop().await;
}

#[tokio::test]
async fn code_tools_get_the_source_on_stdin_and_the_other_arguments_as_json() {
    let h = Harness::start_with(Setup {
        images: vec!["python", "bash"],
        ..Setup::default()
    })
    .await;
    h.apply(&code_tool("py", "python", "")).await;
    h.apply(&code_tool("sh", "bash", "")).await;
    let r = h
        .call(
            "run_c",
            "py",
            json!({"code": "import json, os, sys\nprint(json.loads(os.environ['BRIDLE_ARGS'])['n'] * 2)\nsys.exit(3)", "n": 21}),
        )
        .await;
    assert_eq!(r.stdout, "42\n", "{r:?}");
    assert_eq!(r.exit_code, 3);
    assert!(r.is_error);
    let r = h
        .call(
            "run_c",
            "sh",
            json!({"code": "set -e\nx=$(( 6 * 7 ))\necho \"bash $x\" \"$BRIDLE_ARGS\""}),
        )
        .await;
    assert_eq!(r.stdout, "bash 42 {}\n", "{r:?}");
    h.stop().await;
}
