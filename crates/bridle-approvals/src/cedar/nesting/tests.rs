use super::*;

const GUARD: &str = r#"
@id("reads")
permit(principal, action == Bridle::Action::"call", resource)
when { resource.risk == "read_only" && !(resource.tags.contains("secret")) };
@id("no-etc")
forbid(principal, action, resource)
when { context.arguments has path && context.arguments.path like "/etc/*" }
unless { if context.argumentsValid then context.step > -1 else false };
"#;

fn when(body: &str) -> String {
    format!("permit(principal, action, resource)\nwhen {{ {body} }};")
}

/// 1-based line of a byte offset.
fn line(text: &str, offset: usize) -> usize {
    text[..offset].matches('\n').count() + 1
}

#[test]
fn ordinary_policies_pass() {
    assert_eq!(check(GUARD), Ok(()));
    assert_eq!(check(""), Ok(()));
    assert_eq!(check("not cedar at all ((( ]]] }}}"), Ok(()));
}

#[test]
fn brackets_nest_up_to_the_limit() {
    // `when {` is the first level.
    let inner = MAX_NESTING - 1;
    for (open, close) in [("(", ")"), ("[", "]"), ("{a: ", "}")] {
        let ok = when(&format!(
            "{}true{}",
            open.repeat(inner as usize),
            close.repeat(inner as usize)
        ));
        assert_eq!(check(&ok), Ok(()), "{open}");
        let deep = when(&format!(
            "{}true{}",
            open.repeat(inner as usize + 1),
            close.repeat(inner as usize + 1)
        ));
        let e = check(&deep).unwrap_err();
        assert!(matches!(e, TooDeep::Nesting { .. }), "{e:?}");
        assert_eq!(line(&deep, e.offset()), 2);
        // The last bracket, the one that goes one level too deep.
        assert_eq!(e.offset(), deep.find("true").unwrap_or(0) - open.len());
    }
}

#[test]
fn ten_thousand_parentheses_stop_at_the_limit() {
    let text = when(&format!("{}true{}", "(".repeat(10_000), ")".repeat(10_000)));
    let e = check(&text).unwrap_err();
    assert_eq!(
        e,
        TooDeep::Nesting {
            offset: text.find('{').unwrap_or(0) + 2 + MAX_NESTING as usize - 1
        }
    );
    assert!(
        e.message().starts_with("nesting deeper than 32 "),
        "{}",
        e.message()
    );
}

#[test]
fn unary_chains_and_ifs_are_levels() {
    let n = MAX_NESTING as usize;
    assert!(matches!(
        check(&when(&format!("{}true", "!".repeat(n)))),
        Err(TooDeep::Nesting { .. })
    ));
    assert!(matches!(
        check(&when(&format!("{}1 == 1", "-".repeat(n)))),
        Err(TooDeep::Nesting { .. })
    ));
    assert!(matches!(
        check(&when(&format!(
            "{}true",
            "if true then true else ".repeat(n)
        ))),
        Err(TooDeep::Nesting { .. })
    ));
    // Unary operators around brackets add up with them.
    assert!(matches!(
        check(&when(&format!(
            "{}true{}",
            "!(".repeat(n / 2),
            ")".repeat(n / 2)
        ))),
        Err(TooDeep::Nesting { .. })
    ));
    // A binary minus is not a level; an `if` ends with its element.
    assert_eq!(
        check(&when(&format!("1{} == 0", " - 1".repeat(200)))),
        Ok(())
    );
    assert_eq!(
        check(&when(&format!(
            "[{}] != [1]",
            vec!["if true then 1 else 2"; 200].join(", ")
        ))),
        Ok(())
    );
}

#[test]
fn strings_and_comments_do_not_count() {
    let many = "(".repeat(1000);
    assert_eq!(
        check(&format!(
            "// {many}\npermit(principal, action, resource)\nwhen {{ \"{many}\\\"{many}\" like \"*\" }};"
        )),
        Ok(())
    );
    // An unterminated string ends the scan; Cedar reports it.
    assert_eq!(
        check(&format!(
            "permit(principal, action, resource) when {{ \"{many}"
        )),
        Ok(())
    );
}

#[test]
fn long_chains_of_operators_stop_at_their_limit() {
    let n = MAX_CHAIN as usize;
    for (op, operand) in [("+", "1"), ("&&", "true"), (".", "a")] {
        let long = when(&format!("{} == 1", vec![operand; n + 1].join(op)));
        assert!(
            matches!(check(&long), Err(TooDeep::Chain { .. })),
            "{op}: {:?}",
            check(&long)
        );
        let short = when(&format!("{} == 1", vec![operand; n - 16].join(op)));
        assert_eq!(check(&short), Ok(()), "{op}");
    }
    // The operators of an enclosing expression count toward the ones inside it...
    let half = vec!["1"; n / 2].join("+");
    let nested = when(&format!("{half} + ({half} + ({half})) > 0"));
    assert!(matches!(check(&nested), Err(TooDeep::Chain { .. })));
    // ...but siblings do not add up, and nor do separate policies.
    let siblings = when(&format!("[{half}, {half}, {half}] != [1]"));
    assert_eq!(check(&siblings), Ok(()));
    let policies: String = (0..20).map(|_| when(&format!("{half} > 0"))).collect();
    assert_eq!(check(&policies), Ok(()));
    assert!(check(&when(&half)).is_ok());
    let e = check(&when(&vec!["1"; 2 * n].join("+"))).unwrap_err();
    assert!(
        e.message().starts_with("more than 4096 operators"),
        "{}",
        e.message()
    );
}

