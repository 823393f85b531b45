//! The collector configuration under deploy/otel-collector and the Grafana dashboards under
//! deploy/grafana stay true to what the services emit: complete pipelines, redaction that
//! catches real key formats, and dashboards whose every query names a Bridle metric (and that
//! together show every metric).

#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

use std::collections::BTreeSet;

fn root() -> std::path::PathBuf {
    bridle_testkit::paths::workspace_root()
}

/// (name, unit) of every instrument in crates/bridle-core/src/metrics.rs.
fn instruments() -> Vec<(String, String, String)> {
    let src = std::fs::read_to_string(root().join("crates/bridle-core/src/metrics.rs")).unwrap();
    let re = regex::Regex::new(r#"\.(u64|f64)_(histogram|counter|gauge)\(\s*"([a-z_.]+)"\s*\)\s*(?://[^\n]*\s*)?(?:\.with_unit\("([^"]*)"\))?"#).unwrap();
    re.captures_iter(&src)
        .map(|c| {
            (
                c[3].to_string(),
                c.get(4).map(|m| m.as_str().to_string()).unwrap_or_default(),
                c[2].to_string(),
            )
        })
        .collect()
}

/// The Prometheus exporter's name for an OTLP metric.
fn prom_name(name: &str, unit: &str, kind: &str) -> String {
    let mut n = name.replace('.', "_");
    if unit == "s" {
        n.push_str("_seconds");
    }
    if kind == "counter" {
        n.push_str("_total");
    }
    n
}

/// Series that the exporters (`target_info`) and Prometheus' scrape (`up`) add.
const ADDED_BY_EXPORT: &[&str] = &["target_info", "up"];

/// Every dashboard in deploy/grafana, by file name.
fn dashboards() -> Vec<(String, serde_json::Value)> {
    let dir = root().join("deploy/grafana");
    let mut out: Vec<(String, serde_json::Value)> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .map(|p| {
            let text = std::fs::read_to_string(&p).unwrap();
            let doc: serde_json::Value =
                serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
            (p.file_name().unwrap().to_string_lossy().into_owned(), doc)
        })
        .collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

#[test]
fn the_dashboards_show_every_metric_and_only_real_ones() {
    let inst = instruments();
    assert!(inst.len() >= 11, "{inst:?}");
    let known: Vec<String> = inst
        .iter()
        .map(|(n, u, k)| prom_name(n, u, k))
        .chain(ADDED_BY_EXPORT.iter().map(|s| s.to_string()))
        .collect();
    let boards = dashboards();
    let names: BTreeSet<&str> = boards.iter().map(|(n, _)| n.as_str()).collect();
    for want in [
        "runs.json",
        "orchestrator.json",
        "router.json",
        "tools.json",
        "approvals.json",
        "secrets.json",
    ] {
        assert!(names.contains(want), "deploy/grafana/{want} is missing");
    }
    // Label names such as rpc_method also match; a query must name at least one metric.
    let word = regex::Regex::new(r"\b((gen_ai|bridle|rpc)_[a-z_]+|up|target_info)\b").unwrap();
    let datasource = serde_json::json!({"type": "prometheus", "uid": "${datasource}"});
    let mut used = BTreeSet::new();
    for (file, dash) in &boards {
        let vars = dash["templating"]["list"].as_array().unwrap();
        assert!(
            vars.iter()
                .any(|v| v["name"] == "datasource" && v["type"] == "datasource"),
            "{file}: no datasource variable"
        );
        let mut ids = BTreeSet::new();
        for p in dash["panels"].as_array().unwrap() {
            let title = &p["title"];
            assert!(
                ids.insert(p["id"].as_u64().unwrap()),
                "{file}: panel id {} twice",
                p["id"]
            );
            assert_eq!(p["datasource"], datasource, "{file}: panel {title}");
            assert!(
                p["description"].as_str().is_some_and(|d| !d.is_empty()),
                "{file}: panel {title} has no description"
            );
            for t in p["targets"].as_array().unwrap() {
                let expr = t["expr"].as_str().unwrap();
                let mut any = false;
                for m in word.find_iter(expr) {
                    let w = m.as_str();
                    let base = ["_bucket", "_sum", "_count"]
                        .iter()
                        .find_map(|s| w.strip_suffix(s))
                        .unwrap_or(w);
                    if known.iter().any(|k| k == base) {
                        used.insert(base.to_string());
                        any = true;
                    }
                }
                assert!(
                    any,
                    "{file}: panel {title} queries no Bridle metric: {expr}"
                );
            }
        }
    }
    for k in &known {
        assert!(used.contains(k), "metric {k} is on no dashboard");
    }
}

#[test]
fn the_collector_pipelines_are_complete_and_redact_credentials() {
    let cfg: serde_json::Value = bridle_core::yaml::from_str(
        &std::fs::read_to_string(root().join("deploy/otel-collector/collector.yaml")).unwrap(),
    )
    .unwrap();
    let defined = |section: &str| -> BTreeSet<String> {
        cfg[section].as_object().unwrap().keys().cloned().collect()
    };
    let (receivers, processors, exporters) = (
        defined("receivers"),
        defined("processors"),
        defined("exporters"),
    );
    let pipelines = cfg["service"]["pipelines"].as_object().unwrap();
    for signal in ["traces", "metrics", "logs"] {
        let p = &pipelines[signal];
        let list = |k: &str| -> Vec<String> {
            p[k].as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_str().unwrap().to_string())
                .collect()
        };
        for r in list("receivers") {
            assert!(
                receivers.contains(&r),
                "{signal}: receiver {r} is not defined"
            );
        }
        let procs = list("processors");
        for x in &procs {
            assert!(
                processors.contains(x),
                "{signal}: processor {x} is not defined"
            );
        }
        assert!(
            procs.contains(&"redaction".to_string()),
            "{signal} must pass the redaction processor"
        );
        assert_eq!(
            procs.first().map(String::as_str),
            Some("memory_limiter"),
            "{signal}: memory_limiter first"
        );
        assert_eq!(
            procs.last().map(String::as_str),
            Some("batch"),
            "{signal}: batch last"
        );
        for e in list("exporters") {
            assert!(
                exporters.contains(&e),
                "{signal}: exporter {e} is not defined"
            );
        }
    }
    // The patterns (RE2 syntax, which these are also valid Rust regexes in) catch real formats.
    let patterns: Vec<regex::Regex> = cfg["processors"]["redaction"]["blocked_values"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| regex::Regex::new(v.as_str().unwrap()).unwrap())
        .collect();
    let caught = |s: &str| patterns.iter().any(|p| p.is_match(s));
    for key in [
        "sk-proj-abcdefghijklmnopqrstuvwxyz012345",
        "sk-ant-api03-abcdefghijklmnopqrstuv",
        "AKIAIOSFODNN7EXAMPLE",
        "ghp_abcdefghijklmnopqrstuvwxyz0123456789",
        "xoxb-123456789012-abcdefghij",
        "hvs.CAESIabcdefghijklmnopqrstuvwxyz",
        "bk_abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMN",
        "-----BEGIN RSA PRIVATE KEY-----",
    ] {
        assert!(caught(key), "{key} is not redacted");
    }
    for text in [
        "the run used 1,234 tokens",
        "skipped the ask step",
        "gpt-4o-mini",
        "run_01j2k3",
    ] {
        assert!(!caught(text), "{text} would be redacted");
    }
}
