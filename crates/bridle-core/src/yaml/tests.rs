use super::*;

fn at(text: &str, path: &str) -> Option<(usize, usize)> {
    Node::parse(text).unwrap().locate(path)
}

#[test]
fn fields_are_located_in_block_mappings_and_lists() {
    let text = "a: 1\nspec:\n  tools:\n    - x\n    - y\n  'quoted key': 2\n  \"double\": {c: 3}\n";
    assert_eq!(at(text, "a"), Some((1, 1)));
    assert_eq!(at(text, "spec.tools"), Some((3, 3)));
    assert_eq!(at(text, "spec.tools[1]"), Some((5, 7)));
    assert_eq!(at(text, "spec.quoted key"), Some((6, 3)));
    assert_eq!(at(text, "spec.double.c"), Some((7, 14)));
    assert_eq!(at(text, "spec.tools[2]"), None);
    assert_eq!(at(text, "spec.nothing"), None);
}

#[test]
fn fields_are_located_in_flow_mappings_nested_or_spread_over_lines() {
    let text = "spec: {route: r, budget: {maxSteps: 3, inner: {deep: [a, {k: v}]}}}\nnext: {a: 1,\n  b: [x,\n    y]}\n";
    assert_eq!(at(text, "spec.route"), Some((1, 8)));
    assert_eq!(at(text, "spec.budget.maxSteps"), Some((1, 27)));
    assert_eq!(at(text, "spec.budget.inner.deep[1].k"), Some((1, 59)));
    assert_eq!(at(text, "next.b"), Some((3, 3)));
    assert_eq!(at(text, "next.b[1]"), Some((4, 5)));
}

#[test]
fn an_alias_is_located_where_it_is_used() {
    let text = "base: &b {k: v}\nuse: *b\n";
    assert_eq!(at(text, "use"), Some((2, 1)));
    assert_eq!(at(text, "use.k").map(|(l, _)| l), Some(2));
}

#[test]
fn a_key_written_twice_is_refused_at_its_second_line() {
    for text in [
        "a: 1\nb: 2\na: 3\n",
        "a: 1\nb: 2\nc: {x: 1,\n a: 2}\na: 3\n",
    ] {
        let e = Node::parse(text).unwrap_err();
        assert_eq!(e.line, Some(text.lines().count()), "{e}");
        assert!(e.message.contains("`a` is written twice"), "{e}");
    }
    let e = Node::parse("m: {x: 1, x: 2}\n").unwrap_err();
    assert_eq!((e.line, e.column), (Some(1), Some(11)), "{e}");
    #[derive(serde::Deserialize, Debug)]
    #[allow(dead_code)]
    struct S {
        a: u32,
    }
    let e = from_str::<S>("a: 1\na: 2\n").unwrap_err();
    assert_eq!(e.line, Some(2), "{e}");
}

#[test]
fn scalars_read_as_yaml_1_2_and_as_serde_yaml_read_them() {
    #[derive(serde::Deserialize, Debug)]
    struct S {
        #[serde(default)]
        flag: bool,
        #[serde(default)]
        text: String,
        #[serde(default)]
        any: serde_json::Value,
    }
    for word in ["yes", "no", "on", "off", "y", "n"] {
        let e = from_str::<S>(&format!("flag: {word}\n")).unwrap_err();
        assert_eq!(e.path, "flag", "{e}");
        assert!(e.message.contains("expected a boolean"), "{e}");
        let s: S = from_str(&format!("any: {word}\n")).unwrap();
        assert_eq!(s.any, serde_json::json!(word));
    }
    let s: S = from_str("flag: True\n").unwrap();
    assert!(s.flag);
    for (written, read) in [
        ("~", "~"),
        ("null", "null"),
        ("", ""),
        ("12", "12"),
        ("1.5", "1.5"),
    ] {
        let s: S = from_str(&format!("text: {written}\n")).unwrap();
        assert_eq!(s.text, read);
    }
    let s: S = from_str("any: {a: 010, b: 1_000, c: 0x10, d: ~, e: 2001-01-01, f: 1.5}\n").unwrap();
    assert_eq!(
        s.any,
        serde_json::json!({"a": "010", "b": "1_000", "c": 16, "d": null, "e": "2001-01-01", "f": 1.5})
    );
    // `<<` is an ordinary key, as it was.
    let s: S = from_str("any: {<<: {a: 1}}\n").unwrap();
    assert_eq!(s.any, serde_json::json!({"<<": {"a": 1}}));
}

