#!/usr/bin/env python3
"""Checks helm/bridle with a real Helm engine and the Kubernetes schemas.

- Lint by Helm's own library, twice over: helm-python-sdk (Helm v4 SDK; lint with values, strict,
  for a given Kubernetes version) and helm-sdkpy (the library issue 9 names; its lint takes a chart
  folder, so the production values are merged into a copy's values.yaml first). Lint renders every
  template and validates the values against values.schema.json.
- Render (Helm v4 SDK, offline) for several value sets, then validate every object against the
  Kubernetes JSON schemas (kubernetes-validate, strict: unknown fields are errors) for the newest
  version it knows and for the chart's oldest supported one.
- Check what the objects must say: the kinds per service, gRPC probes on the gRPC port (with TLS:
  on the plaintext health-only port), the hardened securityContext, NetworkPolicies allowing
  exactly the calls of ARCHITECTURE.md, Vault through Kubernetes auth with no secret anywhere in
  values or objects; with TLS, each service's certificate (a cert-manager Certificate checked
  against an excerpt of its CRD's schema, or the Secret named in values) mounted as a directory
  and named for the bare service name; every Secret an object refers to rendered or named in
  values; API keys on by default, with the internal token and the bootstrap admin key in the
  only Secrets the chart renders (random, generated once, kept on uninstall).
- With metrics on: each service's metrics listener (env, a container port and a Service port
  named metrics, a port of its own), the NetworkPolicy admitting scrapes from metrics.from only,
  and the prometheus-operator ServiceMonitor and PrometheusRule (checked against excerpts of
  their CRDs' schemas) selecting exactly the chart's Services and scrape jobs; with metrics off,
  none of it. (helm/tests/alerts.py runs the alerts themselves under promtool.)
- Check every pod against the Pod Security Standards (pss.py): the pods of every service but
  tools pass "restricted"; in the tools pod the tools container passes "restricted" and the
  pod (with its engine sidecar) "baseline" in the default (rootless engine) setup, and the
  opt-in setups that need more (privileged DinD, the node's socket) are flagged as such.
- Check that bad values are refused.

Run with the tools venv that scripts/install-deps.sh makes:
    ~/.cache/bridle/venv/bin/python helm/tests/check_chart.py
Exits 0 when every check passes; prints each failure otherwise.
"""

from __future__ import annotations

import asyncio
import base64
import copy
import json
import re
import shutil
import sys
import tempfile
from pathlib import Path

import helm_python
import helm_sdkpy
import jsonschema
import kubernetes_validate
import yaml

from graph import check_network_policies
import pss
import values_doc

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "helm" / "bridle"
NEWEST = "1.37.0"
# The two most recent minor versions are both checked.
PREVIOUS = "1.36.0"
OLDEST = "1.29.0"  # Chart.yaml kubeVersion (native sidecars)
# The rootless engine needs pods with their own user namespace (hostUsers: false), on by
# default from Kubernetes 1.33 (the chart README says so).
OLDEST_ROOTLESS = "1.33.0"
SERVICES = ["orchestrator", "router", "tools", "approvals", "secrets"]
KINDS = {"Deployment", "Service", "HorizontalPodAutoscaler", "PodDisruptionBudget", "ServiceAccount", "NetworkPolicy"}

failures: list[str] = []
passed = 0


def check(cond: bool, what: str) -> None:
    global passed
    if cond:
        passed += 1
    else:
        failures.append(what)


def production() -> dict:
    return yaml.safe_load((CHART / "ci" / "production-values.yaml").read_text())


def tools_setups() -> dict[str, dict]:
    """Every combination of the tools pod's documented settings: the engine (docker.mode),
    whether a sidecar engine is a native sidecar, the pod's RuntimeClass, and the rootless
    engine's AppArmor profile."""
    out: dict[str, dict] = {}
    engines: list[tuple[str, dict]] = []
    for native in (True, False):
        for apparmor in ({}, {"type": "Localhost", "localhostProfile": "bridle-engine"}):
            name = f"rootless{'' if native else '-plain-sidecar'}{'-apparmor' if apparmor else ''}"
            engines.append((name, {"mode": "rootless", "rootless": {"nativeSidecar": native, "appArmorProfile": apparmor}}))
        engines.append((f"dind{'' if native else '-plain-sidecar'}", {"mode": "dind", "dind": {"nativeSidecar": native}}))
    engines.append(("external", {"mode": "external", "host": "tcp://sandbox-vm.sandboxes.svc:2376"}))
    engines.append(("host-socket", {"mode": "hostSocket"}))
    for name, docker in engines:
        for rtc in ("", "gvisor"):
            values: dict = {"tools": {"docker": docker, "runtimeClassName": rtc}}
            if docker["mode"] == "external":
                values["networkPolicy"] = {"dockerEngine": [{"ipBlock": {"cidr": "10.20.0.0/16"}}]}
            out[f"tools-{name}{'-runtimeclass' if rtc else ''}"] = values
    return out


VARIANTS: dict[str, dict] = {
    "default": {},
    "production": production(),
    **tools_setups(),
    "router-gateway": {"router": {"gateway": {"enabled": True, "port": 8080}}},
    "exposed": {
        "router": {"gateway": {"enabled": True, "port": 8080}},
        "orchestrator": {"mcp": {"enabled": True, "port": 8055, "allowedHosts": ["mcp.corp"], "callWait": "2m"}},
        "approvals": {"inbox": {"enabled": True, "port": 8081, "publicUrl": "https://approvals.example.com"},
                      "webhook": {"urlSecret": {"name": "approvals-webhook", "key": "url"}}},
        "networkPolicy": {"webhook": {"ports": [443], "to": [{"ipBlock": {"cidr": "203.0.113.0/24"}}]}},
        "ingress": {"className": "nginx",
                    "gateway": {"host": "llm.example.com", "tlsSecret": "llm-tls"},
                    "inbox": {"host": "approvals.example.com", "tlsSecret": "approvals-tls"},
                    "orchestrator": {"host": "agents.example.com", "annotations": {"nginx.ingress.kubernetes.io/backend-protocol": "GRPC"}},
                    "mcp": {"host": "mcp.example.com", "tlsSecret": "mcp-tls"}},
        "gatewayApi": {"parentRefs": [{"name": "edge", "namespace": "gateways"}],
                       "gateway": {"hostnames": ["llm.example.com"]},
                       "inbox": {"hostnames": ["approvals.example.com"]},
                       "orchestrator": {"hostnames": ["agents.example.com"]},
                       "mcp": {"hostnames": ["mcp.example.com", "tools.example.com"]}},
    },
    "escape-hatches": {
        "imagePullSecrets": [{"name": "everyone"}],
        "defaults": {
            "extraEnv": [{"name": "HTTPS_PROXY", "value": "http://proxy.corp:3128"}],
            "envFrom": [{"configMapRef": {"name": "corp-env"}}],
            "extraVolumes": [{"name": "corp-ca", "configMap": {"name": "corp-ca"}}],
            "extraVolumeMounts": [{"name": "corp-ca", "mountPath": "/etc/corp-ca", "readOnly": True}],
            "podLabels": {"team": "platform", "tier": "default"},
            "podAnnotations": {"corp/owner": "platform"},
            "affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
                {"matchExpressions": [{"key": "pool", "operator": "In", "values": ["agents"]}]}]}}},
        },
        "router": {
            "image": {"repository": "bridle/router", "digest": "sha256:" + "ab" * 32},
            "imagePullSecrets": [{"name": "router-only"}],
            "extraEnv": [{"name": "SSL_CERT_DIR", "value": "/etc/corp-ca"}],
            "podLabels": {"tier": "edge"},
        },
    },
    "vault-token-auth": {"vault": {"auth": {"method": "token", "token": {"secretName": "bridle-vault-token"}}}},
    # Only for a cluster nobody else can reach: no token, no admin key, no Secret.
    "auth-off": {"auth": {"mode": "off"}},
    # The GitOps way (a renderer without lookup would make new values at each render): the
    # operator made both Secrets, and the chart makes none.
    "bootstrap-admin-existing-secret": {"auth": {
        "internalTokenSecret": {"name": "ops-internal-token", "key": "value"},
        "bootstrapAdmin": {"existingSecret": True, "secretName": "ops-admin-key", "tenant": "platform"}}},
    # TLS with cert-manager; the router's health port its own, not the default.
    "tls-cert-manager": {"tls": {"enabled": True, "certManager": {"issuerRef": {"name": "bridle-ca", "kind": "ClusterIssuer"}}},
                         "router": {"gateway": {"enabled": True, "port": 8080}, "healthPort": 9086},
                         "approvals": {"inbox": {"enabled": True, "port": 8081}}},
    # TLS from Secrets the operator made: they win over the issuer, so no Certificate at all.
    "tls-existing-secrets": {"tls": {"enabled": True, "certManager": {"issuerRef": {"name": "unused-ca"}},
                                     "existingSecrets": {s: f"corp-{s}-tls" for s in SERVICES}},
                             "tools": {"docker": {"mode": "dind"}}},
    "no-autoscaling-no-netpol": {s: {"autoscaling": {"enabled": False}, "pdb": {"enabled": False}} for s in SERVICES}
    | {"networkPolicy": {"enabled": False}},
    # Metrics served, scraped by whoever may (no ServiceMonitor, no rules).
    "metrics": {"metrics": {"enabled": True}},
    # Metrics with every other port a service may have, a port and scrapers of their own, the
    # ServiceMonitor and the alerts.
    "metrics-monitoring": {
        "metrics": {"enabled": True, "port": 9100,
                    "from": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "observability"}},
                              "podSelector": {"matchLabels": {"app.kubernetes.io/name": "prometheus"}}}],
                    "serviceMonitor": {"enabled": True, "interval": "15s", "labels": {"release": "prometheus"}},
                    "prometheusRule": {"enabled": True, "labels": {"release": "prometheus", "team": "platform"}}},
        "tls": {"enabled": True, "certManager": {"issuerRef": {"name": "bridle-ca"}}},
        "router": {"gateway": {"enabled": True, "port": 8080}},
        "approvals": {"inbox": {"enabled": True, "port": 8081}},
        "networkPolicy": {"clients": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "ingress-nginx"}}}]},
    },
    # Scrapes from any source; the ServiceMonitor with Prometheus' own interval.
    "metrics-any-scraper": {"metrics": {"enabled": True, "from": [],
                                        "serviceMonitor": {"enabled": True, "interval": ""}}},
}

