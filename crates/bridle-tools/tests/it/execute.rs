//! Running a python tool: output, errors, truncation, argument validation, unknown tools and
//! images.

use bridle_proto::ToolErrorKind;
use serde_json::json;

use crate::helpers::{Harness, On, TENANT, now_secs, python_tool};

#[tokio::test]
async fn runs_python_and_returns_what_it_prints() {
    let h = Harness::start().await;
    h.apply(&python_tool("py", "")).await;
    let since = now_secs() - 1;
    // The arguments also arrive as JSON on stdin.
    let r = h
        .python("import sys, json; print('hello', 6 * 7); print(json.load(sys.stdin)['code'][:6])")
        .await;
    assert_eq!(r.stdout, "hello 42\nimport\n", "{r:?}");
    assert_eq!(r.output, r.stdout);
    assert_eq!(r.exit_code, 0);
    assert!(!r.is_error);
    assert_eq!(r.error_kind, ToolErrorKind::Unspecified as i32);
    assert_eq!(r.sandbox_id.len(), 12, "{r:?}");
    assert!(r.duration.is_some());
    assert!(!r.stdout_truncated && !r.timed_out && !r.oom_killed);
    assert_eq!(h.created_since(since).await, 1);
    assert_eq!(
        h.containers().await.len(),
        1,
        "the run keeps its sandbox for its next calls"
    );
    assert_eq!(h.end_run("run_1").await, 1);
    assert!(
        h.containers().await.is_empty(),
        "the sandbox is removed when the run ends"
    );
    h.stop().await;
}

#[tokio::test]
async fn nonzero_exit_is_an_error_result_with_stderr() {
    let h = Harness::start().await;
    h.apply(&python_tool("py", "")).await;
    let r = h
        .python("import sys; print('partial'); sys.stderr.write('boom\\n'); sys.exit(3)")
        .await;
    assert!(r.is_error);
    assert_eq!(r.error_kind, ToolErrorKind::Failed as i32);
    assert_eq!(r.exit_code, 3);
    assert_eq!(r.stderr, "boom\n");
    assert_eq!(r.output, "partial\n[stderr]\nboom\n[exit code 3]");
    h.stop().await;
}

async fn stdout_over_the_cap_is_truncated_with_a_marker(on: On) {
    let h = Harness::start_on(on).await;
    h.apply(&python_tool("py", "")).await;
    let r = h.python("print('a' * 5000)").await;
    assert!(r.stdout_truncated, "{r:?}");
    assert!(!r.is_error);
    let (kept, marker) = r.stdout.split_once('\n').unwrap();
    assert_eq!(kept, "a".repeat(1024));
    // 5001 bytes printed (with the newline), 1024 kept.
    assert_eq!(marker, "[... output truncated: 3977 more bytes]");
    assert!(r.output.contains("[... output truncated: 3977 more bytes]"));
    h.stop().await;
}

#[tokio::test]
async fn arguments_failing_the_schema_are_reported_and_nothing_runs() {
    let h = Harness::start().await;
    h.apply(&python_tool("py", "")).await;
    let since = now_secs() - 1;

    let r = h
        .execute(h.request("py", json!({"code": 5, "extra": true})))
        .await
        .unwrap()
        .result
        .unwrap();
    assert!(r.is_error);
    assert_eq!(r.error_kind, ToolErrorKind::InvalidArguments as i32);
    assert!(
        r.output
            .starts_with("Invalid arguments for tool 'py'; nothing was run. 2 problems"),
        "{}",
        r.output
    );
    assert!(
        r.output.contains("- /code: 5 is not of type \"string\""),
        "{}",
        r.output
    );
    assert!(
        r.output
            .contains("- (root): Additional properties are not allowed ('extra' was unexpected)"),
        "{}",
        r.output
    );
    assert!(
        r.output.contains("\"required\":[\"code\"]"),
        "the schema is shown: {}",
        r.output
    );

    let mut req = h.request("py", json!({}));
    req.arguments_json = "{\"code\": ".into();
    let r = h.execute(req).await.unwrap().result.unwrap();
    assert_eq!(r.error_kind, ToolErrorKind::InvalidArguments as i32);
    assert!(r.output.contains("not valid JSON"), "{}", r.output);

    assert_eq!(
        h.created_since(since).await,
        0,
        "no container may be created for invalid arguments"
    );
    h.stop().await;
}

#[tokio::test]
async fn unknown_tool_is_not_found_naming_tool_and_tenant() {
    let h = Harness::start().await;
    let e = h.execute(h.request("nope", json!({}))).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::NotFound);
    assert_eq!(
        e.message(),
        format!("tool 'nope' is not defined for tenant '{TENANT}'")
    );
    h.stop().await;
}

#[tokio::test]
async fn missing_image_is_failed_precondition_naming_it() {
    let h = Harness::start().await;
    let image = format!("bridle-sandbox:{}", bridle_testkit::unique("missing"));
    h.apply(&python_tool("py", "").replace("bridle-sandbox:python", &image))
        .await;
    let e = h
        .execute(h.request("py", json!({"code": "print(1)"})))
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::FailedPrecondition);
    assert_eq!(
        e.message(),
        format!(
            "image '{image}' does not exist on the Docker engine; build or pull it (see deploy/sandbox/build.sh)"
        )
    );
    h.stop().await;
}

crate::under_each_runtime!(stdout_over_the_cap_is_truncated_with_a_marker);
crate::on_rootless_engine!(stdout_over_the_cap_is_truncated_with_a_marker);
crate::in_the_tools_pod!(stdout_over_the_cap_is_truncated_with_a_marker);
