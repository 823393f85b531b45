//! Spans checked against the OpenTelemetry GenAI conventions as published (the registry and
//! message JSON schemas vendored under tests/fixtures/semconv): every `gen_ai.*` attribute is
//! one the registry defines and does not deprecate, and captured messages validate against
//! their schema, with the parts Bridle writes held to their own definitions (the schemas also
//! accept any object with a string `type`).

use std::collections::BTreeSet;

use bridle_testkit::otlp::ReceivedSpan;
use serde_json::Value;

pub struct Semconv {
    attributes: BTreeSet<String>,
    deprecated: BTreeSet<String>,
    input: jsonschema::Validator,
    output: jsonschema::Validator,
    system: jsonschema::Validator,
}

fn ids(file: &str) -> BTreeSet<String> {
    let path = bridle_testkit::paths::workspace_root()
        .join("tests/fixtures/semconv")
        .join(file);
    let doc: serde_json::Value =
        bridle_core::yaml::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let mut out = BTreeSet::new();
    for g in doc["groups"].as_array().unwrap() {
        for a in g["attributes"].as_array().into_iter().flatten() {
            if let Some(id) = a["id"].as_str() {
                out.insert(id.to_string());
            }
        }
    }
    out
}

fn schema(file: &str) -> jsonschema::Validator {
    let path = bridle_testkit::paths::workspace_root()
        .join("tests/fixtures/semconv")
        .join(file);
    let v: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    jsonschema::validator_for(&v).unwrap()
}

impl Semconv {
    pub fn load() -> Self {
        Semconv {
            attributes: ids("registry.yaml"),
            deprecated: ids("registry-deprecated.yaml"),
            input: schema("gen-ai-input-messages.json"),
            output: schema("gen-ai-output-messages.json"),
            system: schema("gen-ai-system-instructions.json"),
        }
    }

    /// Panics naming what in `span` is off the conventions.
    pub fn check(&self, span: &ReceivedSpan) {
        assert!(self.attributes.len() > 40, "the registry loaded");
        let name = &span.span.name;
        for kv in &span.span.attributes {
            let k = &kv.key;
            if !k.starts_with("gen_ai.") {
                continue;
            }
            assert!(
                self.attributes.contains(k) && !self.deprecated.contains(k),
                "span {name}: {k} is not an attribute of the GenAI registry"
            );
        }
        for (key, validator) in [
            ("gen_ai.input.messages", &self.input),
            ("gen_ai.output.messages", &self.output),
            ("gen_ai.system_instructions", &self.system),
        ] {
            let Some(text) = span.attr(key) else { continue };
            let v: Value = serde_json::from_str(&text)
                .unwrap_or_else(|e| panic!("span {name}: {key} is not JSON ({e}): {text}"));
            let errors: Vec<String> = validator.iter_errors(&v).map(|e| e.to_string()).collect();
            assert!(errors.is_empty(), "span {name}: {key} {text}: {errors:?}");
            let parts: Vec<&Value> = if key == "gen_ai.system_instructions" {
                v.as_array().unwrap().iter().collect()
            } else {
                v.as_array()
                    .unwrap()
                    .iter()
                    .flat_map(|m| m["parts"].as_array().unwrap().iter())
                    .collect()
            };
            for p in parts {
                let need: &[&str] = match p["type"].as_str().unwrap() {
                    "text" => &["content"],
                    "tool_call" => &["name"],
                    "tool_call_response" => &["response"],
                    other => panic!(
                        "span {name}: {key} has a part of type {other} Bridle does not write"
                    ),
                };
                for f in need {
                    assert!(!p[f].is_null(), "span {name}: {key} part {p} lacks {f}");
                }
            }
        }
    }
}
