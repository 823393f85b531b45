use std::time::Duration;

use tonic_types::StatusExt;

use super::*;
use crate::manifest::ManifestError;

fn problem(source: &str, line: Option<u32>, field: &str, message: &str) -> ManifestError {
    ManifestError {
        source: source.into(),
        line,
        subject: Some("Agent 'writer'".into()),
        field: field.into(),
        message: message.into(),
    }
}

#[test]
fn every_status_names_its_reason_in_the_bridle_domain() {
    let s = tonic::Status::from(Error::NotFound("run 'r1' does not exist".into()));
    assert_eq!(s.message(), "run 'r1' does not exist");
    let info = s.get_details_error_info().unwrap();
    assert_eq!(info.reason, "NOT_FOUND");
    assert_eq!(info.domain, DOMAIN);
    let s = tonic::Status::from(Error::unavailable("redis at 127.0.0.1:1", "refused"));
    let info = s.get_details_error_info().unwrap();
    assert_eq!(info.reason, "DEPENDENCY_UNAVAILABLE");
    assert_eq!(info.metadata["dependency"], "redis at 127.0.0.1:1");
}

#[test]
fn a_manifest_problem_is_a_field_violation_with_its_file_document_and_line() {
    let e = Error::from(ValidationErrors(vec![
        problem(
            "agents.yaml#2",
            Some(7),
            "spec.route",
            "model route 'x' is not defined",
        ),
        ManifestError {
            subject: None,
            ..problem("tool.yaml", None, "", "not YAML")
        },
    ]));
    let text = e.to_string();
    let s = tonic::Status::from(e);
    assert_eq!(s.code(), tonic::Code::InvalidArgument);
    assert_eq!(s.message(), text, "the message is unchanged");
    let info = s.get_details_error_info().unwrap();
    assert_eq!(info.reason, "MANIFEST_INVALID");
    assert_eq!(info.metadata["problems"], "2");
    assert_eq!(info.metadata["file_0"], "agents.yaml");
    assert_eq!(info.metadata["document_0"], "2");
    assert_eq!(info.metadata["line_0"], "7");
    assert_eq!(info.metadata["subject_0"], "Agent 'writer'");
    assert_eq!(info.metadata["file_1"], "tool.yaml");
    assert!(!info.metadata.contains_key("document_1"));
    assert!(!info.metadata.contains_key("line_1"));
    assert!(!info.metadata.contains_key("subject_1"));
    let bad = s.get_details_bad_request().unwrap();
    assert_eq!(bad.field_violations.len(), 2);
    assert_eq!(bad.field_violations[0].field, "spec.route");
    assert_eq!(
        bad.field_violations[0].description,
        "model route 'x' is not defined"
    );
    assert_eq!(bad.field_violations[0].reason, "MANIFEST_INVALID");
    assert_eq!(bad.field_violations[1].field, "");
}

#[test]
fn many_manifest_problems_send_the_first_ones_and_the_count() {
    let many = (0..50)
        .map(|i| problem("a.yaml", Some(i), "spec.x", &"y".repeat(2000)))
        .collect();
    let s = tonic::Status::from(Error::from(ValidationErrors(many)));
    let bad = s.get_details_bad_request().unwrap();
    // Long problems: as many as fit the budget, at least one, never more than the cap.
    assert!(!bad.field_violations.is_empty());
    assert!(bad.field_violations.len() < MAX_FIELD_VIOLATIONS);
    assert!(bad.field_violations[0].description.chars().count() <= DESCRIPTION_MAX + 3);
    // Short problems: the first MAX_FIELD_VIOLATIONS.
    let short = (0..50)
        .map(|i| problem("a.yaml", Some(i), "spec.x", "y"))
        .collect();
    let s2 = tonic::Status::from(Error::from(ValidationErrors(short)));
    assert_eq!(
        s2.get_details_bad_request().unwrap().field_violations.len(),
        MAX_FIELD_VIOLATIONS
    );
    assert_eq!(
        s.get_details_error_info().unwrap().metadata["problems"],
        "50"
    );
}

#[test]
fn a_refusal_for_a_while_says_when_to_retry_and_which_quota() {
    let s = tonic::Status::from(Error::Refused {
        refusal: Refusal::RateLimited,
        message: "rate limit: agent 'w' may use 5 requests per minute; retry after 12s".into(),
        quota: Some(Box::new(Quota {
            subject: "tenant:acme/agent:w".into(),
            description: "rate limit: agent 'w' may use 5 requests per minute".into(),
            metric: "requests_per_minute".into(),
            id: "per_agent".into(),
            value: 5,
        })),
        retry_after: Some(Duration::from_millis(11_500)),
    });
    assert_eq!(s.code(), tonic::Code::ResourceExhausted);
    assert_eq!(
        s.message(),
        "rate limit: agent 'w' may use 5 requests per minute; retry after 12s"
    );
    let info = s.get_details_error_info().unwrap();
    assert_eq!(info.reason, "RATE_LIMITED");
    assert_eq!(info.metadata["retry_after_ms"], "11500");
    let retry = s.get_details_retry_info().unwrap();
    assert_eq!(retry.retry_delay, Some(Duration::from_millis(11_500)));
    let q = s.get_details_quota_failure().unwrap();
    assert_eq!(q.violations.len(), 1);
    assert_eq!(q.violations[0].subject, "tenant:acme/agent:w");
    assert_eq!(q.violations[0].quota_metric, "requests_per_minute");
    assert_eq!(q.violations[0].quota_id, "per_agent");
    assert_eq!(q.violations[0].quota_value, 5);
    assert_eq!(q.violations[0].api_service, DOMAIN);
    // Breakers: UNAVAILABLE, a retry delay and no quota.
    let s = tonic::Status::from(Error::Refused {
        refusal: Refusal::CircuitOpen,
        message: "m".into(),
        quota: None,
        retry_after: Some(Duration::from_secs(3)),
    });
    assert_eq!(s.code(), tonic::Code::Unavailable);
    assert_eq!(s.get_details_error_info().unwrap().reason, "CIRCUIT_OPEN");
    assert!(s.get_details_retry_info().is_some());
    assert!(s.get_details_quota_failure().is_none());
}

#[test]
fn internal_errors_say_only_internal() {
    let s = tonic::Status::from(Error::internal("secret detail"));
    let info = s.get_details_error_info().unwrap();
    assert_eq!(info.reason, "INTERNAL");
    assert!(info.metadata.is_empty());
    assert!(s.get_details_bad_request().is_none());
}

#[test]
fn redis_out_of_memory_keeps_its_cause_metadata_beside_the_details() {
    let s = tonic::Status::from(Error::RedisOutOfMemory {
        doing: "the run was not created".into(),
    });
    assert!(crate::error::status_is_redis_out_of_memory(&s));
    assert_eq!(
        s.get_details_error_info().unwrap().reason,
        "REDIS_OUT_OF_MEMORY"
    );
}
