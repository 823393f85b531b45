#!/usr/bin/env python3
"""The metric names that Grafana dashboards and Prometheus rule files query, and a check that a
scrape serves them.

Usage:

    metric_names.py [--strip-histogram-suffixes] FILE...
        Prints the sorted set of metric names the PromQL in FILE... uses, one per line.

    metric_names.py [--strip-histogram-suffixes] --check-scrape SCRAPE
                    [--check-scrape SCRAPE]... FILE...
        SCRAPE is a Prometheus text exposition (what `curl http://host:port/metrics` returns;
        OpenMetrics text too). Exits 0 when every name FILE... uses has a series in some
        SCRAPE, else exits 1 and prints each missing name on stdout, one per line, with the
        files that use it on stderr. Give --check-scrape once per scrape to check against
        their union (several services' scrapes for the dashboards that span services).

    metric_names.py --self-test
        Runs the built-in tests; exits 0 when they pass.

    Exit status 2: a file could not be read or parsed, or the arguments were wrong.

FILE is a Grafana dashboard (`.json`: every `expr` in it, such as panel targets, and the
template variables' `label_values(...)`, `label_names(...)` and `query_result(...)` queries;
targets of a datasource other than Prometheus are skipped) or a Prometheus rule file
(`.yaml`/`.yml`, also a PrometheusRule resource: every `expr`). A rule file's `record:` names
count as present in --check-scrape: Prometheus makes them, not the scraped process.

Names are kept as written (`foo_bucket`, `foo_count`) unless --strip-histogram-suffixes is
given, which reports `foo` for `foo_bucket`, `foo_sum` and `foo_count`. In --check-scrape a
name is present when a scrape has a series of that name, or of that name plus `_bucket`,
`_sum` or `_count` (a histogram named by its base name). The series Prometheus adds to every
scrape (`up`, `scrape_*`) and rule evaluation's `ALERTS` / `ALERTS_FOR_STATE` always count as
present.

How names are found: the PromQL is tokenised; string literals, `{...}` label matchers,
`[...]` ranges and subqueries, `by/without/on/ignoring/group_left/group_right (...)` label
lists, comments and Grafana variables (`$job`, `${job}`, `$__rate_interval`) are skipped. An
identifier is a metric name unless a `(` follows it (a function or aggregation), it is an
aggregation followed by `by`/`without`, or it is a keyword (`and`, `or`, `unless`, `bool`,
`offset`, `inf`, `nan`, ...). `{__name__="x"}` and `{"x"}` name `x`; a `__name__=~` regex
names nothing. An identifier glued to a Grafana variable (`${prefix}_total`) is skipped.

Needs only the Python 3 standard library (PyYAML is used for rule files when installed; a
small reader for the `expr:` / `record:` keys of rule files is used otherwise).
"""

import argparse
import json
import os
import re
import sys
import tempfile

HISTOGRAM_SUFFIXES = ("_bucket", "_sum", "_count")

# Series Prometheus itself makes: per scrape, and for alerting rules.
SYNTHESIZED = {
    "up",
    "scrape_duration_seconds",
    "scrape_samples_scraped",
    "scrape_samples_post_metric_relabeling",
    "scrape_series_added",
    "ALERTS",
    "ALERTS_FOR_STATE",
}

AGGREGATIONS = {
    "sum", "min", "max", "avg", "group", "stddev", "stdvar", "count", "count_values",
    "bottomk", "topk", "quantile", "limitk", "limit_ratio",
}
# Followed by a parenthesised list of label names.
LABEL_LIST_KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right"}
KEYWORDS = {"and", "or", "unless", "bool", "offset", "atan2", "inf", "nan"} | LABEL_LIST_KEYWORDS

IDENT_START = re.compile(r"[A-Za-z_:]")
IDENT = re.compile(r"[A-Za-z_:][A-Za-z0-9_:]*")
NUMBER = re.compile(r"[0-9.][0-9A-Za-z_.]*")
VARIABLE = re.compile(r"\$(\{[^}]*\}|\[\[[^\]]*\]\]|[A-Za-z0-9_]+)")
NAME_CHARS = re.compile(r"[A-Za-z0-9_:]*")
MATCH_OP = re.compile(r"=~|!~|!=|=")


