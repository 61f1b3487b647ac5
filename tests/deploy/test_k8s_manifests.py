"""The Kubernetes manifests render with a real kubectl, pass the schemas (Kubernetes' own for
built-in kinds, the operators' CRDs for custom resources) and the platform's rules; the same
checks catch a manifest broken on purpose."""

from __future__ import annotations

import json

import pytest

from deploy import k8s as _k8s_package  # noqa: F401 - deploy/k8s is a package (realm generator)
from deploy.k8s import realm
from tests.deploy import checks

OVERLAYS = checks.OVERLAYS


@pytest.fixture(scope="module", params=OVERLAYS)
def overlay(request) -> tuple[str, list[dict]]:
    return request.param, checks.render(checks.K8S / "overlays" / request.param)


@pytest.fixture(scope="module")
def specs():
    return checks.consumer_specs()


def _find(docs: list[dict], kind: str, name: str) -> dict:
    return next(d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name)


def test_dev_and_prod_overlays_exist_and_render() -> None:
    assert {"dev", "prod"} <= set(OVERLAYS)
    for name in OVERLAYS:
        kinds = {d["kind"] for d in checks.render(checks.K8S / "overlays" / name)}
        assert {"Deployment", "Service", "ConfigMap", "PodDisruptionBudget", "Job", "NetworkPolicy", "Kafka",
                "KafkaNodePool", "KafkaTopic", "KafkaUser", "Cluster", "Database", "ScheduledBackup",
                "Keycloak", "KeycloakRealmImport", "ServiceMonitor", "PrometheusRule"} <= kinds, name


def test_core_kinds_pass_kubernetes_strict_schemas(overlay) -> None:
    name, docs = overlay
    assert checks.core_kind_problems(docs) == []


def test_custom_resources_pass_the_operators_crd_schemas(overlay) -> None:
    name, docs = overlay
    assert checks.custom_resource_problems(docs) == []


def test_every_workload_has_probes_limits_and_a_locked_down_security_context(overlay) -> None:
    name, docs = overlay
    assert checks.workload_problems(docs) == []


def test_only_migration_jobs_hold_the_database_owners_credentials(overlay) -> None:
    name, docs = overlay
    assert checks.owner_credential_problems(docs) == []
    jobs = {d["metadata"]["name"] for d in docs if d["kind"] == "Job"}
    assert jobs == {f"{s}-migrate" for s in checks.SERVICES}


def test_every_contract_topic_has_its_kafka_topic_and_each_service_only_its_acls(overlay, specs) -> None:
    name, docs = overlay
    assert checks.kafka_problems(docs, specs) == []


def test_inbox_rows_and_the_replays_position_outlive_every_event_that_can_come_back(overlay) -> None:
    name, docs = overlay
    assert checks.retention_problems(docs) == []


def test_a_topic_kept_longer_than_the_inbox_and_a_replay_user_reading_more_are_caught(specs) -> None:
    docs = checks.render(checks.K8S / "overlays" / "prod")
    topic = next(d for d in docs if d["kind"] == "KafkaTopic" and d["spec"]["topicName"] == "matching.matches.v1")
    topic["spec"]["config"]["retention.ms"] = str(60 * 86_400_000)
    kafka = next(d for d in docs if d["kind"] == "Kafka")
    del kafka["spec"]["kafka"]["config"]["offsets.retention.minutes"]  # Kafka's own 7 days
    assert checks.retention_problems(docs) == [
        "topic matching.matches.v1 keeps events 60 days, inbox rows go after 31",
        *(f"the replay's position of {t}.dlq goes after 7 days, its dead letters after 30"
          for t in sorted(checks.contract_topics()))]
    replay = _find(docs, "KafkaUser", "dlq-replay")
    replay["spec"]["authorization"]["acls"].append(
        {"resource": {"type": "topic", "name": "catalog.offers.v1", "patternType": "literal"}, "operations": ["Read"]})
    assert checks.kafka_problems(docs, specs) == [
        "KafkaUser dlq-replay: Read on topic catalog.offers.v1 (literal) is more than it needs"]


def test_every_setting_given_to_a_service_is_one_it_reads(overlay) -> None:
    name, docs = overlay
    assert checks.settings_problems(docs) == []


def test_a_misspelt_setting_is_caught() -> None:
    docs = checks.render(checks.K8S / "overlays" / "prod")
    container = _find(docs, "Deployment", "notifications-worker")["spec"]["template"]["spec"]["containers"][0]
    container["env"].append({"name": "BR_SMTP_STARTLS", "value": "true"})
    assert any("BR_SMTP_STARTLS is no setting" in p for p in checks.settings_problems(docs))


def test_sizes_differ_as_the_overlays_promise() -> None:
    dev = checks.render(checks.K8S / "overlays" / "dev")
    prod = checks.render(checks.K8S / "overlays" / "prod")
    assert _find(dev, "KafkaNodePool", "combined")["spec"]["replicas"] == 1
    assert _find(prod, "KafkaNodePool", "combined")["spec"]["replicas"] == 3
    assert _find(prod, "Kafka", "bildungsraum")["spec"]["kafka"]["config"]["min.insync.replicas"] == 2
    assert {d["spec"]["config"]["min.insync.replicas"] for d in prod if d["kind"] == "KafkaTopic"} == {2}
    assert {d["spec"]["replicas"] for d in prod if d["kind"] == "KafkaTopic"} == {3}
    assert _find(prod, "Cluster", "bildungsraum-db")["spec"]["instances"] == 3
    assert {d["kind"] for d in prod} >= {"HorizontalPodAutoscaler"}
    assert "HorizontalPodAutoscaler" not in {d["kind"] for d in dev}


# ---- the checks catch what is broken on purpose -------------------------------------------------