#[test]
fn unbalanced_closers_do_not_undercount() {
    let text = format!(
        "{}\n{}",
        ")]}".repeat(100),
        when(&format!("{}true{}", "(".repeat(40), ")".repeat(40)))
    );
    assert!(matches!(check(&text), Err(TooDeep::Nesting { .. })));
}

/// Policies at the limits parse, pass the schema check, decide and are dropped on a thread with
/// half of a tokio worker's stack (2 MiB): the other half is left to the service's own frames.
#[test]
fn policies_at_the_limits_fit_in_half_a_worker_stack() {
    use crate::cedar::CedarEngine;
    use crate::cedar::tests::{Call, verdict};
    use bridle_proto::RiskClass;

    // `when {` is one level; each shape is as deep as the limits let it be.
    let n = MAX_NESTING as usize - 1;
    let chain = MAX_CHAIN as usize - 8;
    let sets = format!("{}1{}", "[".repeat(n), "]".repeat(n));
    let shapes = [
        (
            "parentheses",
            format!("{}true{}", "(".repeat(n), ")".repeat(n)),
        ),
        (
            "records",
            format!("{}true{} has a", "{a: ".repeat(n), "}".repeat(n)),
        ),
        ("sets", format!("{sets} == {sets}")),
        (
            "negations",
            format!("{}true{}", "!(".repeat(n / 2), ")".repeat(n / 2)),
        ),
        (
            "ifs",
            format!("{}true", "if true then true else ".repeat(n)),
        ),
        ("sums", format!("{} > 0", vec!["1"; chain].join("+"))),
        (
            "arguments",
            format!("context.arguments{} == 1", ".a".repeat(chain)),
        ),
        (
            "calls",
            format!("context.arguments.a{} == 1", ".contains(1)".repeat(chain)),
        ),
        (
            "sums in brackets",
            format!(
                "{}1{} > 0",
                format!("{} + (", vec!["1"; chain / n - 2].join("+")).repeat(n - 1),
                ")".repeat(n - 1)
            ),
        ),
    ];
    for (name, body) in shapes {
        let text = when(&body);
        assert_eq!(check(&text), Ok(()), "{name} is within the limits");
        std::thread::Builder::new()
            .name(name.to_string())
            .stack_size(1 << 20)
            .spawn(move || {
                let e = CedarEngine::from_manifests(&[("deep".to_string(), text)])
                    .unwrap_or_else(|e| panic!("{name}: {e}"));
                let call = Call::new("ls", RiskClass::ReadOnly, r#"{"a":{"a":1}}"#);
                verdict(&e, &call);
            })
            .unwrap()
            .join()
            .unwrap();
    }
}

mod props {
    use proptest::prelude::*;

    use super::when;
    use crate::cedar::CedarEngine;
    use crate::cedar::compile_manifest;
    use crate::cedar::tests::{Call, verdict};
    use bridle_proto::RiskClass;

    const PIECES: &[&str] = &[
        "(",
        ")",
        "[",
        "]",
        "{",
        "}",
        "{a: ",
        "!",
        "-",
        "if ",
        " then ",
        " else ",
        "&&",
        "||",
        "+",
        "*",
        ".",
        ".a",
        "a",
        "1",
        "true",
        "\"s\"",
        "\"",
        "\\",
        "context.arguments",
        " has ",
        " like ",
        " in ",
        " is ",
        ",",
        ";",
        ":",
        "::",
        "//c\n",
        "\n",
        "@id(\"x\")",
        ".contains(",
        "permit(principal, action, resource) when { ",
        " };",
        "é",
        "?principal",
    ];

    /// Runs of Cedar's pieces, some long: brackets thousands deep, odd mixes, half a string.
    fn soup() -> impl Strategy<Value = String> {
        prop::collection::vec((0..PIECES.len(), 1usize..400), 1..24).prop_map(|runs| {
            runs.into_iter()
                .map(|(i, n)| PIECES[i].repeat(n))
                .collect::<String>()
        })
    }

    /// Well-formed expressions wrapped in a random stack of brackets, negations and `if`s
    /// around a random chain: valid Cedar at every depth, up to well past the limits.
    fn nested() -> impl Strategy<Value = String> {
        (
            // Without the bounds, about 150 wrappers or 33,000 operators overflow 2 MiB.
            prop::collection::vec(0usize..6, 0..400),
            0usize..50_000,
            prop::sample::select(vec!["+", "&&", ".a", "||"]),
        )
            .prop_map(|(wraps, chain, op)| {
                let core = match op {
                    ".a" => format!("context.arguments{} == 1", op.repeat(chain)),
                    "+" => format!("{} > 0", vec!["1"; chain + 1].join(op)),
                    _ => vec!["true"; chain + 1].join(op),
                };
                let mut e = core;
                for w in wraps {
                    e = match w {
                        0 => format!("({e})"),
                        1 => format!("!({e})"),
                        2 => format!("{{a: {e}}}.a"),
                        3 => format!("if true then {e} else false"),
                        4 => format!("[{e}].contains(true)"),
                        _ => format!("true && ({e})"),
                    };
                }
                when(&e)
            })
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

        /// Whatever the text, compiling it (and deciding with it, when it compiles) answers:
        /// no panic, and no stack overflow, which would abort this test binary.
        #[test]
        fn odd_and_deep_cedar_never_takes_the_process_down(
            text in prop_oneof![soup(), nested()]
        ) {
            let _ = compile_manifest("fuzz", &text);
            if let Ok(e) = CedarEngine::from_manifests(&[("fuzz".to_string(), text)]) {
                let call = Call::new("ls", RiskClass::ReadOnly, r#"{"a":{"a":1}}"#);
                verdict(&e, &call);
            }
        }
    }
}