class ParseError(Exception):
    pass


def _skip_string(s, i):
    """Index just past the string literal starting at s[i]."""
    quote = s[i]
    i += 1
    while i < len(s):
        c = s[i]
        if c == "\\" and quote != "`":
            i += 2
            continue
        if c == quote:
            return i + 1
        i += 1
    raise ParseError(f"unterminated string in: {s}")


def _string_value(s, start, end):
    body = s[start + 1:end - 1]
    if s[start] == "`":
        return body
    return re.sub(r"\\(.)", r"\1", body)


def _skip_ws(s, i):
    while i < len(s) and s[i].isspace():
        i += 1
    return i


def _skip_to_close(s, i, open_c, close_c):
    """Index just past the bracket closing the one at s[i], strings skipped."""
    depth = 0
    while i < len(s):
        c = s[i]
        if c in "\"'`":
            i = _skip_string(s, i)
            continue
        if c == open_c:
            depth += 1
        elif c == close_c:
            depth -= 1
            if depth == 0:
                return i + 1
        i += 1
    raise ParseError(f"unbalanced '{open_c}' in: {s}")


def _names_in_braces(s, start, end, out):
    """Metric names a label-matcher block names: {__name__="x"} or a bare quoted {"x"}."""
    i = start + 1
    prev = None  # the previous token: "ident:<name>", "op:<op>", "str", ","
    before_op = None  # the token before the last operator
    while i < end - 1:
        c = s[i]
        if c.isspace():
            i += 1
        elif c in "\"'`":
            j = _skip_string(s, i)
            value = _string_value(s, i, j)
            if prev in (None, ","):
                out.add(value)
            elif prev == "op:=" and before_op == "ident:__name__":
                out.add(value)
            prev, i = "str", j
        elif IDENT_START.match(c):
            m = IDENT.match(s, i)
            prev, i = "ident:" + m.group(0), m.end()
        elif c == ",":
            prev, i = ",", i + 1
        elif c == "$":
            m = VARIABLE.match(s, i)
            prev, i = "var", (m.end() if m else i + 1)
        else:
            m = MATCH_OP.match(s, i)
            if not m:
                raise ParseError(f"unexpected '{c}' in label matchers: {s[start:end]}")
            before_op = prev
            prev, i = "op:" + m.group(0), m.end()


def promql_names(expr):
    """The metric names a PromQL expression uses, as written."""
    out = set()
    s, i, n = expr, 0, len(expr)
    while i < n:
        c = s[i]
        if c.isspace():
            i += 1
        elif c == "#":
            while i < n and s[i] != "\n":
                i += 1
        elif c in "\"'`":
            i = _skip_string(s, i)
        elif c == "$":
            m = VARIABLE.match(s, i)
            i = m.end() if m else i + 1
            # A name glued to a variable (${prefix}_total) is not a name we can know.
            i = NAME_CHARS.match(s, i).end()
        elif c == "{":
            j = _skip_to_close(s, i, "{", "}")
            _names_in_braces(s, i, j, out)
            i = j
        elif c == "[":
            i = _skip_to_close(s, i, "[", "]")
        elif c.isdigit() or (c == "." and i + 1 < n and s[i + 1].isdigit()):
            i = NUMBER.match(s, i).end()
        elif IDENT_START.match(c):
            m = IDENT.match(s, i)
            word, i = m.group(0), m.end()
            j = _skip_ws(s, i)
            nxt = s[j] if j < n else ""
            if word in LABEL_LIST_KEYWORDS:
                if nxt == "(":
                    i = _skip_to_close(s, j, "(", ")")
                continue
            if nxt == "(":
                continue  # a function or an aggregation
            if word in AGGREGATIONS:
                k = IDENT.match(s, j) if j < n else None
                if k and k.group(0) in ("by", "without"):
                    continue
            if word.lower() in KEYWORDS:
                continue
            out.add(word)
        else:
            i += 1  # operators, commas, parentheses, @
    return out


# --- Grafana dashboards ---------------------------------------------------------------------

