//! `bridle apply` on files that hold no manifest.

use crate::support::{bridle, run};

#[tokio::test]
async fn a_file_holding_only_comments_is_an_error_not_an_empty_apply() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("t.yaml"),
        "# the agent, for later\n#apiVersion: bridle.dev/v1\n#kind: Agent\n\n",
    )
    .unwrap();
    std::fs::write(dir.path().join("empty.yaml"), "").unwrap();
    for file in ["t.yaml", "empty.yaml"] {
        // Nothing listens there: the file is refused before any server is asked.
        let r = run(bridle().current_dir(dir.path()).args([
            "--server",
            "http://127.0.0.1:9",
            "apply",
            "-f",
            file,
        ]))
        .await;
        assert_eq!(r.code, Some(1), "{r}");
        assert!(r.stderr.contains(&format!("no manifests in {file}")), "{r}");
        assert!(!r.stderr.contains("cannot reach"), "{r}");
    }
}
