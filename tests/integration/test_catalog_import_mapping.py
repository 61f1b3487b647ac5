"""What an open-Qcat file says, as an offer: the instruction form by KURSNET's codes, a place given by
its town alone, the funding named, dated sessions in whatever order the export lists them; and what
an import must not do: publish again an offer that was withdrawn, or keep someone who may not import
for a provider waiting behind that provider's import. In-process, on a catalog database of the
test's own."""

from __future__ import annotations

import asyncio
import io

import asyncpg
import pytest

from runtime.db import tenant_transaction
from services.catalog import handlers, importing, openqcat, store
from services.catalog.domain import Acting
from services.catalog.handlers import Forbidden
from tests.integration.catalog_setup import act_as_the_import_for_a_new_provider
from tests.integration.test_catalog_import_order import _file, _instance

TENANT = "lueneburg"
ACTING = Acting(TENANT, "operator-cli", None)


def _course(product: str, *, form: str = '<INSTRUCTION_FORM type="101">Präsenz</INSTRUCTION_FORM>',
            location: str = "<ZIP>21335</ZIP><CITY>Lüneburg</CITY>", funding: str = "",
            start: str | None = "2031-02-01") -> str:
    dated = f"<SERVICE_DATE><START_DATE>{start}T00:00:00+01:00</START_DATE></SERVICE_DATE>" if start else ""
    place = f"<MODULE_COURSE><LOCATION>{location}</LOCATION></MODULE_COURSE>" if location else ""
    return (f'<SERVICE mode="new"><PRODUCT_ID>{product}</PRODUCT_ID><SERVICE_DETAILS><TITLE>Kurs {product}</TITLE>'
            f"<DESCRIPTION_LONG>Lehrgang {product}.</DESCRIPTION_LONG>{dated}<SERVICE_MODULE>"
            f'<EDUCATION type="true"><COURSE_ID>{product}</COURSE_ID>{place}<EXTENDED_INFO>{form}{funding}'
            "</EXTENDED_INFO></EDUCATION></SERVICE_MODULE></SERVICE_DETAILS></SERVICE>")


async def _import(conn: asyncpg.Connection, provider_id, xml: bytes, acting: Acting = ACTING) -> dict:
    return await importing.import_catalogue(conn, acting, provider_id, openqcat.reader(io.BytesIO(xml)))


async def _offers(conn: asyncpg.Connection, provider_id) -> dict[str, dict]:
    ids = [r["id"] for r in await conn.fetch("SELECT id FROM offers WHERE provider_id = $1", provider_id)]
    return {o["external_id"]: store.offer_state(o) for o in await store.get_offers(conn, ids)}


async def _events(conn: asyncpg.Connection, provider_id) -> int:
    return await conn.fetchval("SELECT count(*) FROM outbox WHERE aggregate_key IN"
                               " (SELECT id::text FROM offers WHERE provider_id = $1)", provider_id)


async def test_instruction_forms_by_kursnets_codes(catalog_pool: asyncpg.Pool) -> None:
    """The national search's code list (``uf``): 102 is a seminar on site, not distance learning (a
    radius search never found it); 201 a virtual classroom, online; 206 and 304, unknown before, fell
    to "presence", and 206 without a place was refused as a presence offer without one."""
    forms = {"102": "presence", "105": "presence", "201": "online", "206": "online", "301": "blended",
             "302": "hybrid", "303": "hybrid", "304": "blended", "401": "distance", "403": "distance"}
    services = [_course(f"C{code}", form=f'<INSTRUCTION_FORM type="{code}">x</INSTRUCTION_FORM>',
                        location="" if code[0] in "24" else "<ZIP>21335</ZIP><CITY>Lüneburg</CITY>")
                for code in forms]
    async with tenant_transaction(catalog_pool, TENANT) as conn:
        provider_id = await act_as_the_import_for_a_new_provider(conn, TENANT)
        report = await _import(conn, provider_id, _file(services))
        offers = await _offers(conn, provider_id)
    assert report["rejected"] == []
    assert {product[1:]: offer["format"] for product, offer in offers.items()} == forms