CLOSER = {"(": ")", "{": "}", "[": "]"}


def _split_last_top_level_comma(s):
    """(before, after) the last comma outside brackets and strings; (None, s) without one."""
    i, last = 0, -1
    while i < len(s):
        c = s[i]
        if c in "\"'`":
            i = _skip_string(s, i)
        elif c in CLOSER:
            i = _skip_to_close(s, i, c, CLOSER[c])
        else:
            if c == ",":
                last = i
            i += 1
    return (s[:last], s[last + 1:]) if last >= 0 else (None, s)


def variable_query_exprs(query):
    """The PromQL inside a Grafana Prometheus template-variable query."""
    q = query.strip()
    m = re.fullmatch(r"(label_values|label_names|query_result|metrics)\s*\((.*)\)", q, re.S)
    if not m:
        return []
    fn, inner = m.group(1), m.group(2)
    if fn == "label_values":
        selector, _label = _split_last_top_level_comma(inner)
        return [selector] if selector and selector.strip() else []
    if fn in ("label_names", "query_result"):
        return [inner] if inner.strip() else []
    return []  # metrics(regex): a regex, no names


def _is_prometheus(ds):
    if ds is None:
        return True
    if isinstance(ds, str):
        return True  # a name or ${variable}: assume Prometheus
    if isinstance(ds, dict):
        t = ds.get("type")
        return t in (None, "prometheus") or (isinstance(t, str) and t.startswith("$"))
    return True


def dashboard_exprs(doc):
    """Every PromQL expression of a dashboard: targets' (any) `expr`, variables' queries."""
    exprs = []

    def walk(node, ds):
        if isinstance(node, dict):
            ds = node.get("datasource", ds)
            if isinstance(node.get("expr"), str) and _is_prometheus(ds):
                exprs.append(node["expr"])
            for k, v in node.items():
                if k != "templating":
                    walk(v, ds)
        elif isinstance(node, list):
            for v in node:
                walk(v, ds)

    walk(doc, None)
    for var in (doc.get("templating") or {}).get("list") or []:
        if var.get("type") != "query" or not _is_prometheus(var.get("datasource")):
            continue
        q = var.get("query")
        if isinstance(q, dict):
            q = q.get("query")
        if isinstance(q, str):
            exprs.extend(variable_query_exprs(q))
    return exprs


# --- Prometheus rule files ------------------------------------------------------------------

def _rule_values_yaml(text):
    import yaml  # noqa: PLC0415 (optional dependency)

    exprs, records = [], []

    def walk(node):
        if isinstance(node, dict):
            if isinstance(node.get("expr"), str):
                exprs.append(node["expr"])
            if isinstance(node.get("record"), str):
                records.append(node["record"])
            for v in node.values():
                walk(v)
        elif isinstance(node, list):
            for v in node:
                walk(v)

    for doc in yaml.safe_load_all(text):
        walk(doc)
    return exprs, records


KEY_LINE = re.compile(r"^(\s*(?:-\s+)?)(expr|record):(.*)$")


def _rule_values_plain(text):
    """`expr:` and `record:` values of a rule file without a YAML library: plain, quoted and
    block (| >) scalars, and plain scalars continued on more-indented lines."""
    exprs, records = [], []
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        m = KEY_LINE.match(lines[i])
        i += 1
        if not m:
            continue
        col, key, rest = len(m.group(1)), m.group(2), m.group(3).strip()
        body = []
        block = re.fullmatch(r"[|>][+-]?[0-9]?(\s+#.*)?", rest)
        if block or not rest or (rest[0] not in "\"'" and not rest.startswith("#")):
            if not block and rest:
                body.append(re.sub(r"\s+#.*$", "", rest))
            while i < len(lines):
                line = lines[i]
                if line.strip() and len(line) - len(line.lstrip()) <= col:
                    break
                body.append(line.strip())
                i += 1
            value = "\n".join(body).strip()
        elif rest[0] == '"':
            end = _skip_string(rest, 0)
            value = json.loads(rest[:end]) if "\\" in rest[:end] else rest[1:end - 1]
        else:
            value = rest[1:-1].replace("''", "'") if rest.endswith("'") else rest[1:]
        (exprs if key == "expr" else records).append(value)
    return exprs, records


