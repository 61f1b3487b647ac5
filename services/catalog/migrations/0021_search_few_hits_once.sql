-- A search with few hits reads them once: the count, or the facets, give the page from their own read.
--
-- Where the bounded count finds at most 1,000 hits ("few"), the page read its first tier from the
-- title's index and, where that did not fill the page, its second from the text's. Near a place with
-- a kind of funding the title's index has no partial index per funding beside it, so the planner
-- ANDed it with offers_funding's 177,837 entries for "qcg": "Pflege" with qcg within 100 km of
-- Leipzig and a start window took 72-77 ms for its page of 20 of 782 hits, where its count took 14
-- (five of the catalog bench's 24 parameter sets of that shape: 71-77 ms each; psql and asyncpg at
-- the 1,000,000 offers of make bench-catalog, alone, 2026-12-07 05:31-05:33 UTC, a diagnosis).
--
-- The count, and the facets, which count over the same first hits, read every hit through the
-- text's index (the partial index per funding, the cells of a place) to count it. Where they find
-- at most the bound, they have read all of them: they now also return the page, those hits ranked
-- by whether their title holds the words (the title's document implies the whole one's, so the two
-- tiers are exactly the text's hits split by that test). Same offers, same order (the title's tier
-- first, newest first in a tier), same cursor. The page function keeps the walk of many hits only.
CREATE OR REPLACE FUNCTION search_offer_page(f jsonb, after_rank real, after_id uuid, page_size int, skip int)
RETURNS TABLE (id uuid, rank real) LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = public, pg_temp AS $$
DECLARE
    n int := least(greatest(page_size, 1), 100);
    s int := least(greatest(skip, 0), 1000);
    q text := format('to_tsquery(''german'', de_fold(%L))', f->>'q');
    walk_set int := nullif(current_setting('bildungsraum.search_walk_bound', true), '')::int;
    walk_bound int;
    walked uuid[];
    got int := 0;
    title_hits int;
    before_id text := CASE WHEN after_id IS NULL THEN '' ELSE format(' AND o.id < %L::uuid', after_id) END;
BEGIN
    IF NOT f ? 'q' THEN
        RETURN QUERY EXECUTE format('SELECT o.id, 0::real FROM offers o WHERE %s%s ORDER BY o.id DESC LIMIT %s OFFSET %s',
            offer_search_where(f), before_id, n, s);
        RETURN;
    END IF;
    IF after_id IS NULL OR after_rank > 0.75 THEN
        -- tier 1: every word in title or skills (the title's document implies the whole one's);
        -- the newest offers first, at most walk_bound of them
        walk_bound := coalesce(walk_set, greatest(5000, 250 * (n + s)));
        walked := search_walk(f, before_id, format('o.search_title @@ %s', q), walk_bound, n + s);
        IF coalesce(cardinality(walked), 0) = n + s THEN
            RETURN QUERY SELECT w.id, 1::real FROM unnest(walked[s + 1:]) WITH ORDINALITY AS w(id, k) ORDER BY w.k;
            RETURN;
        END IF;
        -- the tier's hits from the title's index (the walk found fewer than a page)
        RETURN QUERY EXECUTE format(
            'SELECT t.id, 1::real FROM (SELECT o.id FROM offers o WHERE %s%s OFFSET 0) t'
            ' ORDER BY t.id DESC LIMIT %s OFFSET %s',
            offer_search_where(f, 'search_title'), before_id, n, s);
        GET DIAGNOSTICS got = ROW_COUNT;
        IF got >= n THEN
            RETURN;
        END IF;
        IF got = 0 AND s > 0 THEN  -- the offset reached past the title tier: skip the rest in tier 2
            EXECUTE format('SELECT count(*) FROM (SELECT 1 FROM offers o WHERE %s%s OFFSET 0) t',
                offer_search_where(f, 'search_title'), before_id)
                INTO title_hits;
            s := greatest(s - title_hits, 0);
        ELSE
            s := 0;
        END IF;
        after_id := NULL;
        before_id := '';
    END IF;
    -- tier 2: the words (also) elsewhere; the newest offers first, then the text's index
    walk_bound := coalesce(walk_set, greatest(5000, 250 * (n - got + s)));
    walked := search_walk(f, before_id, format('o.search @@ %1$s AND NOT o.search_title @@ %1$s', q), walk_bound,
                          n - got + s);
    IF coalesce(cardinality(walked), 0) = n - got + s THEN
        RETURN QUERY SELECT w.id, 0.5::real FROM unnest(walked[s + 1:]) WITH ORDINALITY AS w(id, k) ORDER BY w.k;
        RETURN;
    END IF;
    RETURN QUERY EXECUTE format(
        'SELECT t.id, 0.5::real FROM (SELECT o.id, o.search_title FROM offers o WHERE %s%s OFFSET 0) t'
        ' WHERE NOT t.search_title @@ %s ORDER BY t.id DESC LIMIT %s OFFSET %s',
        offer_search_where(f, 'search'), before_id, q, n - got, s);