# A service off, with the ServiceMonitor and the alerts (checked apart: the other checks want
# every service).
METRICS_WITHOUT_TOOLS = {"metrics": {"enabled": True, "serviceMonitor": {"enabled": True}, "prometheusRule": {"enabled": True}},
                         "tools": {"enabled": False}}

# Values the chart must refuse, and a word of the error Helm gives.
TLS_ON = {"enabled": True, "certManager": {"issuerRef": {"name": "bridle-ca"}}}
BAD_VALUES = {
    "TLS with neither an issuer nor Secrets": ({"tls": {"enabled": True}}, "tls.certManager.issuerRef.name"),
    "TLS with one service left without a certificate": (
        {"tls": {"enabled": True, "existingSecrets": {s: f"corp-{s}-tls" for s in SERVICES if s != "secrets"}}},
        "tls.existingSecrets.secrets"),
    "a TLS Secret for a service the chart does not have": (
        {"tls": {"enabled": True, "existingSecrets": {"gateway": "corp-tls"}}}, "additional properties"),
    "an issuer kind cert-manager does not have": (
        {"tls": {"enabled": True, "certManager": {"issuerRef": {"name": "ca", "kind": "CertIssuer"}}}}, "/tls/certManager/issuerRef/kind"),
    "a certificate duration that is not a duration": (
        {"tls": {"enabled": True, "certManager": {"issuerRef": {"name": "ca"}, "duration": "30 days"}}}, "/tls/certManager/duration"),
    "a health port that is the service's gRPC port": (
        {"tls": TLS_ON, "orchestrator": {"healthPort": 50051}}, "orchestrator.healthPort"),
    "a health port that is the router's gateway port": (
        {"tls": TLS_ON, "router": {"gateway": {"enabled": True, "port": 8086}}}, "router.healthPort"),
    "replicas as text": ({"orchestrator": {"replicas": "two"}}, "/orchestrator/replicas"),
    "a Vault token in values": ({"vault": {"token": "hvs.not-a-real-token"}}, "additional properties"),
    "token auth without a Secret": ({"vault": {"auth": {"method": "token"}}}, "secretName"),
    "an auth mode that does not exist": ({"auth": {"mode": "token"}}, "/auth/mode"),
    "a bootstrap admin tenant that is not a tenant name": (
        {"auth": {"bootstrapAdmin": {"tenant": "Platform Team"}}}, "/auth/bootstrapAdmin/tenant"),
    "a bootstrap admin key in values": ({"auth": {"bootstrapAdmin": {"key": "bk_" + "a" * 40}}}, "additional properties"),
    "external engine without address": ({"tools": {"docker": {"mode": "external"}}}, "host"),
    "unknown engine mode": ({"tools": {"docker": {"mode": "podman"}}}, "mode"),
    "rootless engine with an Unconfined seccomp profile": (
        {"tools": {"docker": {"rootless": {"seccompProfile": {"type": "Unconfined"}}}}}, "seccompProfile"),
    "rootless engine whose workspace quota is not accepted as unenforced": (
        {"tools": {"docker": {"rootless": {"limitsUnenforced": ["memory", "swap", "cpu", "pids"]}}}}, "limitsUnenforced"),
    "a RuntimeClass name that is not a name": ({"tools": {"runtimeClassName": "g Visor"}}, "runtimeClassName"),
    "an Ingress for the gateway while it is off": ({"ingress": {"gateway": {"host": "llm.example.com"}}}, "router.gateway.enabled"),
    "an Ingress for the MCP endpoint while it is off": ({"ingress": {"mcp": {"host": "mcp.example.com"}}}, "orchestrator.mcp.enabled"),
    "a metrics port that is the orchestrator's MCP port": (
        {"metrics": {"enabled": True, "port": 8055}, "orchestrator": {"mcp": {"enabled": True, "port": 8055}}}, "orchestrator.mcp.port"),
    "routes without a Gateway to attach to": (
        {"approvals": {"inbox": {"enabled": True, "port": 8081}}, "gatewayApi": {"inbox": {"hostnames": ["a.example.com"]}}},
        "gatewayApi.parentRefs"),
    "rootless engine with a tools uid its image does not map": (
        {"tools": {"securityContext": {"runAsUser": 1001, "runAsNonRoot": True}}}, "must run as uid 65532"),
    "redis URL with another scheme": ({"redis": {"url": "http://redis:6379"}}, "/redis/url"),
    "unbound names neither denied nor by convention": ({"vault": {"unbound": "allow"}}, "/vault/unbound"),
    "a ServiceMonitor with metrics off": ({"metrics": {"serviceMonitor": {"enabled": True}}}, "metrics.serviceMonitor.enabled"),
    "a PrometheusRule with metrics off": ({"metrics": {"prometheusRule": {"enabled": True}}}, "metrics.prometheusRule.enabled"),
    "a metrics port that is a service's gRPC port": ({"metrics": {"enabled": True, "port": 50053}}, "metrics.port 50053"),
    "a metrics port that is the router's gateway port": (
        {"metrics": {"enabled": True, "port": 8080}, "router": {"gateway": {"enabled": True, "port": 8080}}}, "router.gateway.port"),
    "a metrics port that is the approvals inbox's port": (
        {"metrics": {"enabled": True, "port": 8081}, "approvals": {"inbox": {"enabled": True, "port": 8081}}}, "approvals.inbox.port"),
    "a metrics port that is the health-only port": (
        {"metrics": {"enabled": True, "port": 8086}, "tls": TLS_ON}, "metrics.port 8086"),
    "a latency threshold the call histograms cannot show": (
        {"metrics": {"prometheusRule": {"thresholds": {"latencyP99Seconds": 10}}}}, "/metrics/prometheusRule/thresholds/latencyP99Seconds"),
    "an alert duration that is not a Prometheus duration": (
        {"metrics": {"prometheusRule": {"thresholds": {"breakerOpenFor": "5 minutes"}}}}, "/metrics/prometheusRule/thresholds/breakerOpenFor"),
    "an error ratio above 1": ({"metrics": {"prometheusRule": {"thresholds": {"errorRatio": 5}}}}, "/metrics/prometheusRule/thresholds/errorRatio"),
    "an alert threshold the chart does not have": (
        {"metrics": {"prometheusRule": {"thresholds": {"cpu": 0.9}}}}, "additional properties"),
}


def lint_findings(result: dict) -> list[str]:
    # Severity 1 is informational ("icon is recommended"); strict lint makes warnings count.
    return [f"{m['path']}: {m['error'].strip()}" for m in result.get("messages", []) if m["severity"] >= 2]


def sdkpy_findings(result: dict) -> list[str]:
    # helm-sdkpy returns Helm's lint struct as is (Go field names; errors do not serialise).
    return [m["Path"] for m in result.get("Messages") or [] if m["Severity"] >= 2]


def helm_sdkpy_lint(values: dict | None) -> dict:
    """helm-sdkpy lints a folder: a copy of the chart whose values.yaml holds `values` merged
    over the defaults (what an install would use)."""
    with tempfile.TemporaryDirectory() as tmp:
        chart = Path(tmp) / "bridle"
        shutil.copytree(CHART, chart)
        if values:
            with helm_python.Chart.load(str(CHART)) as c:
                merged = c.merge_values(values)
            (chart / "values.yaml").write_text(yaml.safe_dump(merged))
        cfg = helm_sdkpy.Configuration()
        return asyncio.run(helm_sdkpy.Lint(cfg).run(str(chart)))


def render(values: dict) -> list[dict]:
    with helm_python.Chart.load(str(CHART)) as c:
        out = c.render(values, name="bridle", namespace="bridle")
    objs = []
    for path, text in sorted(out.items()):
        if path.endswith("NOTES.txt"):
            continue
        for doc in yaml.safe_load_all(text):
            if doc:
                doc["__source"] = path
                objs.append(doc)
    return objs


# Gateway API kinds are CRDs, which kubernetes-validate has no schema for: checked by hand.
GATEWAY_API = {"HTTPRoute", "GRPCRoute"}

