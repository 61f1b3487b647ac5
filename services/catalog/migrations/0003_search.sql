-- Search at national scale. Row-level security would check visibility on every row before any
-- non-LEAKPROOF operator (the full-text match among them), so every search was a full scan. The
-- search therefore runs in SECURITY DEFINER functions owned by the table owner, which (no longer
-- forced) bypasses the policy; each function applies the very same visibility rule itself, from
-- the transaction's acting tenant, never from an argument, and returns only ids, ranks and counts.
-- Offers themselves are then read through the policy as before.

-- German text folded before stemming: case, umlauts spelled either way (Führerschein, Fuehrerschein,
-- Fuhrerschein), ß. Applied to documents and queries alike.
CREATE FUNCTION de_fold(t text) RETURNS text LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT replace(replace(replace(replace(replace(replace(replace(replace(lower(coalesce(t, '')),
        'ä', 'a'), 'ö', 'o'), 'ü', 'u'), 'ß', 'ss'), 'ae', 'a'), 'oe', 'o'), 'ue', 'u'), 'é', 'e')
$$;

-- Compound words: every long lexeme of title and skills also yields its tails (5 letters and more),
-- so "Staplerschein" (query: stapl* & schein) finds "Gabelstapler-Führerschein".
CREATE FUNCTION compound_tails(doc tsvector) RETURNS tsvector LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT coalesce(array_to_tsvector(array_agg(DISTINCT substr(l, i))), ''::tsvector)
    FROM unnest(tsvector_to_array(doc)) AS l, generate_series(2, length(l) - 4) AS i
    WHERE length(l) >= 8
$$;

CREATE FUNCTION offer_document(title text, skills text[], description text) RETURNS tsvector
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT setweight(to_tsvector('german', de_fold(title || ' ' || join_labels(skills))), 'A')
        || setweight(compound_tails(to_tsvector('german', de_fold(title || ' ' || join_labels(skills)))), 'C')
        || setweight(to_tsvector('german', de_fold(description)), 'B')
$$;

DROP INDEX offers_search;
ALTER TABLE offers DROP COLUMN search;
ALTER TABLE offers ADD COLUMN search tsvector GENERATED ALWAYS AS (offer_document(title, skills, description)) STORED;
CREATE INDEX offers_search ON offers USING gin (search);
CREATE INDEX offers_published ON offers (id) WHERE status = 'published';
CREATE INDEX offers_provider_published ON offers (provider_id, id) WHERE status = 'published';

-- The definer functions read as the owner: the owner is no longer bound by the policies (the app
-- role still is, FORCE only ever concerned the owner).
ALTER TABLE offers NO FORCE ROW LEVEL SECURITY;
ALTER TABLE offer_sessions NO FORCE ROW LEVEL SECURITY;

-- The WHERE clause of a search, built from typed filters with every value quoted as a literal
-- (so each search is planned for its own values, never by a cached generic plan). Visibility and
-- the published status are always part of it.
CREATE FUNCTION offer_search_where(f jsonb) RETURNS text LANGUAGE plpgsql STABLE AS $$
DECLARE
    tenant text := current_setting('app.tenant_id', true);
    clauses text[] := ARRAY['o.status = ''published''',
                            format('o.visible_to && ARRAY[%L, ''*'']::text[]', tenant)];
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
            '(o.format IN (''online'', ''distance'') AND EXISTS (SELECT 1 FROM offer_sessions s WHERE s.offer_id = o.id%s)'
            ' OR o.id IN (SELECT s.offer_id FROM offer_sessions s WHERE earth_box(ll_to_earth(%L, %L), %L) @>'
            ' ll_to_earth(s.lat, s.lon) AND s.lat IS NOT NULL AND earth_distance(ll_to_earth(%L, %L),'
            ' ll_to_earth(s.lat, s.lon)) <= %L%s))',
            CASE WHEN cardinality(session_clauses) > 0 THEN ' AND ' || array_to_string(session_clauses, ' AND ') ELSE '' END,
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

-- One page, best first: (rank, id) descending, continued after the cursor's (rank, id).
CREATE FUNCTION search_offer_page(f jsonb, after_rank real, after_id uuid, page_size int, skip int)
RETURNS TABLE (id uuid, rank real) LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = public, pg_temp AS $$
DECLARE
    rank_sql text := CASE WHEN f ? 'q' THEN format('ts_rank_cd(o.search, to_tsquery(''german'', de_fold(%L)))::real',
                                                    f->>'q') ELSE '0::real' END;
BEGIN
    RETURN QUERY EXECUTE format(
        'SELECT o.id, %s AS rank FROM offers o WHERE %s%s ORDER BY 2 DESC, 1 DESC LIMIT %s OFFSET %s',
        rank_sql, offer_search_where(f),
        CASE WHEN after_id IS NULL THEN '' ELSE
            format(' AND (%s, o.id) < (%L::real, %L::uuid)', rank_sql, after_rank, after_id) END,
        least(greatest(page_size, 1), 100), least(greatest(skip, 0), 1000));
END
$$;

-- How many match, counted up to a bound (bound + 1 means "more than bound").
CREATE FUNCTION search_offer_count(f jsonb, bound int) RETURNS bigint
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = public, pg_temp AS $$
DECLARE
    n bigint;
BEGIN
    EXECUTE format('SELECT count(*) FROM (SELECT 1 FROM offers o WHERE %s LIMIT %s) t',
                   offer_search_where(f), least(greatest(bound, 1), 100000) + 1) INTO n;
    RETURN n;
END
$$;

-- Facet counts (format, schedule, qualification, funding) over the first `bound` matches.
CREATE FUNCTION search_offer_facets(f jsonb, bound int) RETURNS TABLE (facet text, value text, n bigint)
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = public, pg_temp AS $$
BEGIN
    RETURN QUERY EXECUTE format(
        'WITH hits AS (SELECT o.format, o.schedule, o.qualification, o.funding FROM offers o WHERE %s LIMIT %s)'
        ' SELECT ''format'', format, count(*) FROM hits GROUP BY 2'
        ' UNION ALL SELECT ''schedule'', schedule, count(*) FROM hits GROUP BY 2'
        ' UNION ALL SELECT ''qualification'', qualification, count(*) FROM hits GROUP BY 2'
        ' UNION ALL SELECT ''funding'', k, count(*) FROM hits, jsonb_each_text(funding) AS e(k, v)'
        '  WHERE v = ''true'' GROUP BY 2',
        offer_search_where(f), least(greatest(bound, 1), 100000));
END
$$;
