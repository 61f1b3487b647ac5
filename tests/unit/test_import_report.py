"""An import's report stays bounded whatever the file's size: its counts are complete, its lists not."""

from services.catalog.importing import LISTED, ImportReport


def test_warnings_are_listed_up_to_a_bound_as_rejections_are():
    """Every offer of a file claiming qcg funding that the rule does not allow is warned about: on a
    large file the list grew with it, and so did the answer and the importer's memory."""
    read, applied = ImportReport(mode="NEW_CATALOG"), ImportReport(mode="")
    for n in range(10 * LISTED + 5):
        applied.warn(f"P{n}", f"SERVICE[{n}]", "qcg not taken over: more than 120 hours")
        applied.reject(f"R{n}", f"SERVICE[{n}]", "no date")
    read.warn("P-read", "SERVICE[0]", "an early warning")
    read.merge(applied)
    report = read.as_dict()
    assert len(report["warnings"]) == len(report["rejected"]) == 10 * LISTED
    assert report["warnings"][0]["product_id"] == "P-read" and report["counts"]["rejected"] == 10 * LISTED + 5
