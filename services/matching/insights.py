"""Unmet demand ("Welche Lücken existieren?"): per skill cluster and region, the network's demands of a
period beside the offers it can see. Read inside the network's transaction (row-level security)."""

from __future__ import annotations

from datetime import date, timedelta

import asyncpg

from services.matching.clusters import UNKNOWN

NO_PLACE = "ohne Ortsangabe"


async def gaps(conn: asyncpg.Connection, start: date, end: date) -> list[dict]:
    """Rows of skill_cluster, district, demands (opened in the period), participants, demands without a
    good match (no pair above the threshold was ever found for them) and offers available now
    (published, visible to the network, a session still to come: located in the district, or
    online and distance learning, which serve every district)."""
    demand_rows = await conn.fetch(
        "SELECT coalesce(d.skill_cluster, $3) AS cluster, coalesce(d.region, $4) AS district,"
        " count(*) AS demands, coalesce(sum(d.participants), 0) AS participants,"
        " count(*) FILTER (WHERE NOT EXISTS (SELECT 1 FROM matches m WHERE m.demand_id = d.id)) AS unmatched"
        " FROM demands d WHERE d.created_at >= $1 AND d.created_at < $2 GROUP BY 1, 2",
        start, end + timedelta(days=1), UNKNOWN, NO_PLACE)
    if not demand_rows:
        return []
    clusters = sorted({r["cluster"] for r in demand_rows})
    districts = sorted({r["district"] for r in demand_rows})
    located = await conn.fetch(
        "SELECT o.skill_cluster AS cluster, s.region AS district, count(DISTINCT o.id) AS offers"
        " FROM offer_sessions s JOIN offers o ON o.id = s.offer_id"
        " WHERE s.status = 'published' AND s.cell IS NOT NULL AND s.start_date >= current_date"
        " AND s.region = ANY($1::text[]) AND o.skill_cluster = ANY($2::text[]) GROUP BY 1, 2",
        districts, clusters)
    remote = await conn.fetch(
        "SELECT skill_cluster AS cluster, count(*) AS offers FROM offers"
        " WHERE status = 'published' AND remote AND last_start >= current_date AND skill_cluster = ANY($1::text[])"
        " GROUP BY 1", clusters)
    near = {(r["cluster"], r["district"]): r["offers"] for r in located}
    anywhere = {r["cluster"]: r["offers"] for r in remote}
    items = []
    for r in demand_rows:
        in_district = near.get((r["cluster"], r["district"]), 0)
        everywhere = anywhere.get(r["cluster"], 0)
        items.append({"skill_cluster": r["cluster"], "district": r["district"], "demands": r["demands"],
                      "participants": int(r["participants"]), "demands_without_good_match": r["unmatched"],
                      "offers_available": in_district + everywhere, "offers_in_district": in_district,
                      "offers_remote": everywhere})
    items.sort(key=lambda i: (-i["demands_without_good_match"], -i["demands"], i["skill_cluster"], i["district"]))
    return items
