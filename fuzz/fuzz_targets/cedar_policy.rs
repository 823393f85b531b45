//! Cedar policy validation as the approvals service's `Manifests.Apply` runs it on a Policy
//! manifest: parse, validate against Bridle's schema, check annotations, and map each
//! problem to its line of the manifest file. Input: four bytes of the document's
//! `first_line`, then the Cedar text.
//!
//! Properties: no panic or stack overflow on a service worker's stack; every problem's
//! message bounded.
#![no_main]

use bridle_core::manifest::{API_VERSION, Manifest, Metadata, Policy, PolicySpec};
use bridle_fuzz::{assert_bounded, line_and_text, on_service_stack};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let (first_line, cedar) = line_and_text(data);
    on_service_stack(|| check(first_line, cedar));
});

fn check(first_line: u32, cedar: String) {
    // The document as a user writes it, a literal block, so that problems map to file lines.
    let mut yaml = format!(
        "apiVersion: {API_VERSION}\nkind: Policy\nmetadata:\n  name: fuzz\nspec:\n  cedar: |\n"
    );
    for line in cedar.lines() {
        yaml.push_str("    ");
        yaml.push_str(line);
        yaml.push('\n');
    }
    let doc = bridle_proto::ManifestDocument {
        source: "fuzz.yaml".into(),
        yaml,
        first_line,
    };
    let policy = Manifest::Policy(Policy {
        api_version: API_VERSION.into(),
        kind: "Policy".into(),
        metadata: Metadata {
            name: "fuzz".into(),
            tenant: None,
            labels: Default::default(),
        },
        spec: PolicySpec {
            description: String::new(),
            cedar,
        },
    });
    for problem in bridle_approvals::check_policies(&[doc], &[policy]) {
        assert_bounded("Cedar problem", &problem.to_string());
    }
}
