use super::*;

/// A descriptor set of one file, `t.proto` in package `t`, from the text after its header.
fn set(body: &str) -> FileDescriptorSet {
    let text = format!("syntax = \"proto3\";\npackage t;\n{body}");
    compile(&BTreeMap::from([("t.proto".to_string(), text)])).unwrap()
}

/// The violations of going from `old` to `new`, as "symbol: problem".
fn changes(old: &str, new: &str) -> Vec<String> {
    check(&set(old), &set(new))
        .into_iter()
        .map(|v| {
            assert_eq!(v.file, "t.proto");
            format!("{}: {}", v.symbol, v.problem)
        })
        .collect()
}

const BASE: &str = r#"
message M {
  string a = 1;
  repeated int32 b = 2;
  N n = 3;
  message N { bool x = 1; }
  reserved 9;
}
enum E {
  E_UNSPECIFIED = 0;
  E_ONE = 1;
  reserved 7;
}
service S {
  rpc Call(M) returns (M);
  rpc Watch(M) returns (stream M);
}
"#;

#[test]
fn the_same_protos_and_additions_pass() {
    assert_eq!(changes(BASE, BASE), Vec::<String>::new());
    let added = r#"
// A comment, a new message, field, value and RPC, an option: all compatible.
option go_package = "example.com/t;t";
message M {
  string a = 1;
  repeated int32 b = 2;
  N n = 3;
  message N { bool x = 1; string y = 2; }
  reserved 9;
  int64 c = 4;
}
message Extra {}
enum E {
  E_UNSPECIFIED = 0;
  E_ONE = 1;
  E_TWO = 2;
  reserved 7;
}
service S {
  rpc Call(M) returns (M);
  rpc Watch(M) returns (stream M);
  rpc More(Extra) returns (Extra);
}
"#;
    assert_eq!(changes(BASE, added), Vec::<String>::new());
}

#[test]
fn a_removed_field_fails_unless_its_number_is_reserved() {
    let removed = BASE.replace("  string a = 1;\n", "");
    assert_eq!(
        changes(BASE, &removed),
        vec![
            "t.M.a: field 1 removed without reserving its number (add `reserved 1;` and `reserved \"a\";`)"
        ]
    );
    let reserved = BASE.replace("  string a = 1;\n", "  reserved 1;\n  reserved \"a\";\n");
    assert_eq!(changes(BASE, &reserved), Vec::<String>::new());
    // A range covers it too.
    let range = BASE
        .replace("  string a = 1;\n", "  reserved 1 to 2;\n")
        .replace("  repeated int32 b = 2;\n", "");
    assert_eq!(changes(BASE, &range), Vec::<String>::new());
}

#[test]
fn a_removed_nested_field_is_found_too() {
    let removed = BASE.replace("bool x = 1;", "");
    assert_eq!(
        changes(BASE, &removed),
        vec![
            "t.M.N.x: field 1 removed without reserving its number (add `reserved 1;` and `reserved \"x\";`)"
        ]
    );
}

#[test]
fn a_removed_message_enum_service_or_rpc_fails() {
    let no_n = BASE
        .replace("  N n = 3;\n", "  reserved 3;\n")
        .replace("  message N { bool x = 1; }\n", "");
    assert_eq!(
        changes(BASE, &no_n),
        vec!["t.M.N: message removed (clients still send or read it; deprecate it instead)"]
    );
    let no_rpc = BASE.replace("  rpc Watch(M) returns (stream M);\n", "");
    assert_eq!(
        changes(BASE, &no_rpc),
        vec!["t.S.Watch: RPC removed (clients still call it)"]
    );
    let start = BASE.find("service S").unwrap();
    let no_service = &BASE[..start];
    assert_eq!(
        changes(BASE, no_service),
        vec!["t.S: service removed (clients still call it)"]
    );
    let start = BASE.find("enum E").unwrap();
    let end = BASE.find("service S").unwrap();
    let no_enum = format!("{}{}", &BASE[..start], &BASE[end..]);
    assert_eq!(
        changes(BASE, &no_enum),
        vec!["t.E: enum removed (clients still send or read it)"]
    );
}

#[test]
fn a_removed_enum_value_fails_unless_reserved() {
    let removed = BASE.replace("  E_ONE = 1;\n", "");
    assert_eq!(
        changes(BASE, &removed),
        vec![
            "t.E.E_ONE: value 1 removed without reserving its number (add `reserved 1;` and `reserved \"E_ONE\";`)"
        ]
    );
    let reserved = BASE.replace("  E_ONE = 1;\n", "  reserved 1;\n  reserved \"E_ONE\";\n");
    assert_eq!(changes(BASE, &reserved), Vec::<String>::new());
}

