"""open-Qcat 1.1 import of the real fixtures: the KURSNET export imports completely and a second
import changes nothing and publishes nothing; the BA's legacy update example imports its valid
records and reports each broken one; hostile XML is refused."""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import sys
import threading
import time
import xml.etree.ElementTree as ET
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import asyncpg
import httpx
import pytest
from kafka import KafkaConsumer

from contracts import OFFERS_TOPIC
from services.catalog import store
from tests.bench.catalog import write_openqcat
from tests.platform import Platform, wait_until

FIXTURES = Path(__file__).resolve().parents[3] / "shared" / "fixtures" / "openqcat"
KURSNET = FIXTURES / "kursnet_export_real_anonymized.xml"
LEGACY = FIXTURES / "ba_update_example_legacy_excerpt.xml"
USER = "westfaelisches-ruhrgebiet-provider"


def _provider(platform: Platform, name: str) -> dict:
    with platform.client("catalog", USER) as api:
        return api.post("/v1/providers", json={"name": name, "emails": ["import@anbieter.example"]}).json()


def _import(platform: Platform, provider_id: str, body: bytes, user: str = USER):
    with platform.client("catalog", user) as api:
        return api.post("/v1/imports/openqcat", params={"provider_id": provider_id}, content=body,
                        headers={"Content-Type": "application/xml"}, timeout=60)


def _offer_events(platform: Platform, offer_ids: set[str]) -> int:
    consumer = KafkaConsumer(OFFERS_TOPIC, bootstrap_servers=platform.config.bootstrap, group_id=None,
                             auto_offset_reset="earliest", consumer_timeout_ms=1000)
    count = sum(1 for r in consumer if (r.key or b"").decode(errors="replace") in offer_ids)
    consumer.close()
    return count


def _expected_instances() -> dict[str, dict]:
    """The dated instances as the file states them (read with the standard library, trusted input)."""
    found = {}
    for service in ET.parse(KURSNET).getroot().iter("SERVICE"):
        education = service.find("SERVICE_DETAILS/SERVICE_MODULE/EDUCATION")
        if education.get("type") == "false":
            location = education.find("MODULE_COURSE/LOCATION")
            found[service.findtext("PRODUCT_ID")] = {
                "course": education.findtext("COURSE_ID"),
                "start": service.findtext("SERVICE_DETAILS/SERVICE_DATE/START_DATE")[:10],
                "end": service.findtext("SERVICE_DETAILS/SERVICE_DATE/END_DATE")[:10],
                "zip": location.findtext("ZIP"), "city": location.findtext("CITY"),
                "price": float(service.findtext("SERVICE_PRICE_DETAILS/SERVICE_PRICE/PRICE_AMOUNT")),
            }
    return found


@pytest.fixture(scope="module")
def kursnet(platform: Platform) -> dict:
    provider = _provider(platform, "cdemy GmbH Code Academy")
    first = _import(platform, provider["id"], KURSNET.read_bytes())
    assert first.status_code == 200, first.text
    return {"provider": provider, "report": first.json()}


