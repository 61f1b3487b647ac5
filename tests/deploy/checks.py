"""The checks the deploy tests run on rendered manifests. Each answers a list of problems a person
can read (empty: fine), so a test can run it on the real manifests and on broken copies."""

from __future__ import annotations

import copy
import importlib.util
import json
import os
import subprocess
from functools import cache
from pathlib import Path

import jsonschema
import kubernetes_validate
import kubernetes_validate.utils
import yaml

import contracts
from deploy.local.stack import ROOT
from runtime.kafka import dead_letter_topic
from runtime.settings import ServiceSettings

K8S = ROOT / "deploy" / "k8s"
OVERLAYS = sorted(p.parent.name for p in (K8S / "overlays").glob("*/kustomization.yaml"))
CRD_SCHEMAS = Path(os.environ.get("BR_CRD_SCHEMAS", ROOT.parent / "shared" / "crd-schemas"))
CUSTOM_GROUPS = ("kafka.strimzi.io", "postgresql.cnpg.io", "k8s.keycloak.org", "monitoring.coreos.com")
KUBERNETES_VERSION = "1.33.0"  # the kubectl that renders is v1.33 (scripts/install-kubectl.py)
WORKLOAD_KINDS = ("Deployment", "StatefulSet", "DaemonSet", "Job", "CronJob")
SERVICES = ("identity", "catalog", "matching", "notifications")
OWNER_KEYS = ("BR_POSTGRES_ADMIN_URL", "BR_POSTGRES_OWNER_URL")


# kubernetes-validate reads and parses its (large) definitions file on every call; the files do
# not change during a run, so they are read once.
kubernetes_validate.utils.schema_contents = cache(kubernetes_validate.utils.schema_contents)


def kubectl() -> Path:
    path = ROOT / ".venv" / "bin" / "kubectl"
    if not path.exists():
        raise FileNotFoundError(f"{path} missing: `make install` puts it there (scripts/install-kubectl.py)")
    return path


@cache
def _render(directory: str) -> str:
    done = subprocess.run([str(kubectl()), "kustomize", directory], capture_output=True, text=True, timeout=120)
    if done.returncode != 0:
        raise AssertionError(f"kubectl kustomize {directory} failed: {done.stderr.strip()}")
    return done.stdout


@cache
def _parsed(directory: str) -> tuple[dict, ...]:
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    return tuple(d for d in yaml.load_all(_render(directory), Loader=loader) if d)


def render(directory: Path) -> list[dict]:
    """The overlay as ``kubectl kustomize`` renders it (a copy: a test may break it)."""
    return copy.deepcopy(list(_parsed(str(directory))))


def contract_topics() -> list[str]:
    return sorted(v for k, v in vars(contracts).items() if k.endswith("_TOPIC"))


def name_of(doc: dict) -> str:
    return f"{doc['kind']}/{doc['metadata']['name']}"


# ---- schemas ------------------------------------------------------------------------------------

def core_kind_problems(docs: list[dict]) -> list[str]:
    """Built-in kinds against Kubernetes' own schemas, strict: an unknown or mistyped field fails."""
    problems = []
    for doc in docs:
        if doc["apiVersion"].split("/")[0] in CUSTOM_GROUPS:
            continue
        try:
            kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)
        except kubernetes_validate.ValidationError as exc:
            problems.append(f"{name_of(doc)}: {exc.message} at {'/'.join(map(str, exc.path))}")
        except Exception as exc:  # unknown kind or version
            problems.append(f"{name_of(doc)}: {exc}")
    return problems


@cache
def _crd_schema(group: str, kind: str, version: str) -> dict:
    path = CRD_SCHEMAS / group / f"{kind.lower()}_{version}.json"
    if not path.exists():
        raise FileNotFoundError(f"no schema {path} (../shared/crd-schemas beside the checkout)")
    return json.loads(path.read_text())


def custom_resource_problems(docs: list[dict]) -> list[str]:
    """Strimzi, CloudNativePG, Keycloak-operator and Prometheus-operator resources against the
    operators' CRD schemas in ../shared/crd-schemas."""
    problems = []
    for doc in docs:
        group, _, version = doc["apiVersion"].partition("/")
        if group not in CUSTOM_GROUPS:
            continue
        schema = _crd_schema(group, doc["kind"], version)
        for error in jsonschema.Draft202012Validator(schema).iter_errors(doc):
            problems.append(f"{name_of(doc)}: {error.message} at {'/'.join(map(str, error.absolute_path))}")
    return problems