async def test_a_place_given_by_its_town_alone_gets_the_towns_postcode(catalog_pool: asyncpg.Pool) -> None:
    """Before, an empty postcode failed the session's place, and the whole offer was refused."""
    async with tenant_transaction(catalog_pool, TENANT) as conn:
        provider_id = await act_as_the_import_for_a_new_provider(conn, TENANT)
        report = await _import(conn, provider_id, _file([
            _course("T1", location="<STREET>Am Sande 1</STREET><CITY>Lüneburg</CITY>"),
            _course("T2", location="<CITY>Nirgendwo an der Heide</CITY>")]))
        offers = await _offers(conn, provider_id)
    place = offers["T1"]["sessions"][0]["location"]
    assert place["city"] == "Lüneburg" and place["zip"].startswith("213")  # Lüneburg's are 21335–21339
    assert abs(place["lat"] - 53.25) < 0.1 and abs(place["lon"] - 10.41) < 0.1
    assert "T2" not in offers
    assert [(r["product_id"], "Nirgendwo an der Heide" in r["reason"]) for r in report["rejected"]] == [("T2", True)]


async def test_an_aufstiegsstipendium_is_no_aufstiegs_bafoeg(catalog_pool: asyncpg.Pool) -> None:
    funding = {
        "S": '<FUNDING_TYPES_FEDERAL type="4">Aufstiegsstipendium der Stiftung Begabtenförderung (SBB)'
             "</FUNDING_TYPES_FEDERAL>",
        "B": '<FUNDING_TYPES_FEDERAL type="1">Aufstiegs-BAföG</FUNDING_TYPES_FEDERAL>',
        "M": '<FUNDING_TYPES_FEDERAL type="1">Meister-BAföG nach dem AFBG</FUNDING_TYPES_FEDERAL>',
    }
    async with tenant_transaction(catalog_pool, TENANT) as conn:
        provider_id = await act_as_the_import_for_a_new_provider(conn, TENANT)
        await _import(conn, provider_id, _file([_course(p, funding=f) for p, f in funding.items()]))
        offers = await _offers(conn, provider_id)
    assert {p: o["funding"]["aufstiegsbafoeg"] for p, o in offers.items()} == {"S": False, "B": True, "M": True}


async def test_the_same_dates_listed_in_another_order_change_nothing(catalog_pool: asyncpg.Pool) -> None:
    """An export need not list an offer's dated sessions in one order (the real KURSNET export lists
    them in neither date nor id order): the same dates again are no change and no event."""
    dates = [_instance("A-3", "A", "2031-05-01"), _instance("A-1", "A", "2031-02-01"),
             _instance("A-2", "A", "2031-03-01")]
    async with tenant_transaction(catalog_pool, TENANT) as conn:
        provider_id = await act_as_the_import_for_a_new_provider(conn, TENANT)
        await _import(conn, provider_id, _file([_course("A", start=None), *dates]))
        events = await _events(conn, provider_id)
        again = await _import(conn, provider_id, _file([_course("A", start=None), *reversed(dates)]))
        offers = await _offers(conn, provider_id)
        assert await _events(conn, provider_id) == events
    assert again["counts"] | {"unchanged": again["counts"]["unchanged"]} == {
        "created": 0, "updated": 0, "unchanged": 1, "deleted": 0, "rejected": 0} and not again["changed"]
    assert [s["start"] for s in offers["A"]["sessions"]] == ["2031-02-01", "2031-03-01", "2031-05-01"]


async def test_an_import_does_not_publish_a_withdrawn_offer_again(catalog_pool: asyncpg.Pool) -> None:
    """Withdrawn through the API (a network admin takes it off), then the nightly file still lists it:
    it stays withdrawn, as the API keeps it (a withdrawn offer cannot be changed), and the report says
    why. Before, the import published it again, with an event: back in search and in matching."""
    xml = _file([_course("K1"), _course("K2")])
    async with tenant_transaction(catalog_pool, TENANT) as conn:
        provider_id = await act_as_the_import_for_a_new_provider(conn, TENANT)
        await _import(conn, provider_id, xml)
        offers = await _offers(conn, provider_id)
        await handlers.withdraw_offer(conn, ACTING, offers["K1"]["id"])
        events = await _events(conn, provider_id)
        again = await _import(conn, provider_id, xml)
        after = await _offers(conn, provider_id)
        assert await _events(conn, provider_id) == events
    assert after["K1"]["status"] == "withdrawn" and after["K2"]["status"] == "published"
    assert [r["product_id"] for r in again["rejected"]] == ["K1"] and "withdrawn" in again["rejected"][0]["reason"]
    assert not again["changed"]