# cert-manager's Certificate is a CRD too: checked against this excerpt of its schema
# (cert-manager.io/v1, deploy/crds/cert-manager.io_certificates.yaml of cert-manager 1.18+): the
# fields the chart sets, with their types and enums as the CRD gives them, and no other field
# (the API server would refuse or drop an unknown one).
_STR = {"type": "string"}
_STRMAP = {"type": "object", "additionalProperties": _STR}
CERTIFICATE_V1 = {
    "type": "object",
    "required": ["apiVersion", "kind", "metadata", "spec"],
    "additionalProperties": False,
    "properties": {
        "apiVersion": {"const": "cert-manager.io/v1"},
        "kind": {"const": "Certificate"},
        "metadata": {"type": "object", "required": ["name"], "properties": {"name": _STR, "labels": _STRMAP}},
        "spec": {
            "type": "object",
            "required": ["issuerRef", "secretName"],
            "additionalProperties": False,
            "properties": {
                "secretName": _STR,
                "secretTemplate": {"type": "object", "additionalProperties": False,
                                   "properties": {"annotations": _STRMAP, "labels": _STRMAP}},
                "commonName": {"type": "string", "maxLength": 64},
                "dnsNames": {"type": "array", "items": _STR},
                "duration": _STR,
                "renewBefore": _STR,
                "privateKey": {"type": "object", "additionalProperties": False, "properties": {
                    "algorithm": {"enum": ["RSA", "ECDSA", "Ed25519"]},
                    "encoding": {"enum": ["PKCS1", "PKCS8"]},
                    "rotationPolicy": {"enum": ["Never", "Always"]},
                    "size": {"type": "integer"}}},
                "usages": {"type": "array", "items": {"enum": [
                    "signing", "digital signature", "content commitment", "key encipherment", "key agreement",
                    "data encipherment", "cert sign", "crl sign", "encipher only", "decipher only", "any",
                    "server auth", "client auth", "code signing", "email protection", "s/mime", "ipsec end system",
                    "ipsec tunnel", "ipsec user", "timestamping", "ocsp signing", "microsoft sgc", "netscape sgc"]}},
                "issuerRef": {"type": "object", "required": ["name"], "additionalProperties": False,
                              "properties": {"name": _STR, "kind": _STR, "group": _STR}},
            },
        },
    },
}


def check_certificate(variant: str, o: dict) -> None:
    errors = sorted(jsonschema.Draft7Validator(CERTIFICATE_V1).iter_errors(o), key=str)
    check(not errors, f"[{variant}] Certificate/{o['metadata']['name']} against cert-manager.io/v1: "
                      f"{[f'{e.message} at {list(e.path)}' for e in errors]}")


# prometheus-operator's ServiceMonitor and PrometheusRule are CRDs too: checked against this
# excerpt of their schemas (monitoring.coreos.com/v1, example/prometheus-operator-crd/ of
# prometheus-operator 0.82-0.84): the fields the chart sets, with the types, patterns and enums
# the CRDs give them, and no other field.
_DURATION = {"type": "string", "pattern": r"^(0|(([0-9]+)y)?(([0-9]+)w)?(([0-9]+)d)?(([0-9]+)h)?(([0-9]+)m)?(([0-9]+)s)?(([0-9]+)ms)?)$"}
_MONITORING_META = {"type": "object", "required": ["name"], "properties": {"name": _STR, "labels": _STRMAP}}
MONITORING_V1 = {
    "ServiceMonitor": {
        "type": "object",
        "required": ["apiVersion", "kind", "metadata", "spec"],
        "additionalProperties": False,
        "properties": {
            "apiVersion": {"const": "monitoring.coreos.com/v1"},
            "kind": {"const": "ServiceMonitor"},
            "metadata": _MONITORING_META,
            "spec": {
                "type": "object",
                "required": ["endpoints", "selector"],
                "additionalProperties": False,
                "properties": {
                    "selector": {"type": "object", "additionalProperties": False, "properties": {"matchLabels": _STRMAP}},
                    "namespaceSelector": {"type": "object", "additionalProperties": False, "properties": {
                        "any": {"type": "boolean"}, "matchNames": {"type": "array", "items": _STR}}},
                    "endpoints": {"type": "array", "items": {"type": "object", "additionalProperties": False, "properties": {
                        "port": _STR, "path": _STR, "scheme": {"enum": ["http", "https"]},
                        "interval": _DURATION, "scrapeTimeout": _DURATION}}},
                },
            },
        },
    },
    "PrometheusRule": {
        "type": "object",
        "required": ["apiVersion", "kind", "metadata", "spec"],
        "additionalProperties": False,
        "properties": {
            "apiVersion": {"const": "monitoring.coreos.com/v1"},
            "kind": {"const": "PrometheusRule"},
            "metadata": _MONITORING_META,
            "spec": {
                "type": "object",
                "additionalProperties": False,
                "properties": {"groups": {"type": "array", "items": {
                    "type": "object", "required": ["name"], "additionalProperties": False,
                    "properties": {
                        "name": {"type": "string", "minLength": 1},
                        "interval": _DURATION,
                        "rules": {"type": "array", "items": {
                            "type": "object", "required": ["expr"], "additionalProperties": False,
                            "properties": {
                                "alert": _STR, "record": _STR,
                                "expr": {"anyOf": [{"type": "integer"}, {"type": "string"}]},
                                "for": _DURATION, "labels": _STRMAP, "annotations": _STRMAP}}}}}}},
            },
        },
    },
}


def check_monitoring_crd(variant: str, o: dict) -> None:
    errors = sorted(jsonschema.Draft7Validator(MONITORING_V1[o["kind"]]).iter_errors(o), key=str)
    check(not errors, f"[{variant}] {o['kind']}/{o['metadata']['name']} against monitoring.coreos.com/v1: "
                      f"{[f'{e.message} at {list(e.path)}' for e in errors]}")
    if o["kind"] == "PrometheusRule":
        names = [g["name"] for g in o["spec"]["groups"]]
        check(len(names) == len(set(names)), f"[{variant}] PrometheusRule: group names are unique (a list map by name): {names}")


def check_metrics(variant: str, merged: dict, objs: list[dict]) -> None:
    """metrics.enabled: every Bridle container listens for scrapes on metrics.port
    (BRIDLE_METRICS_LISTEN), a port of its own named metrics, which its ClusterIP Service
    carries (not the headless one); the ServiceMonitor selects exactly those Services on that
    port, and the PrometheusRule's every alert has a severity, a summary, a description and a
    `for`, and selects exactly the rendered services' jobs (their Service names). Off: none of
    it. The NetworkPolicy side is graph.py's."""
    m = merged["metrics"]
    on = m["enabled"]
    port = m["port"]
    deps = {o["metadata"]["labels"]["app.kubernetes.io/component"]: o for o in objs if o["kind"] == "Deployment"}
    services = {o["metadata"]["name"]: o for o in objs if o["kind"] == "Service"}
    for svc, dep in deps.items():
        for c in pod_containers(dep):
            env = {e["name"]: e.get("value") for e in c.get("env", [])}
            ports = [p for p in c.get("ports", []) if p["name"] == "metrics"]
            if c["name"] != svc or not on:
                check("BRIDLE_METRICS_LISTEN" not in env and not ports,
                      f"[{variant}] {svc}: container {c['name']} has no metrics listener{'' if on else ' (metrics off)'}")
                continue
            check(env.get("BRIDLE_METRICS_LISTEN") == f"0.0.0.0:{port}", f"[{variant}] {svc}: BRIDLE_METRICS_LISTEN on {port}")
            numbers = [p["containerPort"] for p in c["ports"]]
            check(ports == [{"name": "metrics", "containerPort": port, "protocol": "TCP"}] and numbers.count(port) == 1,
                  f"[{variant}] {svc}: a container port metrics {port} of its own: {c['ports']}")
        main = services.get(f"bridle-{svc}", {}).get("spec", {}).get("ports", [])
        want = [{"name": "metrics", "port": port, "targetPort": "metrics", "protocol": "TCP", "appProtocol": "http"}] if on else []
        check([p for p in main if p["name"] == "metrics"] == want, f"[{variant}] {svc}: Service port metrics {want}")
        peers = services.get(f"bridle-{svc}-peers", {}).get("spec", {}).get("ports", [])
        check(all(p["name"] != "metrics" for p in peers), f"[{variant}] {svc}: the headless Service has no metrics port")
    monitors = [o for o in objs if o["kind"] == "ServiceMonitor"]
    rules = [o for o in objs if o["kind"] == "PrometheusRule"]
    sm, pr = m["serviceMonitor"], m["prometheusRule"]
    check(len(monitors) == (1 if on and sm["enabled"] else 0), f"[{variant}] a ServiceMonitor exactly when asked: {len(monitors)}")
    check(len(rules) == (1 if on and pr["enabled"] else 0), f"[{variant}] a PrometheusRule exactly when asked: {len(rules)}")
    jobs = {f"bridle-{s}" for s in deps}
    for mon in monitors:
        spec = mon["spec"]
        sel = spec["selector"]["matchLabels"]
        scraped = {n for n, s in services.items() if all(s["metadata"]["labels"].get(k) == v for k, v in sel.items())
                   and any(p["name"] == "metrics" for p in s["spec"]["ports"])}
        check(scraped == jobs, f"[{variant}] the ServiceMonitor's targets are the services' Services (their jobs): {sorted(scraped)}")
        check(spec.get("namespaceSelector") == {"matchNames": ["bridle"]}, f"[{variant}] the ServiceMonitor looks in the release's namespace")
        ep = spec["endpoints"]
        want = {"port": "metrics", "path": "/metrics", "scheme": "http"} | ({"interval": sm["interval"]} if sm["interval"] else {})
        check(ep == [want], f"[{variant}] the ServiceMonitor scrapes GET /metrics on port metrics: {ep}")
        labels = mon["metadata"]["labels"]
        check(all(labels.get(k) == v for k, v in (sm.get("labels") or {}).items()) and labels.get("app.kubernetes.io/instance") == "bridle",
              f"[{variant}] the ServiceMonitor's labels: {labels}")
    for rule in rules:
        labels = rule["metadata"]["labels"]
        check(all(labels.get(k) == v for k, v in (pr.get("labels") or {}).items()), f"[{variant}] the PrometheusRule's labels: {labels}")
        matcher = re.compile(r'job=~"([^"]*)"')
        for g in rule["spec"]["groups"]:
            for r in g["rules"]:
                name = r.get("alert")
                ann = r.get("annotations", {})
                check(bool(name) and r.get("labels", {}).get("severity") in ("critical", "warning") and "for" in r
                      and ann.get("summary") and ann.get("description"),
                      f"[{variant}] alert {name}: a severity, a `for`, a summary and a description")
                found = {frozenset(x.split("|")) for x in matcher.findall(r["expr"])}
                check(found == {frozenset(jobs)}, f"[{variant}] alert {name} selects the jobs {sorted(jobs)}: {found}")


