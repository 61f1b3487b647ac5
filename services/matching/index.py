"""The process's in-memory index of offer vectors (numpy), loaded from matching's PostgreSQL at
start and kept current by the vectors' change sequence: a restart re-encodes nothing, and offers
that another replica handled are here before this replica ranks with them.

``offer_vectors.change_seq`` is given in commit order (see store.stamp_vector), so reading every row
above the highest sequence seen misses nothing. Each ranking first asks PostgreSQL for rows above
that mark (an index lookup that usually returns none)."""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date
from typing import Any

import asyncpg
import numpy as np

from runtime.places import EARTH_RADIUS_KM
from services.matching import geo
from services.matching.domain import LOCATED_FORMATS, as_date, check

log = logging.getLogger(__name__)

DIM = 384
VECTOR_DTYPE = np.float16  # stored and held as half precision: 768 bytes an offer
BATCH = 20_000
# rows widened at a time by ``CodeBlock.scores``: 1.5 MB reused (not one float32 copy of them all),
# which the product then reads from the cache (1,024 rows took 9 ms for 70,000 offers, 4,096 rows 10)
CHUNK = 1024


def to_bytes(vector: np.ndarray) -> bytes:
    return np.asarray(vector, dtype=np.float32).reshape(-1).astype(VECTOR_DTYPE).tobytes()


def from_bytes(raw: bytes) -> np.ndarray:
    return np.frombuffer(raw, dtype=VECTOR_DTYPE).astype(np.float32)


EPOCH = date(1970, 1, 1).toordinal()
RETIRED = np.iinfo(np.int32).min  # the start of a session an offer no longer has: in no window
# Where a session counts for a demand's radius (its offer's format decides, and a format changes only
# with the offer's sessions): anywhere (online, distance), at its place, or nowhere (a located format
# without a place)
ANYWHERE, PLACED, NOWHERE = 0, 1, 2
_SESSION_FILL = {"start": RETIRED, "reach": NOWHERE}  # of unused session slots (others 0)
SHARED_TENANTS = 8  # columns for "shared with network N" at first; more are added as networks appear


def day(value: Any) -> int:
    """A date (or an ISO date string, a time after it ignored) as days since 1970."""
    return as_date(value).toordinal() - EPOCH


@dataclass
class FeasibleSet:
    """A demand's feasible offers, each with the session that makes it pass (the earliest start, then
    the nearest place), as columns in about the index's memory order (the order its codes are read
    fastest in), which differs between replicas: ``keys``, the offers' ids' first 64 bits, break ties
    so that every replica ranks alike. ``rows`` are the offers' rows in the index; -1 marks an offer
    the caller's transaction changed that the index does not hold yet (``changed_id``)."""

    index: OfferIndex
    rows: np.ndarray
    start_days: np.ndarray
    cities: np.ndarray
    kms: np.ndarray
    keys: np.ndarray
    changed_id: str | None = None

    def __len__(self) -> int:
        return len(self.rows)

    def offer_id(self, position: int) -> str:
        row = int(self.rows[position])
        return self.index.offer_id(row) if row >= 0 else str(self.changed_id)

    def position(self, offer_id: str) -> int | None:
        row = -1 if offer_id == self.changed_id and len(self) and self.rows[-1] == -1 else self.index.row(offer_id)
        if row is None:
            return None
        found = np.flatnonzero(self.rows == row)
        return int(found[-1]) if len(found) else None  # (a changed offer is the last)

    def session(self, position: int) -> tuple[dict[str, Any], float | None]:
        """The passing session (its start and town) and its distance (None where it does not apply)."""
        city = self.index.city_name(int(self.cities[position]))
        km = float(self.kms[position])
        start = date.fromordinal(int(self.start_days[position]) + EPOCH).isoformat()
        return {"start": start, "location": {"city": city} if city else None}, (None if np.isnan(km) else km)


