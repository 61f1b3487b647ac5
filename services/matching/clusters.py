# ruff: noqa: E501  (the groups below: one a line)
"""Skill clusters for the gap report: the occupational main groups (Berufshauptgruppen) of the
German classification of occupations KldB 2010. An offer with a KldB code falls into its group;
otherwise a demand or offer falls into the group whose name lies nearest in meaning (the same
sentence encoder as ranking; the names are the classification's own, not lists for any data set).
The encoded names are built on first use and kept per process."""

from __future__ import annotations

import threading
from typing import Any

import numpy as np

# (two-digit KldB 2010 code, name as people read it, typical occupations of the group as the
# classification lists them: what the name is encoded with)
GROUPS: tuple[tuple[str, str, str], ...] = (
    ("11", "Land-, Tier- und Forstwirtschaft", "Landwirt, Tierwirt, Forstwirt, Pferdewirt"),
    ("12", "Gartenbau und Floristik", "Gärtner, Garten- und Landschaftsbau, Florist"),
    ("21", "Rohstoffe, Glas und Keramik", "Bergbau, Baustoffherstellung, Glasmacher, Keramiker"),
    ("22", "Kunststoff und Holz", "Kunststoffverarbeitung, Tischler, Holzbearbeitung"),
    ("23", "Papier, Druck und Mediengestaltung", "Drucker, Mediengestalter, Papierverarbeitung"),
    ("24", "Metallbearbeitung und Metallbau", "Schweißer, Zerspanungsmechaniker, CNC-Dreher und -Fräser, Metallbauer"),
    ("25", "Maschinenbau und Fahrzeugtechnik", "Industriemechaniker, Kfz-Mechatroniker, Instandhaltung von Maschinen"),
    ("26", "Mechatronik, Energie- und Elektrotechnik", "Elektriker, Mechatroniker, Automatisierung, Steuerungstechnik"),
    ("27", "Technische Entwicklung und Produktionssteuerung", "Techniker, Konstrukteur, technisches Zeichnen, Qualitätssicherung"),
    ("28", "Textil und Leder", "Schneider, Textilherstellung, Polsterer"),
    ("29", "Lebensmittelherstellung", "Bäcker, Fleischer, Koch in der Lebensmittelproduktion"),
    ("31", "Bauplanung, Architektur und Vermessung", "Architekt, Bauzeichner, Vermessungstechniker"),
    ("32", "Hoch- und Tiefbau", "Maurer, Betonbauer, Straßenbauer, Baugeräteführer"),
    ("33", "Innenausbau", "Maler und Lackierer, Fliesenleger, Trockenbauer, Bodenleger"),
    ("34", "Gebäude- und Versorgungstechnik", "Anlagenmechaniker Sanitär Heizung Klima, Klempner"),
    ("41", "Mathematik, Biologie, Chemie und Physik", "Chemielaborant, Biologielaborant, Physiklaborant"),
    ("42", "Geologie, Geografie und Umweltschutz", "Umwelttechnik, Abfallwirtschaft, Geologie"),
    ("43", "Informatik und Kommunikationstechnik", "Fachinformatiker, Systemadministrator, Softwareentwickler, IT-Netzwerke"),
    ("51", "Verkehr, Logistik und Lager", "Fachkraft für Lagerlogistik, Speditionskaufmann, Lagerhelfer"),
    ("52", "Führen von Fahrzeugen und Transportgeräten", "Berufskraftfahrer, Gabelstaplerfahrer, Kranführer, Busfahrer"),
    ("53", "Schutz, Sicherheit und Arbeitsschutz", "Fachkraft für Arbeitssicherheit, Ersthelfer, Brandschutz, Wachdienst"),
    ("54", "Reinigung", "Gebäudereiniger, Reinigungskraft"),
    ("61", "Einkauf, Vertrieb und Handel", "Kaufmann im Groß- und Außenhandel, Vertriebsinnendienst, Einkäufer"),
    ("62", "Verkauf", "Verkäufer, Kassierer, Einzelhandel"),
    ("63", "Tourismus, Hotel und Gastronomie", "Restaurantfachkraft, Koch, Hotelfachmann, Servicekraft"),
    ("71", "Unternehmensführung und Büro", "Führungskraft, Büromanagement, Personalwesen, Office-Anwendungen"),
    ("72", "Finanzen, Rechnungswesen und Steuern", "Buchhalter, Lohnbuchhaltung, Controlling, Steuerfachangestellte"),
    ("73", "Recht und Verwaltung", "Verwaltungsfachangestellte, Rechtsanwaltsfachangestellte"),
    ("81", "Medizinische Gesundheitsberufe und Pflege", "Pflegefachkraft, Pflegeassistenz, Medizinische Fachangestellte"),
    ("82", "Altenpflege, Körperpflege und Medizintechnik", "Altenpflegehelfer, Friseur, Kosmetiker, Medizintechnik"),
    ("83", "Erziehung, Soziales und Hauswirtschaft", "Erzieher, Sozialarbeiter, Hauswirtschafter"),
    ("84", "Lehren und Ausbilden", "Lehrkraft, Ausbilder, Dozent"),
    ("91", "Sprachen, Geistes- und Wirtschaftswissenschaften", "Deutsch als Fremdsprache, Sprachkurs, Übersetzer"),
    ("92", "Werbung, Marketing und Medien", "Marketing, Online-Marketing, Redakteur, Werbung"),
    ("93", "Produktdesign und Kunsthandwerk", "Produktdesigner, Goldschmied, Kunsthandwerk"),
    ("94", "Darstellende und unterhaltende Berufe", "Musiker, Schauspieler, Veranstaltungstechnik"),
)
NAMES = {code: name for code, name, _ in GROUPS}
UNKNOWN = "ohne Zuordnung"

_vectors: dict[str, np.ndarray] = {}
_lock = threading.Lock()


def _group_vectors(kind: str) -> np.ndarray:
    """The group names encoded as the other side of a pair: against a demand (a query) they are
    passages, against an offer (a passage) they are queries."""
    if kind not in _vectors:
        with _lock:
            if kind not in _vectors:
                from services.matching.relevance import load_encoder

                _vectors[kind] = load_encoder().encode([f"{name}: {typical}" for _, name, typical in GROUPS], kind)
    return _vectors[kind]


def warm() -> None:
    """Build the encoder and both encodings of the group names (before traffic: tens of encodings)."""
    _group_vectors("passage")
    _group_vectors("query")


def of_vector(vector: np.ndarray | None, vector_kind: str) -> str:
    """The group nearest in meaning to a demand's (``query``) or an offer's (``passage``) vector."""
    if vector is None:
        return UNKNOWN
    names = _group_vectors("passage" if vector_kind == "query" else "query")
    return GROUPS[int(np.argmax(names @ np.asarray(vector, dtype=np.float32)))][1]


def of_offer(offer: dict[str, Any], vector: np.ndarray | None) -> str:
    for code in offer.get("occupation_codes") or []:
        if isinstance(code, str) and code[:2] in NAMES:
            return NAMES[code[:2]]
    return of_vector(vector, "passage")