def check_route(variant: str, o: dict, objs: list[dict]) -> None:
    spec = o.get("spec", {})
    services = {s["metadata"]["name"]: s for s in objs if s["kind"] == "Service"}
    refs = [b for r in spec.get("rules", []) for b in r.get("backendRefs", [])]
    ok = (o.get("apiVersion") == "gateway.networking.k8s.io/v1" and spec.get("parentRefs") and spec.get("hostnames")
          and refs and all(b["name"] in services and b["port"] in [p["port"] for p in services[b["name"]]["spec"]["ports"]]
                           for b in refs))
    check(bool(ok), f"[{variant}] {o['kind']}/{o['metadata']['name']}: parentRefs, hostnames and a backend Service port that exists")


def validate_schemas(variant: str, objs: list[dict], oldest: str) -> None:
    for o in objs:
        body = {k: v for k, v in o.items() if k != "__source"}
        if o["kind"] in GATEWAY_API:
            check_route(variant, o, objs)
            continue
        if o["kind"] == "Certificate":
            check_certificate(variant, body)
            continue
        if o["kind"] in MONITORING_V1:
            check_monitoring_crd(variant, body)
            continue
        for version in (NEWEST, PREVIOUS, oldest):
            try:
                kubernetes_validate.validate(body, version, strict=True)
                check(True, "")
            except kubernetes_validate.ValidationError as e:
                check(False, f"[{variant}] {o['kind']}/{o['metadata']['name']} invalid for Kubernetes {version}: {e.message} at {list(e.path)}")
            except kubernetes_validate.SchemaNotFoundError as e:
                check(False, f"[{variant}] no schema for {o['kind']} in Kubernetes {version}: {e}")


def pod_containers(dep: dict) -> list[dict]:
    spec = dep["spec"]["template"]["spec"]
    return spec.get("containers", []) + spec.get("initContainers", [])


def merged_values(values: dict) -> dict:
    """`values` over the chart's defaults, as an install would use them."""
    with helm_python.Chart.load(str(CHART)) as c:
        return c.merge_values(values)


def probe_port(merged: dict, svc: str) -> int | None:
    """The port the kubelet probes: the health-only listener's with TLS, else None (the gRPC
    port)."""
    if not merged["tls"]["enabled"]:
        return None
    return merged[svc].get("healthPort") or merged["defaults"]["healthPort"]


def check_workloads(variant: str, values: dict, objs: list[dict], merged: dict) -> None:
    by = {(o["kind"], o["metadata"]["name"]): o for o in objs}
    autoscaling = variant != "no-autoscaling-no-netpol"
    expected = KINDS if autoscaling else {"Deployment", "Service", "ServiceAccount"}
    for svc in SERVICES:
        name = f"bridle-{svc}"
        kinds = {k for (k, n) in by if n == name}
        tls = merged["tls"]
        want = expected | ({"Certificate"} if tls["enabled"] and not (tls.get("existingSecrets") or {}).get(svc) else set())
        check(kinds == want, f"[{variant}] {svc}: kinds {sorted(kinds)} != {sorted(want)}")
        dep = by.get(("Deployment", name))
        if not dep:
            continue
        pod = dep["spec"]["template"]["spec"]
        labels = dep["spec"]["template"]["metadata"]["labels"]
        check(pod.get("serviceAccountName") == name, f"[{variant}] {svc}: its own ServiceAccount")
        check(pod.get("automountServiceAccountToken") is False, f"[{variant}] {svc}: no API token mounted")
        check(by.get(("ServiceAccount", name), {}).get("automountServiceAccountToken") is False,
              f"[{variant}] {svc}: ServiceAccount does not automount")
        psc = pod.get("securityContext", {})
        check(psc.get("runAsNonRoot") is True and psc.get("seccompProfile", {}).get("type") == "RuntimeDefault",
              f"[{variant}] {svc}: pod runs as non-root with the RuntimeDefault seccomp profile")
        main = [c for c in pod["containers"] if c["name"] == svc]
        check(len(main) == 1, f"[{variant}] {svc}: one container named {svc}")
        if not main:
            continue
        c = main[0]
        port = next(p["containerPort"] for p in c["ports"] if p["name"] == "grpc")
        sc = c.get("securityContext", {})
        check(sc.get("readOnlyRootFilesystem") is True, f"[{variant}] {svc}: read-only root filesystem")
        if svc == "tools" and tools_mode(values) in ("dind", "hostSocket"):
            check_workspace_mounts(variant, pod, c)
        else:
            check(sc.get("runAsNonRoot") is True and sc.get("runAsUser", 0) != 0, f"[{variant}] {svc}: non-root")
            check(sc.get("allowPrivilegeEscalation") is False, f"[{variant}] {svc}: no privilege escalation")
            check(sc.get("privileged") is False, f"[{variant}] {svc}: not privileged")
            check(sc.get("capabilities", {}).get("drop") == ["ALL"] and not sc.get("capabilities", {}).get("add"),
                  f"[{variant}] {svc}: every capability dropped")
        probed = probe_port(merged, svc) or port
        for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
            check(c.get(probe, {}).get("grpc", {}).get("port") == probed, f"[{variant}] {svc}: {probe} is gRPC on {probed}")
        res = c.get("resources", {})
        check(bool(res.get("requests", {}).get("cpu")) and bool(res.get("limits", {}).get("memory")),
              f"[{variant}] {svc}: cpu request and memory limit")
        for e in c.get("env", []):
            secretish = any(w in e["name"] for w in ("TOKEN", "PASSWORD", "SECRET_KEY", "API_KEY", "ADMIN_KEY")) and not e["name"].endswith("_FILE")
            if secretish or e["name"] == "BRIDLE_REDIS_URL" and variant == "production":
                check("value" not in e and "secretKeyRef" in e.get("valueFrom", {}),
                      f"[{variant}] {svc}: {e['name']} comes from a Secret, not a value")
        check("/tmp" in [m["mountPath"] for m in c.get("volumeMounts", [])], f"[{variant}] {svc}: writable /tmp volume")
        svc_obj = by.get(("Service", name))
        if svc_obj:
            sel = svc_obj["spec"]["selector"]
            check(all(labels.get(k) == v for k, v in sel.items()), f"[{variant}] {svc}: Service selects its pods")
            check(svc_obj["spec"]["ports"][0]["targetPort"] == "grpc" and svc_obj["spec"]["ports"][0].get("appProtocol") == "grpc",
                  f"[{variant}] {svc}: Service targets the grpc port")
        peers = by.get(("Service", f"{name}-peers"))
        check(bool(peers) and peers["spec"].get("clusterIP") == "None",
              f"[{variant}] {svc}: a headless Service {name}-peers for its peers")
        if peers:
            sel = peers["spec"]["selector"]
            check(all(labels.get(k) == v for k, v in sel.items()) and peers["spec"]["ports"][0]["port"] == port,
                  f"[{variant}] {svc}: headless Service selects its pods on the grpc port")
        for e in c.get("env", []):
            peer = next((p for p in SERVICES if e["name"] == f"BRIDLE_{svc.upper()}_{p.upper()}_URL"), None)
            if peer:
                scheme = "https://" if merged["tls"]["enabled"] else "dns:///"
                want = f"{scheme}bridle-{peer}-peers.bridle.svc:"
                check(e.get("value", "").startswith(want),
                      f"[{variant}] {svc}: {e['name']} uses the headless Service ({want}...), not {e.get('value')}")
        hpa = by.get(("HorizontalPodAutoscaler", name))
        if hpa:
            check(hpa["spec"]["scaleTargetRef"]["name"] == name and "replicas" not in dep["spec"],
                  f"[{variant}] {svc}: HPA owns the replica count")
        pdb = by.get(("PodDisruptionBudget", name))
        if pdb:
            sel = pdb["spec"]["selector"]["matchLabels"]
            check(all(labels.get(k) == v for k, v in sel.items()), f"[{variant}] {svc}: PDB selects its pods")
        others = [x for x in pod_containers(dep) if x["name"] != svc]
        if svc == "tools":
            check_tools_engine(variant, values, pod, c, others)
        else:
            check(not others, f"[{variant}] {svc}: no other container")
        if svc == "secrets":
            check_vault(variant, values, pod, c)
        if svc == "router":
            gw = values.get("router", {}).get("gateway", {})
            ports = {p["name"]: p["containerPort"] for p in c["ports"]}
            svc_ports = {p["name"]: p["port"] for p in (svc_obj or {}).get("spec", {}).get("ports", [])}
            want = gw.get("port") if gw.get("enabled") else None
            check(ports.get("http") == want and svc_ports.get("http") == want,
                  f"[{variant}] router: HTTP gateway port {want} exactly when enabled")