#[test]
fn a_changed_field_type_fails() {
    let changed = BASE.replace("string a = 1;", "bytes a = 1;");
    assert_eq!(
        changes(BASE, &changed),
        vec!["t.M.a: field 1 changed type from string to bytes"]
    );
    // A message type for another.
    let changed = BASE.replace("N n = 3;", "M n = 3;");
    assert_eq!(
        changes(BASE, &changed),
        vec!["t.M.n: field 3 changed type from t.M.N to t.M"]
    );
    // A string made an enum: a type change as well.
    let changed = BASE.replace("string a = 1;", "E a = 1;");
    assert_eq!(
        changes(BASE, &changed),
        vec!["t.M.a: field 1 changed type from string to t.E"]
    );
}

#[test]
fn a_changed_label_fails() {
    let changed = BASE.replace("repeated int32 b = 2;", "int32 b = 2;");
    assert_eq!(
        changes(BASE, &changed),
        vec!["t.M.b: field 2 changed label from repeated to singular"]
    );
}

#[test]
fn a_reused_reserved_number_fails() {
    let reused = BASE.replace("  reserved 9;\n", "  string z = 9;\n");
    assert_eq!(
        changes(BASE, &reused),
        vec!["t.M.z: field 'z' reuses number 9, which was reserved"]
    );
    let reused = BASE.replace("  reserved 7;\n", "  E_SEVEN = 7;\n");
    assert_eq!(
        changes(BASE, &reused),
        vec!["t.E.E_SEVEN: value E_SEVEN reuses number 7, which was reserved"]
    );
}

#[test]
fn a_renamed_number_fails() {
    // The number kept, the name changed: the wire is the same, JSON and code are not.
    let renamed = BASE.replace("string a = 1;", "string alpha = 1;");
    assert_eq!(
        changes(BASE, &renamed),
        vec![
            "t.M.a: field 1 renamed from 'a' to 'alpha' (JSON and generated code break; add a new field instead)"
        ]
    );
    let renamed = BASE.replace("E_ONE = 1;", "E_UNO = 1;");
    assert_eq!(
        changes(BASE, &renamed),
        vec!["t.E.E_ONE: value 1 renamed from E_ONE to E_UNO (JSON and generated code break)"]
    );
    // The name kept, the number changed: old clients read it as an unknown field.
    let moved = BASE.replace("string a = 1;", "string a = 5;");
    assert_eq!(
        changes(BASE, &moved),
        vec!["t.M.a: field moved from number 1 to 5 (old clients no longer read it)"]
    );
}

#[test]
fn a_changed_rpc_signature_fails() {
    let changed = BASE.replace(
        "rpc Call(M) returns (M);",
        "rpc Call(M) returns (stream M);",
    );
    assert_eq!(
        changes(BASE, &changed),
        vec!["t.S.Call: RPC changed from (t.M) returns (t.M) to (t.M) returns (stream t.M)"]
    );
}

#[test]
fn every_violation_is_reported_not_just_the_first() {
    let many = BASE
        .replace("  string a = 1;\n", "")
        .replace("  E_ONE = 1;\n", "")
        .replace("  rpc Watch(M) returns (stream M);\n", "");
    assert_eq!(changes(BASE, &many).len(), 3, "{:?}", changes(BASE, &many));
}

#[test]
fn messages_may_move_between_files() {
    let one = compile(&BTreeMap::from([(
        "a.proto".to_string(),
        "syntax = \"proto3\";\npackage t;\nmessage A { string x = 1; }\nmessage B {}\n".to_string(),
    )]))
    .unwrap();
    let two = compile(&BTreeMap::from([
        (
            "a.proto".to_string(),
            "syntax = \"proto3\";\npackage t;\nmessage A { string x = 1; }\n".to_string(),
        ),
        (
            "b.proto".to_string(),
            "syntax = \"proto3\";\npackage t;\nmessage B {}\n".to_string(),
        ),
    ]))
    .unwrap();
    assert_eq!(check(&one, &two), vec![]);
}

/// The real protos: they compile in memory, compare equal to themselves, and name where Go and
/// Java code goes.
#[test]
fn the_bridle_protos_compile_and_carry_package_options() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../proto");
    let sources = crate::sources_in(&root).unwrap();
    assert!(sources.len() >= 9, "{:?}", sources.keys());
    let fds = compile(&sources).unwrap();
    assert_eq!(check(&fds, &fds), vec![]);
    for f in &fds.file {
        let o = f.options.clone().unwrap_or_default();
        assert_eq!(
            o.go_package(),
            "github.com/bridle-dev/bridle/gen/go/bridle/v1;bridlev1",
            "{}",
            f.name()
        );
        assert_eq!(o.java_package(), "dev.bridle.v1", "{}", f.name());
        assert!(o.java_multiple_files(), "{}", f.name());
    }
}
