"""Demo data for `make up`: a few providers per network with several hundred realistic offers
(courses as KURSNET lists them, in the networks' towns), and a few open demands, so that a
newcomer sees a living platform. Made through the services' own APIs as the dev users, from a
fixed random seed; run once (skipped when the network already has offers)."""

from __future__ import annotations

import random
from datetime import date, timedelta

import httpx

# town, postcode, lat, lon
TOWNS = {
    "hellweg-hochsauerland": [("Soest", "59494", 51.571, 8.106), ("Arnsberg", "59821", 51.383, 8.058),
                              ("Meschede", "59872", 51.350, 8.284), ("Lippstadt", "59555", 51.673, 8.344),
                              ("Brilon", "59929", 51.395, 8.568), ("Werl", "59457", 51.554, 7.914)],
    "westfaelisches-ruhrgebiet": [("Dortmund", "44137", 51.514, 7.465), ("Hamm", "59065", 51.681, 7.815),
                                  ("Unna", "59423", 51.535, 7.689), ("Bochum", "44787", 51.481, 7.216),
                                  ("Herne", "44623", 51.538, 7.225), ("Lünen", "44532", 51.616, 7.528)],
    "lueneburg": [("Lüneburg", "21335", 53.252, 10.414), ("Uelzen", "29525", 52.965, 10.558),
                  ("Winsen (Luhe)", "21423", 53.357, 10.211), ("Buchholz in der Nordheide", "21244", 53.327, 9.868),
                  ("Lüchow", "29439", 52.967, 11.153), ("Dannenberg", "29451", 53.098, 11.100)],
}
PROVIDERS = {
    "hellweg-hochsauerland": ["Bildungswerk Hellweg gGmbH", "Sauerland-Akademie für Technik", "Kolleg Soest e.V.",
                              "Hochsauerland Pflegeschule"],
    "westfaelisches-ruhrgebiet": ["Ruhrwerk Qualifizierung GmbH", "Technische Akademie Hamm-Unna e.V.",
                                  "Bildungszentrum Dortmund-Nord", "Revier Sprachen und Beruf"],
    "lueneburg": ["Heide-Akademie Lüneburg", "Elbe-Bildungswerk Uelzen", "Wendland Kolleg",
                  "Nordheide Technik Campus"],
}

