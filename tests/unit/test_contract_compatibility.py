"""Every event schema in contracts/ stays compatible with its previous committed version.

Consumers are tolerant readers and a topic is replayed from offset 0, so within one type version:
old payloads must still validate (no new required field, no narrowed type or enum) and old
consumers must accept new payloads (no removed or retyped field, no ``additionalProperties: false``
added). An incompatible change is a new type version (``.v2``): a new file, which has no previous
version to break."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCHEMAS = sorted((ROOT / "contracts" / "events").glob("*.json"))


def _types(node: dict[str, Any]) -> set[str] | None:
    declared = node.get("type")
    if declared is None:
        return None
    return {declared} if isinstance(declared, str) else set(declared)


def incompatibilities(old: Any, new: Any, where: str = "$") -> list[str]:
    """Why ``new`` would break a producer or consumer built against ``old`` (empty: compatible)."""
    if not isinstance(old, dict) or not isinstance(new, dict):
        return [] if old == new else [f"{where}: changed from {old!r} to {new!r}"]
    problems: list[str] = []
    if old.get("$ref") != new.get("$ref"):
        problems.append(f"{where}: $ref changed from {old.get('$ref')!r} to {new.get('$ref')!r}")
    if _types(old) != _types(new):
        problems.append(f"{where}: type changed from {_types(old)} to {_types(new)}")
    if "enum" in old or "enum" in new:
        if set(map(json.dumps, old.get("enum", []))) != set(map(json.dumps, new.get("enum", []))):
            problems.append(f"{where}: enum changed from {old.get('enum')} to {new.get('enum')}")
    if new.get("additionalProperties") is False and old.get("additionalProperties") is not False:
        problems.append(f"{where}: additionalProperties: false added (consumers must read tolerantly)")
    added_required = set(new.get("required", [])) - set(old.get("required", []))
    if added_required:
        problems.append(f"{where}: newly required {sorted(added_required)} (old payloads lack them)")
    for keyword in ("minimum", "maximum", "minLength", "maxLength", "minItems", "maxItems", "pattern", "format"):
        if new.get(keyword) != old.get(keyword) and keyword in new:
            problems.append(f"{where}: {keyword} changed from {old.get(keyword)!r} to {new.get(keyword)!r}")
    old_props, new_props = old.get("properties", {}), new.get("properties", {})
    for name, old_prop in old_props.items():
        if name not in new_props:
            problems.append(f"{where}.{name}: removed")
        else:
            problems += incompatibilities(old_prop, new_props[name], f"{where}.{name}")
    for keyword in ("items", "additionalProperties"):
        if isinstance(old.get(keyword), dict) and isinstance(new.get(keyword), dict):
            problems += incompatibilities(old[keyword], new[keyword], f"{where}[{keyword}]")
    for keyword in ("oneOf", "anyOf", "allOf"):
        old_branches, new_branches = old.get(keyword, []), new.get(keyword, [])
        if len(old_branches) != len(new_branches):
            problems.append(f"{where}: {keyword} has {len(new_branches)} branches, had {len(old_branches)}")
        for i, (a, b) in enumerate(zip(old_branches, new_branches, strict=False)):
            problems += incompatibilities(a, b, f"{where}.{keyword}[{i}]")
    return problems


def _git(*args: str) -> str:
    return subprocess.run(["git", "-C", str(ROOT), *args], check=True, capture_output=True, text=True).stdout


def previous_version(path: Path) -> dict | None:
    """The newest committed version of the file that differs from what is here now."""
    relative = path.relative_to(ROOT).as_posix()
    current = json.loads(path.read_text(encoding="utf-8"))
    for commit in _git("log", "--format=%H", "--", relative).split():
        try:
            committed = json.loads(_git("show", f"{commit}:{relative}"))
        except subprocess.CalledProcessError:  # deleted in that commit
            continue
        if committed != current:
            return committed
    return None


def test_every_event_schema_is_compatible_with_its_previous_version() -> None:
    if _git("rev-parse", "--is-shallow-repository").strip() == "true":
        _git("fetch", "--unshallow", "--quiet")
    problems = {}
    for path in SCHEMAS:
        previous = previous_version(path)
        if previous is not None and (found := incompatibilities(previous, json.loads(path.read_text("utf-8")))):
            problems[path.name] = found
    assert not problems, f"incompatible schema changes need a new type version (.v2): {problems}"


def test_no_state_schema_forbids_unknown_properties() -> None:
    def forbidding(node: Any) -> bool:
        if isinstance(node, dict):
            return node.get("additionalProperties") is False or any(map(forbidding, node.values()))
        return isinstance(node, list) and any(map(forbidding, node))

    assert [p.name for p in SCHEMAS if forbidding(json.loads(p.read_text("utf-8")))] == []


BASE = {"type": "object", "required": ["id"], "properties": {
    "id": {"type": "string"}, "hours": {"type": ["number", "null"]}, "format": {"enum": ["online", "presence"]}}}


@pytest.mark.parametrize(("change", "compatible"), [
    (lambda s: s["properties"].update(url={"type": "string"}), True),          # optional field added
    (lambda s: s.pop("required"), True),                                       # requirement dropped
    (lambda s: s["properties"].pop("hours"), False),                           # field removed
    (lambda s: s["properties"].update(hours={"type": "string"}), False),       # field retyped
    (lambda s: s["required"].append("hours"), False),                          # newly required
    (lambda s: s["properties"]["format"]["enum"].append("hybrid"), False),     # old consumers refuse it
    (lambda s: s.update(additionalProperties=False), False),                   # intolerant reader
])
def test_the_compatibility_rules(change, compatible: bool) -> None:
    new = json.loads(json.dumps(BASE))
    change(new)
    assert (incompatibilities(BASE, new) == []) is compatible