TLS_DIR = "/etc/bridle/tls"
TLS_ENV = {"BRIDLE_TLS_CERT": f"{TLS_DIR}/tls.crt", "BRIDLE_TLS_KEY": f"{TLS_DIR}/tls.key", "BRIDLE_TLS_CA": f"{TLS_DIR}/ca.crt"}


def check_tls(variant: str, merged: dict, objs: list[dict]) -> None:
    """With tls.enabled: each Bridle container has the three TLS files from its Secret, mounted
    as a whole directory (never subPath: a subPath mount never sees a renewed certificate), a
    plaintext health-only port its probes use and no NetworkPolicy opens to pods, and https://
    peer URLs (a service with TLS files dials even one address through discovery, so the
    headless Service's every pod is still used); each service
    without a Secret of its own in values gets a cert-manager Certificate for its bare name and
    its Service names, with both server and client auth. Without TLS: none of it."""
    tls = merged["tls"]
    certs = {o["metadata"]["name"]: o for o in objs if o["kind"] == "Certificate"}
    deps = {o["metadata"]["labels"]["app.kubernetes.io/component"]: o for o in objs if o["kind"] == "Deployment"}
    nps = [o for o in objs if o["kind"] == "NetworkPolicy"]
    if not tls["enabled"]:
        check(not certs, f"[{variant}] no Certificate without TLS")
        for svc, dep in deps.items():
            c = next(x for x in dep["spec"]["template"]["spec"]["containers"] if x["name"] == svc)
            names = {e["name"] for e in c["env"]}
            check(not names & (set(TLS_ENV) | {"BRIDLE_HEALTH_LISTEN"}), f"[{variant}] {svc}: no TLS settings without TLS")
            check("health" not in {p["name"] for p in c["ports"]}, f"[{variant}] {svc}: no health port without TLS")
            check("bridle-tls" not in {v["name"] for v in dep["spec"]["template"]["spec"]["volumes"]},
                  f"[{variant}] {svc}: no TLS volume without TLS")
        return
    domain = tls.get("clusterDomain") or "cluster.local"
    existing = {s: n for s, n in (tls.get("existingSecrets") or {}).items() if n}
    health_ports = set()
    for svc in SERVICES:
        dep = deps.get(svc)
        if not dep:
            continue
        pod = dep["spec"]["template"]["spec"]
        c = next(x for x in pod["containers"] if x["name"] == svc)
        env = {e["name"]: e.get("value") for e in c["env"]}
        hp = probe_port(merged, svc)
        health_ports.add(hp)
        check(all(env.get(k) == v for k, v in TLS_ENV.items()), f"[{variant}] {svc}: the three TLS files from {TLS_DIR}")
        check(env.get("BRIDLE_HEALTH_LISTEN") == f"0.0.0.0:{hp}", f"[{variant}] {svc}: the health-only listener on {hp}")
        ports = {p["name"]: p["containerPort"] for p in c["ports"]}
        check(ports.get("health") == hp and list(ports.values()).count(hp) == 1,
              f"[{variant}] {svc}: a health port {hp} of its own: {ports}")
        for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
            check(c.get(probe, {}).get("grpc", {}).get("port") == hp, f"[{variant}] {svc}: {probe} on the health port {hp}")
        urls = {n: v for n, v in env.items() if n in {f"BRIDLE_{svc.upper()}_{p.upper()}_URL" for p in SERVICES}}
        check(all((v or "").startswith("https://") for v in urls.values()), f"[{variant}] {svc}: every peer URL is https://: {urls}")
        if svc == "orchestrator":
            check(len(urls) == 4, f"[{variant}] orchestrator: its four peer URLs: {urls}")
        for x in pod_containers(dep):
            for m in x.get("volumeMounts", []):
                if m["name"] == "bridle-tls":
                    check(x["name"] == svc, f"[{variant}] {svc}: only the {svc} container mounts its TLS files, not {x['name']}")
                    check(m["mountPath"] == TLS_DIR and m.get("readOnly") is True and "subPath" not in m and "subPathExpr" not in m,
                          f"[{variant}] {svc}: the TLS Secret mounted read-only as a whole directory (no subPath): {m}")
        check(any(m["name"] == "bridle-tls" for m in c.get("volumeMounts", [])), f"[{variant}] {svc}: mounts its TLS files")
        vol = next((v for v in pod["volumes"] if v["name"] == "bridle-tls"), {})
        secret = vol.get("secret", {}).get("secretName")
        want = existing.get(svc) or f"bridle-{svc}-tls"
        check(secret == want, f"[{variant}] {svc}: TLS files from Secret {want}, not {secret}")
        cert = certs.get(f"bridle-{svc}")
        if svc in existing:
            check(cert is None, f"[{variant}] {svc}: its own Secret wins: no Certificate")
            continue
        check(cert is not None, f"[{variant}] {svc}: a Certificate")
        if cert is None:
            continue
        spec = cert["spec"]
        names = set(spec.get("dnsNames", []))
        check(svc in names, f"[{variant}] {svc}: the certificate names the bare service name {svc} (what clients check)")
        service_names = {f"{n}{suffix}" for n in (f"bridle-{svc}", f"bridle-{svc}-peers")
                         for suffix in ("", ".bridle", ".bridle.svc", f".bridle.svc.{domain}")}
        check(service_names <= names, f"[{variant}] {svc}: the certificate names its Services: {sorted(service_names - names)} missing")
        check(spec.get("commonName") == svc, f"[{variant}] {svc}: CN {svc} (its identity as a caller)")
        check(spec.get("secretName") == secret, f"[{variant}] {svc}: the Certificate fills the Secret the pod mounts")
        cm = tls["certManager"]
        check(spec.get("issuerRef") == cm["issuerRef"], f"[{variant}] {svc}: issuer {cm['issuerRef']}")
        check(spec.get("duration") == cm["duration"] and spec.get("renewBefore") == cm["renewBefore"],
              f"[{variant}] {svc}: duration and renewBefore from values")
        check(spec.get("privateKey") == {"algorithm": "ECDSA", "size": 256, "encoding": "PKCS8", "rotationPolicy": "Always"},
              f"[{variant}] {svc}: an ECDSA P-256 key, new at every renewal")
        check(set(spec.get("usages", [])) == {"server auth", "client auth", "digital signature", "key encipherment"},
              f"[{variant}] {svc}: usages server and client auth")
    want_certs = {f"bridle-{s}" for s in deps if s not in existing}
    check(set(certs) == want_certs, f"[{variant}] Certificates {sorted(certs)}, expected {sorted(want_certs)}")
    for np in nps:
        opened = {p.get("port") for r in np["spec"].get("ingress") or [] for p in r.get("ports", [])}
        check(not opened & health_ports, f"[{variant}] {np['metadata']['name']}: no rule opens a health port to pods")


def secret_refs(node) -> set[str]:
    """The Secrets a piece of an object (or of values) refers to: env secretKeyRef, envFrom
    secretRef, secret volumes."""
    out: set[str] = set()
    if isinstance(node, dict):
        for k, v in node.items():
            if k in ("secretKeyRef", "secretRef") and isinstance(v, dict):
                out.add(v.get("name"))
            elif k == "secret" and isinstance(v, dict) and "secretName" in v:
                out.add(v["secretName"])
            out |= secret_refs(v)
    elif isinstance(node, list):
        for v in node:
            out |= secret_refs(v)
    return out


def named_in_values(merged: dict) -> set[str]:
    """The Secrets values name, which the operator creates."""
    names = {merged["redis"]["urlSecret"]["name"], merged["auth"]["internalTokenSecret"]["name"],
             merged["approvals"]["webhook"]["urlSecret"]["name"]}
    if merged["vault"]["auth"]["method"] == "token":
        names.add(merged["vault"]["auth"]["token"]["secretName"])
    if merged["tls"]["enabled"]:
        names |= set((merged["tls"].get("existingSecrets") or {}).values())
    admin = merged["auth"]["bootstrapAdmin"]
    if admin["existingSecret"]:
        names.add(admin["secretName"] or "bridle-admin-key")
    # The escape hatches (extraEnv, envFrom, extraVolumes) may name Secrets of their own.
    names |= secret_refs({k: merged[k] for k in ["defaults"] + SERVICES})
    return {n for n in names if n}


