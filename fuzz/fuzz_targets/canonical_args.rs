//! The arguments canonicalisation an approval binds to (`bridle-approvals`'s
//! `canonical.rs`): tool arguments as the model wrote them, in canonical JSON and hashed.
//!
//! Properties: no panic or stack overflow on a service worker's stack; the canonical form is
//! a fixed point (canonicalising it again changes nothing) and means the same JSON value as
//! the input; the hash of the input is the hash of its canonical form.
#![no_main]

use bridle_approvals::{arguments_sha256, canonical_json};
use bridle_fuzz::on_service_stack;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(raw) = std::str::from_utf8(data) else {
        return;
    };
    on_service_stack(|| check(raw));
});

fn check(raw: &str) {
    let hash = arguments_sha256(raw);
    let Some(canonical) = canonical_json(raw) else {
        return;
    };
    assert_eq!(
        canonical_json(&canonical).as_deref(),
        Some(canonical.as_str()),
        "canonical JSON is not canonical when canonicalised again"
    );
    assert_eq!(
        arguments_sha256(&canonical),
        hash,
        "the input and its canonical form hash differently"
    );
    let (a, b) = (
        serde_json::from_str::<serde_json::Value>(raw),
        serde_json::from_str::<serde_json::Value>(&canonical),
    );
    match (a, b) {
        (Ok(a), Ok(b)) => assert_eq!(a, b, "the canonical form means another value"),
        (a, b) => panic!("canonical JSON of JSON is not JSON: {a:?} / {b:?}"),
    }
}
