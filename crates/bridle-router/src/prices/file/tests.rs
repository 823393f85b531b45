use super::*;

/// The error of reading `entry` (the fields of one entry, indented under `- `) as a file
/// named "ops.yaml".
fn refused(entry: &str) -> String {
    parse("ops.yaml", &format!("prices:\n  - {entry}\n")).unwrap_err()
}

const OK: &str = r#"provider: openai
    model: m
    input: "1"
    output: "2"
    source: s
    date: 2025-06"#;

#[test]
fn decimals_are_read_exactly_into_nano_dollars() {
    for (text, nano) in [
        ("2.50", 2_500_000_000),
        ("0.075", 75_000_000),
        ("15", 15_000_000_000),
        ("0", 0),
        ("0.000000001", 1),
        ("000.10", 100_000_000),
        ("1.100000000", 1_100_000_000),
        // 0.1 + 0.2 in floating point is 0.30000000000000004; here it is what it says.
        ("0.3", 300_000_000),
        ("999999.999999999", 999_999_999_999_999),
        ("1000000", 1_000_000_000_000_000),
    ] {
        assert_eq!(nano_usd(text), Ok(nano), "{text}");
    }
}

#[test]
fn what_is_not_a_plain_decimal_is_refused_saying_why() {
    for (text, why) in [
        ("-1", "is negative"),
        ("-0.5", "is negative"),
        ("1.0000000001", "has 10 decimals: at most 9"),
        ("2,50", "is not a price"),
        ("$2.50", "is not a price"),
        ("+2", "is not a price"),
        ("1e3", "is not a price"),
        (".5", "is not a price"),
        ("5.", "is not a price"),
        ("1.2.3", "is not a price"),
        (" 2", "is not a price"),
        ("", "is not a price"),
        ("NaN", "is not a price"),
        ("1000000.000000001", "more than the largest price"),
        ("99999999999999999999999", "more than the largest price"),
    ] {
        let e = nano_usd(text).unwrap_err();
        assert!(e.contains(why), "{text:?}: {e}");
        assert!(e.contains(&format!("\"{text}\"")), "{text:?}: {e}");
    }
}

#[test]
fn an_entry_reads_into_its_price_with_cache_prices_defaulting_to_input() {
    let table = parse(
        "ops.yaml",
        r#"
prices:
  - provider: anthropic
    model: claude-x
    input: "3"
    cacheRead: "0.30"
    cacheWrite: "3.75"
    output: "15.00"
    source: "https://example.com/pricing (base input)"
    date: "2025-08-31"
  - {provider: openai, model: "ft:gpt-4o:acme", input: 0, output: "1", source: s, date: 2025-06}
"#,
    )
    .unwrap();
    assert_eq!(
        table[0],
        ModelPrice {
            provider: ProviderKind::Anthropic,
            model: "claude-x".into(),
            input: 3_000_000_000,
            cache_read: 300_000_000,
            cache_write: 3_750_000_000,
            output: 15_000_000_000,
            source: "https://example.com/pricing (base input)".into(),
            date: "2025-08-31".into(),
        }
    );
    // A whole number may go unquoted; the cache prices left out are the input price.
    assert_eq!(
        (
            table[1].input,
            table[1].cache_read,
            table[1].cache_write,
            table[1].output
        ),
        (0, 0, 0, 1_000_000_000)
    );
    assert_eq!(parse("ops.yaml", "prices: []\n").unwrap(), vec![]);
}

#[test]
fn a_bad_value_names_the_file_the_entry_the_field_and_the_line() {
    let e = refused(&OK.replace(r#"input: "1""#, r#"input: "1.0000000001""#));
    assert!(e.starts_with("ops.yaml: prices[0].input: "), "{e}");
    assert!(e.contains("has 10 decimals"), "{e}");
    assert!(e.contains("line 4"), "{e}");

    let e = refused(&OK.replace(r#"output: "2""#, r#"output: "-2""#));
    assert!(e.starts_with("ops.yaml: prices[0].output: "), "{e}");
    assert!(e.contains("negative"), "{e}");

    // A bare decimal would be read as a float: refused, saying to quote it.
    let e = refused(&OK.replace(r#"output: "2""#, "output: 2.5"));
    assert!(e.starts_with("ops.yaml: prices[0].output: "), "{e}");
    assert!(e.contains("quote it (\"2.5\")"), "{e}");

    let e = refused(&OK.replace("date: 2025-06", "date: June 2025"));
    assert!(e.starts_with("ops.yaml: prices[0].date: "), "{e}");
    assert!(e.contains("YYYY-MM or YYYY-MM-DD"), "{e}");
    for bad in ["2025-13", "2025-06-32", "25-06", "2025", "2025-6"] {
        let e = refused(&OK.replace("date: 2025-06", &format!("date: {bad}")));
        assert!(e.contains("prices[0].date"), "{bad}: {e}");
    }

    let e = refused(&OK.replace("provider: openai", "provider: scripted"));
    assert!(e.starts_with("ops.yaml: prices[0].provider: "), "{e}");
    assert!(e.contains("`openai` or `anthropic`"), "{e}");

    let e = refused(&OK.replace("model: m", "model: \"gpt 4o\""));
    assert!(e.starts_with("ops.yaml: prices[0].model: "), "{e}");

    let e = refused(&OK.replace("source: s", "source: \" \""));
    assert!(e.starts_with("ops.yaml: prices[0].source: "), "{e}");
}

#[test]
fn unknown_and_missing_fields_are_refused_by_name() {
    let e = refused(&format!("{OK}\n    cache_read: \"1\""));
    assert!(e.starts_with("ops.yaml: prices[0].cache_read: "), "{e}");
    assert!(e.contains("unknown field `cache_read`"), "{e}");
    assert!(e.contains("cacheRead"), "{e}");

    let e = refused(&OK.replace("    date: 2025-06", "    when: 2025-06"));
    assert!(e.contains("unknown field `when`"), "{e}");

    let e = refused(&OK.replace("    source: s\n", ""));
    assert!(e.contains("missing field `source`"), "{e}");

    let e = parse("ops.yaml", "price:\n  - {}\n").unwrap_err();
    assert!(e.contains("unknown field `price`"), "{e}");
    assert!(e.starts_with("ops.yaml: "), "{e}");
}

#[test]
fn one_file_prices_a_model_once() {
    let e = parse(
        "ops.yaml",
        &format!(
            "prices:\n  - {OK}\n  - {}\n",
            OK.replace("input: \"1\"", "input: \"9\"")
        ),
    )
    .unwrap_err();
    assert!(
        e.starts_with("ops.yaml: prices[1]: openai model 'm' is already priced by prices[0]"),
        "{e}"
    );
    // The same model under another provider is another entry.
    let other = OK.replace("provider: openai", "provider: anthropic");
    assert_eq!(
        parse("ops.yaml", &format!("prices:\n  - {OK}\n  - {other}\n"))
            .unwrap()
            .len(),
        2
    );
}

#[test]
fn an_empty_file_is_refused() {
    for text in ["", "# only a comment\n"] {
        let e = parse("ops.yaml", text).unwrap_err();
        assert!(e.starts_with("ops.yaml: "), "{e}");
    }
}
