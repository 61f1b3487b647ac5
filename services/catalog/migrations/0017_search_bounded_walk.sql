-- A word found in descriptions but in no title ("Lehrwerkstatt", "Jupyter": about 40,000 offers each at
-- 1,000,000) walked the whole table for the page's first tier: its count says more than 1,000 hits,
-- so the title tier walks offers by id until it has a page, and no title holds the word. 670-880 ms
-- for one page with everything in memory, 16 s cold; a word in half the descriptions
-- ("Dozentinnen") 1.2 s, its second tier then reading all 500,000 hits to sort them (psql at
-- 1,000,000 offers, one search at a time, 2026-12-06 21:25-21:30 UTC: a diagnosis).
--
-- Each tier now walks at most the newest `walk_bound` offers (5,000, more for deep pages), and only
-- where that walk does not fill the page reads the tier's hits from the text's index: if the newest
-- 5,000 offers hold fewer than a page, the tier's hits are rare (at most about one in 250 offers),
-- so reading them all is cheap. The walk finds a page of a common word within a few hundred
-- offers, as before. Both ways give the same offers in the same order (newest first in a tier).
-- (The bound is a setting, so that tests can have the walk stop early on a few offers.)

-- The newest offers that pass the filters and `hit`, at most `want` of them among the newest
-- `bound` after `before_id`, newest first: a tier's page where the walk fills it. The text is
-- matched here, not in offer_search_where, so no cells of 0016 turn the walk into a sort.
CREATE FUNCTION search_walk(f jsonb, before_id text, hit text, bound int, want int) RETURNS uuid[]
LANGUAGE plpgsql STABLE SET search_path = public, pg_temp AS $$
DECLARE
    walked uuid[];
BEGIN
    EXECUTE format(
        'SELECT array_agg(w.id ORDER BY w.id DESC) FROM (SELECT o.id FROM (SELECT o.id, o.search, o.search_title'
        ' FROM offers o WHERE %s%s ORDER BY o.id DESC LIMIT %s) o WHERE %s ORDER BY o.id DESC LIMIT %s) w',
        offer_search_where(f, NULL), before_id, bound, hit, want) INTO walked;
    RETURN walked;
END
$$;
ALTER FUNCTION search_walk(jsonb, text, text, int, int)
    SET jit = off SET max_parallel_workers_per_gather = 0 SET enable_seqscan = off SET work_mem = '32MB';

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
        -- tier 1: every word in title or skills (the title's document implies the whole one's)
        IF NOT coalesce((f->>'few')::boolean, false) THEN
            -- the newest offers first, at most walk_bound of them
            walk_bound := coalesce(walk_set, greatest(5000, 250 * (n + s)));
            walked := search_walk(f, before_id, format('o.search_title @@ %s', q), walk_bound, n + s);
            IF coalesce(cardinality(walked), 0) = n + s THEN
                RETURN QUERY SELECT w.id, 1::real FROM unnest(walked[s + 1:]) WITH ORDINALITY AS w(id, k) ORDER BY w.k;
                RETURN;
            END IF;
        END IF;
        -- the tier's hits from the title's index (few, or the walk found fewer than a page)
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
    IF NOT coalesce((f->>'few')::boolean, false) THEN
        walk_bound := coalesce(walk_set, greatest(5000, 250 * (n - got + s)));
        walked := search_walk(f, before_id, format('o.search @@ %1$s AND NOT o.search_title @@ %1$s', q), walk_bound,
                              n - got + s);
        IF coalesce(cardinality(walked), 0) = n - got + s THEN
            RETURN QUERY SELECT w.id, 0.5::real FROM unnest(walked[s + 1:]) WITH ORDINALITY AS w(id, k) ORDER BY w.k;
            RETURN;
        END IF;
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
