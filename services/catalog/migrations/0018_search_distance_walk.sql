-- Two costs of a search near a place, found at 1,000,000 offers (psql, warm, one search at a time,
-- 2026-12-06 23:15-23:25 UTC: diagnoses).
--
-- 1. The distance. earthdistance's `earth_distance(ll_to_earth(..), ll_to_earth(..))` is made of SQL
--    functions that PostgreSQL does not inline (each call ran `earth()` and `ll_to_earth` as statements
--    of their own): 5.6 us a session, 7.4 s to measure all 1,310,513 placed sessions. The
--    same great circle in plain arithmetic (haversine, on earthdistance's sphere of 6378.168 km) took
--    0.2 us a session, and the 196,517 sessions it finds within 100 km of Dortmund are the same ones
--    (the largest difference of a distance 2e-9 m). A search's circle is now that arithmetic, as an
--    SQL function PostgreSQL inlines.
--
-- 2. The walk. A tier's walk (0017) took the newest `bound` offers that pass every filter and matched
--    the text only then: so where a place or a start window is asked for, each of up to 5,000 offers
--    had its sessions looked up before the text could rule it out (text within 25-100 km, the
--    bench's 24 parameters: a page took 9.1-11.1 ms on average in two measurements, now 5.5-6.9).
--    The walk now takes the newest `bound` offers that pass the filters on the offer itself and asks
--    the text before the sessions (PostgreSQL orders a scan's conditions by their cost). The pages
--    stay the same: every hit passes the offer's own filters, so the walked offers are still all of
--    them down to the oldest walked, and a walk that does not fill the page is still followed by the
--    index's read.

-- Metres along the great circle on earthdistance's sphere. Plain arithmetic, so inlined into the
-- query that calls it (not STRICT, no settings: either would keep PostgreSQL from inlining it).
CREATE FUNCTION great_circle_m(lat1 float8, lon1 float8, lat2 float8, lon2 float8) RETURNS float8
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT 2 * 6378168 * asin(sqrt(least(1.0, sin(radians(lat2 - lat1) / 2) ^ 2
                                   + cos(radians(lat1)) * cos(radians(lat2)) * sin(radians(lon2 - lon1) / 2) ^ 2)))
$$;

CREATE OR REPLACE FUNCTION offer_search_where(f jsonb, text_column text) RETURNS text LANGUAGE plpgsql STABLE AS $$
DECLARE
    tenant text := current_setting('app.tenant_id', true);
    clauses text[] := ARRAY['o.status = ''published''',
                            format('(o.visible_to || ''{}''::text[]) && ARRAY[%L, ''*'']::text[]', tenant)];
    session_clauses text[] := '{}';
    lat float8;
    lon float8;
    metres float8;
    dlat float8;
    dlon float8;
    nearby int;
    bitmaps text;
    located text;
    in_window text;
    cells int[];
    reach text[];
    south float8;
    north float8;
    west float8;
    east float8;
BEGIN
    IF coalesce(tenant, '') = '' THEN
        RAISE EXCEPTION 'search needs an acting tenant';
    END IF;
    IF f ? 'q' AND text_column IS NOT NULL THEN
        clauses := clauses || format('o.%I @@ to_tsquery(''german'', de_fold(%L))', text_column, f->>'q');
    END IF;
    IF f ? 'formats' THEN
        clauses := clauses || search_in_clause('format', f->'formats');
    END IF;
    IF f ? 'schedules' THEN
        clauses := clauses || search_in_clause('schedule', f->'schedules');
    END IF;
    IF f ? 'qualifications' THEN
        clauses := clauses || search_in_clause('qualification', f->'qualifications');
    END IF;
    IF f ? 'funding' THEN  -- one condition per kind, each as a partial index below names it
        clauses := clauses || ARRAY(SELECT format('o.funding @> %L::jsonb', jsonb_build_object(x, true))
                                    FROM jsonb_array_elements_text(f->'funding') AS x ORDER BY x);
    END IF;
    IF f ? 'provider_id' THEN
        clauses := clauses || format('o.provider_id = %L::uuid', f->>'provider_id');
    END IF;
    IF f ? 'max_price_eur' THEN
        clauses := clauses || format('coalesce(o.price_eur, 0) <= %L::numeric', f->>'max_price_eur');
    END IF;
    IF f ? 'min_hours' THEN
        clauses := clauses || format('o.hours >= %L::numeric', f->>'min_hours');
    END IF;
    IF f ? 'max_hours' THEN
        clauses := clauses || format('o.hours <= %L::numeric', f->>'max_hours');
    END IF;
    IF f ? 'start_from' THEN
        session_clauses := session_clauses || format('s.start_date >= %L::date', f->>'start_from');
    END IF;
    IF f ? 'start_to' THEN
        session_clauses := session_clauses || format('s.start_date <= %L::date', f->>'start_to');
    END IF;
    IF f ? 'radius_km' THEN
        lat := (f->>'lat')::float8;
        lon := (f->>'lon')::float8;
        metres := (f->>'radius_km')::float8 * 1000;
        -- a box around the circle, with a margin (a sphere of 6378.168 km, earthdistance's; a degree
        -- of latitude is at most 111.32 km on it); the great circle decides
        dlat := metres / 111000.0 + 0.01;
        dlon := least(180, dlat / greatest(cos(radians(least(abs(lat) + dlat, 89.9))), 0.01));
        south := lat - dlat;
        north := lat + dlat;
        west := lon - dlon;
        east := lon + dlon;
        cells := place_cells(south, north, west, east);
        -- the text's index also narrows its hits to the box's cells, where that costs less than it
        -- saves (GIN steps through every cell's entries at each hit): up to 36 cells (50 km), up
        -- to 100 (100 km) where a kind of funding is asked for, whose own text index holds a fifth
        -- of the offers. Only where the text is part of this clause: a walk by id (0017) matches
        -- the text itself, and the cells would have the planner read and sort every hit instead.
        IF text_column IS NOT NULL AND f ? 'q'
           AND cardinality(cells) <= (CASE WHEN f ? 'funding' THEN 100 ELSE 36 END) THEN
            reach := ARRAY(SELECT 'c' || c FROM unnest(cells) AS c);
            IF NOT (f ? 'formats' AND NOT f->'formats' ?| ARRAY['online', 'distance']) THEN
                reach := reach || 'o'::text;
            END IF;
            clauses := clauses || format('o.reach && %L::text[]', reach);
        END IF;
        in_window := CASE WHEN cardinality(session_clauses) > 0
                          THEN ' AND ' || array_to_string(session_clauses, ' AND ') ELSE '' END;
        IF NOT f ? 'q' THEN  -- without a text: how many sessions are there in the box, up to a bound?
            bitmaps := current_setting('enable_bitmapscan');
            PERFORM set_config('enable_bitmapscan', 'off', true);  -- an index scan stops at the bound
            SELECT count(*) INTO nearby FROM (SELECT 1 FROM offer_sessions s WHERE s.lat IS NOT NULL
                AND place_cell(s.lat, s.lon) = ANY(cells) AND s.lat BETWEEN south AND north
                AND s.lon BETWEEN west AND east LIMIT 5000) t;
            PERFORM set_config('enable_bitmapscan', bitmaps, true);
        END IF;
        -- (the bound a setting, so that tests can have either way taken on a few offers)
        IF nearby < coalesce(nullif(current_setting('bildungsraum.search_nearby_bound', true), '')::int, 5000) THEN
            -- few places in reach: the offers found from their sessions
            located := format(
                'o.format NOT IN (''online'', ''distance'') AND o.id = ANY(ARRAY(SELECT s.offer_id'
                ' FROM offer_sessions s WHERE s.lat IS NOT NULL AND place_cell(s.lat, s.lon) = ANY(%L::int[])'
                ' AND s.lat BETWEEN %L AND %L AND s.lon BETWEEN %L AND %L'
                ' AND great_circle_m(%L, %L, s.lat, s.lon) <= %L%s))',
                cells, south, north, west, east, lat, lon, metres, in_window);
        ELSE
            -- each candidate offer's own sessions; the EXISTS names an offer column beside the id (the
            -- format), so the planner cannot hash every session near the place instead
            located := format(
                'EXISTS (SELECT 1 FROM offer_sessions s WHERE s.offer_id = o.id'
                ' AND o.format NOT IN (''online'', ''distance'')'
                ' AND s.lat BETWEEN %L AND %L AND s.lon BETWEEN %L AND %L'
                ' AND great_circle_m(%L, %L, s.lat, s.lon) <= %L%s)',
                south, north, west, east, lat, lon, metres, in_window);
        END IF;
        IF f ? 'formats' AND NOT f->'formats' ?| ARRAY['online', 'distance'] THEN
            clauses := clauses || located;
        ELSE
            -- online and distance offers have no place: for them the start window alone counts
            clauses := clauses || format('((o.format IN (''online'', ''distance'')%s) OR (%s))',
                CASE WHEN in_window <> '' THEN ' AND EXISTS (SELECT 1 FROM offer_sessions s WHERE s.offer_id = o.id'
                     ' AND o.format IN (''online'', ''distance'')' || in_window || ')' ELSE '' END,
                located);
        END IF;
    ELSIF cardinality(session_clauses) > 0 THEN
        clauses := clauses || ('EXISTS (SELECT 1 FROM offer_sessions s WHERE s.offer_id = o.id AND o.format <> '''' AND '
                               || array_to_string(session_clauses, ' AND ') || ')');
    END IF;
    RETURN array_to_string(clauses, ' AND ');
END
$$;

CREATE OR REPLACE FUNCTION search_walk(f jsonb, before_id text, hit text, bound int, want int) RETURNS uuid[]
LANGUAGE plpgsql STABLE SET search_path = public, pg_temp AS $$
DECLARE
    walked uuid[];
    offer_only jsonb := f - ARRAY['lat', 'lon', 'radius_km', 'start_from', 'start_to'];
BEGIN
    EXECUTE format(
        'SELECT array_agg(w.id ORDER BY w.id DESC) FROM (SELECT o.id FROM (SELECT o.*'
        ' FROM offers o WHERE %s%s ORDER BY o.id DESC LIMIT %s) o WHERE %s AND %s ORDER BY o.id DESC LIMIT %s) w',
        offer_search_where(offer_only, NULL), before_id, bound, hit,
        CASE WHEN offer_only = f THEN 'true' ELSE offer_search_where(f, NULL) END, want) INTO walked;
    RETURN walked;
END
$$;
-- CREATE OR REPLACE resets a function's settings: those of 0017 again
ALTER FUNCTION search_walk(jsonb, text, text, int, int)
    SET jit = off SET max_parallel_workers_per_gather = 0 SET enable_seqscan = off SET work_mem = '32MB';
