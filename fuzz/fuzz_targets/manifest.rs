//! Manifest parsing and validation (`bridle_core::manifest`) as `Manifests.Apply` runs it:
//! a file split into documents, each sent with a `first_line` the client chose, parsed and
//! validated as a whole set. Input: four bytes of `first_line`, then the file's text.
//!
//! Properties: no panic or stack overflow on a service worker's stack; every error message
//! bounded; a manifest that validates is stored as JSON that decodes again, and its canonical
//! YAML (what the CLI sends for an inlined script) validates again.
#![no_main]

use bridle_core::manifest::{self, Document, ParseOptions};
use bridle_core::manifest_service::parse_request;
use bridle_fuzz::{assert_bounded, line_and_text, on_service_stack};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let (first_line, text) = line_and_text(data);
    on_service_stack(|| check(first_line, &text));
});

fn check(first_line: u32, text: &str) {
    let docs: Vec<bridle_proto::ManifestDocument> = manifest::split_documents("fuzz.yaml", text)
        .into_iter()
        .map(|d| bridle_proto::ManifestDocument {
            source: d.source,
            yaml: d.yaml,
            // As a client may send it: the file's line shifted by whatever it likes.
            first_line: first_line.wrapping_add(d.first_line.saturating_sub(1)),
        })
        .collect();
    match parse_request(&docs, "", None) {
        Err(e) => {
            if let bridle_core::Error::Manifest(v) = &e {
                for m in &v.0 {
                    assert_bounded("manifest error", &m.to_string());
                }
            }
            // The status the client gets is built from it: that must not panic either.
            let _ = tonic::Status::from(e);
        }
        Ok(manifests) => {
            for m in &manifests {
                let json = m
                    .to_json()
                    .unwrap_or_else(|e| panic!("{} does not encode: {e}", m.kind()));
                if let Err(e) = manifest::from_json(m.kind(), &json) {
                    panic!(
                        "a validated {} is stored as JSON that does not decode: {e}",
                        m.kind()
                    );
                }
                let again = Document {
                    source: "canonical.yaml".into(),
                    first_line: 0,
                    yaml: m.to_yaml(),
                };
                if let Err(e) = manifest::parse_document(&again, &ParseOptions::default()) {
                    panic!(
                        "a validated {}'s canonical YAML does not validate: {:?}",
                        m.kind(),
                        e.first().map(ToString::to_string)
                    );
                }
            }
        }
    }
}
