//! Property tests over arguments: whatever the model sends, policies decide as written, and
//! the fixed rules (default deny) hold.

use proptest::prelude::*;
use serde_json::{Value, json};

use super::*;

fn key() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("__entity".to_string()),
        Just("__extn".to_string()),
        Just("path".to_string()),
        Just("amount".to_string()),
        "[a-zA-Z_]{1,8}",
        "\\PC{0,6}",
    ]
}

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>()
            .prop_filter("JSON has no NaN or infinity", |f| f.is_finite())
            .prop_map(|f| json!(f)),
        "\\PC{0,12}".prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 40, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map(key(), inner, 0..6)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

fn path() -> impl Strategy<Value = String> {
    prop_oneof![
        "/etc/\\PC{0,16}",
        "/\\PC{0,16}",
        "\\PC{0,16}",
        Just("/etc".to_string()),
        Just("/etc/".to_string()),
    ]
}

const PATHS: &str = r#"
permit(principal, action, resource);
@id("no-etc")
forbid(principal, action, resource)
when { context.arguments has path && context.arguments.path like "/etc/*" };
"#;

const AMOUNTS: &str = r#"
@id("small")
permit(principal, action, resource)
when { context.arguments has amount && context.arguments.amount <= 100 };
@id("large")
@require_approval("large payment")
permit(principal, action, resource)
when { context.arguments has amount && context.arguments.amount > 100 };
"#;

fn call(tool: &str, args: &str) -> Call {
    Call::new(tool, RiskClass::Mutating, args)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn forbid_on_a_path_decides_as_written(p in path(), extra in json_value()) {
        let e = engine(PATHS);
        let args = json!({ "path": p, "extra": extra }).to_string();
        let v = verdict(&e, &call("read_file", &args));
        let want = if p.starts_with("/etc/") { Decision::Deny } else { Decision::Allow };
        prop_assert_eq!(v.decision, want, "{} -> {:?}", args, v);
    }

    #[test]
    fn approval_on_an_amount_decides_as_written(n in any::<i64>(), as_text in any::<bool>()) {
        let e = engine(AMOUNTS);
        // An amount sent as a string is not a number to Cedar: the comparison fails to
        // evaluate, which denies.
        let args = if as_text { json!({ "amount": n.to_string() }) } else { json!({ "amount": n }) };
        let v = verdict(&e, &call("pay", &args.to_string()));
        let want = if as_text {
            Decision::Deny
        } else if n > 100 {
            Decision::RequireApproval
        } else {
            Decision::Allow
        };
        prop_assert_eq!(v.decision, want, "{} -> {:?}", args, v);
    }

    #[test]
    fn any_arguments_are_decided_and_never_panic(args in json_value()) {
        let text = args.to_string();
        for cedar in [PATHS, AMOUNTS] {
            let e = engine(cedar);
            let v = verdict(&e, &call("t", &text));
            // A `path` that is not a string makes `like` fail to evaluate: denied. Numbers
            // that are not 64-bit integers are strings of their JSON text.
            let expected_by_paths = match args.get("path") {
                None | Some(Value::Null) => Decision::Allow,
                Some(Value::String(p)) if !p.starts_with("/etc/") => Decision::Allow,
                Some(Value::Number(n)) if n.as_i64().is_none() => Decision::Allow,
                Some(_) => Decision::Deny,
            };
            if cedar == PATHS {
                prop_assert_eq!(v.decision, expected_by_paths, "{} -> {:?}", text, v);
            }
            // Default deny: an ungranted tool is denied whatever the arguments and policy.
            let mut ungranted = call("t", &text);
            ungranted.granted = vec!["other".into()];
            prop_assert_eq!(verdict(&e, &ungranted).decision, Decision::Deny);
        }
    }

    #[test]
    fn layout_of_the_arguments_does_not_matter(args in json_value()) {
        let compact = args.to_string();
        let pretty = serde_json::to_string_pretty(&args).unwrap();
        for cedar in [PATHS, AMOUNTS] {
            let e = engine(cedar);
            prop_assert_eq!(
                verdict(&e, &call("t", &compact)),
                verdict(&e, &call("t", &pretty))
            );
        }
    }

    #[test]
    fn text_that_is_not_json_is_decided(raw in "\\PC{0,40}") {
        let e = engine(AMOUNTS);
        let v = verdict(&e, &call("pay", &raw));
        // Not an object with a number `amount`: neither permit applies.
        let amount = serde_json::from_str::<Value>(&raw)
            .ok()
            .and_then(|v| v.get("amount").and_then(Value::as_i64));
        let want = match amount {
            Some(n) if n > 100 => Decision::RequireApproval,
            Some(_) => Decision::Allow,
            None => Decision::Deny,
        };
        prop_assert_eq!(v.decision, want);
    }
}