def generated_secrets(merged: dict) -> dict[str, tuple[str, str]]:
    """The Secrets the chart must render, by name: (their one key, the form of its value)."""
    auth = merged["auth"]
    keys = auth["mode"] == "keys"
    out = {}
    if keys and not auth["internalTokenSecret"]["name"] and not merged["tls"]["enabled"]:
        out["bridle-internal-token"] = ("token", r"[A-Za-z0-9]{48}")
    admin = auth["bootstrapAdmin"]
    if keys and admin["enabled"] and merged["orchestrator"]["enabled"] and not admin["existingSecret"]:
        out[admin["secretName"] or "bridle-admin-key"] = ("key", r"bk_[A-Za-z0-9]{40}")
    return out


def check_auth(variant: str, merged: dict, objs: list[dict]) -> None:
    """API keys by default. The chart renders no ConfigMap and no Secret but the two it
    generates: the internal token (keys, without TLS, when values name none) and the bootstrap
    admin key (unless the operator made it), each a random value of its form, kept on
    uninstall. Every service gets the token from its Secret (none with TLS unless named; none
    with auth off), and the orchestrator the admin key and its tenant."""
    auth = merged["auth"]
    keys = auth["mode"] == "keys"
    check(not [o for o in objs if o["kind"] == "ConfigMap"], f"[{variant}] the chart renders no ConfigMap")
    secrets = {o["metadata"]["name"]: o for o in objs if o["kind"] == "Secret"}
    want = generated_secrets(merged)
    check(set(secrets) == set(want), f"[{variant}] Secrets rendered: {sorted(secrets)}, expected {sorted(want)}")
    for name, (key, form) in want.items():
        s = secrets.get(name)
        if not s:
            continue
        data = s.get("data") or {}
        value = base64.b64decode(data.get(key, "")).decode()
        check(set(data) == {key} and re.fullmatch(form, value) is not None,
              f"[{variant}] Secret {name}: one key {key!r}, a value of the form {form}")
        check(s["metadata"].get("annotations", {}).get("helm.sh/resource-policy") == "keep",
              f"[{variant}] Secret {name}: kept on uninstall (helm.sh/resource-policy: keep)")
    token = auth["internalTokenSecret"]
    if keys and token["name"]:
        want_token = {"name": token["name"], "key": token["key"]}
    elif keys and not merged["tls"]["enabled"]:
        want_token = {"name": "bridle-internal-token", "key": "token"}
    else:
        want_token = None
    admin = auth["bootstrapAdmin"]
    admin_on = keys and admin["enabled"]
    for dep in (o for o in objs if o["kind"] == "Deployment"):
        svc = dep["metadata"]["labels"]["app.kubernetes.io/component"]
        c = next(x for x in dep["spec"]["template"]["spec"]["containers"] if x["name"] == svc)
        env = {e["name"]: e for e in c["env"]}
        check(env.get("BRIDLE_AUTH", {}).get("value") == auth["mode"], f"[{variant}] {svc}: auth {auth['mode']}")
        got = env.get("BRIDLE_INTERNAL_TOKEN", {}).get("valueFrom", {}).get("secretKeyRef")
        check(got == want_token, f"[{variant}] {svc}: internal token from {want_token}, not {got}")
        key = env.get("BRIDLE_ORCHESTRATOR_BOOTSTRAP_ADMIN_KEY", {}).get("valueFrom", {}).get("secretKeyRef")
        tenant = env.get("BRIDLE_ORCHESTRATOR_BOOTSTRAP_ADMIN_TENANT", {}).get("value")
        if svc == "orchestrator" and admin_on:
            check(key == {"name": admin["secretName"] or "bridle-admin-key", "key": "key"} and tenant == admin["tenant"],
                  f"[{variant}] orchestrator: the bootstrap admin key from its Secret, for tenant {admin['tenant']}: {key}, {tenant}")
        else:
            check(key is None and tenant is None, f"[{variant}] {svc}: no bootstrap admin key")


def check_secret_refs(variant: str, merged: dict, objs: list[dict]) -> None:
    """Every Secret a pod refers to is one the chart renders, one a Certificate fills, or one
    the values name; and a key read from a rendered Secret is in it."""
    rendered = {o["metadata"]["name"]: o for o in objs if o["kind"] == "Secret"}
    filled = {o["spec"]["secretName"] for o in objs if o["kind"] == "Certificate"}
    allowed = set(rendered) | filled | named_in_values(merged)
    for dep in (o for o in objs if o["kind"] == "Deployment"):
        pod = dep["spec"]["template"]["spec"]
        for name in sorted(secret_refs(pod)):
            check(name in allowed, f"[{variant}] {dep['metadata']['name']}: Secret {name!r} is neither rendered nor named in values")
        for x in pod_containers(dep):
            for e in x.get("env", []):
                ref = e.get("valueFrom", {}).get("secretKeyRef")
                if ref and ref["name"] in rendered:
                    check(ref["key"] in (rendered[ref["name"]].get("data") or {}),
                          f"[{variant}] {dep['metadata']['name']}: {e['name']} reads key {ref['key']!r}, which Secret {ref['name']} has")


def tools_mode(values: dict) -> str:
    return values.get("tools", {}).get("docker", {}).get("mode", "rootless")


def check_workspace_mounts(variant: str, pod: dict, tools: dict) -> None:
    """Run workspaces are loop-mounted filesystems the engine must see (ARCHITECTURE.md,
    "Workspace"): the tools container is root and privileged, mounts the workspace root with
    Bidirectional propagation and gets the node's /dev (loop devices added after its start)."""
    sc = tools.get("securityContext", {})
    check(sc.get("privileged") is True and sc.get("runAsUser") == 0 and sc.get("runAsNonRoot") is False,
          f"[{variant}] tools: root and privileged, to mount run workspaces")
    mounts = {m["name"]: m for m in tools.get("volumeMounts", [])}
    check(mounts.get("workspaces", {}).get("mountPropagation") == "Bidirectional",
          f"[{variant}] tools: workspaces mounted Bidirectional (its mounts reach the engine)")
    vols = {v["name"]: v for v in pod.get("volumes", [])}
    check(mounts.get("host-dev", {}).get("mountPath") == "/dev" and vols.get("host-dev", {}).get("hostPath", {}).get("path") == "/dev",
          f"[{variant}] tools: the node's /dev (loop devices)")


def check_tools_engine(variant: str, values: dict, pod: dict, tools: dict, others: list[dict]) -> None:
    mode = tools_mode(values)
    env = {e["name"]: e.get("value") for e in tools["env"]}
    rtc = values.get("tools", {}).get("runtimeClassName", "")
    check(pod.get("runtimeClassName") == (rtc or None), f"[{variant}] tools: runtimeClassName {rtc or 'unset'}")
    if mode == "rootless":
        check_rootless_engine(variant, values, pod, tools, others, env)
    elif mode == "dind":
        dind = check_sidecar_engine(variant, values, pod, tools, others, env, "dind", "dind",
                                    "unix:///var/run/dind/docker.sock")
        check(dind.get("securityContext", {}).get("privileged") is True, f"[{variant}] tools: dind is the one privileged container")
        propagation = {m["name"]: m.get("mountPropagation") for m in dind.get("volumeMounts", [])}
        check(propagation.get("workspaces") == "HostToContainer",
              f"[{variant}] tools: the engine sees the run workspaces mounted by tools (HostToContainer)")
    else:
        check(not others, f"[{variant}] tools: no sidecar in {mode} mode")
        want = "unix:///var/run/docker.sock" if mode == "hostSocket" else values["tools"]["docker"]["host"]
        check(env.get("BRIDLE_TOOLS_DOCKER_HOST") == want, f"[{variant}] tools: engine address {want}")


def check_sidecar_engine(variant: str, values: dict, pod: dict, tools: dict, others: list[dict], env: dict,
                         name: str, key: str, socket: str) -> dict:
    """What every engine sidecar of a tools pod must be (the container `name`, its values under
    tools.docker.`key`): the pod's one other container, a native sidecar exactly when asked,
    no port (the tools service reaches it on `socket`, in a volume only they share), and the
    workspaces at the same path in both. Returns the sidecar."""
    check([o["name"] for o in others] == [name], f"[{variant}] tools: a {name} sidecar")
    engine = others[0] if others else {}
    check(not engine.get("ports"), f"[{variant}] tools: {name} exposes no port (unix socket only)")
    check(env.get("BRIDLE_TOOLS_DOCKER_HOST") == socket, f"[{variant}] tools: talks to the sidecar's socket")
    native = values.get("tools", {}).get("docker", {}).get(key, {}).get("nativeSidecar", True)
    init = [x for x in pod.get("initContainers", []) if x["name"] == name]
    check(bool(init) == native, f"[{variant}] tools: {name} is a native sidecar exactly when asked")
    if init:
        check(init[0].get("restartPolicy") == "Always", f"[{variant}] tools: native sidecar restartPolicy Always")
    root = env.get("BRIDLE_TOOLS_WORKSPACE_ROOT")
    mounts = lambda c: {m["name"]: m["mountPath"] for m in c.get("volumeMounts", [])}
    check(mounts(tools).get("workspaces") == root == mounts(engine).get("workspaces"),
          f"[{variant}] tools: workspaces at the same path in tools and the engine")
    return engine


