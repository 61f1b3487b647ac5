"""The network policies allow exactly the flows of DESIGN.md: a small evaluator of Kubernetes
NetworkPolicy semantics (a pod selected by a policy of a direction gets only what some rule allows)
asks, for every pair of our pods and the things they reach, whether a connection would pass."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

import pytest

from tests.deploy import checks

NAMESPACE = "bildungsraum"


@dataclass(frozen=True)
class Endpoint:
    name: str
    namespace: str = NAMESPACE
    labels: tuple[tuple[str, str], ...] = ()
    ip: str | None = None  # outside the cluster

    @property
    def label_map(self) -> dict[str, str]:
        return dict(self.labels)


def _labels(**labels: str) -> tuple[tuple[str, str], ...]:
    return tuple(sorted(labels.items()))


def _ours(name: str, component: str) -> Endpoint:
    return Endpoint(f"{name}-{component}", labels=_labels(**{"app.kubernetes.io/name": name,
                                                              "app.kubernetes.io/component": component}))


SERVICES = ("identity", "catalog", "matching", "notifications")
SOURCES = [_ours(s, c) for s in SERVICES for c in ("api", "events", "migrate")] + [
    _ours("notifications", "worker"), _ours("notifications", "beat"), _ours("portal", "web"),
    _ours("tenants-sync", "job")]
POSTGRES = Endpoint("postgres", labels=_labels(**{"cnpg.io/cluster": "bildungsraum-db"}))
KAFKA = Endpoint("kafka", labels=_labels(**{"strimzi.io/cluster": "bildungsraum", "strimzi.io/kind": "Kafka"}))
KEYCLOAK = Endpoint("keycloak", labels=_labels(app="keycloak"))
REDIS = _ours("redis", "cache")
DNS = Endpoint("dns", namespace="kube-system", labels=_labels(**{"k8s-app": "kube-dns"}))
SMTP = Endpoint("smtp-relay", namespace="", ip="203.0.113.25")
INGRESS = Endpoint("ingress", namespace="ingress-nginx", labels=_labels(app="ingress-nginx"))
PROMETHEUS = Endpoint("prometheus", namespace="monitoring", labels=_labels(app="prometheus"))
TARGETS = [(POSTGRES, 5432), (KAFKA, 9093), (KEYCLOAK, 8443), (REDIS, 6379), (DNS, 53), (SMTP, 587)] + [
    (e, 8000) for e in SOURCES if e.name.endswith(("-api", "-events", "-web"))]

# DESIGN.md's flows, and nothing else
EXPECTED: set[tuple[str, str, int]] = set()
for src in SOURCES:
    EXPECTED.add((src.name, "dns", 53))
for s in SERVICES:
    for c in ("api", "events"):
        EXPECTED |= {(f"{s}-{c}", "postgres", 5432), (f"{s}-{c}", "kafka", 9093), (f"{s}-{c}", "keycloak", 8443)}
    EXPECTED.add((f"{s}-migrate", "postgres", 5432))
    EXPECTED |= {("portal-web", f"{s}-api", 8000), ("ingress", f"{s}-api", 8000),
                 ("prometheus", f"{s}-api", 8000), ("prometheus", f"{s}-events", 8000)}
EXPECTED |= {("notifications-api", "redis-cache", 6379), ("notifications-events", "redis-cache", 6379),
             ("notifications-worker", "postgres", 5432), ("notifications-worker", "redis-cache", 6379),
             ("notifications-worker", "smtp-relay", 587), ("notifications-beat", "redis-cache", 6379),
             ("portal-web", "redis-cache", 6379), ("portal-web", "keycloak", 8443),
             ("ingress", "portal-web", 8000), ("prometheus", "portal-web", 8000),
             ("tenants-sync-job", "identity-api", 8000), ("tenants-sync-job", "keycloak", 8443)}


def _matches(selector: dict, labels: dict[str, str]) -> bool:
    if any(labels.get(k) != v for k, v in selector.get("matchLabels", {}).items()):
        return False
    for expression in selector.get("matchExpressions", []):
        value, values = labels.get(expression["key"]), expression.get("values", [])
        op = expression["operator"]
        if (op == "In" and value not in values) or (op == "NotIn" and value in values) or (
                op == "Exists" and value is None) or (op == "DoesNotExist" and value is not None):
            return False
    return True


def _peer_matches(peer: dict, other: Endpoint, policy_namespace: str) -> bool:
    if "ipBlock" in peer:
        if other.ip is None:
            return False
        block = peer["ipBlock"]
        address = ipaddress.ip_address(other.ip)
        return address in ipaddress.ip_network(block["cidr"]) and not any(
            address in ipaddress.ip_network(e) for e in block.get("except", []))
    if other.ip is not None:
        return False
    namespace_labels = {"kubernetes.io/metadata.name": other.namespace}
    if "namespaceSelector" in peer:
        if not _matches(peer["namespaceSelector"], namespace_labels):
            return False
    elif other.namespace != policy_namespace:
        return False
    return _matches(peer.get("podSelector", {}), other.label_map)


def _port_matches(rule: dict, port: int) -> bool:
    return "ports" not in rule or any(p.get("port") == port for p in rule["ports"])


def _direction_allows(policies: list[dict], pod: Endpoint, other: Endpoint, port: int, direction: str) -> bool:
    key, peers = ("egress", "to") if direction == "Egress" else ("ingress", "from")
    selecting = [p for p in policies if pod.namespace == NAMESPACE and pod.ip is None
                 and direction in p["spec"].get("policyTypes", [])
                 and _matches(p["spec"]["podSelector"], pod.label_map)]
    if not selecting:
        return True  # no policy of this direction selects the pod: everything passes
    for policy in selecting:
        for rule in policy["spec"].get(key, []):
            if _port_matches(rule, port) and ("to" not in rule and "from" not in rule or any(
                    _peer_matches(peer, other, NAMESPACE) for peer in rule.get(peers, []))):
                return True
    return False


def allowed(policies: list[dict], src: Endpoint, dst: Endpoint, port: int) -> bool:
    return (_direction_allows(policies, src, dst, port, "Egress")
            and _direction_allows(policies, dst, src, port, "Ingress"))


def flows(policies: list[dict]) -> set[tuple[str, str, int]]:
    found = set()
    for src in SOURCES + [REDIS, INGRESS, PROMETHEUS]:
        for dst, port in TARGETS:
            if src != dst and allowed(policies, src, dst, port):
                found.add((src.name, dst.name, port))
    return found


def _policies(overlay: str) -> list[dict]:
    return [d for d in checks.render(checks.K8S / "overlays" / overlay) if d["kind"] == "NetworkPolicy"]


@pytest.mark.parametrize("overlay", ["dev", "prod"])
def test_the_network_allows_exactly_the_flows_of_the_design(overlay: str) -> None:
    # Operators guard Kafka, PostgreSQL and Keycloak themselves: judged here is what touches our pods.
    names = {e.name for e in SOURCES + [REDIS]}
    ours = {f for f in flows(_policies(overlay)) if f[0] in names or f[1] in names}
    assert ours - EXPECTED == set(), "allowed beyond DESIGN.md"
    assert EXPECTED - ours == set(), "DESIGN.md flows blocked"


def test_a_policy_opened_too_wide_is_caught() -> None:
    policies = _policies("prod")
    egress = next(p for p in policies if p["metadata"]["name"] == "catalog-egress")
    egress["spec"]["egress"].append({"to": [{"podSelector": {}}]})  # catalog may reach every pod of ours
    found = flows(policies)
    assert ("catalog-api", "matching-api", 8000) not in found  # matching's ingress still refuses it ...
    assert ("catalog-api", "redis-cache", 6379) not in found  # ... and so does Redis's
    del next(p for p in policies if p["metadata"]["name"] == "redis")["spec"]["ingress"][0]["from"][1]
    matching = next(p for p in policies if p["metadata"]["name"] == "matching-api-ingress")
    matching["spec"]["ingress"].append({"from": [{"podSelector": {}}]})  # every pod of the namespace
    found = flows(policies)
    assert ("catalog-api", "matching-api", 8000) in found - EXPECTED
    assert ("portal-web", "redis-cache", 6379) not in found  # the portal lost its way to its sessions


# The proxies that set X-Forwarded-For themselves (ingress-nginx replaces a visitor's own), and
# Prometheus, which only scrapes.
FORWARDERS = {"portal-web", "ingress", "prometheus"}


@pytest.mark.parametrize("overlay", ["dev", "prod"])
def test_forwarded_addresses_are_trusted_only_where_nothing_else_may_connect(overlay: str) -> None:
    """The catalog counts the public view's requests per visitor from X-Forwarded-For; a pod trusting
    the header from any peer must be reachable only from the proxies, or a visitor could name itself."""
    docs = checks.render(checks.K8S / "overlays" / overlay)
    labels = "app.kubernetes.io/name", "app.kubernetes.io/component"
    trusting = {"-".join(d["metadata"]["labels"][k] for k in labels) for d in docs if d["kind"] == "Deployment"
                for c in d["spec"]["template"]["spec"]["containers"]
                if {"name": "FORWARDED_ALLOW_IPS", "value": "*"} in c.get("env", [])}
    assert trusting == {"catalog-api", "portal-web"}
    reaching = {(src, dst) for src, dst, port in flows(_policies(overlay)) if dst in trusting and port == 8000}
    assert {src for src, _ in reaching} <= FORWARDERS, reaching
    assert {dst for _, dst in reaching} == trusting