# title, skills, qualification, formats, schedule, hours, price, bildungsgutschein, aufstiegsbafoeg, description
COURSES = [
    ("Staplerschein: Flurförderzeuge sicher führen", ["Gabelstapler", "Flurförderzeuge", "DGUV 308-001"],
     "certificate", ["presence"], "full_time", 24, 390, True, False,
     "Theorie und Praxis für Gabelstaplerfahrer nach DGUV Grundsatz 308-001, mit Prüfung und Fahrausweis."),
    ("MAG-Schweißen mit Schweißerprüfung nach DIN EN ISO 9606-1", ["Metall-Aktivgas-Schweißen", "MAG",
     "Schweißtechnik", "DIN EN ISO 9606-1"], "certificate", ["presence"], "full_time", 140, 3050, True, False,
     "Schweißen an Blech und Rohr in allen gängigen Positionen; Prüfung vor einer akkreditierten Stelle."),
    ("WIG-Schweißen für Fachkräfte", ["Wolfram-Inertgas-Schweißen", "WIG", "Edelstahl", "Aluminium"],
     "certificate", ["presence"], "part_time", 120, 2800, True, False,
     "WIG-Schweißen von Edelstahl und Aluminium für Metallbauer und Anlagenmechaniker."),
    ("SPS-Programmierung mit Siemens TIA Portal", ["SPS", "speicherprogrammierbare Steuerung", "TIA Portal",
     "Siemens S7"], "certificate", ["presence", "blended"], "full_time", 80, 1890, True, False,
     "Speicherprogrammierbare Steuerungen planen, programmieren und in Betrieb nehmen (S7-1500, TIA Portal)."),
    ("Elektrofachkraft für festgelegte Tätigkeiten", ["Elektrotechnik", "DGUV Vorschrift 3", "EFKffT"],
     "certificate", ["presence"], "full_time", 160, 2400, True, False,
     "Qualifizierung nach DGUV Vorschrift 3 für wiederkehrende elektrotechnische Arbeiten im Betrieb."),
    ("CNC-Fräsen mit Heidenhain-Steuerung", ["CNC", "Fräsen", "Heidenhain", "Zerspanung"], "certificate",
     ["presence"], "full_time", 200, 4200, True, False,
     "Programmieren und Bedienen von CNC-Fräsmaschinen mit Heidenhain TNC, Werkstücke nach Zeichnung."),
    ("Berufskraftfahrer-Weiterbildung Modul 1–5", ["Berufskraftfahrer", "BKrFQG", "Eco-Training",
     "Ladungssicherung"], "certificate", ["presence"], "weekend", 35, 450, True, False,
     "Die fünf Module der Weiterbildung nach Berufskraftfahrerqualifikationsgesetz, auch samstags."),
    ("Ladungssicherung nach VDI 2700", ["Ladungssicherung", "VDI 2700", "Logistik"], "certificate",
     ["presence", "online"], "part_time", 8, 190, False, False,
     "Rechtliche Grundlagen und Praxis der Ladungssicherung für Verlader und Fahrpersonal."),
    ("Erste Hilfe im Betrieb (Betriebshelfer)", ["Erste Hilfe", "Betriebssanitäter", "DGUV"], "certificate",
     ["presence"], "full_time", 9, 65, False, False, "Ausbildung zum betrieblichen Ersthelfer nach DGUV."),
    ("Excel für Fortgeschrittene: Auswertungen und Pivot", ["Excel", "Pivot-Tabellen", "Tabellenkalkulation"],
     "adaptation", ["online", "presence"], "evening", 24, 420, True, False,
     "Formeln, Pivot-Tabellen, Power Query und Diagramme für Auswertungen im Büro."),
    ("SAP MM: Materialwirtschaft und Einkauf", ["SAP", "SAP MM", "Einkauf", "Materialwirtschaft"],
     "certificate", ["online", "blended"], "full_time", 160, 3600, True, False,
     "Bestellungen, Bestandsführung und Rechnungsprüfung in SAP S/4HANA mit Zertifikat."),
    ("Finanzbuchhaltung mit DATEV", ["Buchhaltung", "DATEV", "Finanzbuchhaltung", "Umsatzsteuer"],
     "certificate", ["online", "presence"], "part_time", 120, 1650, True, False,
     "Laufende Buchhaltung, Umsatzsteuer-Voranmeldung und Abschlussvorbereitung mit DATEV."),
    ("Lohn- und Gehaltsabrechnung", ["Lohnabrechnung", "Sozialversicherung", "Personalwesen"], "certificate",
     ["online"], "part_time", 100, 1450, True, False,
     "Entgeltabrechnung von der Bruttolohnermittlung bis zu den Meldungen an die Sozialversicherung."),
    ("Pflegebasiskurs für Betreuungskräfte", ["Pflege", "Betreuung", "§ 43b SGB XI"], "partial_qualification",
     ["presence"], "full_time", 160, 1900, True, False,
     "Qualifizierung zur zusätzlichen Betreuungskraft nach § 43b SGB XI mit Praktikum."),
    ("Praxisanleitung in der Pflege", ["Praxisanleitung", "Pflege", "Pflegeberufegesetz"], "adaptation",
     ["blended"], "part_time", 300, 2900, True, False,
     "Berufspädagogische Zusatzqualifikation nach Pflegeberufegesetz für Pflegefachkräfte."),
    ("Deutsch für den Beruf B2", ["Deutsch", "Berufssprache", "B2"], "language", ["presence", "online"],
     "part_time", 400, 0, True, False, "Berufsbezogener Deutschkurs (DeuFöV) mit Prüfung auf Niveau B2."),
    ("Projektmanagement mit Scrum", ["Projektmanagement", "Scrum", "Agile Methoden"], "certificate",
     ["online"], "flexible", 40, 990, True, False, "Agile Projektarbeit nach Scrum mit Zertifikatsprüfung."),
    ("Ausbildung der Ausbilder (AdA) nach AEVO", ["Ausbildereignung", "AEVO", "Ausbildung"], "advancement",
     ["presence", "online"], "evening", 115, 690, False, True,
     "Vorbereitung auf die Ausbildereignungsprüfung vor der IHK oder HWK."),
    ("Industriemeister Metall (IHK)", ["Industriemeister", "Metall", "Führung"], "advancement", ["presence"],
     "part_time", 900, 5200, False, True, "Berufsbegleitende Aufstiegsfortbildung zum geprüften Industriemeister."),
    ("Umschulung Fachkraft für Lagerlogistik", ["Lagerlogistik", "Warenwirtschaft", "Gabelstapler"],
     "retraining", ["presence"], "full_time", 2800, 18900, True, False,
     "Zweijährige Umschulung mit IHK-Abschluss, Praktikum in Betrieben der Region."),
    ("Teilqualifikation Maschinen- und Anlagenführer", ["Maschinenführer", "Anlagenführer", "Produktion"],
     "partial_qualification", ["presence"], "full_time", 480, 6400, True, False,
     "Erste Teilqualifikation auf dem Weg zum Berufsabschluss, mit Kompetenzfeststellung."),
    ("IT-Sicherheit und Datenschutz im Büro", ["IT-Sicherheit", "Datenschutz", "DSGVO"], "adaptation",
     ["online"], "evening", 16, 350, False, False, "Phishing erkennen, sicher arbeiten, DSGVO im Alltag."),
    ("Photovoltaik-Anlagen planen und installieren", ["Photovoltaik", "Solartechnik", "Elektroinstallation"],
     "certificate", ["presence", "hybrid"], "full_time", 80, 1750, True, False,
     "Planung, Montage und Inbetriebnahme von PV-Anlagen und Speichern für Elektro- und SHK-Fachkräfte."),
    ("Wärmepumpen: Fachkraft für Einbau und Service", ["Wärmepumpe", "Kältetechnik", "SHK"], "certificate",
     ["presence"], "full_time", 40, 1290, True, False,
     "Wärmepumpen auslegen, einbauen und warten, mit Sachkunde nach Chemikalien-Klimaschutzverordnung."),
    ("KI-Werkzeuge im Büroalltag", ["Künstliche Intelligenz", "Textassistenz", "Büroorganisation"], "adaptation",
     ["online"], "flexible", 12, 240, False, False, "Sprachmodelle sinnvoll und datenschutzgerecht nutzen."),
    ("Hubarbeitsbühnen sicher bedienen", ["Hubarbeitsbühne", "DGUV 308-008", "Arbeitssicherheit"],
     "certificate", ["presence"], "full_time", 8, 210, False, False, "Unterweisung und Prüfung nach DGUV 308-008."),
    ("Gefahrgutbeauftragter Straße (ADR)", ["Gefahrgut", "ADR", "Logistik"], "certificate", ["presence"],
     "full_time", 40, 1190, True, False, "Schulung mit IHK-Prüfung zum Gefahrgutbeauftragten."),
    ("Kranführer: Brückenkrane und Ladekrane", ["Kran", "Kranführer", "DGUV 309-003"], "certificate",
     ["presence"], "full_time", 24, 480, True, False, "Ausbildung nach DGUV 309-003 mit praktischer Prüfung."),
]
DEMANDS = {
    "hellweg-hochsauerland": ("Metallbau Ruhrtal GmbH", 42, "Arnsberg", "Zwei Schlosser sollen das MAG-Schweißen "
                              "mit Prüfung lernen.", "MAG-Schweißen für die Schlosserei", ["MAG", "Schweißen"]),
    "westfaelisches-ruhrgebiet": ("Spedition Westfalen KG", 120, "Dortmund", "Lagerhelfer brauchen den "
                                  "Staplerschein und eine Schulung zur Ladungssicherung.", "Stapler und "
                                  "Ladungssicherung für das Lager", ["Gabelstapler", "Ladungssicherung"]),
    "lueneburg": ("Logistik Heide GmbH", 35, "Lüneburg", "Drei Lagerhelfer sollen Flurförderzeuge sicher führen.",
                  "Gabelstapler-Ausbildung für Lagerhelfer", ["Gabelstapler", "Flurförderzeuge"]),
}
OFFERS_PER_NETWORK = 110


