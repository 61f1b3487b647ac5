-- Plans measured on 1,000,000 offers (make bench-catalog):
--   * "published" is 97 % of the offers, yet the planner ANDed the text's bitmap with a bitmap of
--     every published offer from offers_tenant (tenant_id, status) or the partial index
--     offers_provider_published: 110 ms to 2 s per search for nothing (with an expensive filter such
--     as the radius, saving 3 % of its checks looked worth a full index scan). No index offers the
--     status as a condition any more: it is an included column.
--   * funding is the one filter the covering indexes cannot narrow in a text search (Qualifizierungs-
--     chancengesetz: a fifth of the offers): its own index lets the text's hits be narrowed before
--     any offer is read.
--   * a filter naming one format (schedule, qualification) is an equality, not "= ANY", so the
--     walk by (format, schedule, id) keeps the id order and stops at the page's end.
CREATE INDEX offers_tenant_status ON offers (tenant_id) INCLUDE (status);
DROP INDEX offers_tenant;
CREATE INDEX offers_provider_walk ON offers (provider_id, id) INCLUDE (status);
DROP INDEX offers_provider_published;
CREATE INDEX offers_funding ON offers USING gin (funding jsonb_path_ops);

CREATE FUNCTION search_in_clause(col text, v jsonb) RETURNS text LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE WHEN jsonb_array_length(v) = 1 THEN format('o.%I = %L', col, v->>0)
                ELSE format('o.%I = ANY(%L::text[])', col, ARRAY(SELECT jsonb_array_elements_text(v))) END
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

-- The visibility test is written as an expression so that the GIN index on visible_to (a bitmap of
-- 60 % of the offers) is never ANDed in; without statistics of its own the planner guessed 0.5 %
-- of the offers visible instead of 60 %, and so ranked a bitmap of every text hit (sorted) above
-- the walk by id that stops at the page's end (text + radius: 680 ms instead of 4 ms).
CREATE STATISTICS offers_visible_to_expr ON ((visible_to || '{}'::text[])) FROM offers;
ANALYZE offers;

-- A bounded count ("up to 1,000 hits") looked cheapest as a sequential scan that stops early; it
-- reads 20,000 pages for a word in 4 % of the offers, the text's index some 300. Within the search
-- functions a sequential scan is the last resort.
ALTER FUNCTION search_offer_page(jsonb, real, uuid, int, int) SET enable_seqscan = off;
ALTER FUNCTION search_offer_count(jsonb, int) SET enable_seqscan = off;
ALTER FUNCTION search_offer_facets(jsonb, int) SET enable_seqscan = off;
