//! The shape rules of the `bridle.v1` contracts that a generated client relies on, read from
//! the embedded `FILE_DESCRIPTOR_SET`:
//! - every RPC has a request message of its own, so one RPC's request can grow a field without
//!   another RPC seeming to accept it. The one exception is `Router.CompleteStream`, which is
//!   `Router.Complete` delivered as it is written and takes the same request.
//! - the orchestrator's RPCs that pass a call on to another service (ListModels, GetSpend, the
//!   tool-authorization trio) and the secrets broker's grant RPCs have messages of their own
//!   that are, today, wire-identical to the ones they pass on: the orchestrator re-encodes one
//!   as the other, so a field added to one side only must fail here first.

#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;

use prost::Message as _;
use prost_types::field_descriptor_proto::{Label, Type};
use prost_types::{DescriptorProto, FileDescriptorSet};

fn set() -> FileDescriptorSet {
    FileDescriptorSet::decode(bridle_proto::FILE_DESCRIPTOR_SET).unwrap()
}

fn messages(set: &FileDescriptorSet) -> BTreeMap<String, &DescriptorProto> {
    set.file
        .iter()
        .filter(|f| f.package() == "bridle.v1")
        .flat_map(|f| f.message_type.iter())
        .map(|m| (format!(".bridle.v1.{}", m.name()), m))
        .collect()
}

#[test]
fn every_rpc_has_a_request_message_of_its_own() {
    let set = set();
    let mut users: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for f in set.file.iter().filter(|f| f.package() == "bridle.v1") {
        for s in &f.service {
            for m in &s.method {
                users
                    .entry(m.input_type().to_string())
                    .or_default()
                    .push(format!("{}.{}", s.name(), m.name()));
            }
        }
    }
    assert!(
        users.len() > 30,
        "expected the bridle.v1 RPCs, found {users:?}"
    );
    let shared: Vec<String> = users
        .iter()
        .filter(|(_, rpcs)| rpcs.len() > 1)
        .filter(|(_, rpcs)| **rpcs != ["Router.Complete", "Router.CompleteStream"])
        .map(|(t, rpcs)| format!("{t} is the request of {}", rpcs.join(", ")))
        .collect();
    assert!(
        shared.is_empty(),
        "requests shared by several RPCs:\n{}",
        shared.join("\n")
    );
}

/// (number, name, type, type name, label) of every field.
fn wire(m: &DescriptorProto) -> Vec<(i32, String, Type, String, Label)> {
    let mut f: Vec<_> = m
        .field
        .iter()
        .map(|f| {
            (
                f.number(),
                f.name().to_string(),
                f.r#type(),
                f.type_name().to_string(),
                f.label(),
            )
        })
        .collect();
    f.sort();
    f
}

#[test]
fn messages_passed_on_are_wire_identical_to_the_ones_they_pass_as() {
    let set = set();
    let all = messages(&set);
    let pairs = [
        ("OrchestratorListModelsRequest", "ListModelsRequest"),
        ("OrchestratorListModelsResponse", "ListModelsResponse"),
        ("GetSpendRequest", "SpendRequest"),
        ("GetSpendResponse", "SpendResponse"),
        ("BeginToolAuthorizationRequest", "BeginAuthorizationRequest"),
        (
            "BeginToolAuthorizationResponse",
            "BeginAuthorizationResponse",
        ),
        (
            "CompleteToolAuthorizationRequest",
            "CompleteAuthorizationRequest",
        ),
        (
            "CompleteToolAuthorizationResponse",
            "CompleteAuthorizationResponse",
        ),
        (
            "RevokeToolAuthorizationRequest",
            "RevokeAuthorizationRequest",
        ),
        (
            "RevokeToolAuthorizationResponse",
            "RevokeAuthorizationResponse",
        ),
        ("GetGrantRequest", "GrantKey"),
        ("DeleteGrantRequest", "GrantKey"),
        ("PutGrantRequest", "Grant"),
    ];
    for (a, b) in pairs {
        let get = |n: &str| {
            all.get(&format!(".bridle.v1.{n}"))
                .copied()
                .unwrap_or_else(|| panic!("no message bridle.v1.{n}"))
        };
        assert_eq!(
            wire(get(a)),
            wire(get(b)),
            "{a} and {b} must stay wire-identical (one is passed on as the other)"
        );
    }
}
