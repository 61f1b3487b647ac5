"""The operators' command parses an open-Qcat file in a process of its own (openqcat.ParsedApart).
It must give the records the importing process would read itself, and it must never outlive its
importer: an importer killed outright (SIGKILL, an operator's
kill -9 or the kernel's OOM killer) cannot stop it, and with the queue to the importer full it
would otherwise wait for good."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
import time
from pathlib import Path

import orjson
import pytest

from services.catalog.openqcat import ParsedApart, Record, read
from tests.bench.catalog import write_openqcat

FIXTURES = Path(__file__).resolve().parents[3] / "shared" / "fixtures" / "openqcat"

IMPORTER = """
import sys, time
from pathlib import Path
from services.catalog.openqcat import ParsedApart
records = ParsedApart(Path(sys.argv[1]))()
next(records)
print("reading", flush=True)
time.sleep(120)
"""


def _children(pid: int) -> list[int]:
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            cmdline = (stat.parent / "cmdline").read_bytes()
        except OSError:
            continue
        if int(fields[1]) == pid and b"spawn_main" in cmdline:
            found.append(int(stat.parent.name))
    return found


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def _as_staged(record: Record | str) -> Record | str:
    """A record with its data as the import stages it (JSON)."""
    if isinstance(record, str):
        return record
    return dataclasses.replace(record, data=orjson.loads(orjson.dumps(record.data)))


@pytest.mark.parametrize("name", ["kursnet_export_real_anonymized.xml", "ba_update_example_legacy_excerpt.xml",
                                  "generated"])
def test_the_parsing_process_gives_the_records_read_in_process(name: str, tmp_path: Path) -> None:
    """The records (and each one's data) cross to the importer as tuples with JSON: the same mode,
    the same records in the same order, the broken ones with the same reasons."""
    path = FIXTURES / name
    if name == "generated":
        path = tmp_path / "gross.xml"
        write_openqcat(path, 1_200)  # several parts of the parsing process
    with path.open("rb") as stream:
        expected = [_as_staged(r) for r in read(stream)]
    apart = [_as_staged(r) for r in ParsedApart(path)()]
    assert apart == expected
    assert any(isinstance(r, Record) and r.data for r in apart)


def test_the_parsing_process_ends_when_its_importer_is_killed(tmp_path: Path) -> None:
    path = tmp_path / "gross.xml"
    write_openqcat(path, 20_000)  # far more records than the queue to the importer holds
    importer = subprocess.Popen([sys.executable, "-c", IMPORTER, str(path)], stdout=subprocess.PIPE, text=True)
    try:
        assert importer.stdout.readline().strip() == "reading"
        parsers = _children(importer.pid)
        assert len(parsers) == 1, parsers
        time.sleep(1)  # the queue fills meanwhile: the parser now waits for the importer
        assert _alive(parsers[0])
    finally:
        importer.kill()
        importer.wait()
    deadline = time.monotonic() + 15
    while _alive(parsers[0]) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not _alive(parsers[0]), "the parsing process outlived its importer"