class OfferIndex:
    def __init__(self, dim: int = DIM) -> None:
        self.dim = dim
        self._rows: dict[str, int] = {}
        self._ids: list[str] = []
        self._matrix = np.zeros((1024, dim), dtype=VECTOR_DTYPE)
        # The same vectors in 8 bits (each row scaled to its largest value), for a first step over
        # many offers: numpy widens int8 about five times faster than float16, and reads half the bytes.
        self._codes = np.zeros((1024, dim), dtype=np.int8)
        self._scales = np.zeros(1024, dtype=np.float32)
        # Each offer's hard-constraint facts, by row (an offer without facts is published nowhere).
        self._offer = {
            "key": np.zeros(1024, dtype=np.uint64),        # its id's first 8 bytes: the order of a feasible set
            "published": np.zeros(1024, dtype=bool),
            "format": np.full(1024, -1, dtype=np.int8),     # a code of _format_names; -1 none
            "price": np.zeros(1024, dtype=np.float64),      # no price counts as 0, as the constraint reads it
            "qcg": np.zeros(1024, dtype=bool),
            "home": np.full(1024, -1, dtype=np.int16),      # a code of _tenants
            "all": np.zeros(1024, dtype=bool),              # shared with every network
            "first": np.zeros(1024, dtype=np.int64),        # its sessions: [first, first + count)
            "count": np.zeros(1024, dtype=np.int32),
        }
        self._shared = np.zeros((1024, SHARED_TENANTS), dtype=bool)  # shared with the network of that column
        self._tenants: dict[str, int] = {}
        self._format_names: list[str] = []
        self._located_format = np.zeros(1, dtype=bool)  # by format code; the last entry stands for -1
        self._city_names: list[str] = []
        self._cities: dict[str, int] = {}
        # Sessions, appended; an offer's new sessions replace its old ones, which are retired.
        self._session = {
            "row": np.zeros(4096, dtype=np.int32),
            "start": np.full(4096, RETIRED, dtype=np.int32),
            "lat": np.zeros(4096, dtype=np.float64),
            "lon": np.zeros(4096, dtype=np.float64),
            "reach": np.full(4096, NOWHERE, dtype=np.int8),  # where it counts: ANYWHERE, PLACED or NOWHERE
            "city": np.full(4096, -1, dtype=np.int32),
        }
        self._sessions = 0
        self._retired = 0
        self.compact_after = 100_000  # retired sessions kept before the columns are compacted (at most half)
        self.mark = 0  # the highest change sequence read
        self.loaded_at: float | None = None
        self._lock = asyncio.Lock()

    def __len__(self) -> int:
        return len(self._rows)

    def row(self, offer_id: str) -> int | None:
        return self._rows.get(offer_id)

    def offer_id(self, row: int) -> str:
        return self._ids[row]

    def city_name(self, code: int) -> str | None:
        return self._city_names[code] if code >= 0 else None

    def _put(self, offer_ids: list[str], vectors: np.ndarray) -> np.ndarray:
        """Add or replace the offers' vectors (one row each, as stored); answers their rows."""
        rows = np.empty(len(offer_ids), dtype=np.int64)
        for n, offer_id in enumerate(offer_ids):
            row = self._rows.get(offer_id)
            if row is None:
                row = self._rows[offer_id] = len(self._ids)
                self._ids.append(offer_id)
            rows[n] = row
        self._make_room(len(self._rows))
        self._offer["key"][rows] = np.fromiter(map(_order_key, offer_ids), dtype=np.uint64, count=len(offer_ids))
        self._matrix[rows] = vectors
        wide = np.asarray(vectors, dtype=np.float32)
        scales = np.abs(wide).max(axis=1) / 127
        scales[scales == 0] = 1.0
        self._codes[rows] = np.rint(wide / scales[:, None]).astype(np.int8)
        self._scales[rows] = scales
        return rows

    def _put_facts(self, rows: np.ndarray, facts: Any) -> None:
        """Replace the facts of the offers at ``rows``; ``facts`` reads as the answer of
        ``offer_index_facts`` for their ids in that order: by offer (``at``, a 1-based place in
        ``rows``) whether published, format, price, qcg, network, sharing scope and the networks it
        is shared with (space-separated), and by session of a published offer (``session_at``, in
        the offer's order) its start (days since 1970), the place where it counts for distance
        (else NULL) and its town. An offer the answer leaves out is published nowhere."""
        offer, session = self._offer, self._session
        for row in rows[offer["count"][rows] > 0].tolist():  # their earlier sessions
            first, count = int(offer["first"][row]), int(offer["count"][row])
            session["start"][first:first + count] = RETIRED
            self._retired += count
        offer["count"][rows] = 0
        offer["published"][rows] = False
        self._shared[rows] = False
        if not len(facts["at"]):
            return
        at = rows[np.array(facts["at"], dtype=np.int64) - 1]
        offer["published"][at] = facts["published"]
        offer["format"][at] = self._codes_of(facts["format"], self._format_code)
        offer["price"][at] = [p or 0.0 for p in facts["price"]]
        offer["qcg"][at] = facts["qcg"]
        offer["home"][at] = self._codes_of(facts["tenant"], self._tenant_code)
        offer["all"][at] = [scope == "all" for scope in facts["scope"]]
        shared = [(row, self._tenant_code(t)) for row, scope, networks in zip(at.tolist(), facts["scope"],
                                                                             facts["networks"], strict=True)
                  if scope == "networks" and networks for t in networks.split(" ")]
        if shared:
            pairs = np.array(shared, dtype=np.int64)
            self._shared[pairs[:, 0], pairs[:, 1]] = True
        if len(facts["session_at"]):
            owners = rows[np.array(facts["session_at"], dtype=np.int64) - 1]
            firsts = _run_starts(owners)
            offer["first"][owners[firsts]] = self._sessions + firsts
            offer["count"][owners[firsts]] = np.diff(np.r_[firsts, len(owners)])
            self._add_sessions(owners, facts["starts"], facts["lats"], facts["lons"],
                               self._codes_of(facts["cities"], self._city_code),
                               self._located_format[offer["format"][owners]])
        if self._retired > max(self.compact_after, self._sessions // 2):
            self._compact()

    def _put_all_facts(self, facts: Any) -> None:
        """The first load's facts (``offer_index_all_facts``: by offer and by session, each with its
        offer's id, in no order) put as ``_put_facts`` puts a batch's; offers the index does not
        hold yet are left to the next call."""
        rows = np.fromiter(map(self._rows.get, facts["id"] or (), itertools.repeat(-1)), dtype=np.int64)
        held = np.flatnonzero(rows >= 0)
        place = np.zeros(len(self._ids), dtype=np.int64)  # an offer's 1-based place among the held
        place[rows[held]] = np.arange(1, len(held) + 1)
        owner_rows = np.fromiter(map(self._rows.get, facts["session_id"] or (), itertools.repeat(-1)), dtype=np.int64)
        owners = np.where(owner_rows >= 0, place[np.maximum(owner_rows, 0)], 0)
        sessions = np.flatnonzero(owners > 0)
        # in their offers' row order: a demand's feasible offers then come in about the codes' memory order
        session_n = np.asarray(facts["session_n"], dtype=np.int64)
        sessions = sessions[np.lexsort((session_n[sessions], owner_rows[sessions]))]
        by_offer = {k: [facts[k][i] for i in held.tolist()] for k in
                    ("published", "format", "price", "qcg", "tenant", "scope", "networks")}
        by_session = {k: [facts[k][i] for i in sessions.tolist()] for k in ("starts", "lats", "lons", "cities")}
        self._put_facts(rows[held], {"at": np.arange(1, len(held) + 1), **by_offer,
                                     "session_at": owners[sessions], **by_session})

    @staticmethod
    def _codes_of(names: list[str | None], code_of) -> np.ndarray:
        """Names as their codes (each distinct name looked up once)."""
        codes = {name: code_of(name) for name in set(names)}
        return np.array([codes[name] for name in names], dtype=np.int32)

    def _add_sessions(self, rows: np.ndarray, starts: list[int], lats: list, lons: list, cities: np.ndarray,
                      located: np.ndarray) -> None:
        """Append sessions (``located``: of an offer whose format has a place)."""
        n, at = len(rows), self._sessions
        if at + n > len(self._session["row"]):
            size = max(at + n, 2 * len(self._session["row"]))
            self._session = {k: grown(v, size, _SESSION_FILL.get(k, 0)) for k, v in self._session.items()}
        session = self._session
        session["row"][at:at + n] = rows
        session["start"][at:at + n] = starts
        lat = np.array(lats, dtype=np.float64)  # None becomes NaN: no place
        session["reach"][at:at + n] = np.where(located, np.where(np.isnan(lat), NOWHERE, PLACED), ANYWHERE)
        session["lat"][at:at + n] = np.nan_to_num(lat)
        session["lon"][at:at + n] = np.nan_to_num(np.array(lons, dtype=np.float64))
        session["city"][at:at + n] = cities
        self._sessions += n

    def _compact(self) -> None:
        """Drop retired sessions (an offer's sessions stay together, so each offer's range shifts)."""
        live = np.flatnonzero(self._session["start"][: self._sessions] != RETIRED)
        self._session = {k: grown(v[live], len(v), _SESSION_FILL.get(k, 0)) for k, v in self._session.items()}
        self._sessions, self._retired = len(live), 0
        rows = self._session["row"][: self._sessions]
        firsts = _run_starts(rows)
        self._offer["first"][rows[firsts]] = firsts

    def _tenant_code(self, tenant: str) -> int:
        code = self._tenants.get(tenant)
        if code is None:
            code = self._tenants[tenant] = len(self._tenants)
            if code >= self._shared.shape[1]:
                wider = np.zeros((len(self._shared), 2 * self._shared.shape[1]), dtype=bool)
                wider[:, : self._shared.shape[1]] = self._shared
                self._shared = wider
        return code

    def _format_code(self, name: str) -> int:
        if name not in self._format_names:
            self._format_names.append(name)
            self._located_format = np.array([f in LOCATED_FORMATS for f in self._format_names] + [False])
        return self._format_names.index(name)

    def _city_code(self, name: str | None) -> int:
        if name is None:
            return -1
        code = self._cities.get(name)
        if code is None:
            code = self._cities[name] = len(self._city_names)
            self._city_names.append(name)
        return code

    def _make_room(self, offers: int) -> None:
        """Room for ``offers`` rows: at least that many, and at least twice the room there was."""
        if offers > len(self._matrix):
            size = max(offers, 2 * len(self._matrix))
            self._matrix, self._codes, self._scales = (
                grown(self._matrix, size), grown(self._codes, size), grown(self._scales, size))
            self._offer = {k: grown(v, size, -1 if k in ("format", "home") else 0) for k, v in self._offer.items()}
            self._shared = grown(self._shared, size)

    async def sync(self, conn: asyncpg.Connection) -> int:
        """Read the offers changed since the last call; answers how many."""
        read = 0
        async with self._lock:
            first_load = self.mark == 0
            if first_load:  # room for every stored vector at once, not by doubling
                self._make_room(await conn.fetchval("SELECT count(*) FROM offer_vectors"))
            while True:
                rows = await conn.fetch(
                    "SELECT offer_id, change_seq, vector FROM offer_vectors WHERE change_seq > $1"
                    " ORDER BY change_seq LIMIT $2", self.mark, BATCH)
                width = self.dim * np.dtype(VECTOR_DTYPE).itemsize
                fitting = [r for r in rows if len(r["vector"]) == width]
                if fitting:
                    # the same offer twice in one batch: its later row wins, as it would one by one
                    latest = {r["offer_id"]: r["vector"] for r in fitting}
                    vectors = np.frombuffer(b"".join(latest.values()), dtype=VECTOR_DTYPE)
                    at = self._put([str(i) for i in latest], vectors.reshape(len(latest), self.dim))
                    if not first_load:
                        facts = await conn.fetchrow("SELECT * FROM offer_index_facts($1::uuid[])", list(latest))
                        self._put_facts(at, {k: v or [] for k, v in facts.items()})
                if rows:
                    self.mark = rows[-1]["change_seq"]
                read += len(rows)
                if len(rows) < BATCH:
                    break
            if first_load and read:
                # every offer's facts in one pass (read after the vectors: a change in between has a
                # sequence above the mark and is read again by the next call)
                self._put_all_facts(await conn.fetchrow("SELECT * FROM offer_index_all_facts()"))
            if self.loaded_at is None:
                self.loaded_at = time.time()
                log.info("offer index loaded", extra={"offers": len(self._rows), "mark": self.mark})
        return read

    def feasible(self, demand: dict[str, Any], changed: dict[str, Any] | None = None) -> FeasibleSet:
        """Every offer that passes the six hard constraints for the demand (``domain.check``'s rules,
        over columns), with its passing session. ``changed`` is an offer the caller's transaction has
        just written, which the index does not hold yet: it is judged by ``domain.check`` instead."""
        session = self._session
        start = session["start"][: self._sessions]
        at = np.flatnonzero((start >= day(demand["start_from"])) & (start <= day(demand["start_to"])))
        rows = session["row"][at]
        keep = self._passing(demand, len(self._ids))[rows]
        at, rows = at[keep], rows[keep]
        reach = session["reach"][at]
        kms = np.full(len(at), np.nan)
        placed = np.flatnonzero(reach == PLACED)
        employer = demand["employer"]
        radius = float(demand["max_distance_km"])
        lat_min, lat_max, lon_min, lon_max = geo.box(employer["lat"], employer["lon"], radius)
        lat, lon = session["lat"][at[placed]], session["lon"][at[placed]]
        inside = (lat >= lat_min) & (lat <= lat_max) & (lon >= lon_min) & (lon <= lon_max)
        placed, km = placed[inside], haversine_km(employer["lat"], employer["lon"], lat[inside], lon[inside])
        kms[placed[km <= radius]] = km[km <= radius]
        passing = (reach == ANYWHERE) | ~np.isnan(kms)
        at, rows, kms = at[passing], rows[passing].astype(np.int64), kms[passing]
        starts = start[at]
        picked = _earliest_then_nearest(rows, starts, kms)
        rows = rows[picked]
        found = FeasibleSet(self, rows, starts[picked], session["city"][at[picked]], kms[picked],
                            self._offer["key"][rows])
        return self._with_changed(found, demand, changed) if changed is not None else found

    def _passing(self, demand: dict[str, Any], offers: int) -> np.ndarray:
        """By offer: visible to the demand's network and published, of one of its formats, within
        its price ceiling and, where funding is required, fundable."""
        offer = self._offer
        tenant = self._tenants.get(demand["tenant"])
        visible = offer["all"][:offers].copy()
        if tenant is not None:
            visible |= offer["home"][:offers] == tenant
            visible |= self._shared[:offers, tenant]
        visible &= offer["published"][:offers]
        wanted = np.array([f in demand["formats"] for f in self._format_names] + [False])
        visible &= wanted[offer["format"][:offers]]
        if demand.get("max_price_eur") is not None:
            visible &= offer["price"][:offers] <= float(demand["max_price_eur"])
        if demand["funding_required"]:
            visible &= offer["qcg"][:offers]
        return visible

    def _with_changed(self, found: FeasibleSet, demand: dict[str, Any], changed: dict[str, Any]) -> FeasibleSet:
        row = self._rows.get(changed["id"], -1)
        keep = found.rows != row if row >= 0 else slice(None)
        rows, starts, cities, kms, keys = (found.rows[keep], found.start_days[keep], found.cities[keep],
                                           found.kms[keep], found.keys[keep])
        judged = check(changed, demand)
        if judged.ok:
            place = judged.session.get("location") or {}
            rows = np.append(rows, row)
            starts = np.append(starts, day(judged.session["start"]))
            cities = np.append(cities, self._city_code(place.get("city")))
            kms = np.append(kms, np.nan if judged.distance_km is None else judged.distance_km)
            keys = np.append(keys, np.uint64(_order_key(changed["id"])))
        return FeasibleSet(self, rows, starts, cities, kms, keys, changed_id=changed["id"])

    def rows(self, offer_ids: Iterable[str]) -> np.ndarray:
        """The offers' rows in the index, -1 where none is known yet."""
        return np.array(list(map(self._rows.get, offer_ids, itertools.repeat(-1))), dtype=np.int64)

    def vectors_at(self, rows: np.ndarray) -> np.ndarray:
        """The vectors of the given rows as float32 (zeros where the row is -1)."""
        out = self._matrix[np.where(rows >= 0, rows, 0)].astype(np.float32)
        out[rows < 0] = 0.0
        return out

    def vectors(self, offer_ids: Iterable[str]) -> tuple[np.ndarray, np.ndarray]:
        """The vectors of the given offers as float32 rows (zeros where none is known yet), and which
        were known."""
        rows = self.rows(offer_ids)
        return self.vectors_at(rows), rows >= 0

    def codes(self, rows: np.ndarray) -> CodeBlock:
        """The 8-bit codes of the given rows (-1: none yet), read once for several first-step products
        (in the order given: rows in memory order, as a feasible set has them, are read fastest)."""
        return CodeBlock(self._codes, self._scales, rows)

    def stats(self) -> dict:
        return {"offers": len(self._rows), "mark": self.mark, "sessions": self._sessions - self._retired}


class CodeBlock:
    """Many offers' 8-bit codes, gathered once and widened a chunk at a time into one reused buffer (a
    fresh float32 copy per product costs more than the product)."""

    def __init__(self, codes: np.ndarray, scales: np.ndarray, rows: np.ndarray) -> None:
        safe = np.where(rows >= 0, rows, 0)
        self._codes = np.take(codes, safe, axis=0)  # (5 ms for 70,000 rows, where codes[safe] takes 8)
        self._scales = np.where(rows >= 0, scales[safe], 0.0).astype(np.float32)  # 0 for -1
        self._buffer = np.empty((min(CHUNK, len(rows)), codes.shape[1]), dtype=np.float32)

    def scores(self, query: np.ndarray) -> np.ndarray:
        """Each row's cosine with ``query`` from the codes (off by about 0.003; 0 for -1): the first
        step over many offers, whose best are then scored exactly."""
        query = np.asarray(query, dtype=np.float32).reshape(-1)
        out = np.empty(len(self._scales), dtype=np.float32)
        for start in range(0, len(out), CHUNK):
            part = self._codes[start:start + CHUNK]
            wide = self._buffer[: len(part)]
            np.copyto(wide, part, casting="unsafe")
            np.matmul(wide, query, out=out[start:start + len(part)])
        out *= self._scales
        return out


def _run_starts(values: np.ndarray) -> np.ndarray:
    """Where each run of equal neighbouring values begins (an offer's sessions, which lie together)."""
    if not len(values):
        return np.zeros(0, dtype=np.int64)
    return np.flatnonzero(np.r_[True, values[1:] != values[:-1]])


def _earliest_then_nearest(rows: np.ndarray, starts: np.ndarray, kms: np.ndarray) -> np.ndarray:
    """Of each offer's passing sessions the one ``domain.check`` picks: the earliest start, then the
    nearest (one key: days and km within a day, exact in float64), then the first in the offer's
    order. An offer's sessions lie next to each other (they are appended together), so its sessions
    are a run of equal ``rows``: no sort is needed. Answers their positions."""
    n = len(rows)
    heads = _run_starts(rows)
    if len(heads) == n:  # one session each (the usual case)
        return np.arange(n)
    key = starts * 1e6 + np.nan_to_num(kms)
    group = np.repeat(np.arange(len(heads)), np.diff(np.r_[heads, n]))
    hits = np.flatnonzero(key == np.minimum.reduceat(key, heads)[group])
    return hits[_run_starts(group[hits])]


def _order_key(offer_id: str) -> int:
    """An offer id's first 64 bits (ids are uuids; another id sorts first)."""
    try:
        return int(offer_id[:8] + offer_id[9:13] + offer_id[14:18], 16)
    except ValueError:
        return 0


def haversine_km(lat: float, lon: float, lats: np.ndarray, lons: np.ndarray) -> np.ndarray:
    """Great-circle distances from one point, as ``runtime.places.haversine_km`` computes each."""
    p1, p2 = np.radians(lat), np.radians(lats)
    a = np.sin((p2 - p1) / 2) ** 2 + np.cos(p1) * np.cos(p2) * np.sin(np.radians(lons - lon) / 2) ** 2
    return 2 * EARTH_RADIUS_KM * np.arcsin(np.sqrt(np.minimum(1.0, a)))


def grown(array: np.ndarray, size: int, fill: int = 0) -> np.ndarray:
    """A copy of ``array`` with ``size`` rows, the new ones ``fill``."""
    shape = (size, *array.shape[1:])
    out = np.zeros(shape, dtype=array.dtype) if fill == 0 else np.full(shape, fill, dtype=array.dtype)
    out[: len(array)] = array
    return out


_index: OfferIndex | None = None


def offer_index() -> OfferIndex:
    """The process's index (made on first use, filled by its first sync)."""
    global _index
    if _index is None:
        _index = OfferIndex()
    return _index


def reset_index() -> None:
    """Forget the process's index (tests that swap databases)."""
    global _index
    _index = None