def test_kursnet_export_imports_completely(platform: Platform, kursnet: dict) -> None:
    report = kursnet["report"]
    assert report["mode"] == "NEW_CATALOG"
    assert (report["offers_in_file"], report["sessions_in_file"]) == (2, 15)
    assert sorted(report["created"]) == ["375057134", "375057138"] and report["rejected"] == []
    with platform.client("catalog", USER) as api:
        offers = {o["external_id"]: o for o in api.get(
            "/v1/offers", params={"provider_id": kursnet["provider"]["id"], "page_size": 10}).json()["items"]}
    retraining = offers["375057134"]
    assert retraining["title"] == ("Umschulung Fachinformatiker Anwendungsentwicklung / "
                                   "Fachinformatikerin Anwendungsentwicklung")
    assert retraining["price_eur"] == 35464.5 and retraining["format"] == "presence"
    assert retraining["qualification"] == "retraining" and retraining["funding"]["bildungsgutschein"]
    assert retraining["occupation_codes"] == ["43412"]
    expected = _expected_instances()
    got = {s["external_id"]: s for s in retraining["sessions"]}
    assert set(got) == set(expected) and len(got) == 15
    for product_id, want in expected.items():
        session = got[product_id]
        assert (session["start"], session["end"]) == (want["start"], want["end"])
        assert (session["location"]["zip"], session["location"]["city"]) == (want["zip"], want["city"])
        assert session["price_eur"] == want["price"]
        assert session["schedule"] in ("full_time", "part_time")
    kassel = next(s for s in got.values() if s["location"]["city"] == "Kassel")["location"]
    assert abs(kassel["lat"] - 51.3) < 0.1 and abs(kassel["lon"] - 9.5) < 0.15  # geocoded offline
    prep = offers["375057138"]  # no dated instances: its own SERVICE_DATE is its one session
    assert prep["format"] == "online" and prep["price_eur"] == 15666
    assert [(s["start"], s["end"]) for s in prep["sessions"]] == [("2026-11-06", "2027-06-25")]


def test_second_import_changes_nothing_and_publishes_nothing(platform: Platform, kursnet: dict) -> None:
    with platform.client("catalog", USER) as api:
        ids = {o["id"] for o in api.get("/v1/offers", params={"provider_id": kursnet["provider"]["id"]}
                                        ).json()["items"]}
    time.sleep(1.5)  # the relay publishes the first import's events; count them once they are out
    before = _offer_events(platform, ids)
    assert before == 2
    second = _import(platform, kursnet["provider"]["id"], KURSNET.read_bytes()).json()
    assert second["changed"] is False
    assert second["counts"] == {"created": 0, "updated": 0, "unchanged": 2, "deleted": 0, "rejected": 0}
    time.sleep(1.5)
    assert _offer_events(platform, ids) == before


def test_legacy_update_imports_valid_records_and_reports_broken_ones(platform: Platform) -> None:
    provider = _provider(platform, "Legacy-Bildungswerk")
    response = _import(platform, provider["id"], LEGACY.read_bytes())
    assert response.status_code == 200, response.text
    report = response.json()
    assert report["mode"] == "UPDATE_CATALOG"
    rejected = {r["product_id"]: r for r in report["rejected"]}
    assert {"1297399", "vg4983720"} <= set(rejected)  # dated instances without a date
    assert "SERVICE_DATE" in rejected["1297399"]["reason"] and rejected["1297399"]["where"].startswith("line ")
    assert "kursSerie2378170" in rejected and "no date" in rejected["kursSerie2378170"]["reason"]
    assert {"1297422", "1297394", "1297396", "1297400", "vg4983717"} <= set(report["created"])
    assert report["counts"]["created"] == len(report["created"]) and report["counts"]["created"] >= 8
    with platform.client("catalog", USER) as api:
        offers = {o["external_id"]: o for o in api.get(
            "/v1/offers", params={"provider_id": provider["id"], "page_size": 50}).json()["items"]}
    english = offers["1297422"]
    assert english["title"] == "Wirtschaftsenglisch für Fortgeschrittene"
    assert sorted(s["external_id"] for s in english["sessions"]) == ["1297389", "1297390"]
    assert offers["vg4983717"]["format"] == "presence"  # code 1, not the Java object string's "online"
    again = _import(platform, provider["id"], LEGACY.read_bytes()).json()  # DELETE then NEW: same state
    assert again["changed"] is False and again["counts"]["rejected"] == report["counts"]["rejected"]


