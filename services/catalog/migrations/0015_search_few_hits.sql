-- A rare word walked the whole table. The page's first tier (every word in title or skills) walks
-- offers by id and stops at the page's end, or reads the word's few hits from the title's index,
-- whichever the planner finds cheaper. For a prefix ("staplerschein:*") that is not among the
-- words ANALYZE keeps, PostgreSQL guesses 0.5 % of the rows (DEFAULT_TS_MATCH_SEL): 2,780 visible
-- offers of 1,000,000 where 307 hold the word, so it walked and read 993,669 offers to find its 20:
-- 380 ms alone, and a p99 of 3 s for the text shape in make bench-catalog (2026-12-06 18:23 UTC),
-- where sixteen searches share two cores. Whether it walks depended on which words the last
-- ANALYZE sampled.
--
-- The search counts its hits (up to 1,000 and one more) before it asks for the page, so it knows
-- when they are few: it then says so ("few"), and the first tier gathers its hits from the index
-- first (the OFFSET 0 keeps the planner from turning that into the walk), as the second tier
-- always did. With more than 1,000 hits, one offer in a thousand or more holds the words, and the
-- walk finds a page within some 20,000 index entries.
CREATE OR REPLACE FUNCTION search_offer_page(f jsonb, after_rank real, after_id uuid, page_size int, skip int)
RETURNS TABLE (id uuid, rank real) LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = public, pg_temp AS $$
DECLARE
    n int := least(greatest(page_size, 1), 100);
    s int := least(greatest(skip, 0), 1000);
    q text := format('to_tsquery(''german'', de_fold(%L))', f->>'q');
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
        -- tier 1: every word in title or skills (the title's document implies the whole one's)
        IF coalesce((f->>'few')::boolean, false) THEN
            RETURN QUERY EXECUTE format(
                'SELECT t.id, 1::real FROM (SELECT o.id FROM offers o WHERE %s%s OFFSET 0) t'
                ' ORDER BY t.id DESC LIMIT %s OFFSET %s',
                offer_search_where(f, 'search_title'), before_id, n, s);
        ELSE
            RETURN QUERY EXECUTE format(
                'SELECT o.id, 1::real FROM offers o WHERE %s%s ORDER BY o.id DESC LIMIT %s OFFSET %s',
                offer_search_where(f, 'search_title'), before_id, n, s);
        END IF;
        GET DIAGNOSTICS got = ROW_COUNT;
        IF got >= n THEN
            RETURN;
        END IF;
        IF got = 0 AND s > 0 THEN  -- the offset reached past the title tier: skip the rest in tier 2
            EXECUTE format('SELECT count(*) FROM (SELECT 1 FROM offers o WHERE %s%s LIMIT %s) t',
                offer_search_where(f, 'search_title'), before_id, s)
                INTO title_hits;
            s := s - title_hits;
        ELSE
            s := 0;
        END IF;
        after_id := NULL;
        before_id := '';
    END IF;
    -- tier 2: the words (also) elsewhere. Planned for all the text's hits (the outer ORDER BY), never
    -- as a walk by id that a title-only word would carry through the whole table.
    RETURN QUERY EXECUTE format(
        'SELECT t.id, 0.5::real FROM (SELECT o.id, o.search_title FROM offers o WHERE %s%s OFFSET 0) t'
        ' WHERE NOT t.search_title @@ %s ORDER BY t.id DESC LIMIT %s OFFSET %s',
        offer_search_where(f, 'search'), before_id, q, n - got, s);
END
$$;
-- CREATE OR REPLACE resets a function's settings: those of 0009, 0010 and 0012 again
ALTER FUNCTION search_offer_page(jsonb, real, uuid, int, int)
    SET jit = off SET max_parallel_workers_per_gather = 0 SET enable_seqscan = off SET work_mem = '32MB';
