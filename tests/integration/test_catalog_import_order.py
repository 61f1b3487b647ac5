"""An open-Qcat file is applied while it is read: each offer once a few records after it are staged
(services/catalog/importing.py, ``WINDOW``). Whatever the order of the file, the result must be the
one of applying it only once it is read whole: a dated instance far after its offer, a PRODUCT_ID
twice far apart, and UPDATE_CATALOG make the import read the file again and apply it that way. Here
with a window of two records, the file read and its offers applied two at a time, in-process on a
catalog database of the test's own; each file is imported for two providers, read-while-applying
and whole-first, and the two compared."""

from __future__ import annotations

import asyncio
import io
import json
import uuid
from pathlib import Path

import asyncpg
import pytest

from contracts import OFFER_PUBLISHED, OFFER_UPDATED, OFFER_WITHDRAWN
from runtime.db import tenant_transaction
from services.catalog import handlers, importing, openqcat, store, wbsuche
from services.catalog.domain import Acting
from tests.integration.catalog_setup import act_as_the_import_for_a_new_provider

TENANT = "lueneburg"
ACTING = Acting(TENANT, "operator-cli", None)


def _offer(product: str, title: str, start: str | None = None) -> str:
    dated = (f"<SERVICE_DATE><START_DATE>{start}T00:00:00+01:00</START_DATE></SERVICE_DATE>" if start else "")
    return (f'<SERVICE mode="new"><PRODUCT_ID>{product}</PRODUCT_ID><SERVICE_DETAILS><TITLE>{title}</TITLE>'
            f'<DESCRIPTION_LONG>Lehrgang {title}.</DESCRIPTION_LONG>{dated}<SERVICE_MODULE><EDUCATION type="true">'
            f'<COURSE_ID>{product}</COURSE_ID><MODULE_COURSE><LOCATION><ZIP>21335</ZIP><CITY>Lüneburg</CITY>'
            '</LOCATION></MODULE_COURSE></EDUCATION></SERVICE_MODULE></SERVICE_DETAILS></SERVICE>')


def _instance(product: str, course: str, start: str) -> str:
    return (f'<SERVICE mode="new"><PRODUCT_ID>{product}</PRODUCT_ID><SERVICE_DETAILS><TITLE/><SERVICE_DATE>'
            f'<START_DATE>{start}T00:00:00+01:00</START_DATE></SERVICE_DATE><SERVICE_MODULE>'
            f'<EDUCATION type="false"><COURSE_ID>{course}</COURSE_ID><MODULE_COURSE><LOCATION><ZIP>59821</ZIP>'
            '<CITY>Arnsberg</CITY></LOCATION></MODULE_COURSE></EDUCATION></SERVICE_MODULE></SERVICE_DETAILS></SERVICE>')


def _file(services: list[str], mode: str = "NEW_CATALOG") -> bytes:
    body = "".join(services)
    if mode == "UPDATE_CATALOG":
        body = f"<DELETE/><NEW>{body}</NEW>"
    return (f'<?xml version="1.0" encoding="utf-8"?><OPENQCAT version="1.1"><HEADER/><{mode}>{body}</{mode}>'
            "</OPENQCAT>").encode()


FILLERS = [_offer(f"F{n}", f"Füllkurs {n}", "2031-01-10") for n in range(4)]
FILES = {
    "instances right after their offer": (_file(
        [_offer("A", "Schweißen MAG"), _instance("A-1", "A", "2031-02-01"), _instance("A-2", "A", "2031-03-01"),
         _offer("B", "Gabelstapler"), _instance("B-1", "B", "2031-02-15"), *FILLERS]), 1),
    "an instance before its offer": (_file(
        [_instance("A-1", "A", "2031-02-01"), _offer("A", "Schweißen MAG"), *FILLERS]), 1),
    "an instance far after its offer": (_file(
        [_offer("A", "Schweißen MAG"), _instance("A-1", "A", "2031-02-01"), *FILLERS,
         _instance("A-2", "A", "2031-04-01")]), 2),
    "a PRODUCT_ID twice, far apart": (_file(
        [_offer("A", "Schweißen MAG", "2031-02-01"), *FILLERS, _offer("A", "Schweißen WIG", "2031-03-01")]), 2),
    "a dated instance's PRODUCT_ID twice": (_file(
        [_offer("A", "Schweißen MAG", "2031-02-01"), _instance("S1", "A", "2031-02-15"), *FILLERS,
         _instance("S1", "A", "2031-03-15"), _offer("B", "Gabelstapler", "2031-02-01"),
         _instance("S1", "B", "2031-04-15")]), 2),
    "an instance naming no offer": (_file(
        [_offer("A", "Schweißen MAG", "2031-02-01"), *FILLERS, _instance("X-1", "X", "2031-02-01")]), 1),
    "UPDATE_CATALOG": (_file([_offer("A", "Schweißen MAG", "2031-02-01"), *FILLERS], "UPDATE_CATALOG"), 2),
}


