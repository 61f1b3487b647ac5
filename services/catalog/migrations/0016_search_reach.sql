-- A text search near a place read every offer holding the words and looked up its sessions one by
-- one until it had counted 1,001 hits: "Gabelstapler" within 25 km of Dortmund took 20.8 ms for the
-- count alone, the same word anywhere 8.5 ms; with QCG funding and a start window, 100 km, 26-41 ms
-- (psql at 1,000,000 offers, warm, one at a time: a diagnosis; make bench-catalog 2026-12-06 19:51
-- UTC: text + radius 273 ms at the median with sixteen at once, the combined shape 497 ms).
--
-- Each offer now carries where its sessions are, as words of its own (`reach`): "c" and the grid
-- cell (place_cell, 0014) of each placed session of an offer held at a place; "o" for an online or
-- distance offer. The text indexes become GIN indexes over (document, reach), so one index scan
-- gives the offers that hold the words and a session in the box's cells: GIN steps through the
-- cells' entries to the text's hits instead of reading both whole. The exact checks (the circle,
-- the start window) stay in the WHERE clause; the cells only narrow what they check. The same
-- searches: 25 km 20.8 -> 12.5 ms, 50 km 21.7 -> 12.8, the combined shape 26-41 -> 17-24 ms; but
-- "SPS" within 100 km of Lüneburg (64 cells, no funding) 18.6 -> 31.1 ms, so the cells are used
-- only where they are few (offer_search_where below), and never in a page's walk by id (0017, which
-- replaces search_offer_page: 0015's walk would take them). Cells with the start month as well (a
-- word per cell and month) saved nothing more on the count and made the page dearer.
--
-- The writes set `reach` from the sessions they write (store.insert_offers, update_offers); not a
-- trigger, because an offer's row is written before its sessions. Filling it for 1,000,000 offers
-- took 135 s in psql (a first version of the statement below, joining the sessions grouped by offer;
-- the text indexes dropped first, as below), building the five indexes 1.5-12 s each.

CREATE FUNCTION offer_reach(format text, sessions jsonb) RETURNS text[] LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT coalesce(array_agg(DISTINCT t ORDER BY t), '{}') FROM (
        SELECT 'o' AS t WHERE format IN ('online', 'distance')
        UNION ALL
        SELECT 'c' || place_cell(s.lat, s.lon)
        FROM jsonb_to_recordset(coalesce(sessions, '[]')) AS s(lat float8, lon float8)
        WHERE format NOT IN ('online', 'distance') AND s.lat IS NOT NULL AND s.lon IS NOT NULL
    ) AS words
$$;

ALTER TABLE offers ADD COLUMN reach text[] NOT NULL DEFAULT '{}';
DROP INDEX offers_search;
DROP INDEX offers_search_title;
DROP INDEX offers_search_bildungsgutschein;
DROP INDEX offers_search_qcg;
DROP INDEX offers_search_aufstiegsbafoeg;
ALTER TABLE offers DISABLE TRIGGER offers_visible_to;  -- neither visible_to nor the documents change here
ALTER TABLE offers DISABLE TRIGGER offers_search_document;
UPDATE offers o SET reach = offer_reach(o.format, (
    SELECT jsonb_agg(jsonb_build_object('lat', s.lat, 'lon', s.lon)) FROM offer_sessions s WHERE s.offer_id = o.id));
ALTER TABLE offers ENABLE TRIGGER offers_visible_to;
ALTER TABLE offers ENABLE TRIGGER offers_search_document;
CREATE INDEX offers_search ON offers USING gin (search, reach);
CREATE INDEX offers_search_title ON offers USING gin (search_title, reach);
CREATE INDEX offers_search_bildungsgutschein ON offers USING gin (search, reach) WHERE funding @> '{"bildungsgutschein": true}';
CREATE INDEX offers_search_qcg ON offers USING gin (search, reach) WHERE funding @> '{"qcg": true}';
CREATE INDEX offers_search_aufstiegsbafoeg ON offers USING gin (search, reach) WHERE funding @> '{"aufstiegsbafoeg": true}';

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
        -- a box around the circle, with a margin (earthdistance's sphere, 6378.168 km; a degree of
        -- latitude is at most 111.32 km on it); the great circle decides
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
                ' AND earth_distance(ll_to_earth(%L, %L), ll_to_earth(s.lat, s.lon)) <= %L%s))',
                cells, south, north, west, east, lat, lon, metres, in_window);
        ELSE
            -- each candidate offer's own sessions; the EXISTS names an offer column beside the id (the
            -- format), so the planner cannot hash every session near the place instead
            located := format(
                'EXISTS (SELECT 1 FROM offer_sessions s WHERE s.offer_id = o.id'
                ' AND o.format NOT IN (''online'', ''distance'')'
                ' AND s.lat BETWEEN %L AND %L AND s.lon BETWEEN %L AND %L'
                ' AND earth_distance(ll_to_earth(%L, %L), ll_to_earth(s.lat, s.lon)) <= %L%s)',
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
