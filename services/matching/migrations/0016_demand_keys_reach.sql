-- Reverse matching reads, for an offer's sessions, the keys of their cells (and "anywhere") by start:
-- with every column it checks in the index, an index-only scan, where the keys' rows were fetched
-- from the table (at 100,000 open demands some 17,000 keys of a big town's cell: 40,000 pages).
CREATE INDEX demand_keys_reach ON demand_keys (tenant_id, format, cell, start_from)
    INCLUDE (start_to, max_price_eur, funding_required, lat, lon, max_distance_km, demand_id);
DROP INDEX demand_keys_lookup;

-- A demand's row (its state, about 0.8 kB of JSON, and two vectors of 768 bytes) passed the 2 kB at
-- which PostgreSQL moves values out of line: one of the vectors of most rows lay in the TOAST table,
-- and judging an offer against 3,000 reached demands read them through its index (51 ms instead of
-- 25 ms). Kept in the row (new and rewritten rows; every rematch rewrites a demand's row).
ALTER TABLE demands SET (toast_tuple_target = 4080);