def rule_values(text, use_yaml=None):
    if use_yaml is None:
        try:
            import yaml  # noqa: F401, PLC0415
            use_yaml = True
        except ImportError:
            use_yaml = False
    return _rule_values_yaml(text) if use_yaml else _rule_values_plain(text)


# --- files ----------------------------------------------------------------------------------

def file_exprs(path):
    """(expressions, recorded names) of a dashboard or rule file."""
    with open(path, encoding="utf-8") as f:
        text = f.read()
    if path.endswith(".json"):
        return dashboard_exprs(json.loads(text)), []
    if path.endswith((".yaml", ".yml")):
        return rule_values(text)
    try:
        return dashboard_exprs(json.loads(text)), []
    except ValueError:
        return rule_values(text)


def strip_suffix(name):
    for s in HISTOGRAM_SUFFIXES:
        if name.endswith(s) and len(name) > len(s):
            return name[: -len(s)]
    return name


def names_by_file(paths, strip):
    """{name: [files using it]} and the names recorded by rule files."""
    used, recorded = {}, set()
    for p in paths:
        exprs, records = file_exprs(p)
        recorded.update(records)
        for e in exprs:
            try:
                names = promql_names(e)
            except ParseError as err:
                raise ParseError(f"{p}: {err}") from None
            for name in names:
                name = strip_suffix(name) if strip else name
                used.setdefault(name, [])
                if p not in used[name]:
                    used[name].append(p)
    return used, recorded


def exposition_names(text):
    """Names of the series in a Prometheus/OpenMetrics text exposition."""
    names = set()
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("{"):
            m = re.match(r'\{\s*"((?:[^"\\]|\\.)*)"', line)
            if m:
                names.add(re.sub(r"\\(.)", r"\1", m.group(1)))
            continue
        m = re.match(r'[A-Za-z_:][A-Za-z0-9_:]*', line)
        if m:
            names.add(m.group(0))
    return names


def missing_names(used, recorded, served):
    def present(name):
        if name in served or name in recorded or name in SYNTHESIZED:
            return True
        return any(name + s in served for s in HISTOGRAM_SUFFIXES)

    return sorted(n for n in used if not present(n))


def main(argv, out=sys.stdout, err=sys.stderr):
    ap = argparse.ArgumentParser(
        prog="metric_names.py",
        description="Metric names used by Grafana dashboards and Prometheus rule files.",
    )
    ap.add_argument("files", nargs="*", metavar="FILE")
    ap.add_argument("--strip-histogram-suffixes", action="store_true",
                    help="report foo for foo_bucket, foo_sum and foo_count")
    ap.add_argument("--check-scrape", action="append", metavar="SCRAPE", default=[],
                    help="a text exposition; exit 1 listing names no series in it has")
    ap.add_argument("--self-test", action="store_true", help="run the built-in tests")
    args = ap.parse_args(argv)
    if args.self_test:
        return self_test(out)
    if not args.files:
        ap.print_usage(err)
        print("metric_names.py: error: give at least one FILE", file=err)
        return 2
    try:
        used, recorded = names_by_file(args.files, args.strip_histogram_suffixes)
        served = set()
        for p in args.check_scrape:
            with open(p, encoding="utf-8") as f:
                served |= exposition_names(f.read())
    except Exception as e:  # noqa: BLE001 (unreadable input of any kind: exit 2, said why)
        print(f"metric_names.py: {e}", file=err)
        return 2
    if not args.check_scrape:
        for name in sorted(used):
            print(name, file=out)
        return 0
    missing = missing_names(used, recorded, served)
    for name in missing:
        print(name, file=out)
        print(f"missing: {name} (used by {', '.join(used[name])})", file=err)
    if missing:
        print(f"{len(missing)} of {len(used)} metric names have no series in "
              f"{', '.join(args.check_scrape)}", file=err)
        return 1
    return 0


# --- self-test ------------------------------------------------------------------------------