def check_rootless_engine(variant: str, values: dict, pod: dict, tools: dict, others: list[dict], env: dict) -> None:
    """The rootless engine sidecar: unprivileged, uid 1000, only SETUID/SETGID added, the
    Localhost seccomp profile, an unmasked /proc in the pod's own user namespace; the tools
    container hardened, using plain-folder workspaces shared with the engine at one path."""
    engine = check_sidecar_engine(variant, values, pod, tools, others, env, "engine", "rootless",
                                  "unix:///var/run/engine/docker.sock")
    sc = engine.get("securityContext", {})
    check(sc.get("privileged") is False and sc.get("runAsUser") == 1000 and sc.get("runAsNonRoot") is True,
          f"[{variant}] tools: the engine is unprivileged, uid 1000")
    check(sc.get("capabilities") == {"drop": ["ALL"], "add": ["SETUID", "SETGID"]},
          f"[{variant}] tools: the engine adds only SETUID and SETGID")
    check(sc.get("seccompProfile") == {"type": "Localhost", "localhostProfile": "bridle/engine-seccomp.json"},
          f"[{variant}] tools: the engine's Localhost seccomp profile")
    check((CHART / "files" / "engine-seccomp.json").is_file(), f"[{variant}] tools: the chart ships the engine's seccomp profile")
    check(sc.get("procMount") == "Unmasked" and pod.get("hostUsers") is False,
          f"[{variant}] tools: unmasked /proc only in the pod's own user namespace")
    check(env.get("BRIDLE_TOOLS_WORKSPACE_MODE") == "folder" and env.get("BRIDLE_TOOLS_SANDBOX_HOST_UID") == "65532",
          f"[{variant}] tools: plain-folder workspaces owned by the tools uid")
    check("workspace" in (env.get("BRIDLE_TOOLS_SANDBOX_LIMITS_UNENFORCED") or ""),
          f"[{variant}] tools: the workspace quota accepted as unenforced")
    check(all("mountPropagation" not in m for m in tools.get("volumeMounts", []) + engine.get("volumeMounts", [])),
          f"[{variant}] tools: no mount propagation anywhere")
    vols = {v["name"]: v for v in pod.get("volumes", [])}
    check(vols.get("workspaces", {}).get("emptyDir", {}).get("sizeLimit") is not None,
          f"[{variant}] tools: the workspaces volume has a size limit")


def check_pod_security(variant: str, values: dict, objs: list[dict]) -> None:
    """Every pod against the Pod Security Standards: "restricted" for every Bridle container;
    the tools pod as a whole "baseline" with a rootless engine or an external one. The opt-in
    engines that need more are reported as needing "privileged" (so the levels the README
    states are checked both ways)."""
    for dep in (o for o in objs if o["kind"] == "Deployment"):
        svc = dep["metadata"]["labels"].get("app.kubernetes.io/component")
        tmpl = dep["spec"]["template"]
        pod, ann = tmpl["spec"], tmpl["metadata"].get("annotations")
        bridle = {svc}
        found = pss.violations(pod, "restricted", bridle, ann)
        mode = tools_mode(values) if svc == "tools" else None
        if mode in ("dind", "hostSocket"):
            base = pss.violations(pod, "baseline", None, ann)
            check(bool(base), f"[{variant}] {svc}: Pod Security flags the {mode} tools pod as needing 'privileged' (opt-in)")
            continue
        check(not found, f"[{variant}] {svc}: container {svc} passes Pod Security 'restricted': {found}")
        if mode == "rootless":
            base = pss.violations(pod, "baseline", None, ann)
            check(not base, f"[{variant}] tools: the pod with its engine passes Pod Security 'baseline': {base}")
            whole = pss.violations(pod, "restricted", None, ann)
            check(any("engine" in v for v in whole) and all("engine" in v or "spec.volumes" in v for v in whole),
                  f"[{variant}] tools: only the engine falls short of 'restricted': {whole}")
        else:
            whole = pss.violations(pod, "restricted", None, ann)
            check(not whole, f"[{variant}] {svc}: the whole pod passes Pod Security 'restricted': {whole}")


def check_escape_hatches(objs: list[dict]) -> None:
    """The escape-hatches value set: every service gets the defaults' extras, the router its
    own on top (its labels win), and the router's image is pulled by digest."""
    for dep in (o for o in objs if o["kind"] == "Deployment"):
        svc = dep["metadata"]["labels"]["app.kubernetes.io/component"]
        tmpl = dep["spec"]["template"]
        pod = tmpl["spec"]
        c = next(x for x in pod["containers"] if x["name"] == svc)
        env = {e["name"]: e.get("value") for e in c["env"]}
        labels = tmpl["metadata"]["labels"]
        want_tier = "edge" if svc == "router" else "default"
        check(env.get("HTTPS_PROXY") == "http://proxy.corp:3128", f"[escape-hatches] {svc}: defaults.extraEnv")
        check(c.get("envFrom") == [{"configMapRef": {"name": "corp-env"}}], f"[escape-hatches] {svc}: defaults.envFrom")
        check(any(v["name"] == "corp-ca" for v in pod["volumes"])
              and any(m["name"] == "corp-ca" and m["mountPath"] == "/etc/corp-ca" for m in c["volumeMounts"]),
              f"[escape-hatches] {svc}: extra volume and mount")
        check(labels.get("team") == "platform" and labels.get("tier") == want_tier,
              f"[escape-hatches] {svc}: pod labels {labels}")
        check(not {"team", "tier"} & set(dep["spec"]["selector"]["matchLabels"]), f"[escape-hatches] {svc}: selectors untouched")
        check(tmpl["metadata"].get("annotations", {}).get("corp/owner") == "platform", f"[escape-hatches] {svc}: pod annotations")
        check("nodeAffinity" in pod.get("affinity", {}), f"[escape-hatches] {svc}: defaults.affinity")
        secrets = [s["name"] for s in pod.get("imagePullSecrets", [])]
        check(secrets == (["everyone", "router-only"] if svc == "router" else ["everyone"]),
              f"[escape-hatches] {svc}: imagePullSecrets {secrets}")
        if svc == "router":
            check(c["image"] == "bridle/router@sha256:" + "ab" * 32, f"[escape-hatches] router: image by digest: {c['image']}")
            check(env.get("SSL_CERT_DIR") == "/etc/corp-ca", "[escape-hatches] router: its own extraEnv after the defaults'")


def check_exposed(objs: list[dict]) -> None:
    """The gateway, the inbox and the orchestrator exposed through an Ingress each and through
    Gateway API routes, each to its own Service port; the inbox served and its webhook set."""
    kinds = {(o["kind"], o["metadata"]["name"]) for o in objs}
    for what, svc in (("gateway", "router"), ("inbox", "approvals"), ("orchestrator", "orchestrator"),
                      ("mcp", "orchestrator")):
        check(("Ingress", f"bridle-{svc}-{what}") in kinds, f"[exposed] an Ingress for the {what}")
        route = "GRPCRoute" if what == "orchestrator" else "HTTPRoute"
        check((route, f"bridle-{svc}-{what}") in kinds, f"[exposed] a {route} for the {what}")
    grpc = next(o for o in objs if o["kind"] == "Ingress" and o["metadata"]["name"] == "bridle-orchestrator-orchestrator")
    check(grpc["metadata"].get("annotations", {}).get("nginx.ingress.kubernetes.io/backend-protocol") == "GRPC"
          and not grpc["spec"].get("tls"), "[exposed] the orchestrator's Ingress keeps its own annotations, no TLS asked")
    inbox = next(o for o in objs if o["kind"] == "Ingress" and o["metadata"]["name"] == "bridle-approvals-inbox")
    check(inbox["spec"]["tls"] == [{"hosts": ["approvals.example.com"], "secretName": "approvals-tls"}]
          and inbox["spec"]["rules"][0]["http"]["paths"][0]["backend"]["service"]["port"]["number"] == 8081,
          "[exposed] the inbox's Ingress: its TLS Secret and the inbox port")
    dep = next(o for o in objs if o["kind"] == "Deployment" and o["metadata"]["name"] == "bridle-approvals")
    c = dep["spec"]["template"]["spec"]["containers"][0]
    env = {e["name"]: e for e in c["env"]}
    check(env.get("BRIDLE_APPROVALS_INBOX__LISTEN", {}).get("value") == "0.0.0.0:8081"
          and env.get("BRIDLE_APPROVALS_INBOX__PUBLIC_URL", {}).get("value") == "https://approvals.example.com"
          and {"name": "http", "containerPort": 8081, "protocol": "TCP"} in c["ports"],
          "[exposed] approvals serves the inbox on 8081")
    check(env.get("BRIDLE_APPROVALS_WEBHOOK__URL", {}).get("valueFrom", {}).get("secretKeyRef")
          == {"name": "approvals-webhook", "key": "url"}, "[exposed] the webhook URL comes from its Secret")
    mcp = next(o for o in objs if o["kind"] == "Ingress" and o["metadata"]["name"] == "bridle-orchestrator-mcp")
    check(mcp["spec"]["rules"][0]["http"]["paths"][0]["backend"]["service"]["port"]["number"] == 8055,
          "[exposed] the MCP endpoint's Ingress goes to its port")
    orch = next(o for o in objs if o["kind"] == "Deployment" and o["metadata"]["name"] == "bridle-orchestrator")
    oc = orch["spec"]["template"]["spec"]["containers"][0]
    oenv = {e["name"]: e.get("value") for e in oc["env"]}
    hosts = json.loads(oenv.get("BRIDLE_ORCHESTRATOR_MCP__ALLOWED_HOSTS") or "[]")
    check(oenv.get("BRIDLE_ORCHESTRATOR_MCP__LISTEN") == "0.0.0.0:8055"
          and oenv.get("BRIDLE_ORCHESTRATOR_MCP__CALL_WAIT") == "2m"
          and {"name": "mcp", "containerPort": 8055, "protocol": "TCP"} in oc["ports"],
          "[exposed] the orchestrator serves MCP on 8055 with the values' call wait")
    check({"bridle-orchestrator", "mcp.example.com", "tools.example.com", "mcp.corp"} <= set(hosts)
          and any(h.startswith("bridle-orchestrator.") and h.endswith(".svc.cluster.local") for h in hosts),
          f"[exposed] MCP accepts the Service's names, the exposed hosts and allowedHosts: {hosts}")
    osvc = next(o for o in objs if o["kind"] == "Service" and o["metadata"]["name"] == "bridle-orchestrator")
    check({"name": "mcp", "port": 8055, "targetPort": "mcp", "protocol": "TCP", "appProtocol": "http"}
          in osvc["spec"]["ports"], "[exposed] the orchestrator's Service has the MCP port")
    onp = next(o for o in objs if o["kind"] == "NetworkPolicy" and o["metadata"]["name"] == "bridle-orchestrator")
    check(any(r.get("ports") == [{"port": 8055, "protocol": "TCP"}] for r in onp["spec"]["ingress"]),
          "[exposed] clients may reach the MCP port")
    np = next(o for o in objs if o["kind"] == "NetworkPolicy" and o["metadata"]["name"] == "bridle-approvals")
    check(any(r.get("to") == [{"ipBlock": {"cidr": "203.0.113.0/24"}}] and r["ports"] == [{"port": 443, "protocol": "TCP"}]
              for r in np["spec"]["egress"]), "[exposed] approvals may post its webhook (443, to the named peers)")