HOSTILE = {
    "billion laughs": b'<?xml version="1.0"?><!DOCTYPE l [<!ENTITY a "aaaaaaaaaa">'
                      + b"".join(b'<!ENTITY %s "%s">' % (chr(98 + i).encode(), ("&" + chr(97 + i) + ";").encode() * 10)
                                 for i in range(9))
                      + b']><OPENQCAT><NEW_CATALOG><SERVICE><PRODUCT_ID>&j;</PRODUCT_ID></SERVICE>'
                        b'</NEW_CATALOG></OPENQCAT>',
    "external entity": b'<?xml version="1.0"?><!DOCTYPE x [<!ENTITY e SYSTEM "file:///etc/passwd">]>'
                       b'<OPENQCAT><NEW_CATALOG><SERVICE><PRODUCT_ID>&e;</PRODUCT_ID></SERVICE></NEW_CATALOG></OPENQCAT>',
    "deep nesting": b"<OPENQCAT><NEW_CATALOG>" + b"<a>" * 5000 + b"</a>" * 5000 + b"</NEW_CATALOG></OPENQCAT>",
    "not xml": b"Dies ist kein XML.",
    # millions of tiny elements, which lxml holds at some 30 bytes a byte until their record ends
    "a SERVICE of 2,000,000 elements": b"<OPENQCAT><NEW_CATALOG><SERVICE><PRODUCT_ID>x</PRODUCT_ID>"
                                       + b"<a/>" * 2_000_000 + b"</SERVICE></NEW_CATALOG></OPENQCAT>",
    "2,000,000 elements beside the SERVICEs": b"<OPENQCAT><NEW_CATALOG>" + b"<a/>" * 2_000_000
                                              + b"</NEW_CATALOG></OPENQCAT>",
}


@pytest.mark.parametrize("attack", list(HOSTILE))
def test_hostile_xml_is_refused_and_changes_nothing(platform: Platform, attack: str) -> None:
    provider = _provider(platform, f"Ziel {attack}")
    started = time.monotonic()
    response = _import(platform, provider["id"], HOSTILE[attack])
    assert response.status_code == 422, response.text
    assert time.monotonic() - started < 10  # refused, not expanded (a generous bound, not a benchmark)
    assert "/etc/passwd" not in response.text and "root:" not in response.text
    with platform.client("catalog", USER) as api:
        assert api.get("/v1/offers", params={"provider_id": provider["id"]}).json()["items"] == []


def _peak_rss_mib(pid: int) -> float:
    """The process's peak resident memory so far (VmHWM), in MiB."""
    status = Path(f"/proc/{pid}/status").read_text()
    return int(re.search(r"VmHWM:\s+(\d+) kB", status).group(1)) / 1024


