"""No request gets a 500, and every answer is what the service documents: schemathesis sends
generated valid and invalid requests, built from each service's own OpenAPI document, with a real
token, and checks each response's status code, content type and body against that document."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.platform import Platform

SCHEMATHESIS = Path(sys.executable).parent / "schemathesis"
# Not only "no 5xx": every answer's status, content type and body must be the ones the service's
# own OpenAPI documents (errors as application/problem+json, runtime.http.PROBLEM_RESPONSES).
CHECKS = "not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance"


@pytest.mark.parametrize(("service", "user"), [
    ("catalog", "lueneburg-provider"), ("matching", "lueneburg-employer"),
    ("identity", "operator"), ("notifications", "lueneburg-admin"),
])
def test_generated_requests_never_get_a_server_error(platform: Platform, service: str, user: str) -> None:
    result = subprocess.run(
        [str(SCHEMATHESIS), "run", f"{platform.config.url(service)}/openapi.json",
         "--checks", CHECKS, "--mode", "all", "--max-examples", "20", "--seed", "20261121",
         "--no-color", "-H", f"Authorization: Bearer {platform.token(user)}"],
        capture_output=True, text=True, timeout=900,
    )
    assert result.returncode == 0, result.stdout[-6000:]
