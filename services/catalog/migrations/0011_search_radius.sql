-- The radius at 1,000,000 offers: PostgreSQL turned "one of the offer's sessions near the place"
-- into a hash of every session in the box (200,000 around Dortmund at 100 km, 4 s) whenever it
-- underestimated the box (latitude and longitude ranges taken as independent), instead of checking
-- the offer's own one to three sessions (covering index, no table read). The check now names an
-- offer column beside the offer id, which such a hash cannot take. The GiST index on the sessions'
-- places is no longer used by any search (the box is plain comparisons) and, as a partial index
-- ("lat IS NOT NULL"), offered itself as a bitmap of every located session: dropped.
DROP INDEX offer_sessions_place;

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
        clauses := clauses || search_in_clause('format', f->'formats');
    END IF;
    IF f ? 'schedules' THEN
        clauses := clauses || search_in_clause('schedule', f->'schedules');
    END IF;
    IF f ? 'qualifications' THEN
        clauses := clauses || search_in_clause('qualification', f->'qualifications');
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
        -- online and distance offers have no place: for them the start window alone counts (a place
        -- in the window would pass that too, so the second branch is for the others only; said
        -- inside it, it also keeps the planner from hashing every session near the place)
        clauses := clauses || format(
            '(o.format IN (''online'', ''distance'')%s OR EXISTS (SELECT 1 FROM offer_sessions s WHERE s.offer_id = o.id'
            ' AND o.format NOT IN (''online'', ''distance'')'
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
