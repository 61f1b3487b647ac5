"""Tenants as data: a network added to the tenants file reaches every service through one sync run,
which may repeat any number of times (the Kubernetes CronJob tenants-sync runs it)."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path

from deploy.local.stack import ROOT
from tests.platform import Platform, wait_until


def _sync(platform: Platform, tenants_file: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "BR_ISSUER_URL": platform.config.issuer_url,
           "BR_IDENTITY_URL": platform.config.url("identity"), "BR_SYNC_USERNAME": "operator",
           "BR_SYNC_PASSWORD": "dev"}
    return subprocess.run([sys.executable, "-m", "deploy.tenants", "sync", str(tenants_file)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=60)


def test_a_network_added_to_the_tenants_file_is_created_once_and_learned_by_the_services(
        platform: Platform, tmp_path: Path) -> None:
    tenant = f"ostwestfalen-{uuid.uuid4().hex[:6]}"
    tenants_file = tmp_path / "tenants.yaml"
    shipped = (ROOT / "deploy" / "k8s" / "tenants" / "tenants.yaml").read_text(encoding="utf-8")
    tenants_file.write_text(shipped + f"  - id: {tenant}\n    name: Bildungsraum Ostwestfalen-Lippe\n",
                            encoding="utf-8")

    first = _sync(platform, tenants_file)
    assert first.returncode == 0, first.stderr
    assert f"{tenant}: created" in first.stdout and "lueneburg: present" in first.stdout

    with platform.client("identity", "operator") as api:
        listed = {t["id"]: t["name"] for t in api.get("/v1/tenants").json()["items"]}
    assert listed[tenant] == "Bildungsraum Ostwestfalen-Lippe"
    with platform.client("catalog", "operator", **{"X-Tenant": tenant}) as api:
        wait_until(f"catalog to know {tenant}", lambda: api.get("/v1/offers").status_code == 200, timeout=30)

    again = _sync(platform, tenants_file)
    assert again.returncode == 0, again.stderr
    assert f"{tenant}: present" in again.stdout and "created" not in again.stdout


def test_a_malformed_tenants_file_is_refused_with_a_clear_message(platform: Platform, tmp_path: Path) -> None:
    tenants_file = tmp_path / "tenants.yaml"
    tenants_file.write_text("tenants:\n  - name: ohne Kennung\n", encoding="utf-8")
    refused = _sync(platform, tenants_file)
    assert refused.returncode != 0
    assert "expected `tenants:` as a list of entries with `id` and `name`" in refused.stderr
