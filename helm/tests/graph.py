"""The calls the rendered NetworkPolicies allow, compared with the calls of ARCHITECTURE.md."""

from __future__ import annotations

# caller -> callee among Bridle's services.
CALLS = {
    ("orchestrator", "router"),
    ("orchestrator", "tools"),
    ("orchestrator", "approvals"),
    ("orchestrator", "secrets"),
    ("router", "secrets"),
    ("tools", "secrets"),
    # A run's calls are forwarded to the tools replica that holds it.
    ("tools", "tools"),
}
# Services people and applications call (and the router, through its HTTP gateway, when on).
PUBLIC = {"orchestrator", "approvals"}


def _component(peer: dict) -> str | None:
    labels = peer.get("podSelector", {}).get("matchLabels", {})
    if labels.get("app.kubernetes.io/name") == "bridle" and "namespaceSelector" not in peer:
        return labels.get("app.kubernetes.io/component")
    return None


def _ports(rule: dict) -> set[int]:
    return {p["port"] for p in rule.get("ports", [])}


def check_network_policies(variant: str, values: dict, objs: list[dict], services: list[str],
                           metrics: dict | None = None) -> list[str]:
    """`metrics`: the merged values' metrics block (scrapes admitted on its port from its peers
    to every service, when enabled)."""
    problems: list[str] = []
    nps = [o for o in objs if o["kind"] == "NetworkPolicy"]
    if not values.get("networkPolicy", {}).get("enabled", True):
        return [f"[{variant}] NetworkPolicies rendered while disabled"] if nps else []
    np_values = values.get("networkPolicy", {})
    port_of = {o["metadata"]["labels"]["app.kubernetes.io/component"]: next(
        p["containerPort"] for p in o["spec"]["template"]["spec"]["containers"][0]["ports"])
        for o in objs if o["kind"] == "Deployment"}
    redis_port = np_values.get("redis", {}).get("port", 6379)
    vault_port = np_values.get("vault", {}).get("port", 8200)
    narrowed = bool(np_values.get("clients"))
    gateway = values.get("router", {}).get("gateway", {})
    public_ports = {s: {port_of[s]} for s in PUBLIC}
    expected_public = set(PUBLIC)
    if gateway.get("enabled"):
        public_ports["router"] = {gateway.get("port", 8080)}
        expected_public.add("router")
    approvals = values.get("approvals", {})
    if approvals.get("inbox", {}).get("enabled"):
        public_ports["approvals"].add(approvals["inbox"].get("port", 8081))
    mcp = values.get("orchestrator", {}).get("mcp", {})
    if mcp.get("enabled"):
        public_ports["orchestrator"].add(mcp.get("port", 8055))
    webhook = bool(approvals.get("webhook", {}).get("urlSecret", {}).get("name"))
    scraped = bool(metrics and metrics.get("enabled"))
    metrics_port = metrics.get("port") if scraped else None
    scrapers = (metrics.get("from") or None) if scraped else None

    def is_scrape(rule: dict) -> bool:
        return scraped and _ports(rule) == {metrics_port} and rule.get("from") == scrapers

    ingress_edges: set[tuple[str, str]] = set()
    egress_edges: set[tuple[str, str]] = set()
    public: set[str] = set()
    scrapes: set[str] = set()
    for np in nps:
        svc = np["spec"]["podSelector"]["matchLabels"].get("app.kubernetes.io/component")
        where = f"[{variant}] NetworkPolicy {np['metadata']['name']}"
        if sorted(np["spec"].get("policyTypes", [])) != ["Egress", "Ingress"]:
            problems.append(f"{where}: must govern both ingress and egress")
        for rule in np["spec"].get("ingress") or []:
            if is_scrape(rule):
                scrapes.add(svc)
                continue
            if metrics_port in _ports(rule):
                problems.append(f"{where}: the metrics port {metrics_port} is opened by a rule other than the scrapes' ({rule})")
            peers = rule.get("from")
            comps = [_component(p) for p in peers or []]
            if peers and all(comps):
                ingress_edges |= {(c, svc) for c in comps}
                want = port_of[svc]
            elif any(comps):
                problems.append(f"{where}: a rule mixes Bridle services and other peers")
                continue
            else:
                public.add(svc)
                if not _ports(rule) or not _ports(rule) <= public_ports.get(svc, set()):
                    problems.append(f"{where}: ingress from clients on ports {_ports(rule)}, not within {public_ports.get(svc)}")
                continue
            if _ports(rule) != {want}:
                problems.append(f"{where}: ingress on ports {_ports(rule)}, not only {want}")
        for rule in np["spec"].get("egress") or []:
            ports = _ports(rule)
            peers = rule.get("to") or []
            comps = [_component(p) for p in peers]
            if peers and all(comps):
                for c in comps:
                    egress_edges.add((svc, c))
                    if ports != {port_of[c]}:
                        problems.append(f"{where}: egress to {c} on {ports}, not {port_of[c]}")
                continue
            if ports == {53}:
                continue
            if vault_port in ports and svc != "secrets":
                problems.append(f"{where}: only the secrets service reaches Vault")
            if 443 in ports and svc not in ("router", "tools") and not (svc == "approvals" and webhook):
                problems.append(f"{where}: only the router (providers), tools (image pulls) and approvals (its webhook) go out on 443")
            if variant == "production" and not peers:
                problems.append(f"{where}: production egress on {ports} should name its peers")
        if not any(redis_port in _ports(r) for r in np["spec"].get("egress") or []):
            problems.append(f"{where}: no egress to Redis")
        if svc == "secrets" and not any(vault_port in _ports(r) for r in np["spec"].get("egress") or []):
            problems.append(f"{where}: no egress to Vault")
    if ingress_edges != CALLS:
        problems.append(f"[{variant}] ingress allows {sorted(ingress_edges)}, architecture says {sorted(CALLS)}")
    if egress_edges != CALLS:
        problems.append(f"[{variant}] egress allows {sorted(egress_edges)}, architecture says {sorted(CALLS)}")
    if public != expected_public:
        problems.append(f"[{variant}] open to clients: {sorted(public)}, expected {sorted(expected_public)}")
    deployed = set(port_of)
    if scrapes != (deployed if scraped else set()):
        problems.append(f"[{variant}] scrapes of the metrics port admitted to {sorted(scrapes)}, expected "
                        f"{sorted(deployed) if scraped else 'none (metrics off)'}")
    if narrowed:
        for np in nps:
            for rule in np["spec"].get("ingress") or []:
                if not rule.get("from") and not is_scrape(rule):
                    problems.append(f"[{variant}] {np['metadata']['name']}: ingress from anywhere though clients are named")
    if {np["spec"]["podSelector"]["matchLabels"].get("app.kubernetes.io/component") for np in nps} != set(services):
        problems.append(f"[{variant}] not every service has its NetworkPolicy")
    return problems