async def test_an_offer_the_import_withdrew_comes_back_when_a_file_lists_it_again(catalog_pool: asyncpg.Pool) -> None:
    """A course missing from one export (a season off) is withdrawn by that import; the next export
    that lists it publishes it again, under its PRODUCT_ID. Only a person's withdrawal is final."""
    async with tenant_transaction(catalog_pool, TENANT) as conn:
        provider_id = await act_as_the_import_for_a_new_provider(conn, TENANT)
        await _import(conn, provider_id, _file([_course("K1"), _course("K2")]))
        await _import(conn, provider_id, _file([_course("K2")]))  # NEW_CATALOG: K1 withdrawn
        await _import(conn, provider_id, _update([], deleted=("K2",)))  # UPDATE_CATALOG's DELETE: K2 withdrawn
        gone = await _offers(conn, provider_id)
        back = await _import(conn, provider_id, _file([_course("K1"), _course("K2")]))
        offers = await _offers(conn, provider_id)
    assert {p: o["status"] for p, o in gone.items()} == {"K1": "withdrawn", "K2": "withdrawn"}
    assert back["rejected"] == [] and sorted(back["updated"]) == ["K1", "K2"]
    assert {p: o["status"] for p, o in offers.items()} == {"K1": "published", "K2": "published"}
    assert {p: o["id"] for p, o in offers.items()} == {p: o["id"] for p, o in gone.items()}


async def test_dated_sessions_of_a_rejected_course_say_so(catalog_pool: asyncpg.Pool) -> None:
    broken = _course("X").replace("<TITLE>Kurs X</TITLE>", "<TITLE></TITLE>")
    async with tenant_transaction(catalog_pool, TENANT) as conn:
        provider_id = await act_as_the_import_for_a_new_provider(conn, TENANT)
        report = await _import(conn, provider_id, _file([broken, _instance("X-1", "X", "2031-02-01")]))
    reasons = {r["product_id"]: r["reason"] for r in report["rejected"]}
    assert "TITLE" in reasons["X"] and reasons["X-1"] == "its course X was rejected (see there)"


async def test_one_who_may_not_import_for_a_provider_is_refused_at_once_during_its_import(
        catalog_pool: asyncpg.Pool) -> None:
    """A provider's user posting a file for another provider, whose import is running: a 403 at once,
    not after waiting minutes behind that import (holding one of the process's import slots)."""
    async with tenant_transaction(catalog_pool, TENANT) as conn:
        provider_id = await act_as_the_import_for_a_new_provider(conn, TENANT)
        own_provider = await act_as_the_import_for_a_new_provider(conn, TENANT, "Eigener Träger")
    stranger = Acting(TENANT, "provider-user", frozenset({str(own_provider)}))
    running = await catalog_pool.acquire()
    tx = running.transaction()
    await tx.start()
    try:
        await running.execute(store.IMPORT_LOCK.format("pg_advisory_xact_lock"), str(provider_id))
        async with tenant_transaction(catalog_pool, TENANT) as conn:
            await store.set_acting(conn, stranger)
            with pytest.raises(Forbidden):
                await asyncio.wait_for(_import(conn, provider_id, _file([_course("Z")]), stranger), 5)
    finally:
        await tx.rollback()
        await catalog_pool.release(running)


def _update(new: list[str], deleted: tuple[str, ...] = ()) -> bytes:
    """An UPDATE_CATALOG delivery (a "Differenzlieferung"): DELETE, then NEW."""
    gone = "".join(f"<SERVICE><PRODUCT_ID>{p}</PRODUCT_ID></SERVICE>" for p in deleted)
    return (f'<?xml version="1.0" encoding="utf-8"?><OPENQCAT version="1.1"><HEADER/><UPDATE_CATALOG>'
            f"<DELETE>{gone}</DELETE><NEW>{''.join(new)}</NEW></UPDATE_CATALOG></OPENQCAT>").encode()


