//! Every public element of the `bridle.v1` contracts says what it is. Clients in other
//! languages are generated from `proto/bridle/v1`, and `docs/src/reference/grpc.md` is written
//! from its comments, so an element without a comment is an undocumented part of the API.
//!
//! The rule, read from the embedded `FILE_DESCRIPTOR_SET` (protox keeps the source info):
//! every service, rpc, message (nested ones included), field, oneof, enum and enum value
//! declared in a `bridle/v1/*.proto` file has a non-blank *leading* comment, the comment block
//! directly above it. A trailing comment (`FOO = 1; // ...`) does not count, for any kind of
//! element: one place to look, and the one every generator copies into its docs. Comments
//! separated from the element by a blank line (detached comments) do not count either.
//!
//! Nothing written in the files is exempt, `*_UNSPECIFIED` enum values included: their comment
//! says what the zero value means where it is read. Two kinds of element are skipped because
//! they are not written in any file and have no source location to hold a comment: the
//! `FooEntry` message protoc synthesises for a `map<K, V>` field (the field itself is checked),
//! and the `_foo` oneof synthesised for a proto3 `optional` field (again, the field is checked).
//! Files of other packages (the `google.protobuf` imports) are not ours and are not checked.

#![allow(clippy::unwrap_used)]

use std::collections::HashMap;

use prost::Message as _;
use prost_types::{
    DescriptorProto, EnumDescriptorProto, FileDescriptorProto, FileDescriptorSet,
    ServiceDescriptorProto,
};

// Field numbers of the descriptor messages, as `SourceCodeInfo.Location.path` uses them.
const FILE_MESSAGE_TYPE: i32 = 4;
const FILE_ENUM_TYPE: i32 = 5;
const FILE_SERVICE: i32 = 6;
const MESSAGE_FIELD: i32 = 2;
const MESSAGE_NESTED_TYPE: i32 = 3;
const MESSAGE_ENUM_TYPE: i32 = 4;
const MESSAGE_ONEOF_DECL: i32 = 8;
const ENUM_VALUE: i32 = 2;
const SERVICE_METHOD: i32 = 2;

/// One element that must carry a comment: how to name it in a failure, and where its comment
/// lives in the source info.
struct Element {
    what: &'static str,
    name: String,
    path: Vec<i32>,
}

fn child(path: &[i32], field: i32, index: usize) -> Vec<i32> {
    let mut p = path.to_vec();
    p.push(field);
    p.push(i32::try_from(index).unwrap());
    p
}

fn enumeration(out: &mut Vec<Element>, e: &EnumDescriptorProto, name: String, path: Vec<i32>) {
    for (i, v) in e.value.iter().enumerate() {
        out.push(Element {
            what: "enum value",
            name: format!("{name}.{}", v.name()),
            path: child(&path, ENUM_VALUE, i),
        });
    }
    out.push(Element {
        what: "enum",
        name,
        path,
    });
}

fn message(out: &mut Vec<Element>, m: &DescriptorProto, name: String, path: Vec<i32>) {
    for (i, f) in m.field.iter().enumerate() {
        out.push(Element {
            what: "field",
            name: format!("{name}.{}", f.name()),
            path: child(&path, MESSAGE_FIELD, i),
        });
    }
    for (i, o) in m.oneof_decl.iter().enumerate() {
        // A proto3 `optional` field lives in a synthetic oneof of its own that no file spells.
        let synthetic = m.field.iter().any(|f| {
            f.proto3_optional == Some(true) && f.oneof_index == Some(i32::try_from(i).unwrap())
        });
        if !synthetic {
            out.push(Element {
                what: "oneof",
                name: format!("{name}.{}", o.name()),
                path: child(&path, MESSAGE_ONEOF_DECL, i),
            });
        }
    }
    for (i, n) in m.nested_type.iter().enumerate() {
        // The entry message of a `map<K, V>` field is synthesised by the compiler.
        if n.options.as_ref().is_some_and(|o| o.map_entry()) {
            continue;
        }
        message(
            out,
            n,
            format!("{name}.{}", n.name()),
            child(&path, MESSAGE_NESTED_TYPE, i),
        );
    }
    for (i, e) in m.enum_type.iter().enumerate() {
        enumeration(
            out,
            e,
            format!("{name}.{}", e.name()),
            child(&path, MESSAGE_ENUM_TYPE, i),
        );
    }
    out.push(Element {
        what: "message",
        name,
        path,
    });
}

fn service(out: &mut Vec<Element>, s: &ServiceDescriptorProto, path: Vec<i32>) {
    for (i, m) in s.method.iter().enumerate() {
        out.push(Element {
            what: "rpc",
            name: format!("{}.{}", s.name(), m.name()),
            path: child(&path, SERVICE_METHOD, i),
        });
    }
    out.push(Element {
        what: "service",
        name: s.name().to_string(),
        path,
    });
}

