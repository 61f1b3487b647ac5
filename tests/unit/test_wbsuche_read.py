"""The national course search's JSON read into records: a course is read from its first termin that
can be read, not lost with a first one that cannot."""

import copy
import json
from pathlib import Path

from services.catalog import wbsuche

ANSWER = Path(__file__).resolve().parents[3] / "shared/fixtures/ba_wbsuche/ba_wbsuche_response_two_records.json"


def test_a_course_whose_first_termin_cannot_be_read_comes_from_its_next():
    answer = json.loads(ANSWER.read_text(encoding="utf-8"))
    good = answer["_embedded"]["termine"][1]
    broken = copy.deepcopy(good)
    broken["id"], broken["kostenWert"] = 1, "12,50"  # a German decimal comma: not a price this reads
    answer["_embedded"]["termine"] = [broken, good]
    records = [r for r in wbsuche.read(answer) if not isinstance(r, str)]
    course = str(good["angebot"]["id"])
    assert [(r.kind, r.product_id, r.error is None) for r in records if r.kind == "offer"] == [("offer", course, True)]
    assert [r.course_id for r in records if r.kind == "instance" and r.error is None] == [course]
    assert [(r.product_id, r.error.split(":")[0]) for r in records if r.error] == [("1", "unreadable termin")]
