-- A search by place without a text ("Arnsberg, 25 km, in person") walked every offer in id order and
-- checked each one's sessions for the place: at 1,000,000 offers, where few are near (223 sessions
-- in the box around Arnsberg), the facets took 830 ms and the page 175 ms, the public network page
-- 1 s alone and 7 s at p99 under load. Where the box around the circle holds few sessions, the
-- offers are now found from those sessions: 13.5 ms for the whole search. Where it holds many (100 km
-- around Dortmund: 400,000), that would read them all (4.8 s) while the walk finds a page soon
-- (28 ms): so the function first counts the box's sessions up to 5,000 and chooses. With a text, its
-- index leads as before.
--
-- The sessions are found by the cells of a grid (0.25° of latitude by 0.4° of longitude, some 28 km
-- square in Germany) that the box covers, from a B-tree that carries each session's place and offer.
-- A GiST index on the places answered the same, but cost a third of the open-Qcat import's speed
-- (100,000 offers: 1,380 → 988 offers/s); a B-tree entry costs little more than a row.
--
-- The WHERE clause below is also the one 0012's indexes and settings need: the funding filter as
-- one condition per kind, and session checks that name an offer column beside its id.
CREATE FUNCTION place_cell(lat float8, lon float8) RETURNS int LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT (floor(lat / 0.25)::int + 360) * 1000 + floor(lon / 0.4)::int + 450
$$;

CREATE FUNCTION place_cells(south float8, north float8, west float8, east float8) RETURNS int[]
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT array_agg(place_cell((y + 0.5) * 0.25, (x + 0.5) * 0.4))  -- each cell named by its centre
    FROM generate_series(floor(south / 0.25)::int, floor(north / 0.25)::int) AS y,
         generate_series(floor(west / 0.4)::int, floor(east / 0.4)::int) AS x
$$;

CREATE INDEX offer_sessions_cell ON offer_sessions (place_cell(lat, lon)) INCLUDE (lat, lon, offer_id)
    WHERE lat IS NOT NULL;

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