/// Every element of one file that must carry a comment.
fn elements(file: &FileDescriptorProto) -> Vec<Element> {
    let mut out = Vec::new();
    for (i, s) in file.service.iter().enumerate() {
        service(&mut out, s, vec![FILE_SERVICE, i32::try_from(i).unwrap()]);
    }
    for (i, m) in file.message_type.iter().enumerate() {
        message(
            &mut out,
            m,
            m.name().to_string(),
            vec![FILE_MESSAGE_TYPE, i32::try_from(i).unwrap()],
        );
    }
    for (i, e) in file.enum_type.iter().enumerate() {
        enumeration(
            &mut out,
            e,
            e.name().to_string(),
            vec![FILE_ENUM_TYPE, i32::try_from(i).unwrap()],
        );
    }
    out
}

/// The elements of `bridle.v1` without a leading comment, one line each, in file order.
fn uncommented(set: &FileDescriptorSet) -> (usize, Vec<String>) {
    let mut checked = 0;
    let mut missing = Vec::new();
    for file in set.file.iter().filter(|f| f.package() == "bridle.v1") {
        let leading: HashMap<&[i32], &str> = file
            .source_code_info
            .iter()
            .flat_map(|info| &info.location)
            .filter_map(|loc| Some((loc.path.as_slice(), loc.leading_comments.as_deref()?)))
            .collect();
        let mut found = elements(file);
        found.sort_by(|a, b| a.path.cmp(&b.path));
        for e in found {
            checked += 1;
            let has = leading
                .get(e.path.as_slice())
                .is_some_and(|c| !c.trim().is_empty());
            if !has {
                missing.push(format!("{}: {} {}", file.name(), e.what, e.name));
            }
        }
    }
    (checked, missing)
}

#[test]
fn every_public_element_of_bridle_v1_has_a_leading_comment() {
    let set = FileDescriptorSet::decode(bridle_proto::FILE_DESCRIPTOR_SET).unwrap();
    // Without source info every element would look uncommented; say so instead.
    let ours: Vec<&FileDescriptorProto> = set
        .file
        .iter()
        .filter(|f| f.package() == "bridle.v1")
        .collect();
    assert!(
        ours.len() >= 9,
        "expected the nine bridle/v1 files, found {}",
        ours.len()
    );
    for f in &ours {
        assert!(
            f.source_code_info.is_some(),
            "{} was compiled without source info: its comments cannot be read",
            f.name()
        );
    }
    let (checked, missing) = uncommented(&set);
    assert!(checked > 500, "only {checked} elements found");
    assert!(
        missing.is_empty(),
        "{} of {checked} elements of proto/bridle/v1 have no leading comment (the comment \
         block directly above them; a trailing or detached comment does not count):\n{}",
        missing.len(),
        missing.join("\n")
    );
}

/// The check itself can fail: a file with one commented and one bare element of each kind.
#[test]
fn an_element_without_a_leading_comment_is_reported() {
    let source = "syntax = \"proto3\";\n\
                  package bridle.v1;\n\
                  // Documented.\n\
                  service S {\n\
                    rpc Bare(M) returns (M);\n\
                  }\n\
                  // Documented.\n\
                  message M {\n\
                    int32 trailing = 1; // Trailing only.\n\
                    // Documented.\n\
                    map<string, string> labels = 2;\n\
                    // Documented.\n\
                    optional int32 maybe = 3;\n\
                    oneof choice {\n\
                      // Documented.\n\
                      string a = 4;\n\
                    }\n\
                    message Inner {}\n\
                  }\n\
                  // Documented.\n\
                  enum E {\n\
                    E_UNSPECIFIED = 0;\n\
                  }\n";
    let set = compile("bridle/v1/t.proto", source);
    let (_, missing) = uncommented(&set);
    assert_eq!(
        missing,
        [
            "bridle/v1/t.proto: field M.trailing",
            "bridle/v1/t.proto: message M.Inner",
            "bridle/v1/t.proto: oneof M.choice",
            "bridle/v1/t.proto: enum value E.E_UNSPECIFIED",
            "bridle/v1/t.proto: rpc S.Bare",
        ]
    );
}

/// The descriptor set of one in-memory file, with source info, as build.rs compiles ours.
fn compile(name: &'static str, source: &'static str) -> FileDescriptorSet {
    struct One(&'static str, &'static str);
    impl protox::file::FileResolver for One {
        fn open_file(&self, name: &str) -> Result<protox::file::File, protox::Error> {
            if name == self.0 {
                protox::file::File::from_source(name, self.1)
            } else {
                Err(protox::Error::file_not_found(name))
            }
        }
    }
    protox::Compiler::with_file_resolver(One(name, source))
        .include_source_info(true)
        .open_file(name)
        .unwrap()
        .file_descriptor_set()
}