def test_a_mistyped_field_in_a_core_kind_is_caught() -> None:
    docs = (checks.render(checks.K8S / "overlays" / "prod"))
    broken = _find(docs, "Deployment", "catalog")
    broken["spec"]["replicas"] = "two"
    problems = checks.core_kind_problems(docs)
    assert any("Deployment/catalog" in p and "replicas" in p for p in problems), problems


def test_an_unknown_field_in_a_core_kind_is_caught() -> None:
    docs = (checks.render(checks.K8S / "overlays" / "prod"))
    _find(docs, "Service", "matching")["spec"]["portz"] = [{"port": 80}]
    assert any("Service/matching" in p for p in checks.core_kind_problems(docs))


def test_a_mistyped_custom_resource_is_caught() -> None:
    docs = (checks.render(checks.K8S / "overlays" / "prod"))
    _find(docs, "KafkaTopic", "catalog-offers-v1")["spec"]["partitions"] = "twelve"
    _find(docs, "Cluster", "bildungsraum-db")["spec"]["instances"] = "three"
    problems = checks.custom_resource_problems(docs)
    assert any("KafkaTopic/catalog-offers-v1" in p and "partitions" in p for p in problems), problems
    assert any("Cluster/bildungsraum-db" in p and "instances" in p for p in problems), problems


def test_a_missing_probe_a_writable_root_and_a_missing_limit_are_caught() -> None:
    docs = (checks.render(checks.K8S / "overlays" / "prod"))
    api = _find(docs, "Deployment", "matching")["spec"]["template"]["spec"]["containers"][0]
    del api["readinessProbe"]
    worker = _find(docs, "Deployment", "notifications-worker")["spec"]["template"]["spec"]["containers"][0]
    worker["securityContext"]["readOnlyRootFilesystem"] = False
    del _find(docs, "Deployment", "portal")["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"]
    problems = checks.workload_problems(docs)
    assert "Deployment/matching container api: no readinessProbe" in problems
    assert any("notifications-worker" in p and "readOnlyRootFilesystem" in p for p in problems)
    assert "Deployment/portal container web: no memory limit" in problems


def test_a_topic_without_its_kafka_topic_and_a_wider_acl_are_caught(specs) -> None:
    docs = (checks.render(checks.K8S / "overlays" / "prod"))
    docs = [d for d in docs if not (d["kind"] == "KafkaTopic" and d["spec"]["topicName"] == "matching.matches.v1.dlq")]
    user = _find(docs, "KafkaUser", "catalog")
    wider = {"resource": {"type": "topic", "name": "matching.demands.v1", "patternType": "literal"},
             "operations": ["Write"]}
    user["spec"]["authorization"]["acls"].append(wider)
    problems = checks.kafka_problems(docs, specs)
    assert "topic matching.matches.v1.dlq (contracts/) has no KafkaTopic" in problems
    assert "KafkaUser catalog: Write on topic matching.demands.v1 is more than it needs" in problems


def test_owner_credentials_in_a_service_deployment_are_caught() -> None:
    docs = (checks.render(checks.K8S / "overlays" / "prod"))
    container = _find(docs, "Deployment", "catalog-events")["spec"]["template"]["spec"]["containers"][0]
    container["env"].append({"name": "BR_POSTGRES_OWNER_URL", "value": "postgresql://br_catalog_owner@db/x"})
    problems = checks.owner_credential_problems(docs)
    assert "Deployment/catalog-events: carries BR_POSTGRES_OWNER_URL" in problems


def test_the_realm_import_is_the_realm_of_deploy_keycloak() -> None:
    source = realm.realm_file()
    docs = checks.render(checks.K8S / "overlays" / "prod")
    imported = _find(docs, "KeycloakRealmImport", "bildungsraum")["spec"]["realm"]
    assert imported["realm"] == "bildungsraum"
    if source is None:  # deploy/keycloak/ has no realm export yet: the import's own realm stands
        assert {r["name"] for r in imported["roles"]["realm"]} >= {"operator", "network_admin", "counselor",
                                                                     "provider", "employer"}
    else:
        assert imported == json.loads(source.read_text(encoding="utf-8")), "run `make k8s-realm`"


def test_every_alert_reads_metrics_the_services_export_and_has_its_runbook_line() -> None:
    """An alert on a metric nobody exports never fires, and one the runbook does not name leaves the
    operator guessing (the README named three alerts that did not exist, and the backlog alert read a
    second copy of the relay's gauge)."""
    import re
    from pathlib import Path

    import yaml
    from prometheus_client import REGISTRY

    from runtime import metrics  # noqa: F401 - registers the services' metrics

    root = Path(__file__).resolve().parents[2]
    rules = [doc for doc in yaml.safe_load_all((root / "deploy/k8s/components/monitoring/monitoring.yaml").read_text())
             if doc and doc["kind"] == "PrometheusRule"]
    alerts = [rule for doc in rules for group in doc["spec"]["groups"] for rule in group["rules"]]
    families = list(REGISTRY.collect())
    exported = {family.name + ("_total" if family.type == "counter" else "") for family in families}
    runbook = (root / "deploy/README.md").read_text()
    ours = re.compile(r"\b((?:outbox|events|http)_[a-z_]+)\b")  # the services' own; kafka_* is Strimzi's exporter
    for alert in alerts:
        assert f"`{alert['alert']}`" in runbook, f"{alert['alert']} has no line in deploy/README.md (Alerts)"
        for name in ours.findall(alert["expr"]):
            assert name in exported, f"{alert['alert']} reads {name}, which no service exports"
    assert {"BildungsraumOutboxRowStuck", "BildungsraumOutboxBacklog"} <= {a["alert"] for a in alerts}