def test_a_1_gb_stream_is_refused_with_bounded_memory(platform: Platform) -> None:
    provider = _provider(platform, "Ziel eines endlosen Stroms")
    catalog = platform.stack.processes["catalog"].pid
    before = _peak_rss_mib(catalog)
    record = b"<SERVICE><PRODUCT_ID>x</PRODUCT_ID><SERVICE_DETAILS><TITLE>y</TITLE></SERVICE_DETAILS></SERVICE>"
    chunk = record * (2**20 // len(record))
    sent = 0

    def endless():  # 1 GiB of well-formed records that never close the catalogue
        nonlocal sent
        yield b'<?xml version="1.0" encoding="UTF-8"?><OPENQCAT><NEW_CATALOG>'
        while sent < 2**30:
            sent += len(chunk)
            yield chunk

    started = time.monotonic()
    with platform.client("catalog", USER) as api:
        try:
            response = api.post("/v1/imports/openqcat", params={"provider_id": provider["id"]}, content=endless(),
                                headers={"Content-Type": "application/xml"}, timeout=120)
            status = response.status_code
        except (httpx.WriteError, httpx.RemoteProtocolError):
            status = None  # the server answered and closed while we were still sending
    elapsed = time.monotonic() - started
    assert status in (413, None), status
    assert sent < 2**30, "the whole gigabyte was read"
    assert _peak_rss_mib(catalog) - before < 100, "the stream was held in memory"
    with platform.client("catalog", USER) as api:
        assert api.get("/v1/offers", params={"provider_id": provider["id"]}).json()["items"] == []
        assert api.get("/healthz").status_code == 200  # and the catalog still serves
    print(f"refused after {sent / 2**20:.0f} MiB in {elapsed:.1f} s")


def test_only_those_acting_for_the_provider_may_import(platform: Platform, kursnet: dict) -> None:
    other_user = "westfaelisches-ruhrgebiet-provider2"
    response = _import(platform, kursnet["provider"]["id"], KURSNET.read_bytes(), user=other_user)
    assert response.status_code == 403
    assert _import(platform, kursnet["provider"]["id"], KURSNET.read_bytes(),
                   user="lueneburg-provider").status_code == 404
    with platform.client("catalog", "westfaelisches-ruhrgebiet-employer") as api:
        assert api.post("/v1/imports/openqcat", params={"provider_id": kursnet["provider"]["id"]},
                        content=KURSNET.read_bytes()).status_code == 403


WBSUCHE = FIXTURES.parent / "ba_wbsuche" / "ba_wbsuche_response_two_records.json"


def test_national_course_search_json_imports_as_a_second_path(platform: Platform) -> None:
    provider = _provider(platform, "alfatraining und andere")
    with platform.client("catalog", USER) as api:
        first = api.post("/v1/imports/wbsuche", params={"provider_id": provider["id"]},
                         content=WBSUCHE.read_bytes(), headers={"Content-Type": "application/json"})
        assert first.status_code == 200, first.text
        report = first.json()
        assert sorted(report["created"]) == ["14222269", "14363439"] and report["rejected"] == []
        offers = {o["external_id"]: o for o in api.get(
            "/v1/offers", params={"provider_id": provider["id"]}).json()["items"]}
        again = api.post("/v1/imports/wbsuche", params={"provider_id": provider["id"]},
                         content=WBSUCHE.read_bytes(), headers={"Content-Type": "application/json"}).json()
        assert again["changed"] is False
        assert api.post("/v1/imports/wbsuche", params={"provider_id": provider["id"]},
                        content=b'{"items": []}').status_code == 422
    scrum = offers["14363439"]
    assert scrum["title"] == "C++ und Scrum Master" and scrum["format"] == "hybrid"
    assert "<" not in scrum["description"] and "objektorientierte Programmierung" in scrum["description"]
    assert scrum["funding"]["bildungsgutschein"]
    # no beginn: the six start dates its remark lists, in Helmstedt at the given coordinates
    assert [s["start"] for s in scrum["sessions"]][:2] == ["2023-06-19", "2023-07-17"] and len(scrum["sessions"]) == 6
    assert scrum["sessions"][0]["location"] == {"street": "Neumärkter Straße 1a-3", "zip": "38350",
                                                "city": "Helmstedt", "lat": 52.230655, "lon": 10.995727}
    consultant = offers["14222269"]
    assert consultant["format"] == "blended" and consultant["schedule"] == "part_time"
    assert [(s["start"], s["end"]) for s in consultant["sessions"]] == [("2023-07-17", "2024-03-17")]


def test_the_xml_declarations_encoding_is_honoured(platform: Platform) -> None:
    """ISO-8859-15, common in provider exports: € and Œ are bytes there that mean ¤ and ¼ in
    ISO-8859-1 and nothing in UTF-8, so a reader that ignored the declaration would garble them."""
    title = "Schweißen für Einsteiger: Gebühr 20 € (Œuvre-Kurs)"
    xml = ('<?xml version="1.0" encoding="ISO-8859-15"?><OPENQCAT version="1.1"><NEW_CATALOG>'
           '<SERVICE mode="new"><PRODUCT_ID>enc-1</PRODUCT_ID><SERVICE_DETAILS>'
           f'<TITLE>{title}</TITLE><DESCRIPTION_LONG>Größere Nähte, präzise geprüft.</DESCRIPTION_LONG>'
           '<SERVICE_MODULE><EDUCATION type="true"><COURSE_ID>enc-1</COURSE_ID><EXTENDED_INFO>'
           '<INSTRUCTION_FORM type="202"/></EXTENDED_INFO></EDUCATION></SERVICE_MODULE>'
           '<SERVICE_DATE><START_DATE>2031-03-02T00:00:00+01:00</START_DATE></SERVICE_DATE></SERVICE_DETAILS>'
           '</SERVICE></NEW_CATALOG></OPENQCAT>').encode("iso-8859-15")
    assert "€".encode("iso-8859-15") in xml and b"\xe2\x82\xac" not in xml  # the file really is in that encoding
    provider = _provider(platform, "Kodierung Südwest")
    report = _import(platform, provider["id"], xml)
    assert report.status_code == 200 and report.json()["created"] == ["enc-1"], report.text
    with platform.client("catalog", USER) as api:
        offer = api.get("/v1/offers", params={"provider_id": provider["id"]}).json()["items"][0]
    assert offer["title"] == title and offer["description"] == "Größere Nähte, präzise geprüft."


def test_a_national_search_document_over_its_bound_is_refused_unread(platform: Platform) -> None:
    """The JSON is parsed whole, so its bound is 8 MiB, not the XML's 512 (a streamed body too)."""
    provider = _provider(platform, "Ziel eines großen JSON")

    def body():
        yield b'{"_embedded": {"termine": ['
        for _ in range(9 * 64):  # 9 MiB of termine
            yield b'{"id": 1},' * (16 * 1024 // 10)
        yield b'{"id": 1}]}}'

    with platform.client("catalog", USER) as api:
        try:
            status = api.post("/v1/imports/wbsuche", params={"provider_id": provider["id"]}, content=body(),
                              headers={"Content-Type": "application/json"}).status_code
        except (httpx.WriteError, httpx.RemoteProtocolError):
            status = None  # answered and closed while we were still sending
        assert status in (413, None), status
        assert api.get("/v1/offers", params={"provider_id": provider["id"]}).json()["items"] == []


def test_imports_beyond_the_processs_slots_are_answered_busy_at_once(platform: Platform) -> None:
    """Each import holds a database connection for its whole file: two run at once in a catalog
    process, a third is told to come back (503, Retry-After) instead of taking the connections the
    other requests need. The first two are held in the database (their providers' import lock taken
    by the test), so the third meets them running."""
    first, second, third = (_provider(platform, f"Drei auf einmal {n}") for n in range(3))
    held = threading.Event()

    async def hold_imports() -> None:
        conn = await asyncpg.connect(platform.config.service_admin_url("catalog"))
        try:
            async with conn.transaction():
                for provider in (first, second):
                    await conn.execute(store.IMPORT_LOCK.format("pg_advisory_xact_lock"), provider["id"])
                held.set()
                waited = 0.0
                while waited < 30 and await conn.fetchval(  # until both imports wait for their lock
                        "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted") < 2:
                    await asyncio.sleep(0.05)
                    waited += 0.05
                refused.append(_import(platform, third["id"], KURSNET.read_bytes()))
        finally:
            await conn.close()

    refused: list[httpx.Response] = []
    with ThreadPoolExecutor(3) as pool:
        holder = pool.submit(asyncio.run, hold_imports())
        assert held.wait(15)
        running = [pool.submit(_import, platform, p["id"], KURSNET.read_bytes()) for p in (first, second)]
        holder.result(timeout=60)
        assert [f.result(timeout=60).status_code for f in running] == [200, 200]
    assert refused[0].status_code == 503, refused[0].text
    assert refused[0].headers["Retry-After"] == "60"
    with platform.client("catalog", USER) as api:  # the refused import changed nothing
        assert api.get("/v1/offers", params={"provider_id": third["id"]}).json()["items"] == []
    assert _import(platform, third["id"], KURSNET.read_bytes()).status_code == 200  # the slots are free again


def test_the_operators_command_imports_a_large_file_and_shows_its_progress(platform: Platform, tmp_path: Path
                                                                          ) -> None:
    """``python -m services.catalog.cli import-openqcat``, as an operator runs it with the service's
    settings: a file of 3,000 offers (more than the import applies while it still reads), parsed in a
    process of its own; the progress line on standard error, the report as JSON on standard output.
    Imported again, it changes nothing. As drafts: published, 3,000 offers would have this stack's
    matching encode each of them while the tests after this one wait for it."""
    provider = _provider(platform, "Bildungswerk Kommandozeile")
    path = tmp_path / "gross.xml"
    write_openqcat(path, 3000)
    command = [sys.executable, "-m", "services.catalog.cli", "import-openqcat", str(path), "--status", "draft",
               "--tenant", "westfaelisches-ruhrgebiet", "--provider-id", provider["id"]]
    env = os.environ | platform.stack.service_env("catalog")
    first = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert first.returncode == 0, first.stderr
    report = json.loads(first.stdout)
    assert report["counts"]["created"] == 3000 and report["rejected"] == [], report["counts"]
    progress = first.stderr.rsplit("\r", 1)[-1]
    assert "(100% of the file)" in progress and "applied 3,000 of 3,000 offers" in progress, progress
    again = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout)["counts"] == {"created": 0, "updated": 0, "unchanged": 3000, "deleted": 0,
                                                   "rejected": 0}


def _provider_of(value: bytes | None) -> str | None:
    """The provider an offer event names; None for what is no event (the poison test's records)."""
    try:
        data = json.loads(value or b"")
    except ValueError:
        return None
    return data.get("provider_id") if isinstance(data, dict) else None


def test_the_operators_command_carries_one_trace_through_all_its_events(platform: Platform, tmp_path: Path
                                                                         ) -> None:
    """An import through the API gives its events the request's trace; the operators' command starts
    one trace for its whole run, so an operator finds every event (and log line) of one import by
    one trace id, as for an import through the API."""
    provider = _provider(platform, "Bildungswerk Eine Spur")
    path = tmp_path / "spur.xml"
    write_openqcat(path, 3)
    result = subprocess.run(
        [sys.executable, "-m", "services.catalog.cli", "import-openqcat", str(path), "--tenant",
         "westfaelisches-ruhrgebiet", "--provider-id", provider["id"]],
        env=os.environ | platform.stack.service_env("catalog"), capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["counts"]["created"] == 3

    def traces() -> list[str]:
        consumer = KafkaConsumer(OFFERS_TOPIC, bootstrap_servers=platform.config.bootstrap, group_id=None,
                                 auto_offset_reset="earliest", consumer_timeout_ms=1000)
        found = [dict(r.headers)["traceparent"].decode().split("-")[1] for r in consumer
                 if _provider_of(r.value) == provider["id"]]
        consumer.close()
        return found

    found = wait_until("the import's three offer events on the broker", lambda: (t := traces()) and len(t) == 3 and t)
    assert len(set(found)) == 1, found


def test_the_operators_command_refuses_a_file_that_is_not_open_qcat(platform: Platform, tmp_path: Path) -> None:
    provider = _provider(platform, "Bildungswerk Falsche Datei")
    path = tmp_path / "kaputt.xml"
    path.write_text("<html><body>kein Katalog</body></html>")
    result = subprocess.run(
        [sys.executable, "-m", "services.catalog.cli", "import-openqcat", str(path), "--tenant",
         "westfaelisches-ruhrgebiet", "--provider-id", provider["id"]],
        env=os.environ | platform.stack.service_env("catalog"), capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and "import refused" in result.stderr and "not an open-Qcat file" in result.stderr
