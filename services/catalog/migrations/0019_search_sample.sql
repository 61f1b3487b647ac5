-- A common word's bounded count, from an eighth of the offers first.
--
-- A search counts its hits exactly up to 1,000 and says "more than 1,000" beyond. For a word that
-- 41,712 of 1,000,000 offers hold ("Pflege"), GIN answers only with a bitmap of every hit, built
-- whole before one offer is read: 8.8 ms of the bounded count's 15.7 (psql, warm, alone, at the
-- 1,000,000 offers of make bench-catalog, 2026-12-07 02:28 UTC, a diagnosis), and the count was most
-- of the 17-19 ms of PostgreSQL's CPU a text search took in that bench.
--
-- An eighth of the offers (those whose id hashes to 0 of 8) has a text index of its own. Where only
-- a text is asked, the count asks that eighth first: if more than the bound of its offers match, so
-- do more than the bound of all offers, and the answer is exact as before. Otherwise the whole count
-- follows, as before (an eighth more of the index read). The same for the facets, which count over
-- the first hits found: they are then the first hits of the eighth. "Pflege"'s count: 15.7 → 7.5 ms
-- (the eighth's bitmap 3.3 ms for its 5,176 hits). Not with any other filter: a filter leaves fewer
-- hits in the eighth, and each offer of the eighth's index must then be read to check it ("Python"
-- online: 13 ms in the eighth, which held 570 of them, and then the whole count as before).
-- The network's visibility is a column of this index too, as offer_search_where writes it: the
-- eighth's bitmap then holds only offers the network sees, and fewer offers are read (that count
-- 7.5 → 4.9 ms; its index 21 MB either way).
CREATE INDEX offers_search_sample ON offers USING gin (search, (visible_to || '{}'::text[]))
    WHERE uuid_hash(id) & 7 = 0 AND status = 'published';

-- The clause that restricts a search to the eighth, or NULL where the count should not try it.
CREATE FUNCTION search_sample_clause(f jsonb) RETURNS text LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE WHEN f ? 'q' AND f - ARRAY['q', 'few'] = '{}'::jsonb THEN ' AND uuid_hash(o.id) & 7 = 0' END
$$;

CREATE OR REPLACE FUNCTION search_offer_count(f jsonb, bound int) RETURNS bigint
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = public, pg_temp AS $$
DECLARE
    n bigint;
    b int := least(greatest(bound, 1), 100000);
    clauses text := offer_search_where(f);
    sample text := search_sample_clause(f);
BEGIN
    IF sample IS NOT NULL THEN
        EXECUTE format('SELECT count(*) FROM (SELECT 1 FROM offers o WHERE %s%s LIMIT %s) t',
                       clauses, sample, b + 1) INTO n;
        IF n > b THEN
            RETURN n;
        END IF;
    END IF;
    EXECUTE format('SELECT count(*) FROM (SELECT 1 FROM offers o WHERE %s LIMIT %s) t', clauses, b + 1) INTO n;
    RETURN n;
END
$$;
-- CREATE OR REPLACE resets a function's settings: those of 0009, 0010 and 0012 again
ALTER FUNCTION search_offer_count(jsonb, int)
    SET jit = off SET max_parallel_workers_per_gather = 0 SET enable_seqscan = off SET work_mem = '32MB';

-- The facets' query over the first `bound` offers that pass `clauses` (as 0003 wrote it).
CREATE FUNCTION search_facets_sql(clauses text, bound int) RETURNS text LANGUAGE sql IMMUTABLE AS $$
    SELECT format(
        'WITH hits AS (SELECT o.format, o.schedule, o.qualification, o.funding FROM offers o WHERE %s LIMIT %s)'
        ' SELECT ''format'' AS facet, format AS value, count(*) AS n FROM hits GROUP BY 2'
        ' UNION ALL SELECT ''schedule'', schedule, count(*) FROM hits GROUP BY 2'
        ' UNION ALL SELECT ''qualification'', qualification, count(*) FROM hits GROUP BY 2'
        ' UNION ALL SELECT ''funding'', k, count(*) FROM hits, jsonb_each_text(funding) AS e(k, v)'
        '  WHERE v = ''true'' GROUP BY 2',
        clauses, bound)
$$;

CREATE OR REPLACE FUNCTION search_offer_facets(f jsonb, bound int) RETURNS TABLE (facet text, value text, n bigint)
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = public, pg_temp AS $$
DECLARE
    b int := least(greatest(bound, 1), 100000);
    clauses text := offer_search_where(f);
    sample text := search_sample_clause(f);
    counts jsonb;
BEGIN
    IF sample IS NOT NULL THEN
        EXECUTE format('SELECT coalesce(jsonb_agg(jsonb_build_array(c.facet, c.value, c.n)), ''[]'') FROM (%s) c',
                       search_facets_sql(clauses || sample, b)) INTO counts;
        -- every offer has exactly one format: its counts add up to the offers counted
        IF (SELECT coalesce(sum((c->>2)::bigint), 0) FROM jsonb_array_elements(counts) c WHERE c->>0 = 'format') >= b THEN
            RETURN QUERY SELECT c->>0, c->>1, (c->>2)::bigint FROM jsonb_array_elements(counts) c;
            RETURN;
        END IF;
    END IF;
    RETURN QUERY EXECUTE search_facets_sql(clauses, b);
END
$$;
ALTER FUNCTION search_offer_facets(jsonb, int)
    SET jit = off SET max_parallel_workers_per_gather = 0 SET enable_seqscan = off SET work_mem = '32MB';