# ---- policy -------------------------------------------------------------------------------------

def _pod_spec(doc: dict) -> dict:
    spec = doc["spec"]
    if doc["kind"] == "CronJob":
        spec = spec["jobTemplate"]["spec"]
    return spec["template"]["spec"]


def workload_problems(docs: list[dict]) -> list[str]:
    """Every container: requests and limits, not root, no privilege escalation, read-only root
    filesystem, all capabilities dropped; long-running ones liveness and readiness probes."""
    problems = []
    for doc in docs:
        if doc["kind"] not in WORKLOAD_KINDS:
            continue
        pod = _pod_spec(doc)
        pod_ctx = pod.get("securityContext", {})
        for container in pod.get("initContainers", []) + pod["containers"]:
            where = f"{name_of(doc)} container {container['name']}"
            res = container.get("resources", {})
            for kind in ("requests", "limits"):
                for what in ("cpu", "memory"):
                    if what not in res.get(kind, {}):
                        problems.append(f"{where}: no {what} {kind[:-1]}")
            ctx = container.get("securityContext", {})
            if not (ctx.get("runAsNonRoot") or pod_ctx.get("runAsNonRoot")):
                problems.append(f"{where}: may run as root (runAsNonRoot)")
            if ctx.get("runAsUser", pod_ctx.get("runAsUser")) == 0:
                problems.append(f"{where}: runs as user 0")
            if ctx.get("readOnlyRootFilesystem") is not True:
                problems.append(f"{where}: root filesystem writable (readOnlyRootFilesystem)")
            if ctx.get("allowPrivilegeEscalation") is not False:
                problems.append(f"{where}: privilege escalation allowed")
            if "ALL" not in ctx.get("capabilities", {}).get("drop", []):
                problems.append(f"{where}: capabilities not dropped")
            if doc["kind"] in ("Deployment", "StatefulSet", "DaemonSet"):
                for probe in ("livenessProbe", "readinessProbe"):
                    if probe not in container:
                        problems.append(f"{where}: no {probe}")
                if any(p.get("name") == "http" for p in container.get("ports", [])):
                    paths = {container.get(p, {}).get("httpGet", {}).get("path")
                             for p in ("livenessProbe", "readinessProbe")}
                    if paths != {"/healthz", "/readyz"}:
                        problems.append(f"{where}: HTTP probes must be /healthz (liveness) and /readyz (readiness)")
    return problems


def _env_names_and_refs(pod: dict) -> tuple[set[str], set[str], list[str]]:
    names, secrets, values = set(), set(), []
    for container in pod.get("initContainers", []) + pod["containers"]:
        for env in container.get("env", []):
            names.add(env["name"])
            values.append(str(env.get("value", "")))
            ref = env.get("valueFrom", {}).get("secretKeyRef")
            if ref:
                secrets.add(ref["name"])
        for source in container.get("envFrom", []):
            if "secretRef" in source:
                secrets.add(source["secretRef"]["name"])
    for volume in pod.get("volumes", []):
        if "secret" in volume:
            secrets.add(volume["secret"]["secretName"])
    return names, secrets, values


def owner_credential_problems(docs: list[dict]) -> list[str]:
    """Only the migration Jobs hold a service's database owner credentials; no long-running
    process does, nor does a ConfigMap name an admin or owner DSN."""
    problems = []
    for doc in docs:
        if doc["kind"] == "ConfigMap":
            for key in OWNER_KEYS:
                if key in doc.get("data", {}):
                    problems.append(f"{name_of(doc)}: holds {key}")
        if doc["kind"] not in WORKLOAD_KINDS:
            continue
        names, secrets, values = _env_names_and_refs(_pod_spec(doc))
        is_migration = doc["kind"] == "Job" and doc["metadata"]["name"].endswith("-migrate")
        if is_migration:
            if "BR_POSTGRES_OWNER_URL" not in names:
                problems.append(f"{name_of(doc)}: a migration Job without the owner's DSN")
            continue
        for key in OWNER_KEYS:
            if key in names:
                problems.append(f"{name_of(doc)}: carries {key}")
        for secret in secrets:
            if secret.endswith("-owner") or "superuser" in secret:
                problems.append(f"{name_of(doc)}: mounts the owner's Secret {secret}")
        if any("_owner" in v for v in values):
            problems.append(f"{name_of(doc)}: an env value names an owner role")
    return problems