#[test]
fn an_integer_past_64_bits_is_refused_not_made_a_float() {
    for text in [
        "any: 99999999999999999999999\n",
        "any: [1, -99999999999999999999999]\n",
        "any: {n: 18446744073709551616}\n",
    ] {
        let e = Node::parse(text).unwrap_err();
        assert!(e.message.contains("too large"), "{text}: {e}");
        assert_eq!(e.line, Some(1), "{e}");
    }
    #[derive(serde::Deserialize, Debug)]
    #[allow(dead_code)]
    struct S {
        n: u32,
    }
    let e = from_str::<S>("n: 99999999999999999999999\n").unwrap_err();
    assert!(e.message.contains("too large"), "{e}");
    let e = from_str::<S>("n: many\n").unwrap_err();
    assert_eq!(e.path, "n");
    assert!(e.message.contains("`many`"), "{e}");
    assert_eq!((e.line, e.column), (Some(1), Some(4)));
}

#[test]
fn nesting_past_the_limit_is_refused_at_once() {
    for text in [
        format!("a: {}{}\n", "[".repeat(100_000), "]".repeat(100_000)),
        format!("a: {}{}\n", "{x: ".repeat(100_000), "}".repeat(100_000)),
    ] {
        let e = Node::parse(&text).unwrap_err();
        assert!(e.message.contains("nested too deeply"), "{e}");
    }
    let ok = format!("a: {}{}\n", "[".repeat(100), "]".repeat(100));
    assert!(Node::parse(&ok).is_ok());
}

#[test]
fn unknown_fields_are_named_in_serde_words_with_their_path() {
    #[derive(serde::Deserialize, Debug)]
    #[serde(deny_unknown_fields, rename_all = "camelCase")]
    #[allow(dead_code)]
    struct Inner {
        max_steps: u32,
        max_tokens: Option<u32>,
    }
    #[derive(serde::Deserialize, Debug)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct S {
        budget: Inner,
    }
    let e = from_str::<S>("budget: {maxSteps: 1, maxStep: 2}\n").unwrap_err();
    assert_eq!(e.path, "budget.maxStep");
    assert_eq!(
        e.message,
        "unknown field `maxStep`, expected `maxSteps` or `maxTokens`"
    );
    assert_eq!((e.line, e.column), (Some(1), Some(23)));
    assert_eq!(
        e.to_string(),
        "budget.maxStep: unknown field `maxStep`, expected `maxSteps` or `maxTokens` at line 1 column 23"
    );
}

#[test]
fn an_empty_list_field_says_how_to_write_one() {
    #[derive(serde::Deserialize, Debug)]
    #[allow(dead_code)]
    struct S {
        #[serde(default)]
        tools: Vec<String>,
    }
    let e = from_str::<S>("tools:\n").unwrap_err();
    assert_eq!(e.path, "tools");
    assert!(e.message.contains("write []"), "{e}");
    assert!(from_str::<S>("tools: []\n").unwrap().tools.is_empty());
}

#[test]
fn what_is_written_reads_back_the_same() {
    let v = serde_json::json!({
        "s": "yes", "n": "1.5", "t": "true", "nul": "~", "e": "", "x": "a: b",
        "multi": "line1\nline2\n", "neg": -3, "list": [], "map": {}, "hash": "# c",
        "star": "*a", "o": "0o7", "h": "0x1F", "ver": "1.10", "lead": " x", "big": 1e300
    });
    let text = to_string(&v).unwrap();
    assert_eq!(from_str::<serde_json::Value>(&text).unwrap(), v, "{text}");
}
