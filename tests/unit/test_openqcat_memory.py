"""The open-Qcat reader's memory stays bounded whatever the file holds: lxml keeps what it parsed
until the reader frees it at a record's end, some 30 bytes for each byte of small elements, so a
record of millions of empty elements (or as much junk between records) would take gigabytes from
an upload of a few hundred MiB. Each file is read in a process of its own, whose peak memory is
the measure."""

from __future__ import annotations

import subprocess
import sys

import pytest

MEASURE = """
import io, resource, sys
from services.catalog import openqcat
head = b'<?xml version="1.0" encoding="UTF-8"?><OPENQCAT version="1.1"><NEW_CATALOG>'
junk = b"<a/>" * 2_000_000  # 7.6 MiB
xml = {
    "inside": head + b"<SERVICE><PRODUCT_ID>x</PRODUCT_ID>" + junk + b"</SERVICE></NEW_CATALOG></OPENQCAT>",
    "beside": head + junk + b"</NEW_CATALOG></OPENQCAT>",
}[sys.argv[1]]
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
try:
    answer = f"read {sum(1 for _ in openqcat.read(io.BytesIO(xml)))} records"
except openqcat.UnreadableFile as exc:
    answer = f"refused: {exc}"
print((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) // 1024)
print(answer)
"""


@pytest.mark.parametrize("where", ["inside", "beside"])
def test_millions_of_small_elements_are_refused_in_bounded_memory(where: str) -> None:
    grown, answer = subprocess.run([sys.executable, "-c", MEASURE, where], capture_output=True, text=True,
                                   check=True).stdout.split("\n", 1)
    assert answer.startswith("refused: more than 2 MiB without a SERVICE"), answer
    # unbounded, the 7.6 MiB of elements took 229 MiB ("inside") and 237 MiB ("beside")
    assert int(grown) < 100, f"the reader's peak memory grew by {grown} MiB"