END
$$;
-- CREATE OR REPLACE resets a function's settings: those of 0009, 0010 and 0012 again
ALTER FUNCTION search_offer_page(jsonb, real, uuid, int, int)
    SET jit = off SET max_parallel_workers_per_gather = 0 SET enable_seqscan = off SET work_mem = '32MB';


-- The page of hits a count has just read, each of which passed every clause (the network's
-- visibility too): ranked as search_offer_page ranks them, newest first within a tier, after the
-- cursor. Not a definer function: called by the app itself it reads through the row policies.
CREATE FUNCTION search_rank_hits(f jsonb, hits uuid[], after_rank real, after_id uuid, page_size int, skip int)
RETURNS TABLE (id uuid, rank real) LANGUAGE plpgsql STABLE SET search_path = public, pg_temp AS $$
BEGIN
    RETURN QUERY EXECUTE format(
        'SELECT t.id, t.rank FROM (SELECT o.id, (%s)::real AS rank FROM offers o WHERE o.id = ANY($1)) t%s'
        ' ORDER BY t.rank DESC, t.id DESC LIMIT %s OFFSET %s',
        CASE WHEN f ? 'q'
             THEN format('CASE WHEN o.search_title @@ to_tsquery(''german'', de_fold(%L)) THEN 1 ELSE 0.5 END', f->>'q')
             ELSE '0' END,
        CASE WHEN after_id IS NULL THEN ''
             WHEN NOT f ? 'q' THEN format(' WHERE t.id < %L::uuid', after_id)
             ELSE format(' WHERE (t.rank, t.id) < (%s::real, %L::uuid)',
                         CASE WHEN after_rank > 0.75 THEN 1 ELSE 0.5 END, after_id) END,
        least(greatest(page_size, 1), 100), least(greatest(skip, 0), 1000)) USING hits;
END
$$;
ALTER FUNCTION search_rank_hits(jsonb, uuid[], real, uuid, int, int)
    SET jit = off SET max_parallel_workers_per_gather = 0 SET enable_seqscan = off SET work_mem = '32MB';

-- The count up to the bound and one more, and where it finds at most the bound, the page. One row
-- with no id where there is no page to give: more hits than the bound (the page is then walked),
-- none at all, or none after the cursor.
CREATE FUNCTION search_offer_count_page(f jsonb, bound int, after_rank real, after_id uuid, page_size int, skip int)
RETURNS TABLE (total bigint, id uuid, rank real)
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = public, pg_temp AS $$
DECLARE
    b int := least(greatest(bound, 1), 100000);
    clauses text := offer_search_where(f);
    sample text := search_sample_clause(f);
    hits uuid[];
    counted bigint;
