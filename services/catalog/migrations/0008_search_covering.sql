-- Search answered from indexes alone where it can be. At 1,000,000 offers a search spent its time
-- reading offers from the table one by one (each from another page) to check visibility, filters
-- and the title. Covering indexes hold what those checks read, so PostgreSQL checks them inside
-- the index (an index-only scan, no table reads once the visibility map says the pages are clean):
--   * offers_walk: published offers by id with visibility, the filter columns and the title
--     document: the title tier and filter-only searches walk it newest first and stop at the page;
--   * offers_filter_walk: the same by format and schedule first, for filter searches naming them
--     (the walk skips straight to that format and schedule);
--   * offer_sessions_offer: each offer's sessions with start and place, so a radius or start
--     window is checked per offer without reading sessions from the table.
-- The radius is checked per offer (one of its sessions within the radius, with the same start
-- window), first against a latitude/longitude box (plain comparisons), then the great circle.

-- The status is an included column, not the indexes' predicate: a partial index "WHERE status =
-- 'published'" is also a bitmap of 97 % of the offers to the planner, which it ANDed with the
-- text's hits whenever a filter looked expensive (seconds at 1,000,000 offers).
CREATE INDEX offers_walk ON offers (id) INCLUDE (status, visible_to, format, schedule, qualification, funding,
    price_eur, hours, provider_id, search_title);
DROP INDEX offers_published;  -- offers_walk answers what it did
CREATE INDEX offers_filter_walk ON offers (format, schedule, id) INCLUDE (status, visible_to, qualification, funding,
    price_eur, hours, provider_id);
DROP INDEX offer_sessions_offer;
CREATE INDEX offer_sessions_offer ON offer_sessions (offer_id, position) INCLUDE (start_date, lat, lon);

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
BEGIN
    IF coalesce(tenant, '') = '' THEN
        RAISE EXCEPTION 'search needs an acting tenant';
    END IF;
    IF f ? 'q' AND text_column IS NOT NULL THEN
        clauses := clauses || format('o.%I @@ to_tsquery(''german'', de_fold(%L))', text_column, f->>'q');
    END IF;
    IF f ? 'formats' THEN
        clauses := clauses || format('o.format = ANY(%L::text[])', ARRAY(SELECT jsonb_array_elements_text(f->'formats')));
    END IF;
    IF f ? 'schedules' THEN
        clauses := clauses || format('o.schedule = ANY(%L::text[])', ARRAY(SELECT jsonb_array_elements_text(f->'schedules')));
    END IF;
    IF f ? 'qualifications' THEN
        clauses := clauses || format('o.qualification = ANY(%L::text[])',
                                     ARRAY(SELECT jsonb_array_elements_text(f->'qualifications')));
    END IF;
    IF f ? 'funding' THEN
        clauses := clauses || format('o.funding @> %L::jsonb',
            (SELECT jsonb_object_agg(x, true) FROM jsonb_array_elements_text(f->'funding') AS x));
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
        -- online and distance offers have no place: for them the start window alone counts
        clauses := clauses || format(
            '(o.format IN (''online'', ''distance'')%s OR EXISTS (SELECT 1 FROM offer_sessions s WHERE s.offer_id = o.id'
            ' AND s.lat BETWEEN %L AND %L AND s.lon BETWEEN %L AND %L'
            ' AND earth_distance(ll_to_earth(%L, %L), ll_to_earth(s.lat, s.lon)) <= %L%s))',
            CASE WHEN cardinality(session_clauses) > 0 THEN ' AND EXISTS (SELECT 1 FROM offer_sessions s WHERE'
                 ' s.offer_id = o.id AND ' || array_to_string(session_clauses, ' AND ') || ')' ELSE '' END,
            lat - dlat, lat + dlat, lon - dlon, lon + dlon, lat, lon, metres,
            CASE WHEN cardinality(session_clauses) > 0 THEN ' AND ' || array_to_string(session_clauses, ' AND ') ELSE '' END);
    ELSIF cardinality(session_clauses) > 0 THEN
        clauses := clauses || ('EXISTS (SELECT 1 FROM offer_sessions s WHERE s.offer_id = o.id AND '
                               || array_to_string(session_clauses, ' AND ') || ')');
    END IF;
    RETURN array_to_string(clauses, ' AND ');
END
$$;

CREATE OR REPLACE FUNCTION offer_search_where(f jsonb) RETURNS text LANGUAGE sql STABLE AS $$
    SELECT offer_search_where(f, 'search')
$$;