def _acls(user: dict) -> set[tuple[str, str, str]]:
    return {(acl["resource"]["type"], acl["resource"].get("name", ""), op)
            for acl in user["spec"]["authorization"]["acls"] for op in acl["operations"]}


def consumer_specs() -> dict[str, list]:
    """What each service's code subscribes to, read from the service itself (nothing connects)."""
    from services.catalog.bootstrap import CatalogSettings
    from services.catalog.bootstrap import create_app as catalog_app
    from services.identity.bootstrap import IdentitySettings
    from services.identity.bootstrap import create_app as identity_app
    from services.matching.bootstrap import MatchingSettings
    from services.matching.bootstrap import create_app as matching_app
    from services.notifications.bootstrap import NotificationsSettings
    from services.notifications.bootstrap import create_app as notifications_app

    apps = {"identity": identity_app(IdentitySettings()), "catalog": catalog_app(CatalogSettings()),
            "matching": matching_app(MatchingSettings()), "notifications": notifications_app(
                # the service refuses to start unsigned; any 32 characters do to read its wiring
                NotificationsSettings(unsubscribe_secret="wiring-check-only-" + "x" * 32))}
    return {name: app.state.runtime.consumer_specs for name, app in apps.items()}


def kafka_problems(docs: list[dict], specs: dict[str, list]) -> list[str]:
    """A KafkaTopic for every topic in contracts/ and its .dlq twin; a KafkaUser per service that may
    write the topics it owns (named `<service>.…`), read what its code consumes with its own group,
    write those topics' dead letters, and nothing of another service's beyond that."""
    problems = []
    topics = {d["spec"].get("topicName", d["metadata"]["name"]): d for d in docs if d["kind"] == "KafkaTopic"}
    users = {d["metadata"]["name"]: d for d in docs if d["kind"] == "KafkaUser"}
    for topic in contract_topics():
        for name in (topic, dead_letter_topic(topic)):
            if name not in topics:
                problems.append(f"topic {name} (contracts/) has no KafkaTopic")
    for service in SERVICES:
        user = users.get(service)
        if user is None:
            problems.append(f"service {service} has no KafkaUser")
            continue
        acls = _acls(user)
        allowed: set[tuple[str, str, str]] = set()
        for topic in contract_topics():
            if topic.startswith(f"{service}."):
                allowed |= {("topic", topic, "Write"), ("topic", topic, "Describe")}
        for spec in specs[service]:
            allowed.add(("group", spec.group, "Read"))
            for topic in spec.topics:
                dead = dead_letter_topic(topic)
                allowed |= {("topic", topic, "Read"), ("topic", topic, "Describe"),
                            ("topic", dead, "Write"), ("topic", dead, "Describe")}
        for needed in sorted(allowed - acls):
            problems.append(f"KafkaUser {service}: missing {needed[2]} on {needed[0]} {needed[1]}")
        for extra in sorted(acls - allowed):
            kind, name, op = extra
            # DESIGN.md's flows may run ahead of the code (a consumer about to be added): reading a
            # contract topic with the service's own group stays allowed; anything else does not.
            source = name.removesuffix(".dlq")
            ahead = (kind == "topic" and op in ("Read", "Describe") and name in contract_topics()) or (
                kind == "topic" and op in ("Write", "Describe") and name.endswith(".dlq")
                and source in contract_topics() and ("topic", source, "Read") in acls)
            if not ahead:
                problems.append(f"KafkaUser {service}: {op} on {kind} {name} is more than it needs")
    problems += _replay_user_problems(users.get("dlq-replay"))
    return problems