@pytest.fixture(autouse=True)
def _small_batches(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(importing, "READ_BATCH", 2)
    monkeypatch.setattr(importing, "BATCH", 2)


async def _import(pool: asyncpg.Pool, xml: bytes, window: int | None) -> tuple[dict, dict, int, int]:
    """The report, the provider's offers as stored (title and dated sessions by PRODUCT_ID), its offer
    events in the outbox, and how often the file was read."""
    reads = 0
    stream = io.BytesIO(xml)

    def records():
        nonlocal reads
        reads += 1
        return openqcat.reader(stream)()

    async with tenant_transaction(pool, TENANT) as conn:
        provider_id = await act_as_the_import_for_a_new_provider(conn, TENANT)
        report = await importing.import_catalogue(conn, ACTING, provider_id, records, window=window)
        offers = {row["external_id"]: (row["title"], row["status"], [s["external_id"] for s in row["sessions"]])
                  for row in await store.get_offers(conn, [r["id"] for r in await conn.fetch(
                      "SELECT id FROM offers WHERE provider_id = $1", provider_id)])}
        events = await conn.fetchval(
            "SELECT count(*) FROM outbox WHERE aggregate_key IN (SELECT id::text FROM offers WHERE provider_id = $1)",
            provider_id)
    return report, offers, events, reads


@pytest.mark.parametrize("case", list(FILES))
async def test_applied_while_read_or_once_read_whole_the_same(catalog_pool: asyncpg.Pool, case: str) -> None:
    xml, readings = FILES[case]
    streamed, streamed_offers, streamed_events, reads = await _import(catalog_pool, xml, window=2)
    whole, whole_offers, whole_events, once = await _import(catalog_pool, xml, window=None)
    assert once == 1 and reads == readings, case
    assert streamed == whole, case
    assert streamed_offers == whole_offers and streamed_events == whole_events == len(whole_offers), case
    assert whole["counts"]["created"] == len(whole_offers) >= 4  # the comparison was over imported offers


async def test_an_offer_gets_every_dated_instance_however_far_after_it(catalog_pool: asyncpg.Pool) -> None:
    _, offers, _, _ = await _import(catalog_pool, FILES["an instance far after its offer"][0], window=2)
    assert offers["A"][2] == ["A-1", "A-2"]


async def test_a_product_id_twice_is_refused_in_both_copies(catalog_pool: asyncpg.Pool) -> None:
    report, offers, _, _ = await _import(catalog_pool, FILES["a PRODUCT_ID twice, far apart"][0], window=2)
    assert "A" not in offers
    assert [r["product_id"] for r in report["rejected"]] == ["A", "A"]


KURSNET = Path(__file__).resolve().parents[3] / "shared/fixtures/openqcat/kursnet_export_real_anonymized.xml"
WBSUCHE = KURSNET.parents[1] / "ba_wbsuche/ba_wbsuche_response_two_records.json"


async def test_each_event_carries_the_offer_as_it_reads_back(catalog_pool: asyncpg.Pool) -> None:
    """An import's events are built from what it writes, not read back: they must say what a read
    gives. The real KURSNET export (prices, places, dated instances), then a change of it."""
    first = KURSNET.read_bytes()
    changed = first.replace(b"<TITLE>Umschulung", b"<TITLE>Neue Umschulung", 1)
    assert changed != first
    async with tenant_transaction(catalog_pool, TENANT) as conn:
        provider_id = await act_as_the_import_for_a_new_provider(conn, TENANT)
        await conn.execute("INSERT INTO network_sharing (tenant_id, networks) VALUES ($1, '{hellweg-hochsauerland}')"
                           " ON CONFLICT (tenant_id) DO NOTHING", TENANT)
        for xml, expected in ((first, {"created": 2}), (changed, {"updated": 1, "unchanged": 1})):
            report = await importing.import_catalogue(conn, ACTING, provider_id, openqcat.reader(io.BytesIO(xml)))
            assert {k: v for k, v in report["counts"].items() if v} == expected
        events = await conn.fetch(
            "SELECT event_type, aggregate_key, payload FROM outbox WHERE aggregate_key IN"
            " (SELECT id::text FROM offers WHERE provider_id = $1) ORDER BY id", provider_id)
        assert [e["event_type"] for e in events] == [OFFER_PUBLISHED, OFFER_PUBLISHED, OFFER_UPDATED]
        for event in events:
            state = json.loads(event["payload"])
            if event is events[-1] or event["aggregate_key"] != events[-1]["aggregate_key"]:
                read = store.offer_state(await store.get_offer(conn, uuid.UUID(event["aggregate_key"])))
                assert state == read
        assert state["version"] == 2 and state["title"].startswith("Neue Umschulung")
        assert state["visibility"]["networks"] == ["hellweg-hochsauerland"]
        assert any(s["location"] for s in state["sessions"]) and state["price_eur"]


async def test_a_new_catalog_withdraws_what_it_no_longer_lists(catalog_pool: asyncpg.Pool) -> None:
    """NEW_CATALOG is the provider's whole catalogue: its offers the next delivery leaves out are
    withdrawn (here in batches of two), each with an OfferWithdrawn event saying so."""
    full = _file([_offer(f"K{n}", f"Kurs {n}", "2031-05-04") for n in range(5)])
    shrunk = _file([_offer("K0", "Kurs 0", "2031-05-04")])
    async with tenant_transaction(catalog_pool, TENANT) as conn:
        provider_id = await act_as_the_import_for_a_new_provider(conn, TENANT)
        await importing.import_catalogue(conn, ACTING, provider_id, openqcat.reader(io.BytesIO(full)))
        report = await importing.import_catalogue(conn, ACTING, provider_id, openqcat.reader(io.BytesIO(shrunk)))
        assert report["counts"]["unchanged"] == 1 and sorted(report["deleted"]) == ["K1", "K2", "K3", "K4"]
        status = dict(await conn.fetch("SELECT external_id, status FROM offers WHERE provider_id = $1", provider_id))
        assert status == {"K0": "published", "K1": "withdrawn", "K2": "withdrawn", "K3": "withdrawn",
                          "K4": "withdrawn"}
        withdrawn = await conn.fetch(
            "SELECT o.external_id, x.payload FROM outbox x JOIN offers o ON x.aggregate_key = o.id::text"
            " WHERE o.provider_id = $1 AND x.event_type = $2", provider_id, OFFER_WITHDRAWN)
        assert sorted(w["external_id"] for w in withdrawn) == ["K1", "K2", "K3", "K4"]
        assert all(json.loads(w["payload"])["status"] == "withdrawn" and json.loads(w["payload"])["version"] == 2
                   for w in withdrawn)


async def test_an_offer_withdrawn_while_the_import_runs_stays_withdrawn(catalog_pool: asyncpg.Pool,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """The provider withdraws an offer through the API after the import has read it and before it
    writes it. Before, the import wrote over the withdrawal (the offer published again, its event an
    update) unnoticed; now it leaves the offer withdrawn and reports it."""
    async with tenant_transaction(catalog_pool, TENANT) as conn:
        provider_id = await act_as_the_import_for_a_new_provider(conn, TENANT)
        await importing.import_catalogue(conn, ACTING, provider_id, openqcat.reader(io.BytesIO(
            _file([_offer("A", "Schweißen MAG", "2031-02-01"), *FILLERS]))))
        offer_id = await conn.fetchval("SELECT id FROM offers WHERE provider_id = $1 AND external_id = 'A'",
                                       provider_id)
    read_batch = importing._read_batch

    async def withdrawn_after_the_read(conn, provider, after, upto, delta):
        rows, existing, kept = await read_batch(conn, provider, after, upto, delta)
        if "A" in existing:  # the window: the import has decided on A as it read it
            async with tenant_transaction(catalog_pool, TENANT) as other:
                await store.set_acting(other, ACTING)
                await handlers.withdraw_offer(other, ACTING, offer_id, if_match=existing["A"]["version"])
        return rows, existing, kept

    monkeypatch.setattr(importing, "_read_batch", withdrawn_after_the_read)
    changed = _file([_offer("A", "Schweißen MAG und WIG", "2031-02-01"), *FILLERS])
    async with tenant_transaction(catalog_pool, TENANT) as conn:
        await store.set_acting(conn, ACTING)
        report = await importing.import_catalogue(conn, ACTING, provider_id, openqcat.reader(io.BytesIO(changed)))
        row = await conn.fetchrow("SELECT status, title, version FROM offers WHERE id = $1", offer_id)
        events = [r["event_type"] for r in await conn.fetch(
            "SELECT event_type FROM outbox WHERE aggregate_key = $1 ORDER BY id", str(offer_id))]
    assert dict(row) == {"status": "withdrawn", "title": "Schweißen MAG", "version": 2}
    assert events == [OFFER_PUBLISHED, OFFER_WITHDRAWN]  # nothing after the withdrawal
    assert report["counts"]["updated"] == 0 and "A" not in report["updated"]
    assert [(r["product_id"], r["reason"].split(";")[0]) for r in report["rejected"]] == [
        ("A", "changed by someone else while the import ran")]


async def _provider_import(pool: asyncpg.Pool, provider_id: uuid.UUID, xml: bytes) -> dict:
    async with tenant_transaction(pool, TENANT) as conn:
        await store.set_acting(conn, ACTING)
        return await importing.import_catalogue(conn, ACTING, provider_id, openqcat.reader(io.BytesIO(xml)))


async def test_a_record_broken_in_the_file_keeps_its_offer_on_a_new_catalogue(catalog_pool: asyncpg.Pool) -> None:
    """NEW_CATALOG withdraws what the file no longer lists. A record the file lists but that cannot
    be read (a date that is not one) is reported, and its offer stays as it was. Before, it counted
    as not listed, and a typo took a published course down."""
    async with tenant_transaction(catalog_pool, TENANT) as conn:
        provider_id = await act_as_the_import_for_a_new_provider(conn, TENANT)
    await _provider_import(catalog_pool, provider_id, _file([_offer("A", "Schweißen MAG", "2031-02-01"), *FILLERS]))
    typo = _offer("A", "Schweißen MAG", "2031-02-01").replace("2031-02-01T00:00:00", "2031-02-31T00:00:00")
    report = await _provider_import(catalog_pool, provider_id, _file([typo, *FILLERS]))
    assert [r["product_id"] for r in report["rejected"]] == ["A"] and report["deleted"] == []
    async with tenant_transaction(catalog_pool, TENANT) as conn:
        assert await conn.fetchval("SELECT status FROM offers WHERE external_id = 'A'") == "published"


async def test_ids_no_offer_can_have_are_reported_not_a_crash(catalog_pool: asyncpg.Pool) -> None:
    """A PRODUCT_ID longer than an external_id may be (9,000 characters broke the staging table's
    index), a national search termin whose id holds a NUL (PostgreSQL cannot store it) or whose
    start lies in the year 9999 (past what a date holds here): each failed the whole import with a
    500. Each record is now reported and the rest imported."""
    async with tenant_transaction(catalog_pool, TENANT) as conn:
        provider_id = await act_as_the_import_for_a_new_provider(conn, TENANT)
    report = await _provider_import(catalog_pool, provider_id, _file([
        _offer("L" * 9000, "Zu lang", "2031-02-01"), _offer("A", "Schweißen MAG", "2031-02-01")]))
    assert report["counts"]["created"] == 1
    assert [(r["product_id"], r["reason"]) for r in report["rejected"]] == [
        ("L" * 200, "PRODUCT_ID is longer than 200 characters")]
    answer = json.loads(WBSUCHE.read_text(encoding="utf-8"))
    nul, late = answer["_embedded"]["termine"]
    nul["id"] = "17\x009752566"
    late["beginn"] = 253402300799999
    async with tenant_transaction(catalog_pool, TENANT) as conn:
        await store.set_acting(conn, ACTING)
        report = await importing.import_catalogue(conn, ACTING, provider_id, lambda: wbsuche.read(answer))
    reasons = {(r["product_id"].split("-")[0], r["reason"].split(":")[0]) for r in report["rejected"]}
    assert reasons == {("17\x009752566", "PRODUCT_ID"), ("184336343", "unreadable termin"),
                       ("14363439", "sessions"), ("14222269", "sessions")}  # the two courses, left with no date


async def test_the_same_file_imported_twice_at_once_is_applied_once(catalog_pool: asyncpg.Pool) -> None:
    """A client retrying an import that seemed to hang: the second waits for the first and finds its
    offers. Before, both inserted them, and the second failed on the unique key (a 500)."""
    async with tenant_transaction(catalog_pool, TENANT) as conn:
        provider_id = await act_as_the_import_for_a_new_provider(conn, TENANT)
        await store.hold_sharing(conn, TENANT)  # the network's row exists: its making does not serialise them
    xml = _file([_offer("A", "Schweißen MAG", "2031-02-01"), *FILLERS])
    first, second = await asyncio.gather(*(_provider_import(catalog_pool, provider_id, xml) for _ in range(2)))
    assert sorted((r["counts"]["created"], r["counts"]["unchanged"]) for r in (first, second)) == [(0, 5), (5, 0)]


async def test_a_dated_instance_twice_is_refused_in_every_copy(catalog_pool: asyncpg.Pool) -> None:
    """Before, each copy gave its date: the course had the same session twice, and another course it too."""
    report, offers, _, _ = await _import(catalog_pool, FILES["a dated instance's PRODUCT_ID twice"][0], window=2)
    assert (offers["A"][2], offers["B"][2]) == (["A"], ["B"])  # their own dates only
    assert [r["product_id"] for r in report["rejected"]] == ["S1", "S1", "S1"]


def _update(deleted: list[str], services: list[str]) -> bytes:
    gone = "".join(f"<SERVICE><PRODUCT_ID>{p}</PRODUCT_ID></SERVICE>" for p in deleted)
    return (f'<?xml version="1.0" encoding="utf-8"?><OPENQCAT version="1.1"><HEADER/><UPDATE_CATALOG>'
            f'<DELETE>{gone}</DELETE><NEW>{"".join(services)}</NEW></UPDATE_CATALOG></OPENQCAT>').encode()


async def test_delete_keeps_a_courses_only_date_and_a_draft_stays_quiet(catalog_pool: asyncpg.Pool) -> None:
    """UPDATE_CATALOG's DELETE of a dated instance: where it is the course's only date the course
    would have none (before, it stayed published without a date); it is refused and reported. A
    draft that loses one of its dates stays a draft and announces nothing (before: an update event)."""
    async with tenant_transaction(catalog_pool, TENANT) as conn:
        provider_id = await act_as_the_import_for_a_new_provider(conn, TENANT)
        await store.set_acting(conn, ACTING)
        for status, product, dates in (("published", "A", ["A-1"]), ("draft", "D", ["D-1", "D-2"])):
            await importing.import_catalogue(conn, ACTING, provider_id, openqcat.reader(io.BytesIO(_file(
                [_offer(product, f"Kurs {product}"), *(_instance(d, product, "2031-02-01") for d in dates)],
                "UPDATE_CATALOG"))), status=status)
        events_before = await conn.fetchval("SELECT count(*) FROM outbox")
        report = await importing.import_catalogue(conn, ACTING, provider_id, openqcat.reader(io.BytesIO(
            _update(["A-1", "D-2"], [_offer("F0", "Füllkurs 0", "2031-01-10")]))), status="draft")
        sessions = {r["external_id"]: r["n"] for r in await conn.fetch(
            "SELECT o.external_id, count(*) AS n FROM offer_sessions s JOIN offers o ON o.id = s.offer_id"
            " WHERE o.provider_id = $1 GROUP BY 1", provider_id)}
        events = await conn.fetchval("SELECT count(*) FROM outbox") - events_before
    assert (sessions["A"], sessions["D"]) == (1, 1)
    assert [(r["product_id"], r["reason"]) for r in report["rejected"]] == [
        ("A-1", "the course's only date is not removed: DELETE the course itself")]
    assert report["deleted"] == ["D-2"] and events == 0  # F0 is a new draft: no event either