def demo_offers(tenant: str, provider_ids: list[str], today: date | None = None, seed: int = 9) -> list[dict]:
    """The network's demo offers as catalog bodies (``POST /v1/offers``)."""
    rng = random.Random(f"{seed}-{tenant}")
    today = today or date.today()
    offers = []
    for i in range(OFFERS_PER_NETWORK):
        title, skills, qualification, formats, schedule, hours, price, bgs, abafoeg, text = COURSES[i % len(COURSES)]
        fmt = rng.choice(formats)
        sessions = []
        for _ in range(rng.randint(1, 3)):
            start = today + timedelta(days=rng.randint(7, 270))
            end = start + timedelta(days=max(1, round(hours / (8 if schedule == "full_time" else 3))))
            town, zip_code, lat, lon = rng.choice(TOWNS[tenant])
            location = {"zip": zip_code, "city": town, "lat": lat, "lon": lon} if fmt in (
                "presence", "hybrid", "blended") else None
            sessions.append({"start": start.isoformat(), "end": end.isoformat(), "location": location})
        sessions.sort(key=lambda s: s["start"])
        where = f" in {sessions[0]['location']['city']}" if sessions[0]["location"] else ""
        variant = round(price * rng.choice((0.9, 1.0, 1.0, 1.1)), -1) if price else 0
        offers.append({
            "provider_id": provider_ids[i % len(provider_ids)], "external_id": f"demo-{tenant}-{i:03d}",
            "title": f"{title}{where}" if i >= len(COURSES) else title,
            "description": f"{text} Kleine Gruppen, erfahrene Lehrkräfte, Lernort gut erreichbar.",
            "skills": skills, "qualification": qualification, "format": fmt, "schedule": schedule,
            "hours": hours, "price_eur": variant,
            # § 82 SGB III needs AZAV approval and more than 120 hours
            "funding": {"bildungsgutschein": bgs, "qcg": bgs and hours > 120, "aufstiegsbafoeg": abafoeg},
            "sessions": sessions,
            "visibility": {"scope": "all"} if rng.random() < 0.2 else {"scope": "home"},
            "language": "de",
        })
    return offers