def _replay_user_problems(user: dict | None) -> list[str]:
    """The operators' dead-letter replay (runtime.inbox.replay_dead_letters) reads every dead-letter
    topic with its own groups and writes back into the source topics: exactly that."""
    from runtime.inbox import REPLAY_GROUPS

    if user is None:
        return ["the dead-letter replay has no KafkaUser dlq-replay"]
    needed = {("group", REPLAY_GROUPS, "Read", "prefix")}
    for topic in contract_topics():
        needed |= {("topic", dead_letter_topic(topic), op, "literal") for op in ("Read", "Describe")}
        needed |= {("topic", topic, op, "literal") for op in ("Write", "Describe")}
    given = {(acl["resource"]["type"], acl["resource"].get("name", ""), op, acl["resource"].get("patternType"))
             for acl in user["spec"]["authorization"]["acls"] for op in acl["operations"]}
    return ([f"KafkaUser dlq-replay: missing {n[2]} on {n[0]} {n[1]} ({n[3]})" for n in sorted(needed - given)]
            + [f"KafkaUser dlq-replay: {n[2]} on {n[0]} {n[1]} ({n[3]}) is more than it needs"
               for n in sorted(given - needed)])


def retention_problems(docs: list[dict]) -> list[str]:
    """Nothing comes back after its inbox row is gone: inbox rows (ServiceSettings.inbox_retention_hours)
    outlive what any topic or dead-letter topic that is not compacted keeps (a replay publishes a dead
    letter again; a compacted topic's states are ordered by their sequence instead), and a consumer
    group's position (the replay's) outlives the dead letters."""
    from runtime.settings import ServiceSettings

    problems = []
    inbox_ms = ServiceSettings.model_fields["inbox_retention_hours"].default * 3_600_000
    kept = {d["spec"]["topicName"]: int(d["spec"]["config"]["retention.ms"]) for d in docs
            if d["kind"] == "KafkaTopic" and d["spec"]["config"].get("cleanup.policy") != "compact"
            and "retention.ms" in d["spec"]["config"]}
    for topic, ms in sorted(kept.items()):
        if ms > inbox_ms:
            problems.append(f"topic {topic} keeps events {ms / 86_400_000:g} days, inbox rows go after "
                            f"{inbox_ms / 86_400_000:g}")
    kafka = next(d for d in docs if d["kind"] == "Kafka")
    offsets_ms = int(kafka["spec"]["kafka"]["config"].get("offsets.retention.minutes", 10_080)) * 60_000
    for topic, ms in sorted(kept.items()):
        if topic.endswith(".dlq") and ms > offsets_ms:
            problems.append(f"the replay's position of {topic} goes after {offsets_ms / 86_400_000:g} days, "
                            f"its dead letters after {ms / 86_400_000:g}")
    return problems


# URLs of the four APIs (platform-config): the portal and the tenants sync read them, the services not
PORTAL_SETTINGS = {"BR_IDENTITY_URL", "BR_CATALOG_URL", "BR_MATCHING_URL", "BR_NOTIFICATIONS_URL"}


def settings_problems(docs: list[dict]) -> list[str]:
    """Every BR_ variable a service process is given is a setting it reads (a misspelt one would be
    ignored silently: the settings ignore unknown names)."""
    from services.notifications.settings import NotificationsSettings

    config_maps = {d["metadata"]["name"]: d.get("data", {}) for d in docs if d["kind"] == "ConfigMap"}
    problems = []
    for doc in docs:
        if doc["kind"] not in WORKLOAD_KINDS:
            continue
        for container in _pod_spec(doc)["containers"]:
            args = container.get("args", [])
            if args[:1] == ["services.portal"]:
                if importlib.util.find_spec("services.portal") is None:
                    continue  # the portal lands from its own branch; then its settings are checked too
                from services.portal.settings import PortalSettings as settings
            elif args and (args[0].startswith("services.") or args[0] == "celery"):
                settings = NotificationsSettings if "notifications" in " ".join(args) else ServiceSettings
            else:
                continue
            fields = set(settings.model_fields)
            names = {e["name"] for e in container.get("env", [])}
            for source in container.get("envFrom", []):
                names |= set(config_maps.get(source.get("configMapRef", {}).get("name"), {}))
            for name in sorted(n for n in names if n.startswith("BR_")):
                if name[3:].lower() not in fields and name not in PORTAL_SETTINGS:
                    problems.append(f"{name_of(doc)} ({' '.join(args[:2])}): {name} is no setting of the process")
    return problems
