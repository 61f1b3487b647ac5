-- A search ANDs the text's bitmap with the funding index's (a fifth of all offers: 178,000 entries at
-- 1,000,000 offers). In the default 4 MB such a bitmap turns lossy: whole pages, each of whose offers
-- then has its text match recomputed ("Rows Removed by Index Recheck": 9,000 for one search). 32 MB
-- keeps it exact: on the combined shape (text, 100 km, funding, start window) at 1,000,000 offers,
-- the bounded count took 110–150 ms before and 70–90 ms after. Sixteen searches at once hold at most
-- 0.5 GB.
--
-- With that much memory the planner hashed every session in the start window (714,000 for half a year:
-- 230 ms of a 610 ms count) instead of checking the candidate offer's own one to three sessions, as
-- it did with the radius before 0011. An EXISTS whose only link to the offer is "s.offer_id = o.id"
-- may be turned into such a hash; one that also names another offer column may not. So every
-- session check names the offer's format too (a condition that holds wherever it is said).
--
-- A text search with a funding filter ANDed the text's bitmap (42,000 offers for a topic word) with
-- the funding index's (qcg: 178,000 offers; Bildungsgutschein: 425,000): 30–50 ms to build before a
-- single offer was read. A text index per kind of funding, over the offers that have it, gives the
-- offers with both at once (7,400: 3 ms). The combined shape's bounded count: 70–90 → about 30 ms.
-- Writing an offer costs one more index entry per kind of funding it has.
CREATE INDEX offers_search_bildungsgutschein ON offers USING gin (search) WHERE funding @> '{"bildungsgutschein": true}';
CREATE INDEX offers_search_qcg ON offers USING gin (search) WHERE funding @> '{"qcg": true}';
CREATE INDEX offers_search_aufstiegsbafoeg ON offers USING gin (search) WHERE funding @> '{"aufstiegsbafoeg": true}';

ALTER FUNCTION search_offer_page(jsonb, real, uuid, int, int) SET work_mem = '32MB';
ALTER FUNCTION search_offer_count(jsonb, int) SET work_mem = '32MB';
ALTER FUNCTION search_offer_facets(jsonb, int) SET work_mem = '32MB';

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
        -- online and distance offers have no place: for them the start window alone counts (a place
        -- in the window would pass that too, so the second branch is for the others only). Each
        -- EXISTS names an offer column beside the id (the format): see the head of this file.
        clauses := clauses || format(
            '(o.format IN (''online'', ''distance'')%s OR EXISTS (SELECT 1 FROM offer_sessions s WHERE s.offer_id = o.id'
            ' AND o.format NOT IN (''online'', ''distance'')'
            ' AND s.lat BETWEEN %L AND %L AND s.lon BETWEEN %L AND %L'
            ' AND earth_distance(ll_to_earth(%L, %L), ll_to_earth(s.lat, s.lon)) <= %L%s))',
            CASE WHEN cardinality(session_clauses) > 0 THEN ' AND EXISTS (SELECT 1 FROM offer_sessions s WHERE'
                 ' s.offer_id = o.id AND o.format IN (''online'', ''distance'') AND ' || array_to_string(session_clauses, ' AND ') || ')' ELSE '' END,
            lat - dlat, lat + dlat, lon - dlon, lon + dlon, lat, lon, metres,
            CASE WHEN cardinality(session_clauses) > 0 THEN ' AND ' || array_to_string(session_clauses, ' AND ') ELSE '' END);
    ELSIF cardinality(session_clauses) > 0 THEN
        clauses := clauses || ('EXISTS (SELECT 1 FROM offer_sessions s WHERE s.offer_id = o.id AND o.format <> '''' AND '
                               || array_to_string(session_clauses, ' AND ') || ')');
    END IF;
    RETURN array_to_string(clauses, ' AND ');
END
$$;
