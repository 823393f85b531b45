//! The Helm chart (helm/bridle) under a real Helm engine and the Kubernetes schemas: runs
//! helm/tests/check_chart.py in the tools venv that scripts/install-deps.sh makes (Helm v4's
//! library through helm-python-sdk and helm-sdkpy, kubernetes-validate). The script lints with
//! default and production-like values, renders every documented combination of values (also as
//! a subchart with `global` values), validates every object for Kubernetes 1.29 (1.33 with the
//! rootless engine), 1.36 and 1.37, checks kinds, gRPC probes, securityContext, NetworkPolicies,
//! Ingresses and routes, Vault access, TLS (cert-manager Certificates, the health-only probe
//! port, the Secret mounted as a directory) and the generated auth Secrets, the metrics port
//! with its ServiceMonitor and PrometheusRule, every pod against the Pod Security Standards
//! (helm/tests/pss.py: Bridle's containers "restricted", the default tools pod with its rootless
//! engine "baseline"), that the README's values reference is up to date, and that bad values
//! are refused.
//!
//! The chart's alerts run under Prometheus' own rule engine too: helm/tests/alerts.py writes
//! the rendered PrometheusRule's groups to a rules file, runs `promtool check rules` on it and
//! `promtool test rules` with helm/tests/alerts_test.yaml (every alert fires in one case and
//! stays quiet in another) and, with every threshold changed, alerts_thresholds_test.yaml.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stderr)]

use std::time::Duration;

/// Runs `script` (under helm/tests) with the tools venv's Python and asserts that it passed:
/// exit status 0 and a last line that counts passes and no failure.
async fn venv_script_passes(script: &str) {
    let python = bridle_testkit::paths::tools_venv_python();
    assert!(
        python.exists(),
        "{} is missing: run scripts/install-deps.sh (it installs the Helm engine and \
         kubernetes-validate into that venv)",
        python.display()
    );
    let root = bridle_testkit::paths::workspace_root();
    let out = tokio::time::timeout(
        Duration::from_secs(300),
        tokio::process::Command::new(&python)
            .arg(root.join("helm/tests").join(script))
            .current_dir(&root)
            .kill_on_drop(true)
            .output(),
    )
    .await
    .expect("the chart checks finish within 5 minutes")
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    eprintln!("{stdout}");
    assert!(out.status.success(), "{script} failed:\n{stdout}\n{stderr}");
    let summary = stdout.lines().last().unwrap_or_default();
    assert!(
        summary.contains(" 0 failed") && !summary.contains(" 0 passed"),
        "{summary}"
    );
}

#[tokio::test]
async fn the_chart_lints_renders_valid_objects_and_allows_only_the_architectures_calls() {
    venv_script_passes("check_chart.py").await;
}

#[tokio::test]
async fn every_alert_passes_promtool_and_fires_only_when_its_threshold_is_crossed_for_long_enough()
{
    // promtool comes from Debian's prometheus package (scripts/install-deps.sh); alerts.py
    // fails, not skips, without it.
    venv_script_passes("alerts.py").await;
}