async def test_an_update_delivery_changes_what_it_names_and_keeps_the_rest(catalog_pool: asyncpg.Pool) -> None:
    """UPDATE_CATALOG creates or updates offers and dated sessions ("Bildungsangebote + Termine
    angelegt oder aktualisiert"), and its DELETE removes: a course sent again without its dated
    sessions keeps them; a dated session of a course of an earlier delivery is added to that course.
    Before, the course was left with the file's sessions only (or its own date), and a dated session
    of an earlier course was refused as naming no offer of the file."""
    async with tenant_transaction(catalog_pool, TENANT) as conn:
        provider_id = await act_as_the_import_for_a_new_provider(conn, TENANT)
        await _import(conn, provider_id, _file([
            _course("C", start=None), _instance("C-1", "C", "2031-02-01"), _instance("C-2", "C", "2031-03-01"),
            _course("D")]))

        renamed = await _import(conn, provider_id, _update([_course("C", start=None).replace("Kurs C", "Kurs C neu")]))
        offers = await _offers(conn, provider_id)
        assert renamed["counts"]["updated"] == 1 and renamed["rejected"] == []
        assert offers["C"]["title"] == "Kurs C neu"
        assert [s["external_id"] for s in offers["C"]["sessions"]] == ["C-1", "C-2"]

        added = _update([_instance("C-3", "C", "2031-04-01"), _instance("C-2", "C", "2031-03-15")], deleted=("C-1",))
        report = await _import(conn, provider_id, added)
        offers = await _offers(conn, provider_id)
        assert report["rejected"] == [] and report["counts"]["updated"] == 1
        assert [(s["external_id"], s["start"]) for s in offers["C"]["sessions"]] == [
            ("C-2", "2031-03-15"), ("C-3", "2031-04-01")]
        assert offers["C"]["title"] == "Kurs C neu" and offers["D"]["status"] == "published"

        events = await _events(conn, provider_id)
        again = await _import(conn, provider_id, _update([_instance("C-3", "C", "2031-04-01")]))
        assert not again["changed"] and again["counts"]["unchanged"] == 1
        assert await _events(conn, provider_id) == events

        # a course's only dated session moved: DELETE the old, NEW the new (refused before as "the
        # course's only date", and the merge would have kept it)
        await _import(conn, provider_id, _update([_course("E", start=None), _instance("E-1", "E", "2031-02-01")]))
        moved = await _import(conn, provider_id, _update([_instance("E-2", "E", "2031-06-01")], deleted=("E-1",)))
        # a course that had its own date (SERVICE_DATE) gets dated sessions: its own date goes
        dated = await _import(conn, provider_id, _update([_instance("D-1", "D", "2031-07-01")]))
        offers = await _offers(conn, provider_id)
        assert moved["rejected"] == [] and dated["rejected"] == []
        assert [(s["external_id"], s["start"]) for s in offers["E"]["sessions"]] == [("E-2", "2031-06-01")]
        assert [(s["external_id"], s["start"]) for s in offers["D"]["sessions"]] == [("D-1", "2031-07-01")]


async def test_the_national_searchs_pages_add_up(catalog_pool: asyncpg.Pool) -> None:
    """The national search answers in pages: one course's dated sessions can come on two. The second
    page adds its sessions to the course; before, it replaced them, and importing the pages in turn
    flipped the course back and forth, an event each time."""
    import json

    from services.catalog import wbsuche
    from tests.integration.test_catalog_import_order import WBSUCHE

    document = json.loads(WBSUCHE.read_bytes())
    first, *rest = document["_embedded"]["termine"]
    course = first["angebot"]["id"]
    second = json.loads(json.dumps(first)) | {"id": 999000111, "beginn": first.get("beginn")}
    second["beginn"] = None
    second["bemerkungZeit"] = "<p>Starttermine: 04.01.2032</p>"
    # the search gives form and Maßnahmenummer per termin: this one differs from the first's
    second["unterrichtsform"] = {"id": 101, "bezeichnung": "Präsenzveranstaltung"}
    second["massnahmeNummer"] = "955/4711/2032"
    pages = [{"_embedded": {"termine": [first]}}, {"_embedded": {"termine": [second]}}]
    async with tenant_transaction(catalog_pool, TENANT) as conn:
        provider_id = await act_as_the_import_for_a_new_provider(conn, TENANT)
        for page in (*pages, *pages):
            await importing.import_catalogue(conn, ACTING, provider_id, lambda p=page: wbsuche.read(p))
        offers = await _offers(conn, provider_id)
        events = await _events(conn, provider_id)
        for page in pages:
            await importing.import_catalogue(conn, ACTING, provider_id, lambda p=page: wbsuche.read(p))
        assert await _events(conn, provider_id) == events  # neither page is news any more
    offer = offers[str(course)]
    assert "2032-01-04" in [s["start"] for s in offer["sessions"]] and len(offer["sessions"]) > 1
    assert offer["format"] == "hybrid"  # as the course came first, not flipped by the second page