def demo_demand(tenant: str, today: date | None = None) -> dict:
    today = today or date.today()
    name, employees, town, description, title, skills = DEMANDS[tenant]
    _, zip_code, lat, lon = next(t for t in TOWNS[tenant] if t[0] == town)
    return {"employer": {"name": name, "employees": employees, "zip": zip_code, "city": town, "lat": lat, "lon": lon,
                         "share_contact": True,
                         "contact": {"name": "Personalabteilung", "email": "personal@example.org"}},
            "title": title, "description": description, "skills": skills, "participants": 3,
            "start_from": (today + timedelta(days=14)).isoformat(),
            "start_to": (today + timedelta(days=200)).isoformat(),
            "formats": ["presence", "blended"], "schedules": ["full_time"], "max_distance_km": 50,
            "max_price_eur": None, "funding_required": False}


def _token(issuer_url: str, username: str) -> str:
    response = httpx.post(f"{issuer_url}/protocol/openid-connect/token", data={
        "grant_type": "password", "client_id": "bildungsraum-cli", "username": username, "password": "dev"})
    response.raise_for_status()
    return response.json()["access_token"]


def seed(catalog_url: str, matching_url: str, issuer_url: str) -> dict[str, int]:
    """Seeds each network that has no offers yet; returns offers made per network."""
    made = {}
    for tenant in TOWNS:
        headers = {"Authorization": f"Bearer {_token(issuer_url, f'{tenant}-provider')}"}
        with httpx.Client(base_url=catalog_url, headers=headers, timeout=30) as catalog:
            existing = catalog.get("/v1/offers", params={"page_size": 1})
            if existing.status_code == 200 and existing.json().get("total"):
                continue
            provider_ids = []
            for name in PROVIDERS[tenant]:
                slug = name.lower().split()[0].replace("-", "")
                valid_until = (date.today() + timedelta(days=700)).isoformat()
                created = catalog.post("/v1/providers", json={
                    "name": name, "emails": [f"kurse@{slug}.example"], "external_id": f"demo-{slug}",
                    "azav": {"certified": True, "valid_until": valid_until}})
                created.raise_for_status()
                provider_ids.append(created.json()["id"])
            made[tenant] = 0
            for body in demo_offers(tenant, provider_ids):
                if catalog.post("/v1/offers", json=body).status_code == 201:
                    made[tenant] += 1
        employer = {"Authorization": f"Bearer {_token(issuer_url, f'{tenant}-employer')}"}
        httpx.post(f"{matching_url}/v1/demands", json=demo_demand(tenant), headers=employer, timeout=30)
    return made
