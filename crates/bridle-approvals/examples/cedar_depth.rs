//! How deep a Cedar expression can go before cedar-policy overflows a thread's stack: the
//! measurement behind `cedar::nesting::MAX_NESTING`.
//!
//! `cargo run -p bridle-approvals --example cedar_depth [stack KiB, default 2048]` prints, per
//! shape of expression, the deepest one that compiles, evaluates and is dropped on a thread with
//! that stack (tokio's workers have 2 MiB), found by bisection. Each probe runs in a child
//! process, because an overflow aborts the process it happens in. Build it the way the service
//! runs (debug frames are several times larger than release ones).

#![allow(
    clippy::print_stdout,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic
)]

use std::process::Command;

use bridle_approvals::cedar::CedarEngine;
use bridle_approvals::{PolicyInput, decide};
use bridle_proto::{RiskClass, ToolSpec};

const SHAPES: &[&str] = &[
    "parens", "sets", "records", "nots", "and", "plus", "member", "args", "if", "calls",
];

fn shape(name: &str, d: usize) -> String {
    let body = match name {
        "parens" => format!("{}true{}", "(".repeat(d), ")".repeat(d)),
        "sets" => format!("{}1{} != []", "[".repeat(d), "]".repeat(d)),
        "records" => format!("{}1{} has a", "{a:".repeat(d), "}".repeat(d)),
        "nots" => format!("{}true{}", "!(".repeat(d), ")".repeat(d)),
        "and" => vec!["true"; d].join(" && "),
        "plus" => format!("{} > 0", vec!["1"; d].join("+")),
        "member" => format!("resource{} == 1", ".a".repeat(d)),
        // Accesses under context.arguments are not type-checked, so this one is accepted and
        // evaluated.
        "args" => format!("context.arguments{} == 1", ".a".repeat(d)),
        "if" => format!("{}true", "if true then true else ".repeat(d)),
        "calls" => format!("context.arguments.a{} == 1", ".contains(1)".repeat(d)),
        other => panic!("unknown shape {other}"),
    };
    format!("permit(principal, action, resource) when {{ {body} }};")
}

fn probe(name: &str, d: usize) {
    let text = shape(name, d);
    let outcome = match CedarEngine::from_manifests(&[("m".to_string(), text)]) {
        Ok(engine) => {
            let tool = ToolSpec {
                name: "t".into(),
                risk: RiskClass::ReadOnly as i32,
                ..Default::default()
            };
            let granted = vec!["t".to_string()];
            let input = PolicyInput {
                tenant: "acme",
                agent: "a",
                run_id: "run_1",
                step: 1,
                call_id: "c",
                tool: &tool,
                arguments_json: r#"{"a":{"a":1}}"#,
                arguments_sha256: "",
                facts: None,
                granted_tools: &granted,
                approval_required_tools: &[],
            };
            let v = decide(&engine, &input).expect("decides");
            format!("accepted, {:?}", v.decision)
        }
        Err(e) => format!("refused: {}", e.chars().take(100).collect::<String>()),
    };
    println!("{outcome}");
}

fn survives(name: &str, d: usize, stack_kib: usize) -> Option<String> {
    let out = Command::new(std::env::current_exe().unwrap())
        .args(["--child", name, &d.to_string(), &stack_kib.to_string()])
        .output()
        .unwrap();
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("--child") {
        let name = args[2].clone();
        let d: usize = args[3].parse().unwrap();
        let stack: usize = args[4].parse().unwrap();
        std::thread::Builder::new()
            .stack_size(stack * 1024)
            .spawn(move || probe(&name, d))
            .unwrap()
            .join()
            .unwrap();
        return;
    }
    let stack_kib: usize = args.get(1).map_or(2048, |s| s.parse().unwrap());
    println!("stack {stack_kib} KiB");
    for name in SHAPES {
        // Bisect the largest depth that survives, up to 65536.
        let (mut lo, mut hi) = (1usize, 65_537usize);
        let mut last = survives(name, lo, stack_kib).unwrap_or_default();
        while hi - lo > 1 {
            let mid = (lo + hi) / 2;
            match survives(name, mid, stack_kib) {
                Some(o) => {
                    lo = mid;
                    last = o;
                }
                None => hi = mid,
            }
        }
        let limit = if hi > 65_536 {
            "no overflow up to".to_string()
        } else {
            "deepest".into()
        };
        println!("{name:<8} {limit} {lo:>6}  ({last})");
    }
}
