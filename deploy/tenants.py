"""Tenants as data: make identity hold every network listed in a tenants file.

    python -m deploy.tenants sync deploy/k8s/tenants/tenants.yaml

Adding a network is a line in that file: the CronJob ``tenants-sync`` (deploy/k8s) posts each
listed tenant to identity's operator API (``POST /v1/tenants``); one that exists already is left
as it is, so the run can repeat any number of times. It acts as an operator: a service account
(client credentials, ``BR_SYNC_CLIENT_ID``/``BR_SYNC_CLIENT_SECRET``) in production, or a user
(``BR_SYNC_USERNAME``/``BR_SYNC_PASSWORD``) against the local dev issuer.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import httpx
import yaml


def read_tenants(path: Path) -> list[dict[str, str]]:
    data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    tenants = data.get("tenants")
    if not isinstance(tenants, list) or not all(isinstance(t, dict) and {"id", "name"} <= t.keys() for t in tenants):
        raise ValueError(f"{path}: expected `tenants:` as a list of entries with `id` and `name`")
    return [{"id": str(t["id"]), "name": str(t["name"])} for t in tenants]


def operator_token(issuer_url: str, env: dict[str, str]) -> str:
    form = ({"grant_type": "client_credentials", "client_id": env["BR_SYNC_CLIENT_ID"],
             "client_secret": env["BR_SYNC_CLIENT_SECRET"]} if env.get("BR_SYNC_CLIENT_ID") else
            {"grant_type": "password", "client_id": env.get("BR_SYNC_CLI_CLIENT_ID", "bildungsraum-cli"),
             "username": env["BR_SYNC_USERNAME"], "password": env["BR_SYNC_PASSWORD"], "scope": "openid"})
    response = httpx.post(f"{issuer_url}/protocol/openid-connect/token", data=form, timeout=15)
    response.raise_for_status()
    return response.json()["access_token"]


def sync(tenants: list[dict[str, str]], identity_url: str, token: str) -> dict[str, str]:
    """Create what is missing; answer each tenant's outcome (``created`` or ``present``)."""
    outcome: dict[str, str] = {}
    with httpx.Client(base_url=identity_url, headers={"Authorization": f"Bearer {token}"}, timeout=15) as client:
        for tenant in tenants:
            response = client.post("/v1/tenants", json=tenant)
            if response.status_code == 201:
                outcome[tenant["id"]] = "created"
            elif response.status_code == 409:
                outcome[tenant["id"]] = "present"
            else:
                raise RuntimeError(f"tenant {tenant['id']}: identity answered {response.status_code} {response.text}")
    return outcome


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m deploy.tenants", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", choices=["sync"])
    parser.add_argument("file", type=Path)
    args = parser.parse_args(argv)
    env = dict(os.environ)
    try:
        tenants = read_tenants(args.file)
    except (OSError, ValueError, yaml.YAMLError) as exc:
        print(f"tenants file refused: {exc}", file=sys.stderr)
        return 2
    token = operator_token(env.get("BR_ISSUER_URL", "http://127.0.0.1:8080/realms/bildungsraum"), env)
    for tenant_id, state in sync(tenants, env.get("BR_IDENTITY_URL", "http://127.0.0.1:8004"), token).items():
        print(f"{tenant_id}: {state}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