def self_test(out=sys.stdout):
    import io

    failures = []

    def check(what, got, want):
        if got != want:
            failures.append(f"{what}: got {sorted(got) if isinstance(got, set) else got!r}, "
                            f"want {sorted(want) if isinstance(want, set) else want!r}")

    cases = [
        ('sum by (rpc_method) (rate(rpc_server_call_duration_seconds_count{job=~"$job",'
         'rpc_response_status_code=~"UNKNOWN|INTERNAL"}[$__rate_interval]))',
         {"rpc_server_call_duration_seconds_count"}),
        ("histogram_quantile(0.99, sum by (le, rpc_method) "
         "(rate(rpc_client_call_duration_seconds_bucket[5m])))",
         {"rpc_client_call_duration_seconds_bucket"}),
        ("sum(rate(errors_total[5m])) without (instance) / ignoring(code) group_left(team) "
         "sum(rate(requests_total[5m]))",
         {"errors_total", "requests_total"}),
        ("max by (bridle_queue_state) (bridle_queue_depth) > bool 10 and on() vector(1)",
         {"bridle_queue_depth"}),
        ("up == 0 or absent(target_info) unless count_values(\"v\", build_info)",
         {"up", "target_info", "build_info"}),
        ('{__name__="by_name", x="y"} + {"utf8.name"} + {__name__=~"regex.*"}',
         {"by_name", "utf8.name"}),
        ("rate(foo_total[5m] offset 1h) * on (job) group_right bar @ start() - Inf + 1.5e3",
         {"foo_total", "bar"}),
        ('label_replace(job:requests:rate5m, "dst", "$1", "src", "(.*)") # sum(commented)',
         {"job:requests:rate5m"}),
        ("max_over_time(deriv(bridle_queue_oldest_age_seconds[10m])[1h:5m])",
         {"bridle_queue_oldest_age_seconds"}),
        ("sum without(le)(x_bucket)\n  / count (y)", {"x_bucket", "y"}),
        ("${prefix}_total + $metric + topk(3, sum by(a)(z{a=$v}))", {"z"}),
    ]
    for expr, want in cases:
        check(expr, promql_names(expr), want)
    check("variable label_values",
          variable_query_exprs('label_values(target_info{job=~"$job"}, instance)'),
          ['target_info{job=~"$job"}'])
    check("variable label only", variable_query_exprs("label_values(job)"), [])
    check("variable comma in matchers",
          variable_query_exprs('label_values(x{a=~"b,c", d!="e"}, f)'), ['x{a=~"b,c", d!="e"}'])

    rules = (
        "groups:\n"
        "  - name: bridle\n"
        "    rules:\n"
        "      - record: job:rpc_fail:ratio\n"
        "        expr: sum(rate(rpc_server_call_duration_seconds_count[5m])) by (job)\n"
        "      - alert: QueueStuck\n"
        "        expr: |\n"
        "          max(bridle_queue_oldest_age_seconds) > 600\n"
        "            and on() job:rpc_fail:ratio > 0\n"
        "        for: 10m\n"
        "      - alert: Quoted\n"
        "        expr: 'absent(up{job=\"x\"}) or bridle_dependency_up == 0'\n"
        "      - alert: Plain\n"
        "        expr: bridle_approvals_pending\n"
        "          > 100  # too many\n"
        "        labels: {severity: page}\n"
    )
    want_rules = {"rpc_server_call_duration_seconds_count", "bridle_queue_oldest_age_seconds",
                  "job:rpc_fail:ratio", "up", "bridle_dependency_up", "bridle_approvals_pending"}
    readers = [False]
    try:
        import yaml  # noqa: F401, PLC0415
        readers.append(True)
    except ImportError:
        pass
    for use_yaml in readers:
        exprs, records = rule_values(rules, use_yaml=use_yaml)
        got = set().union(*(promql_names(e) for e in exprs))
        check(f"rule file names (PyYAML: {use_yaml})", got, want_rules)
        check(f"recorded names (PyYAML: {use_yaml})", records, ["job:rpc_fail:ratio"])

    dashboard = {
        "templating": {"list": [
            {"name": "datasource", "type": "datasource", "query": "prometheus"},
            {"name": "job", "type": "query",
             "query": {"query": "label_values(target_info, job)", "refId": "A"}},
        ]},
        "panels": [
            {"id": 1, "datasource": {"type": "prometheus", "uid": "${datasource}"},
             "targets": [{"expr": "sum(rate(rpc_server_call_duration_seconds_count[5m]))"},
                         {"expr": "histogram_quantile(0.5, sum by (le) "
                                  "(rate(bridle_queue_claim_lag_seconds_bucket[5m])))"}]},
            {"id": 2, "type": "row", "panels": [
                {"id": 3, "targets": [{"expr": "bridle_dependency_up"}]}]},
            {"id": 4, "datasource": {"type": "loki", "uid": "logs"},
             "targets": [{"expr": 'sum(count_over_time({app="bridle"}[5m]))'}]},
        ],
    }
    exposition = (
        "# HELP rpc_server_call_duration_seconds Duration of gRPC calls served\n"
        "# TYPE rpc_server_call_duration_seconds histogram\n"
        'rpc_server_call_duration_seconds_bucket{rpc_method="a/B",le="0.005"} 1\n'
        'rpc_server_call_duration_seconds_bucket{rpc_method="a/B",le="+Inf"} 1\n'
        'rpc_server_call_duration_seconds_sum{rpc_method="a/B"} 0.001\n'
        'rpc_server_call_duration_seconds_count{rpc_method="a/B"} 1\n'
        'target_info{service_name="bridle-orchestrator"} 1\n'
        '{"odd.name",x="1"} 2\n'
        "bridle_dependency_up{bridle_dependency=\"redis\"} 1 1700000000000\n"
        "# EOF\n"
    )
    check("exposition names", exposition_names(exposition),
          {"rpc_server_call_duration_seconds_bucket", "rpc_server_call_duration_seconds_sum",
           "rpc_server_call_duration_seconds_count", "target_info", "odd.name",
           "bridle_dependency_up"})

    with tempfile.TemporaryDirectory() as d:
        dash = os.path.join(d, "d.json")
        scrape = os.path.join(d, "metrics.txt")
        rulef = os.path.join(d, "rules.yaml")
        with open(dash, "w", encoding="utf-8") as f:
            json.dump(dashboard, f)
        with open(scrape, "w", encoding="utf-8") as f:
            f.write(exposition)
        with open(rulef, "w", encoding="utf-8") as f:
            f.write(rules)

        def run(*argv):
            o, e = io.StringIO(), io.StringIO()
            code = main(list(argv), out=o, err=e)
            return code, o.getvalue().split()

        check("list dashboard", run(dash), (0, [
            "bridle_dependency_up", "bridle_queue_claim_lag_seconds_bucket",
            "rpc_server_call_duration_seconds_count", "target_info"]))
        check("list stripped", run("--strip-histogram-suffixes", dash), (0, [
            "bridle_dependency_up", "bridle_queue_claim_lag_seconds",
            "rpc_server_call_duration_seconds", "target_info"]))
        check("check dashboard", run("--check-scrape", scrape, dash),
              (1, ["bridle_queue_claim_lag_seconds_bucket"]))
        check("check stripped", run("--strip-histogram-suffixes", "--check-scrape", scrape, dash),
              (1, ["bridle_queue_claim_lag_seconds"]))
        # up is made by Prometheus and job:rpc_fail:ratio by the rule file itself.
        check("check rules", run("--check-scrape", scrape, rulef),
              (1, ["bridle_approvals_pending", "bridle_queue_oldest_age_seconds"]))
        more = os.path.join(d, "more.txt")
        with open(more, "w", encoding="utf-8") as f:
            f.write("bridle_queue_claim_lag_seconds_bucket{le=\"+Inf\"} 0\n")
        check("check two scrapes", run("--check-scrape", scrape, "--check-scrape", more, dash),
              (0, []))
        check("missing file", run(os.path.join(d, "nope.json"))[0], 2)

    for f in failures:
        print("FAIL", f, file=out)
    print(f"self-test: {len(failures)} failed" if failures else "self-test: ok", file=out)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
