"""Every event schema in contracts/events/ stays compatible with every version of it ever committed.

Which direction is safe? Consumers validate each event on receipt (runtime/events.py, formats
asserted) against the schema *they* were deployed with, and read required fields by key. Two
readers therefore meet a payload written under another version of the same file:

* a consumer deployed before the change reads events written under the new schema, so every new
  payload must be valid under the old schema (new ⊆ old), or it is refused and dead-lettered;
* a topic is replayed from offset 0, so every old payload must be valid under the new schema
  (old ⊆ new), or the replay dead-letters history.

Both together leave no room for a "widening" (larger maxLength, smaller minimum, a pattern or
``required`` entry dropped, an enum value added): each lets a new producer write what old consumers
refuse or read by key in vain. So the comparison is a whitelist; the only compatible changes are

(a) a new optional property (in ``properties``, not in ``required``) of an object schema that
    tolerates unknown properties: old consumers already accept it, old payloads just lack it, and
(b) a change of an annotation (``description``, ``title``, ``examples``, ``$comment``, ``default``,
    ``deprecated``), which no validator or consumer acts on.

Any other keyword added, removed or changed anywhere (inside ``properties``, ``items``, ``$defs``,
``allOf``... alike) is incompatible and needs a new type version (``.v2``): a new file. A file once
committed is never deleted or renamed, since replayed events still name its type version."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
EVENTS = "contracts/events"
SCHEMAS = sorted((ROOT / EVENTS).glob("*.json"))

ANNOTATIONS = {"description", "title", "examples", "$comment", "default", "deprecated"}
# where an added property is tolerated: nothing here constrains keys a schema does not list
PLAIN_OBJECT = ANNOTATIONS | {"$schema", "$id", "$defs", "definitions", "type", "properties", "required"}
SUBSCHEMA = {"items", "additionalProperties", "unevaluatedProperties", "unevaluatedItems", "contains",
             "propertyNames", "not", "if", "then", "else"}
SUBSCHEMA_MAPS = {"properties", "patternProperties", "dependentSchemas", "$defs", "definitions"}
SUBSCHEMA_LISTS = {"allOf", "anyOf", "oneOf", "prefixItems"}
UNORDERED = {"type", "enum"}  # lists whose order means nothing


def _as_set(value: Any) -> set[str]:
    return {json.dumps(v, sort_keys=True) for v in (value if isinstance(value, list) else [value])}


def incompatibilities(old: Any, new: Any, where: str = "#") -> list[str]:
    """Why ``new`` would break a producer or consumer built against ``old`` (empty: compatible)."""
    if not isinstance(old, dict) or not isinstance(new, dict):  # boolean schema, or not a schema at all
        return [] if old == new else [f"{where}: {old!r} became {new!r}"]
    problems: list[str] = []
    for key in sorted((old.keys() | new.keys()) - ANNOTATIONS):
        at, before, after = f"{where}/{key}", old.get(key), new.get(key)
        if key == "required":
            if dropped := set(before or []) - set(after or []):
                problems.append(f"{at}: {sorted(dropped)} no longer required (consumers read them by key)")
            if added := set(after or []) - set(before or []):
                problems.append(f"{at}: {sorted(added)} newly required (old payloads lack them)")
        elif key in SUBSCHEMA_MAPS:
            before, after = before or {}, after or {}
            for name in sorted(before.keys() | after.keys()):
                if name not in after:
                    problems.append(f"{at}/{name}: removed")
                elif name not in before:
                    if key != "properties" or not old.keys() <= PLAIN_OBJECT:
                        problems.append(f"{at}/{name}: added where old consumers may refuse it")
                else:
                    problems += incompatibilities(before[name], after[name], f"{at}/{name}")
        elif key in SUBSCHEMA and key in old and key in new:
            problems += incompatibilities(before, after, at)
        elif key in SUBSCHEMA_LISTS and isinstance(before, list) and isinstance(after, list) \
                and len(before) == len(after):
            for i, (a, b) in enumerate(zip(before, after, strict=True)):
                problems += incompatibilities(a, b, f"{at}/{i}")
        elif key in UNORDERED and key in old and key in new:
            if _as_set(before) != _as_set(after):
                problems.append(f"{at}: {before!r} became {after!r}")
        elif before != after or (key in old) != (key in new):
            problems.append(f"{at}: {'added' if key not in old else 'removed' if key not in new else 'changed'}"
                            f" ({before!r} became {after!r})")
    return problems


def against_history(current: dict[str, Any], history: dict[str, list[Any]]) -> dict[str, list[str]]:
    """Problems of each current schema (by file name) against every committed version of that file."""
    problems: dict[str, list[str]] = {}
    for name, versions in sorted(history.items()):
        if name not in current:
            problems[name] = ["deleted or renamed: replayed events of this type version need it"]
            continue
        found = [f"against a committed version: {p}" for v in versions for p in incompatibilities(v, current[name])]
        if found:
            problems[name] = list(dict.fromkeys(found))  # the same problem against several versions once
    return problems


# The first state schemas forbade unknown properties (additionalProperties: false), so that any added
# field broke them. d57dd6b (2026-12-02) made them tolerant, as the catalog issue asked, before any
# release, and added fields with it. Those versions are no baseline; every later one is.
BEFORE_TOLERANT_READERS = {
    "ca70543264338b8458488fcdf3807816bafb9dc8",  # offer-state.v1.json
    "d92a5ad364dcb934ccb41142ee9e46897451a71d",  # provider-state.v1.json
    "470a8a6d6f87bc2037d452ebecf9b1d9ddca78f8",  # tenant-state.v1.json
}


def _git(root: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(root), *args], check=True, capture_output=True, text=True).stdout


def committed_versions(root: Path) -> dict[str, list[Any]]:
    """Every distinct committed content of every schema file under contracts/events/, by file name.

    Fails (never skips) where the history cannot be read: a check that silently does not run would
    let an incompatible change through. CI (.ci/run) works in a full clone."""
    how = (f"The contract compatibility check needs the full git history of {root}: run it in a full "
           f"`git clone` (CI clones fully), or `git fetch --unshallow` in a shallow one.")
    try:
        toplevel = Path(_git(root, "rev-parse", "--show-toplevel").strip()).resolve()
        shallow = _git(root, "rev-parse", "--is-shallow-repository").strip() == "true"
    except (OSError, subprocess.CalledProcessError) as error:
        pytest.fail(f"no git repository here ({error}). {how}")
    if toplevel != root.resolve():
        pytest.fail(f"{root} is not the top of its git repository ({toplevel}). {how}")
    if shallow:
        pytest.fail(f"this is a shallow clone: older versions of the schemas are missing. {how}")
    blobs: dict[str, set[str]] = {}
    # --full-history: a side branch's version counts too, though a merge took the other side's
    for commit in _git(root, "rev-list", "--full-history", "HEAD", "--", EVENTS).split():
        for line in _git(root, "ls-tree", commit, f"{EVENTS}/").splitlines():
            blob, path = line.split()[2], line.split("\t", 1)[1]
            if path.endswith(".json") and blob not in BEFORE_TOLERANT_READERS:
                blobs.setdefault(Path(path).name, set()).add(blob)
    return {name: [json.loads(_git(root, "cat-file", "blob", b)) for b in sorted(ids)] for name, ids in blobs.items()}


def test_every_event_schema_is_compatible_with_every_committed_version() -> None:
    current = {path.name: json.loads(path.read_text("utf-8")) for path in SCHEMAS}
    problems = against_history(current, committed_versions(ROOT))
    assert not problems, f"incompatible schema changes need a new type version (.v2): {problems}"


def test_no_state_schema_forbids_unknown_properties() -> None:
    def forbidding(node: Any) -> bool:
        if isinstance(node, dict):
            return any(node.get(k) is False for k in ("additionalProperties", "unevaluatedProperties")) \
                or any(map(forbidding, node.values()))
        return isinstance(node, list) and any(map(forbidding, node))

    assert [p.name for p in SCHEMAS if forbidding(json.loads(p.read_text("utf-8")))] == []


# The self-checks: each crafted change must be judged as stated.

BASE = {"type": "object", "title": "Offer", "required": ["id", "title"], "properties": {
    "id": {"type": "string", "format": "uuid"}, "title": {"type": "string", "maxLength": 200},
    "hours": {"type": ["number", "null"], "minimum": 0}, "format": {"enum": ["online", "presence"]},
    "tags": {"type": "array", "items": {"type": "string"}}, "price": {"$ref": "#/$defs/money"},
    "sessions": {"type": "array", "items": {"type": "object", "properties": {"start": {"type": "string"}}}}},
    "$defs": {"money": {"type": "number"}}}
P = "properties"


@pytest.mark.parametrize(("change", "compatible"), [
    (lambda s: s[P].update(url={"type": "string"}), True),                          # optional field added
    (lambda s: s[P]["sessions"]["items"][P].update(room={"type": "string"}), True),  # ... nested too
    (lambda s: s.update(description="An offer", title="Angebot"), True),            # annotations
    (lambda s: s[P]["hours"].update(examples=[3], deprecated=True, default=0), True),
    (lambda s: s.update(required=["title", "id"]), True),                           # order means nothing
    (lambda s: s[P]["hours"].update(type=["null", "number"]), True),
    (lambda s: s[P].pop("hours"), False),                                           # field removed
    (lambda s: s[P].pop("title"), False),                     # a property named like an annotation
    (lambda s: s[P].update(hours={"type": "string"}), False),                       # field retyped
    (lambda s: s["required"].append("hours"), False),                               # newly required
    (lambda s: s.pop("required"), False),                     # consumers read required fields by key
    (lambda s: s["required"].remove("title"), False),
    (lambda s: s[P].update(url={"type": "string"}) or s["required"].append("url"), False),
    (lambda s: s[P]["format"]["enum"].append("hybrid"), False),                     # old consumers refuse it
    (lambda s: s.update(additionalProperties=False), False),                        # intolerant reader
    (lambda s: s[P]["title"].update(maxLength=300), False),   # widening: old consumers refuse long ones
    (lambda s: s[P]["title"].update(pattern="^[A-Z]"), False),
    (lambda s: s[P]["hours"].update(minimum=-1), False),
    (lambda s: s[P]["id"].pop("format"), False),
    (lambda s: s[P]["format"].update(const="online"), False),
    (lambda s: s[P]["hours"].update(exclusiveMinimum=0), False),
    (lambda s: s[P]["hours"].update(exclusiveMaximum=100), False),
    (lambda s: s[P]["hours"].update(multipleOf=0.5), False),
    (lambda s: s.update(maxProperties=5), False),
    (lambda s: s.update(minProperties=2), False),
    (lambda s: s[P]["title"].update({"not": {"const": ""}}), False),
    (lambda s: s[P]["tags"].update(uniqueItems=True), False),
    (lambda s: s[P]["tags"].update(prefixItems=[{"type": "string"}]), False),
    (lambda s: s[P]["tags"]["items"].update(minLength=1), False),                   # inside items
    (lambda s: s.update(dependentRequired={"hours": ["format"]}), False),
    (lambda s: s.update(dependentSchemas={"hours": {"required": ["format"]}}), False),
    (lambda s: s.update({"if": {"required": ["hours"]}, "then": {"required": ["format"]}}), False),
    (lambda s: s[P]["hours"].update(anyOf=[{"minimum": 1}, {"type": "null"}]), False),
    (lambda s: s[P]["hours"].update(allOf=[{"maximum": 10}]), False),
    (lambda s: s[P]["hours"].update(oneOf=[{"type": "number"}]), False),
    (lambda s: s["$defs"]["money"].update(minimum=0), False),                       # a $ref's target
    (lambda s: s["$defs"].pop("money"), False),
    (lambda s: s[P]["price"].update({"$ref": "#/$defs/other"}), False),
    (lambda s: s[P]["sessions"]["items"][P]["start"].update(format="date-time"), False),
])
def test_the_compatibility_rules(change, compatible: bool) -> None:
    new = json.loads(json.dumps(BASE))
    change(new)
    assert (incompatibilities(BASE, new) == []) is compatible, incompatibilities(BASE, new)


@pytest.mark.parametrize(("old", "new"), [
    ({"type": "object", "oneOf": [{"required": ["a"]}, {"required": ["b"]}]},
     {"type": "object", "oneOf": [{"required": ["a"]}, {"required": ["b"]}, {"required": ["c"]}]}),
    ({"type": "object", "properties": {"a": {}}, "additionalProperties": {"type": "string"}},
     {"type": "object", "properties": {"a": {}, "n": {"type": "number"}}, "additionalProperties": {"type": "string"}}),
    ({"properties": {"a": {}}, "patternProperties": {"^n": {"type": "string"}}},
     {"properties": {"a": {}, "n": {"type": "number"}}, "patternProperties": {"^n": {"type": "string"}}}),
    ({"items": True}, {"items": False}),
])
def test_branches_and_constrained_additions_are_incompatible(old, new) -> None:
    assert incompatibilities(old, new)


def test_every_committed_version_counts_not_only_the_latest() -> None:
    v0 = {"type": "object", "required": ["id", "url"], P: {"id": {}, "url": {}}}
    v1 = {"type": "object", "required": ["id"], P: {"id": {}}}                # drops url: incompatible
    v2 = {"type": "object", "required": ["id"], P: {"id": {}, "note": {}}}    # then an optional field
    assert incompatibilities(v1, v2) == []                                     # what the old test saw
    problems = against_history({"offer-state.v1.json": v2}, {"offer-state.v1.json": [v0, v1, v2]})
    assert any("/properties/url: removed" in p for p in problems["offer-state.v1.json"])


def test_a_deleted_or_renamed_schema_file_is_reported() -> None:
    schema = {"type": "object"}
    problems = against_history({"offer.v1.json": schema}, {"offer-state.v1.json": [schema], "offer.v1.json": []})
    assert list(problems) == ["offer-state.v1.json"]


def _commit(repo: Path, content: str) -> None:
    (repo / EVENTS).mkdir(parents=True, exist_ok=True)
    (repo / EVENTS / "x.v1.json").write_text(content)
    _git(repo, "add", "-A")
    _git(repo, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-m", "x")


def test_missing_history_fails_and_says_how_to_get_it(tmp_path: Path) -> None:
    with pytest.raises(pytest.fail.Exception, match="full `git clone`"):
        committed_versions(tmp_path)                                            # no repository
    full, shallow = tmp_path / "full", tmp_path / "shallow"
    _git(tmp_path, "init", "-q", str(full))
    _commit(full, '{"type": "object", "required": ["url"]}')
    _commit(full, '{"type": "object"}')
    assert len(committed_versions(full)["x.v1.json"]) == 2                      # a full clone is read
    _git(tmp_path, "clone", "-q", "--depth", "1", full.as_uri(), str(shallow))
    with pytest.raises(pytest.fail.Exception, match="shallow clone"):
        committed_versions(shallow)
    with pytest.raises(pytest.fail.Exception, match="not the top"):
        committed_versions(full / EVENTS)                                       # a subfolder of some repository
