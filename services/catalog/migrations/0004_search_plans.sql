-- Measured on 100,000 offers (make bench-catalog): two parts of the search's WHERE clause cost more
-- than they saved. "Visible to the tenant" holds for most offers, so a bitmap scan of its GIN index
-- only adds work next to the full-text one: it stays a filter now (the policy keeps the index).
-- The radius condition let online offers through with "has any session", which made PostgreSQL
-- hash every session on each search; every offer has a session, so without a start window that
-- check is dropped. With a text, the radius is checked per text hit (EXISTS by offer id) instead of
-- hashing every session near the place.
CREATE OR REPLACE FUNCTION offer_search_where(f jsonb) RETURNS text LANGUAGE plpgsql STABLE AS $$
DECLARE
    tenant text := current_setting('app.tenant_id', true);
    clauses text[] := ARRAY['o.status = ''published''',
                            format('(o.visible_to || ''{}''::text[]) && ARRAY[%L, ''*'']::text[]', tenant)];
    session_clauses text[] := '{}';
BEGIN
    IF coalesce(tenant, '') = '' THEN
        RAISE EXCEPTION 'search needs an acting tenant';
    END IF;
    IF f ? 'q' THEN
        clauses := clauses || format('o.search @@ to_tsquery(''german'', de_fold(%L))', f->>'q');
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
        -- one session both in the window and within the radius; online and distance offers have no place
        clauses := clauses || format(
            '(o.format IN (''online'', ''distance'')%s'
            -- with a text the few text hits are checked one by one (index on offer_id); without, the
            -- place narrows first (GiST on the sessions' coordinates)
            || CASE WHEN f ? 'q' THEN ' OR EXISTS (SELECT 1 FROM offer_sessions s WHERE s.offer_id = o.id AND'
                 ELSE ' OR o.id IN (SELECT s.offer_id FROM offer_sessions s WHERE' END ||
            ' earth_box(ll_to_earth(%L, %L), %L) @>'
            ' ll_to_earth(s.lat, s.lon) AND s.lat IS NOT NULL AND earth_distance(ll_to_earth(%L, %L),'
            ' ll_to_earth(s.lat, s.lon)) <= %L%s))',
            CASE WHEN cardinality(session_clauses) > 0 THEN ' AND EXISTS (SELECT 1 FROM offer_sessions s WHERE'
                 ' s.offer_id = o.id AND ' || array_to_string(session_clauses, ' AND ') || ')' ELSE '' END,
            (f->>'lat')::float8, (f->>'lon')::float8, (f->>'radius_km')::float8 * 1000,
            (f->>'lat')::float8, (f->>'lon')::float8, (f->>'radius_km')::float8 * 1000,
            CASE WHEN cardinality(session_clauses) > 0 THEN ' AND ' || array_to_string(session_clauses, ' AND ') ELSE '' END);
    ELSIF cardinality(session_clauses) > 0 THEN
        clauses := clauses || ('EXISTS (SELECT 1 FROM offer_sessions s WHERE s.offer_id = o.id AND '
                               || array_to_string(session_clauses, ' AND ') || ')');
    END IF;
    RETURN array_to_string(clauses, ' AND ');
END
$$;
