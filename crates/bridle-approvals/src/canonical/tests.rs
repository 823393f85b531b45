use proptest::prelude::*;
use sha2::{Digest, Sha256};

use super::*;

#[test]
fn key_order_and_whitespace_do_not_change_the_hash() {
    assert_eq!(
        arguments_sha256(r#"{"a":1,"b":2}"#),
        arguments_sha256(r#"{"b":2,"a":1}"#)
    );
    assert_eq!(
        arguments_sha256(r#"{"a":1,"b":2}"#),
        arguments_sha256("{ \"b\" : 2,\n  \"a\" : 1 }")
    );
}

#[test]
fn nested_objects_are_sorted_and_arrays_keep_their_order() {
    assert_eq!(
        canonical_json(r#" {"b": [2, {"d": 1, "c": 0}], "a": null, "ä": "x\n"} "#).as_deref(),
        Some(r#"{"a":null,"b":[2,{"c":0,"d":1}],"ä":"x\n"}"#)
    );
    assert_ne!(arguments_sha256("[1,2]"), arguments_sha256("[2,1]"));
}

#[test]
fn different_values_hash_differently() {
    assert_ne!(
        arguments_sha256(r#"{"a":1}"#),
        arguments_sha256(r#"{"a":2}"#)
    );
    assert_ne!(
        arguments_sha256(r#"{"a":1}"#),
        arguments_sha256(r#"{"a":"1"}"#)
    );
    assert_ne!(
        arguments_sha256(r#"{"a":1}"#),
        arguments_sha256(r#"{"a":1,"b":null}"#)
    );
}

#[test]
fn text_that_is_not_json_hashes_its_raw_bytes() {
    for raw in ["{\"a\":", "", "not json", "{'a': 1}"] {
        assert_eq!(canonical_json(raw), None, "{raw:?}");
        assert_eq!(
            arguments_sha256(raw),
            hex::encode(Sha256::digest(raw.as_bytes()))
        );
    }
    // Raw hashing does not normalise: these are two different (broken) calls.
    assert_ne!(arguments_sha256("{\"a\":1"), arguments_sha256("{ \"a\":1"));
}

#[test]
fn the_hash_is_lowercase_hex_sha256_of_the_canonical_text() {
    let expected = hex::encode(Sha256::digest(br#"{"a":1,"b":2}"#));
    assert_eq!(arguments_sha256(r#"{"b":2,"a":1}"#), expected);
    assert_eq!(expected.len(), 64);
}

/// A JSON value built by the test, so objects can be written with their keys in any order.
#[derive(Clone, Debug)]
enum Tree {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
    Arr(Vec<Tree>),
    Obj(Vec<(String, Tree)>),
}

fn tree() -> impl Strategy<Value = Tree> {
    let leaf = prop_oneof![
        Just(Tree::Null),
        any::<bool>().prop_map(Tree::Bool),
        any::<i64>().prop_map(Tree::Int),
        (-1.0e9..1.0e9f64).prop_map(Tree::Float),
        "\\PC{0,8}".prop_map(Tree::Str),
    ];
    leaf.prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..5).prop_map(Tree::Arr),
            // A map, so keys are unique: with duplicates, JSON's last-wins would make order matter.
            prop::collection::btree_map("\\PC{0,6}", inner, 0..6)
                .prop_map(|m| Tree::Obj(m.into_iter().collect())),
        ]
    })
}

/// Writes `t` as JSON; `shift` rotates (and, when odd, reverses) every object's keys, and
/// `spaced` adds whitespace everywhere JSON allows it.
fn render(t: &Tree, shift: usize, spaced: bool, out: &mut String) {
    let sp = if spaced { " \n\t" } else { "" };
    match t {
        Tree::Null => out.push_str("null"),
        Tree::Bool(b) => out.push_str(&b.to_string()),
        Tree::Int(i) => out.push_str(&i.to_string()),
        Tree::Float(f) => out.push_str(&serde_json::to_string(f).unwrap()),
        Tree::Str(s) => out.push_str(&serde_json::to_string(s).unwrap()),
        Tree::Arr(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push_str(sp);
                    out.push(',');
                }
                render(item, shift, spaced, out);
            }
            out.push(']');
        }
        Tree::Obj(fields) => {
            let mut fields: Vec<&(String, Tree)> = fields.iter().collect();
            if !fields.is_empty() {
                let n = shift % fields.len();
                fields.rotate_left(n);
            }
            if shift % 2 == 1 {
                fields.reverse();
            }
            out.push('{');
            out.push_str(sp);
            for (i, (k, v)) in fields.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                    out.push_str(sp);
                }
                out.push_str(&serde_json::to_string(k).unwrap());
                out.push_str(sp);
                out.push(':');
                out.push_str(sp);
                render(v, shift, spaced, out);
            }
            out.push_str(sp);
            out.push('}');
        }
    }
}

fn rendered(t: &Tree, shift: usize, spaced: bool) -> String {
    let mut s = String::new();
    render(t, shift, spaced, &mut s);
    s
}

proptest! {
    #[test]
    fn permuting_object_keys_never_changes_the_hash(t in tree(), shift in 0usize..16) {
        let a = rendered(&t, 0, false);
        let b = rendered(&t, shift, true);
        prop_assert!(canonical_json(&a).is_some(), "generated JSON must parse: {}", a);
        prop_assert_eq!(arguments_sha256(&a), arguments_sha256(&b));
    }

    #[test]
    fn canonical_form_is_a_fixed_point(t in tree(), shift in 0usize..16) {
        let c = canonical_json(&rendered(&t, shift, true)).unwrap();
        prop_assert_eq!(canonical_json(&c), Some(c.clone()));
    }
}

/// A value `depth` arrays deep, built without recursion.
pub(crate) fn deep_value(depth: usize) -> Value {
    let mut v = Value::from(1);
    for _ in 0..depth {
        v = Value::Array(vec![v]);
    }
    v
}

/// Drops a value without recursing (serde_json's own drop recurses once per level).
pub(crate) fn dismantle(v: Value) {
    let mut stack = vec![v];
    while let Some(v) = stack.pop() {
        match v {
            Value::Array(items) => stack.extend(items),
            Value::Object(map) => stack.extend(map.into_iter().map(|(_, v)| v)),
            _ => {}
        }
    }
}

#[test]
fn values_deeper_than_the_bound_are_not_canonicalised() {
    // serde_json refuses such text, but a Value built in code can be any depth: the walk must
    // stop at the bound rather than overflow the stack.
    let v = deep_value(200_000);
    assert_eq!(canonical_value(&v), None);
    dismantle(v);
    let v = deep_value(MAX_DEPTH);
    assert!(canonical_value(&v).is_some());
    dismantle(v);
}

#[test]
fn everything_serde_json_parses_is_within_the_bound() {
    for depth in [1, 100, 126, 127, 128, 129] {
        let text = format!("{}1{}", "[".repeat(depth), "]".repeat(depth));
        if serde_json::from_str::<Value>(&text).is_ok() {
            assert_eq!(
                canonical_json(&text).as_deref(),
                Some(text.as_str()),
                "{depth}"
            );
        }
    }
}