BEGIN
    IF sample IS NOT NULL THEN  -- a text alone: the eighth first (0019)
        EXECUTE format('SELECT count(*) FROM (SELECT 1 FROM offers o WHERE %s%s LIMIT %s) t',
                       clauses, sample, b + 1) INTO counted;
        IF counted > b THEN
            RETURN QUERY SELECT counted, NULL::uuid, NULL::real;
            RETURN;
        END IF;
    END IF;
    EXECUTE format('SELECT array_agg(t.id) FROM (SELECT o.id FROM offers o WHERE %s LIMIT %s) t', clauses, b + 1)
        INTO hits;
    counted := coalesce(cardinality(hits), 0);
    IF counted <= b THEN
        RETURN QUERY SELECT counted, r.id, r.rank FROM search_rank_hits(f, hits, after_rank, after_id, page_size, skip) r;
        IF FOUND THEN
            RETURN;
        END IF;
    END IF;
    RETURN QUERY SELECT counted, NULL::uuid, NULL::real;
END
$$;
ALTER FUNCTION search_offer_count_page(jsonb, int, real, uuid, int, int)
    SET jit = off SET max_parallel_workers_per_gather = 0 SET enable_seqscan = off SET work_mem = '32MB';

-- The facets' query (0019's) also gives the ids of the hits it counted, in a row of its own.
CREATE OR REPLACE FUNCTION search_facets_sql(clauses text, bound int) RETURNS text LANGUAGE sql IMMUTABLE AS $$
    SELECT format(
        'WITH hits AS (SELECT o.id, o.format, o.schedule, o.qualification, o.funding FROM offers o WHERE %s LIMIT %s)'
        ' SELECT ''format'' AS facet, format AS value, count(*) AS n, NULL::uuid[] AS ids FROM hits GROUP BY 2'
        ' UNION ALL SELECT ''schedule'', schedule, count(*), NULL FROM hits GROUP BY 2'
        ' UNION ALL SELECT ''qualification'', qualification, count(*), NULL FROM hits GROUP BY 2'
        ' UNION ALL SELECT ''funding'', k, count(*), NULL FROM hits, jsonb_each_text(funding) AS e(k, v)'
        '  WHERE v = ''true'' GROUP BY 2'
        ' UNION ALL SELECT NULL, NULL, count(*), array_agg(id) FROM hits',
        clauses, bound)
$$;

-- The facets over the first `bound` hits (a text alone: those of the eighth first, as 0019), and
-- where those are all the hits (fewer than the bound), the page: facet rows have no id, page rows
-- no facet.
CREATE FUNCTION search_offer_facets_page(f jsonb, bound int, after_rank real, after_id uuid, page_size int, skip int)
RETURNS TABLE (facet text, value text, n bigint, id uuid, rank real)
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = public, pg_temp AS $$
DECLARE
    b int := least(greatest(bound, 1), 100000);
    clauses text := offer_search_where(f);
    sample text := search_sample_clause(f);
    counts jsonb;
    counted bigint;
    hits uuid[];
    gathered text := 'SELECT coalesce(jsonb_agg(jsonb_build_array(c.facet, c.value, c.n)) FILTER (WHERE c.facet IS NOT NULL),'
                     ' ''[]''), max(c.n) FILTER (WHERE c.facet IS NULL), max(c.ids) FROM (%s) c';
BEGIN
    IF sample IS NOT NULL THEN
        EXECUTE format(gathered, search_facets_sql(clauses || sample, b)) INTO counts, counted, hits;
    END IF;
    IF counted IS NULL OR counted < b THEN  -- no eighth asked, or it holds fewer: all hits
        EXECUTE format(gathered, search_facets_sql(clauses, b)) INTO counts, counted, hits;
    END IF;
    RETURN QUERY SELECT c->>0, c->>1, (c->>2)::bigint, NULL::uuid, NULL::real FROM jsonb_array_elements(counts) c;
    IF counted < b THEN
        RETURN QUERY SELECT NULL::text, NULL::text, NULL::bigint, r.id, r.rank
                     FROM search_rank_hits(f, hits, after_rank, after_id, page_size, skip) r;
    END IF;
END
$$;
ALTER FUNCTION search_offer_facets_page(jsonb, int, real, uuid, int, int)
    SET jit = off SET max_parallel_workers_per_gather = 0 SET enable_seqscan = off SET work_mem = '32MB';

-- One function counts, one counts by facet: each gives the page of few hits as well.
DROP FUNCTION search_offer_count(jsonb, int);
DROP FUNCTION search_offer_facets(jsonb, int);
