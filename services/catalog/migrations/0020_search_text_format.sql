-- A text with a format: the format is checked on the text's hits, not read from an index.
--
-- "Python" online counted its hits by ANDing the text index's bitmap with one of offers_filter_walk
-- (format, schedule, id) for "online": the planner costs reading an index by its pages, and the
-- B-tree's 181,266 entries for "online" took 47-170 ms to gather against the text's 41,482 in 8-12
-- (psql, alone, at the 1,000,000 offers of make bench-catalog, 2026-12-07 02:45 UTC, a diagnosis;
-- the bounded count 61-268 ms). A format narrows a text's hits by a fifth to a half, so checking it
-- on each hit costs less than any index read of it: the count took 14-25 ms that way ("Python"
-- online; with a kind of funding too 72 -> 17 ms). Near a place the same: "Python" online within
-- 50 km of Dortmund 81-131 -> 16 ms; "Python" in presence within 25 km took the same plan either way
-- (9-14 ms; 04:08 UTC).
--
-- Where a text is asked, the format clause is written so that no index can answer it (`(…) IS
-- TRUE`: the same rows). The rest of the clause is that of 0018, which keeps its name with
-- `_indexed` added and still reads the formats for its own ends (a place's online-or-near
-- condition); a search without a text (the filter-only walk skips to a format through
-- offers_filter_walk) is unchanged.
ALTER FUNCTION offer_search_where(jsonb, text) RENAME TO offer_search_where_indexed;

CREATE FUNCTION offer_search_where(f jsonb, text_column text) RETURNS text LANGUAGE plpgsql STABLE AS $$
DECLARE
    clauses text := offer_search_where_indexed(f, text_column);
    formats text;
BEGIN
    IF text_column IS NOT NULL AND f ? 'q' AND f ? 'formats' THEN
        -- the clause 0018 wrote for the formats, one of those it joined with ' AND ' (no other
        -- clause starts with it: the place's conditions name formats as "o.format IN" and "NOT IN")
        formats := search_in_clause('format', f->'formats');
        RETURN replace(clauses, ' AND ' || formats, ' AND (' || formats || ') IS TRUE');
    END IF;
    RETURN clauses;
END
$$;
