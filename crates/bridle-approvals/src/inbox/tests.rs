use bridle_core::auth::Principal;
use bridle_proto::Approval;

use super::pages::{self, Item, Rights};
use super::session::Visitor;
use crate::record::RunContext;

fn visitor() -> Visitor {
    Visitor {
        principal: Principal::anonymous(),
        csrf: "c5f".into(),
        new_csrf_cookie: None,
        logged_in: false,
    }
}

fn item(args: &str, state: i32) -> Item {
    Item {
        approval: Approval {
            id: "apr_01".into(),
            tenant: "acme".into(),
            agent: "analyst".into(),
            run_id: "run_01".into(),
            step: 2,
            call_id: "call\"><x>".into(),
            tool: "delete-dataset".into(),
            arguments_json: args.into(),
            arguments_sha256: "ab".repeat(32),
            risk: 3,
            state,
            policy_reason: "<b>destructive</b>".into(),
            decided_by: "eve <script>".into(),
            ..Default::default()
        },
        context: RunContext {
            tokens_so_far: Some(1200),
            cost_nano_usd: Some(2_500_000),
        },
    }
}

#[test]
fn everything_rendered_is_escaped() {
    let evil =
        r#"{"q":"</pre><script>alert(1)</script><img src=x onerror=alert(2)>","a":"' \" &"}"#;
    let rights = Rights {
        decide: true,
        name_field: true,
    };
    for state in [1, 2] {
        let page = pages::list(&visitor(), &rights, "acme", "pending", &[item(evil, state)]);
        assert!(!page.contains("<script"), "{page}");
        assert!(!page.contains("<img"), "{page}");
        assert!(!page.contains("<b>"), "{page}");
        assert!(!page.contains("<x>"), "{page}");
        assert!(
            page.contains("&lt;/pre&gt;&lt;script&gt;alert(1)&lt;/script&gt;"),
            "{page}"
        );
        assert!(page.contains("&#x27; \\&quot; &amp;"), "{page}");
    }
    assert_eq!(
        pages::esc(r#"<a href="x" title='y'>&</a>"#),
        "&lt;a href=&quot;x&quot; title=&#x27;y&#x27;&gt;&amp;&lt;/a&gt;"
    );
}

#[test]
fn a_pending_call_shows_its_context_and_a_bound_form() {
    let rights = Rights {
        decide: true,
        name_field: false,
    };
    let page = pages::list(
        &visitor(),
        &rights,
        "acme",
        "pending",
        &[item(r#"{"dataset":"old"}"#, 1)],
    );
    for want in [
        "data-approval=\"apr_01\"",
        "<dd class=\"agent\">analyst</dd>",
        "run_01 · step 2",
        "1200 tokens · $0.002500",
        "risk-destructive",
        "&quot;dataset&quot;: &quot;old&quot;",
        "<input type=\"hidden\" name=\"csrf\" value=\"c5f\">",
        &format!(
            "<input type=\"hidden\" name=\"sha\" value=\"{}\">",
            "ab".repeat(32)
        ),
        "value=\"approve\">Approve</button>",
        "value=\"deny\">Deny</button>",
    ] {
        assert!(page.contains(want), "{want} missing from {page}");
    }
    assert!(
        !page.contains("name=\"approver\""),
        "the name comes from the login"
    );

    // Without the approver role: no form. Decided: no form, who decided instead.
    let viewer = Rights {
        decide: false,
        name_field: false,
    };
    let page = pages::list(&visitor(), &viewer, "acme", "pending", &[item("{}", 1)]);
    assert!(!page.contains("<form class=\"decide\""), "{page}");
    let page = pages::detail(
        &visitor(),
        &rights,
        &item("{}", 2),
        Some("already approved"),
    );
    assert!(!page.contains("<form class=\"decide\""), "{page}");
    assert!(page.contains("by eve &lt;script&gt;"), "{page}");
    assert!(
        page.contains("<p class=\"notice error\">already approved</p>"),
        "{page}"
    );

    // A tool with separation of duties says who may decide and how far it has got.
    let mut guarded = item("{}", 1);
    guarded.approval.approvals_required = 2;
    guarded.approval.approved_by = vec!["key_bob".into()];
    guarded.approval.approver_groups = vec!["dba".into()];
    guarded.approval.not_the_starter = true;
    let page = pages::detail(&visitor(), &rights, &guarded, None);
    assert!(
        page.contains("<dd class=\"approvers\">1 of 2 approvals from distinct people (so far: key_bob); only groups dba; not by whoever started the run</dd>"),
        "{page}"
    );
    assert!(
        page.contains("<form class=\"decide\""),
        "still pending: {page}"
    );
    let plain = pages::detail(&visitor(), &rights, &item("{}", 1), None);
    assert!(!plain.contains("class=\"approvers\""), "{plain}");
}

#[test]
fn every_error_has_its_own_status() {
    use axum::http::StatusCode;
    use bridle_core::Error as Core;

    use super::failure;
    use crate::Error;

    let refused = redis::RedisError::from(std::io::Error::new(
        std::io::ErrorKind::ConnectionRefused,
        "connection refused",
    ));
    let rejected = redis::RedisError::from((redis::ErrorKind::Parse, "secret detail"));
    let cases = [
        (
            Error::InvalidArgument("bad".into()),
            StatusCode::BAD_REQUEST,
        ),
        (Error::NotFound("apr_1".into()), StatusCode::NOT_FOUND),
        (Error::Refused("decided".into()), StatusCode::CONFLICT),
        (
            Error::AuditUnavailable("secret detail".into()),
            StatusCode::SERVICE_UNAVAILABLE,
        ),
        (
            Error::Policy("secret detail".into()),
            StatusCode::SERVICE_UNAVAILABLE,
        ),
        (
            Error::Core(Core::InvalidArgument("bad".into())),
            StatusCode::BAD_REQUEST,
        ),
        (
            Error::Core(Core::Manifest(bridle_core::manifest::ValidationErrors(
                vec![],
            ))),
            StatusCode::BAD_REQUEST,
        ),
        (
            Error::Core(Core::NotFound("gone".into())),
            StatusCode::NOT_FOUND,
        ),
        (
            Error::Core(Core::AlreadyExists("there".into())),
            StatusCode::CONFLICT,
        ),
        (
            Error::Core(Core::FailedPrecondition("state".into())),
            StatusCode::CONFLICT,
        ),
        (
            Error::Core(Core::Aborted("secret detail".into())),
            StatusCode::CONFLICT,
        ),
        (
            Error::Core(Core::PermissionDenied("no".into())),
            StatusCode::FORBIDDEN,
        ),
        (
            Error::Core(Core::Unauthenticated("who".into())),
            StatusCode::UNAUTHORIZED,
        ),
        (
            Error::Core(Core::ResourceExhausted("slow down".into())),
            StatusCode::TOO_MANY_REQUESTS,
        ),
        (
            Error::Core(Core::DeadlineExceeded("secret detail".into())),
            StatusCode::GATEWAY_TIMEOUT,
        ),
        (
            Error::Core(Core::unavailable("the audit", "secret detail")),
            StatusCode::SERVICE_UNAVAILABLE,
        ),
        (
            Error::Core(Core::Redis(refused)),
            StatusCode::SERVICE_UNAVAILABLE,
        ),
        (
            Error::Core(Core::RedisOutOfMemory {
                doing: "nothing was applied".into(),
            }),
            StatusCode::SERVICE_UNAVAILABLE,
        ),
        (
            Error::Core(Core::Redis(rejected)),
            StatusCode::INTERNAL_SERVER_ERROR,
        ),
        (
            Error::Core(Core::internal("secret detail")),
            StatusCode::INTERNAL_SERVER_ERROR,
        ),
        (
            Error::Core(Core::Config("secret detail".into())),
            StatusCode::INTERNAL_SERVER_ERROR,
        ),
    ];
    for (e, want) in cases {
        let f = failure(&e);
        assert_eq!(f.status, want, "{e:?}");
        if f.status.is_server_error() || matches!(e, Error::Core(Core::Aborted(_))) {
            assert!(!f.text.contains("secret detail"), "{e:?}: {f:?}");
        }
        let retry = f.text.contains("try again");
        assert_eq!(
            retry,
            f.status == StatusCode::SERVICE_UNAVAILABLE
                || f.status == StatusCode::GATEWAY_TIMEOUT
                || f.status == StatusCode::CONFLICT && f.title == "Changed meanwhile",
            "{e:?}: {f:?}"
        );
    }
}