def check_as_subchart() -> None:
    """The chart as a dependency of an umbrella chart, with `global` values and its own under
    its name (Argo CD's usual layout): it renders, and its values reach it."""
    with tempfile.TemporaryDirectory() as tmp:
        umbrella = Path(tmp) / "platform"
        (umbrella / "charts").mkdir(parents=True)
        shutil.copytree(CHART, umbrella / "charts" / "bridle")
        version = yaml.safe_load((CHART / "Chart.yaml").read_text())["version"]
        (umbrella / "Chart.yaml").write_text(yaml.safe_dump({
            "apiVersion": "v2", "name": "platform", "version": "1.0.0",
            "dependencies": [{"name": "bridle", "version": version, "repository": "file://charts/bridle"}]}))
        (umbrella / "values.yaml").write_text(yaml.safe_dump({
            "global": {"imageRegistry": "registry.corp/", "clusterDomain": "cluster.local"},
            "bridle": {"keyPrefix": "umbrella", "image": {"registry": "registry.corp/", "pullPolicy": "IfNotPresent"}}}))
        try:
            with helm_python.Chart.load(str(umbrella)) as c:
                out = c.render({}, name="platform", namespace="bridle")
            deps = [yaml.safe_load_all(t) for p, t in out.items() if p.endswith("deployment.yaml")]
            deployments = [d for docs in deps for d in docs if d]
            prefix = {e["name"]: e.get("value") for d in deployments for e in d["spec"]["template"]["spec"]["containers"][0]["env"]}
            check(len(deployments) == 5 and prefix.get("BRIDLE_KEY_PREFIX") == "umbrella"
                  and all(d["spec"]["template"]["spec"]["containers"][0]["image"].startswith("registry.corp/") for d in deployments),
                  f"as a subchart with global values: five Deployments with the umbrella's values ({len(deployments)})")
        except Exception as e:  # the SDK's render error, with Helm's message
            check(False, f"as a subchart with global values: {e}")


def check_vault(variant: str, values: dict, pod: dict, c: dict) -> None:
    method = values.get("vault", {}).get("auth", {}).get("method", "kubernetes")
    env = {e["name"]: e for e in c["env"]}
    check(env.get("BRIDLE_SECRETS_VAULT_AUTH", {}).get("value") == method, f"[{variant}] secrets: Vault auth {method}")
    unbound = values.get("vault", {}).get("unbound", "deny")
    check(env.get("BRIDLE_SECRETS_UNBOUND", {}).get("value") == unbound,
          f"[{variant}] secrets: names without a SecretBinding: {unbound}")
    check("BRIDLE_REDIS_URL" in env, f"[{variant}] secrets: Redis for its bindings and lease records")
    vols = {v["name"]: v for v in pod.get("volumes", [])}
    if method == "kubernetes":
        src = vols.get("vault-token", {}).get("projected", {}).get("sources", [{}])[0].get("serviceAccountToken", {})
        check(src.get("audience") == "vault" and src.get("expirationSeconds", 0) >= 600,
              f"[{variant}] secrets: projected ServiceAccount token for Vault's audience")
        check("BRIDLE_SECRETS_VAULT_TOKEN" not in env, f"[{variant}] secrets: no Vault token at all")
        check(env["BRIDLE_SECRETS_VAULT_KUBERNETES_TOKEN_FILE"]["value"].startswith("/var/run/secrets/bridle/vault/"),
              f"[{variant}] secrets: reads the projected token")
    else:
        ref = env.get("BRIDLE_SECRETS_VAULT_TOKEN", {}).get("valueFrom", {}).get("secretKeyRef", {})
        check(ref.get("name") == "bridle-vault-token", f"[{variant}] secrets: Vault token from the named Secret")
        check("vault-token" not in vols, f"[{variant}] secrets: no projected token with token auth")


def main() -> int:
    for variant, values in VARIANTS.items():
        result = helm_python.lint(str(CHART), values or None, strict=True, kube_version=f"v{NEWEST}")
        problems = lint_findings(result) + result.get("errors", [])
        check(not problems, f"[{variant}] helm lint (Helm {helm_python.helm_sdk_version()}): {problems}")
        objs = render(values)
        merged = merged_values(values)
        validate_schemas(variant, objs, OLDEST_ROOTLESS if tools_mode(values) == "rootless" else OLDEST)
        check_workloads(variant, values, objs, merged)
        check_tls(variant, merged, objs)
        check_auth(variant, merged, objs)
        check_secret_refs(variant, merged, objs)
        check_pod_security(variant, values, objs)
        if variant == "escape-hatches":
            check_escape_hatches(objs)
        if variant == "exposed":
            check_exposed(objs)
        check_metrics(variant, merged, objs)
        for problem in check_network_policies(variant, values, objs, SERVICES, merged["metrics"]):
            check(False, problem)
        check(True, "")
    for variant in ("default", "production"):
        result = helm_sdkpy_lint(VARIANTS[variant] or None)
        check(result.get("TotalChartsLinted") == 1, f"[{variant}] helm-sdkpy linted the chart: {result}")
        check(not sdkpy_findings(result), f"[{variant}] helm-sdkpy lint: {sdkpy_findings(result)}")
    # The same engine refuses what the schema refuses (so the passes above mean something).
    bad = helm_sdkpy_lint({"orchestrator": {"replicas": "two"}})
    check(any(p == "values.yaml" for p in sdkpy_findings(bad)), f"helm-sdkpy refuses bad values: {bad}")
    for what, (values, word) in BAD_VALUES.items():
        result = helm_python.lint(str(CHART), values, strict=True, kube_version=f"v{NEWEST}")
        text = " ".join(result.get("errors", []))
        if not text:
            # Lint only logs a template's `fail`; an install renders, and stops there.
            try:
                render(values)
            except Exception as e:  # the SDK's error for a failed render
                text = str(e)
        check(bool(text) and word in text, f"bad values ({what}) are refused mentioning {word!r}: {text or 'no error'}")

    # Without a cluster (helm template, GitOps renderers) lookup finds nothing: each render makes
    # new values, which is why the README tells GitOps users to make the Secrets themselves.
    first, second = ({o["metadata"]["name"]: o["data"] for o in render({}) if o["kind"] == "Secret"} for _ in range(2))
    check(bool(first) and all(first[n] != second[n] for n in first),
          "the generated Secrets are random: two offline renders differ")
    # The alerts select the services that are deployed, and only those.
    check_metrics("metrics-without-tools", merged_values(METRICS_WITHOUT_TOOLS), render(METRICS_WITHOUT_TOOLS))
    check_as_subchart()
    check(values_doc.readme_copy() == values_doc.generate(),
          "the chart README's values reference is out of date: run helm/tests/values_doc.py --write")
    pss_failures = pss.self_test()
    check(not pss_failures, f"the Pod Security checker's own cases: {pss_failures}")
    for f in failures:
        print(f"FAIL {f}")
    print(f"helm chart checks ({len(VARIANTS)} value sets, Helm {helm_python.helm_sdk_version()}, "
          f"helm-sdkpy {helm_sdkpy.get_version()}, Kubernetes schemas {OLDEST} ({OLDEST_ROOTLESS} with the rootless engine), {PREVIOUS} and {NEWEST}): "
          f"{passed} passed, {len(failures)} failed")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
