"""No request gets a 500: schemathesis sends generated valid and invalid requests, built from each
service's own OpenAPI document, with a real token, and fails on any server error."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.platform import Platform

SCHEMATHESIS = Path(sys.executable).parent / "schemathesis"


@pytest.mark.parametrize(("service", "user"), [
    ("catalog", "lueneburg-provider"), ("matching", "lueneburg-employer"),
    ("identity", "operator"), ("notifications", "lueneburg-admin"),
])
def test_generated_requests_never_get_a_server_error(platform: Platform, service: str, user: str) -> None:
    result = subprocess.run(
        [str(SCHEMATHESIS), "run", f"{platform.config.url(service)}/openapi.json",
         "--checks", "not_a_server_error", "--mode", "all", "--max-examples", "20", "--seed", "20261121",
         "--no-color", "-H", f"Authorization: Bearer {platform.token(user)}"],
        capture_output=True, text=True, timeout=900,
    )
    assert result.returncode == 0, result.stdout[-6000:]
