#!/usr/bin/env python3
"""Bridle's alerts (helm/bridle/templates/monitoring.yaml) under Prometheus' own rule engine.

- Renders the chart with metrics.prometheusRule on (Helm v4's library, offline, as
  check_chart.py does), writes the PrometheusRule's groups to a Prometheus rules file and runs
  `promtool check rules` on it.
- Runs `promtool test rules` with helm/tests/alerts_test.yaml against it: series in, alerts
  out, with their labels and their rendered summary and description. Every alert of the chart
  must have a case in which it fires and one in which it does not (checked here before promtool
  runs, so an alert added without tests fails).
- Renders again with every threshold changed (THRESHOLDS) and runs
  helm/tests/alerts_thresholds_test.yaml against those rules, whose cases sit between the
  default and the changed thresholds; every test group of that file must fail against the
  default rules, so the values are shown to reach the rules.

Fails, not skips, when promtool is missing (Debian's prometheus package ships it;
scripts/install-deps.sh installs it). Run with the tools venv that scripts/install-deps.sh makes:
    ~/.cache/bridle/venv/bin/python helm/tests/alerts.py
Exits 0 when every check passes; prints each failure otherwise.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import helm_python
import yaml

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "helm" / "bridle"
TESTS = Path(__file__).resolve().parent
RULES_FILE = "bridle-rules.yaml"
ON = {"metrics": {"enabled": True, "prometheusRule": {"enabled": True}}}
# Every threshold of metrics.prometheusRule.thresholds, changed (alerts_thresholds_test.yaml).
THRESHOLDS = {
    "errorRatio": 0.2,
    "latencyP99Seconds": 1,
    "latencyIgnoredMethods": ["bridle.v1.Orchestrator/GetRun"],
    "queueDepth": 50,
    "queueOldestSeconds": 60,
    "breakerOpenFor": "1m",
    "approvalsPendingFor": "5m",
    "sandboxPoolEmptyFor": "2m",
    "dailySpendUSD": 10,
}

failures: list[str] = []
passed = 0


def check(cond: bool, what: str) -> None:
    global passed
    if cond:
        passed += 1
    else:
        failures.append(what)


def rule_groups(values: dict) -> list[dict]:
    """The rendered PrometheusRule's groups (a Prometheus rules file's `groups`)."""
    with helm_python.Chart.load(str(CHART)) as c:
        out = c.render(values, name="bridle", namespace="bridle")
    rules = [d for path, text in out.items() if not path.endswith("NOTES.txt")
             for d in yaml.safe_load_all(text) if d and d.get("kind") == "PrometheusRule"]
    if len(rules) != 1:
        raise SystemExit(f"FAIL expected one PrometheusRule in the render, got {len(rules)}")
    return rules[0]["spec"]["groups"]


def alerts_of(groups: list[dict]) -> list[str]:
    return [r["alert"] for g in groups for r in g["rules"] if "alert" in r]


def run(promtool: str, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([promtool, *args], cwd=cwd, capture_output=True, text=True, timeout=300)


def check_rules(promtool: str, what: str, groups: list[dict], tmp: Path) -> None:
    """`promtool check rules` on the groups, written where the unit tests find them."""
    (tmp / RULES_FILE).write_text(yaml.safe_dump({"groups": groups}, sort_keys=False, width=1000))
    out = run(promtool, "check", "rules", RULES_FILE, cwd=tmp)
    found = re.search(r"SUCCESS: (\d+) rules found", out.stdout)
    check(out.returncode == 0 and found is not None and int(found.group(1)) == len(alerts_of(groups)),
          f"[{what}] promtool check rules: {out.stdout}{out.stderr}")


def check_coverage(what: str, tests: dict, alerts: list[str]) -> None:
    """Every alert has a case where it fires and one where it does not; the file tests no
    alert the rules lack."""
    fires: set[str] = set()
    quiet: set[str] = set()
    for group in tests["tests"]:
        for case in group.get("alert_rule_test", []):
            (fires if case.get("exp_alerts") else quiet).add(case["alertname"])
    for alert in alerts:
        check(alert in fires, f"[{what}] {alert}: no case in which it fires")
        check(alert in quiet, f"[{what}] {alert}: no case in which it does not fire")
    unknown = (fires | quiet) - set(alerts)
    check(not unknown, f"[{what}] cases for alerts the rules do not have: {sorted(unknown)}")


def unit_tests(promtool: str, test_file: Path, tmp: Path) -> subprocess.CompletedProcess:
    """`promtool test rules` with `test_file`, against the rules last written to `tmp`."""
    copy = tmp / test_file.name
    shutil.copyfile(test_file, copy)
    return run(promtool, "test", "rules", copy.name, cwd=tmp)


def main() -> int:
    promtool = shutil.which("promtool")
    if promtool is None:
        print("FAIL promtool is missing: run scripts/install-deps.sh (it installs Debian's prometheus "
              "package, which ships promtool)")
        return 1
    version = run(promtool, "--version", cwd=TESTS).stdout.split("\n")[0]
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        # The defaults.
        groups = rule_groups(ON)
        alerts = alerts_of(groups)
        check(len(alerts) == len(set(alerts)), f"alert names are unique: {alerts}")
        check_rules(promtool, "defaults", groups, tmp)
        tests_file = TESTS / "alerts_test.yaml"
        tests = yaml.safe_load(tests_file.read_text())
        check(tests.get("rule_files") == [RULES_FILE], f"{tests_file.name} reads {RULES_FILE}")
        check_coverage("defaults", tests, alerts)
        out = unit_tests(promtool, tests_file, tmp)
        check(out.returncode == 0, f"[defaults] promtool test rules {tests_file.name}:\n{out.stdout}{out.stderr}")
        # The same cases between the default and the changed thresholds: they fail against the
        # default rules...
        changed_file = TESTS / "alerts_thresholds_test.yaml"
        changed_tests = yaml.safe_load(changed_file.read_text())
        thresholds_alerts = {c["alertname"] for g in changed_tests["tests"] for c in g.get("alert_rule_test", [])}
        out = unit_tests(promtool, changed_file, tmp)
        failed = set(re.findall(r"^\s+name: (.+),$", out.stdout + out.stderr, re.M))
        named = {g.get("name") for g in changed_tests["tests"]}
        check(out.returncode != 0 and failed == named,
              f"[defaults] every case of {changed_file.name} must fail against the default thresholds; "
              f"these did not: {sorted(named - failed, key=str)}\n{out.stdout}{out.stderr}")
        # ...and pass against the rules rendered with the changed ones.
        values = {"metrics": ON["metrics"] | {"prometheusRule": {"enabled": True, "thresholds": THRESHOLDS}}}
        changed = rule_groups(values)
        check(alerts_of(changed) == alerts, f"[thresholds] the same alerts: {alerts_of(changed)}")
        check_rules(promtool, "thresholds", changed, tmp)
        check_coverage("thresholds", changed_tests, sorted(thresholds_alerts))
        # Every threshold a value sets has a case (errorRatio... each named by its alert).
        want = {"BridleHighErrorRatio", "BridleHighLatency", "BridleQueueBacklog", "BridleQueueStalled",
                "BridleBreakerOpen", "BridleApprovalsWaiting", "BridleSandboxPoolExhausted", "BridleSpendRate"}
        check(want <= thresholds_alerts, f"[thresholds] a case for every threshold's alert: {sorted(want - thresholds_alerts)} missing")
        out = unit_tests(promtool, changed_file, tmp)
        check(out.returncode == 0, f"[thresholds] promtool test rules {changed_file.name}:\n{out.stdout}{out.stderr}")
    for f in failures:
        print(f"FAIL {f}")
    print(f"alert checks ({len(alerts)} alerts, {version}; unit tests {tests_file.name} and {changed_file.name}): "
          f"{passed} passed, {len(failures)} failed")
    return 1 if failures else 0


if __name__ == "__main__":
    # `alerts.py --write-rules FILE`: only render the default rules into FILE (for the test
    # that checks every metric they query is served).
    if len(sys.argv) == 3 and sys.argv[1] == "--write-rules":
        Path(sys.argv[2]).write_text(yaml.safe_dump({"groups": rule_groups(ON)}, sort_keys=False))
        sys.exit(0)
    sys.exit(main())
