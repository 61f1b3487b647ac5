-- A session's own price and schedule count in the search and in the schedule facet.
--
-- A session (Termin) carries a price and a schedule of its own where they differ from its offer's
-- (catalog.domain.Session), and real imports set them: the KURSNET export in shared/fixtures holds a
-- full-time course at 35,464.50 EUR whose dates are part-time from 29,528.36 EUR. The search read
-- the offer's price and schedule only (0018's clause, 0022's filter words, 0025's facets), so a
-- ceiling of 30,000 EUR or "part_time" did not find that course.
--
-- What fits now: an offer fits the search where one of its sessions meets every condition the search
-- sets on a session: the start window, the place (online and distance offers have none), the price
-- ceiling and the schedules, each session's own price and schedule where it has them, else the
-- offer's. One session meets them all, because a person books one date. A price given neither by the
-- session nor by the offer counts as 0, as before: it passes any ceiling (DESIGN.md says nothing
-- either way; an unknown price is not a reason to hide a course).
--
-- The schedule facet counts an offer once under each schedule of such a session. The facet is there
-- to narrow the search: each value's count is then what choosing it finds, and a full-time course
-- with part-time dates is found under "part_time" (the national search answers with dates, Termine:
-- shared/fixtures/ba_wbsuche; a part-time date is what a user asking for part time is after).
-- The schedules' counts may add up to more than the hits; the total is the formats' sum, as before.
--
-- Each offer carries what its sessions say of their own, where that differs from the offer:
-- `session_schedules` (the schedules of all its sessions) and `session_price_min`/`_max` (the range
-- of their prices), NULL where every session follows the offer (all offers of make bench-catalog,
-- which has no prices or schedules per session). The candidates are narrowed by them, always
-- taking too many rather than too few: the text indexes' filter words hold every schedule of an
-- offer's sessions; the filter walk's B-tree holds such an offer under the schedule "zz_sessions"
-- (`walk_schedule`), which a schedule filter always asks for too; the price ceiling compares the
-- least price. The exact check then reads the offer's own columns where its sessions follow it,
-- else whether all its sessions fit (the greatest price, every schedule asked), else the sessions.
--
-- Where the search sets nothing on a session but its price or schedules, these columns decide
-- exactly, unless a price and schedules are both asked and both vary among the offer's sessions.
-- Only then, or with a start window or a place, does the check read the sessions of an offer whose
-- sessions differ (offer_fitting_schedules); never those of an offer whose sessions follow it.
--
-- The sessions are written after their offer's row (store.insert_offers, update_offers), so triggers
-- on their insert and delete set the offer's columns; they write an offer again only where the
-- columns change (an offer whose sessions differ, or no longer do). Writing them with the offer's
-- row instead needs the sessions' prices and schedules in the row the store writes (not done here).

CREATE FUNCTION offer_session_terms(own_schedule text, own_price numeric, sessions jsonb,
                                    OUT schedules text[], OUT price_min numeric, OUT price_max numeric)
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    -- sessions: [{"schedule": …, "price_eur": …}, …], each value null where the session has none
    SELECT CASE WHEN bool_or(t.schedule <> own_schedule) THEN array_agg(DISTINCT t.schedule ORDER BY t.schedule) END,
           CASE WHEN bool_or(t.price <> coalesce(own_price, 0)) THEN min(t.price) END,
           CASE WHEN bool_or(t.price <> coalesce(own_price, 0)) THEN max(t.price) END
    FROM jsonb_to_recordset(coalesce(sessions, '[]')) AS s(schedule text, price_eur numeric),
        LATERAL (VALUES (coalesce(s.schedule, own_schedule), coalesce(s.price_eur, own_price, 0))) AS t(schedule, price)
$$;

-- 0022's words, each schedule of the offer's sessions among them.
CREATE FUNCTION offer_filter_words(format text, schedule text, qualification text, session_schedules text[])
RETURNS text[] LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT ARRAY['format:' || format, 'qualification:' || qualification]
        || ARRAY(SELECT DISTINCT 'schedule:' || x FROM unnest(schedule || coalesce(session_schedules, '{}')) AS x)
$$;

ALTER TABLE offers
    ADD COLUMN session_schedules text[],
    ADD COLUMN session_price_min numeric,
    ADD COLUMN session_price_max numeric;

DROP INDEX offers_search;
DROP INDEX offers_search_title;
DROP INDEX offers_search_bildungsgutschein;
DROP INDEX offers_search_qcg;
DROP INDEX offers_search_aufstiegsbafoeg;
DROP INDEX offers_walk;
DROP INDEX offers_filter_walk;

-- the offers written so far
ALTER TABLE offers DISABLE TRIGGER offers_visible_to;  -- neither visible_to nor the documents change here
ALTER TABLE offers DISABLE TRIGGER offers_search_document;
UPDATE offers o SET session_schedules = t.schedules, session_price_min = t.price_min, session_price_max = t.price_max
FROM (SELECT x.id, terms.* FROM offers x
      JOIN (SELECT s.offer_id, jsonb_agg(jsonb_build_object('schedule', s.schedule, 'price_eur', s.price_eur)) AS sessions
            FROM offer_sessions s GROUP BY s.offer_id
            HAVING bool_or(s.schedule IS NOT NULL OR s.price_eur IS NOT NULL)) AS own ON own.offer_id = x.id,
      LATERAL offer_session_terms(x.schedule, x.price_eur, own.sessions) AS terms) AS t
WHERE o.id = t.id AND (t.schedules IS NOT NULL OR t.price_min IS NOT NULL);
ALTER TABLE offers ENABLE TRIGGER offers_visible_to;
ALTER TABLE offers ENABLE TRIGGER offers_search_document;

-- (a generated column's expression cannot be changed in PostgreSQL 15: dropped and added, one rewrite)
ALTER TABLE offers
    DROP COLUMN filter_words,
    ADD COLUMN filter_words text[] NOT NULL
        GENERATED ALWAYS AS (offer_filter_words(format, schedule, qualification, session_schedules)) STORED,
    ADD COLUMN walk_schedule text NOT NULL
        GENERATED ALWAYS AS (CASE WHEN session_schedules IS NULL THEN schedule ELSE 'zz_sessions' END) STORED;

CREATE INDEX offers_search ON offers USING gin (search, reach, filter_words);
CREATE INDEX offers_search_title ON offers USING gin (search_title, reach, filter_words);
CREATE INDEX offers_search_bildungsgutschein ON offers USING gin (search, reach, filter_words)
    WHERE funding @> '{"bildungsgutschein": true}';
CREATE INDEX offers_search_qcg ON offers USING gin (search, reach, filter_words) WHERE funding @> '{"qcg": true}';
CREATE INDEX offers_search_aufstiegsbafoeg ON offers USING gin (search, reach, filter_words)
    WHERE funding @> '{"aufstiegsbafoeg": true}';
-- 0008's covering indexes, with what the price and schedule clauses below read (so the filter-only
-- walk still reads no table page), and the filter walk by the schedule it finds an offer under
CREATE INDEX offers_walk ON offers (id) INCLUDE (status, visible_to, format, schedule, qualification, funding,
    price_eur, hours, provider_id, search_title, walk_schedule, session_schedules, session_price_min,
    session_price_max);
CREATE INDEX offers_filter_walk ON offers (format, walk_schedule, id) INCLUDE (status, visible_to, qualification,
    funding, price_eur, hours, provider_id, schedule, session_schedules, session_price_min, session_price_max);
-- the offers whose sessions differ, newest first, for a page without a format (search_offer_page)
CREATE INDEX offers_sessions_walk ON offers (id) INCLUDE (status, visible_to, format, schedule, qualification,
    funding, price_eur, hours, provider_id, session_schedules, session_price_min, session_price_max)
    WHERE walk_schedule = 'zz_sessions';
ANALYZE offers;

-- The offer's columns from all its sessions, for the offers whose sessions a statement inserted or
-- deleted (`changed`). Only offers that may change are read again: one with a session of its own
-- price or schedule among those, or one whose sessions differed before; most statements have none.
-- An offer left without sessions is between update_offers' delete and insert: the insert sets it.
-- Both statements find the offers by id, whatever the planner thinks of the table's size (a join it
-- was free to order read every offer at each insert of a test's few hundred, 100 ms apiece).
CREATE FUNCTION offer_sessions_keep_terms() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    changing uuid[];
BEGIN
    changing := ARRAY(
        SELECT x.id FROM offers x
        WHERE x.id = ANY(ARRAY(SELECT c.offer_id FROM changed c))
          AND (x.session_schedules IS NOT NULL OR x.session_price_min IS NOT NULL
               OR x.id = ANY(ARRAY(SELECT c.offer_id FROM changed c WHERE c.schedule IS NOT NULL OR c.price_eur IS NOT NULL)))
          AND EXISTS (SELECT 1 FROM offer_sessions s WHERE s.offer_id = x.id));
    IF cardinality(changing) = 0 THEN
        RETURN NULL;
    END IF;
    UPDATE offers o SET session_schedules = t.schedules, session_price_min = t.price_min,
                        session_price_max = t.price_max
    FROM (SELECT x.id, terms.* FROM offers x, LATERAL offer_session_terms(x.schedule, x.price_eur, (
              SELECT jsonb_agg(jsonb_build_object('schedule', s.schedule, 'price_eur', s.price_eur))
              FROM offer_sessions s WHERE s.offer_id = x.id)) AS terms
          WHERE x.id = ANY(changing)) AS t
    WHERE o.id = ANY(changing) AND o.id = t.id
      AND (o.session_schedules, o.session_price_min, o.session_price_max)
          IS DISTINCT FROM (t.schedules, t.price_min, t.price_max);
    RETURN NULL;
END
$$;
CREATE TRIGGER offer_sessions_terms_added AFTER INSERT ON offer_sessions REFERENCING NEW TABLE AS changed
    FOR EACH STATEMENT EXECUTE FUNCTION offer_sessions_keep_terms();
CREATE TRIGGER offer_sessions_terms_removed AFTER DELETE ON offer_sessions REFERENCING OLD TABLE AS changed
    FOR EACH STATEMENT EXECUTE FUNCTION offer_sessions_keep_terms();

-- The schedules of an offer's sessions that meet every session condition of the search f (see above):
-- none where no session does. A function, not a subquery in the clause: the planner charges a
-- subquery's whole cost to every row a scan reads, also where the offer's own columns decide, and
-- chose a bitmap of every candidate over the filter walk that stops at the bound (at 200,000 offers,
-- a filter-only count 5 -> 70 ms). It runs only for an offer whose sessions differ from it. The place
-- as 0018 measures it (the same arithmetic: the same rounding), without the box, which only narrows.
CREATE FUNCTION offer_fitting_schedules(offer uuid, offer_format text, offer_schedule text, offer_price numeric,
                                        f jsonb)
RETURNS text[] LANGUAGE plpgsql STABLE PARALLEL SAFE COST 1 AS $$
BEGIN
    RETURN ARRAY(
        SELECT DISTINCT coalesce(s.schedule, offer_schedule) FROM offer_sessions s
        WHERE s.offer_id = offer
          AND (NOT f ? 'start_from' OR s.start_date >= (f->>'start_from')::date)
          AND (NOT f ? 'start_to' OR s.start_date <= (f->>'start_to')::date)
          AND (NOT f ? 'radius_km' OR offer_format IN ('online', 'distance')
               OR great_circle_m((f->>'lat')::float8, (f->>'lon')::float8, s.lat, s.lon)
                  <= (f->>'radius_km')::float8 * 1000)
          AND (NOT f ? 'max_price_eur' OR coalesce(s.price_eur, offer_price, 0) <= (f->>'max_price_eur')::numeric)
          AND (NOT f ? 'schedules' OR coalesce(s.schedule, offer_schedule) IN (
                  SELECT jsonb_array_elements_text(f->'schedules'))));
END
$$;

-- The call of it for offer o (the search's session conditions only, as a literal).
CREATE FUNCTION search_fitting_schedules(f jsonb) RETURNS text LANGUAGE sql IMMUTABLE AS $$
    SELECT format('offer_fitting_schedules(o.id, o.format, o.schedule, o.price_eur, %L::jsonb)',
                  f - ARRAY(SELECT k FROM jsonb_object_keys(f) AS k WHERE k NOT IN (
                      'start_from', 'start_to', 'lat', 'lon', 'radius_km', 'max_price_eur', 'schedules')))
$$;

-- The price ceiling and the schedules: narrowed on the offer's columns, then exact (see above).
CREATE FUNCTION search_price_schedule_clause(f jsonb) RETURNS text LANGUAGE plpgsql IMMUTABLE AS $$
DECLARE
    ceiling text := format('%L::numeric', f->>'max_price_eur');
    wanted text[] := ARRAY(SELECT jsonb_array_elements_text(f->'schedules'));
    narrowed text[] := '{}';
    all_fit text[] := '{}';
BEGIN
    -- Each part written so that the planner expects about as many rows as the offer's own column
    -- gave (with a second price comparison of its default selectivity beside the first, it expected
    -- a ninth of the hits). An offer whose sessions follow it has NULL in the sessions' columns: the
    -- narrowing was exact.
    IF f ? 'max_price_eur' THEN
        narrowed := narrowed || format('coalesce(o.session_price_min, o.price_eur, 0) <= %s', ceiling);
        all_fit := all_fit || format('(o.session_price_max IS NULL OR o.session_price_max <= %s)', ceiling);
    END IF;
    IF f ? 'schedules' THEN
        -- The filter walk's B-tree (format, walk_schedule, id) reads the schedules' offers and those
        -- whose sessions differ as ranges of a format. Without a format, B-tree reads the whole index
        -- once for each value, in order, until the count's bound: "zz_sessions" comes last, when the
        -- schedules' own offers have not reached it (as "sessions", first, it made "weekend" alone
        -- 2.5 -> 28 ms at 200,000 offers). search_offer_page asks for each way alone (`schedule_walk`).
        narrowed := narrowed || (CASE f->>'schedule_walk'
            WHEN 'own' THEN search_in_clause('walk_schedule', f->'schedules')
            WHEN 'sessions' THEN 'o.walk_schedule = ''zz_sessions'''
            ELSE format('o.walk_schedule = ANY(%L::text[])', wanted || 'zz_sessions'::text) END
            || format(' AND (o.session_schedules IS NULL OR o.session_schedules && %L::text[])', wanted));
        all_fit := all_fit || format('(o.session_schedules IS NULL OR o.session_schedules <@ %L::text[])', wanted);
    END IF;
    IF cardinality(narrowed) = 0 THEN
        RETURN NULL;
    ELSIF f ?| ARRAY['start_from', 'start_to', 'radius_km'] THEN
        -- the sessions that fit the price or a schedule may lie outside the window or the circle
        RETURN format('%s AND (%s OR cardinality(%s) > 0)', array_to_string(narrowed, ' AND '),
                      array_to_string(all_fit, ' AND '), search_fitting_schedules(f));
    ELSIF cardinality(narrowed) = 2 THEN
        -- one session must fit both: the columns decide where every session fits one of them
        RETURN format('%s AND (%s OR cardinality(%s) > 0)', array_to_string(narrowed, ' AND '),
                      array_to_string(all_fit, ' OR '), search_fitting_schedules(f));
    END IF;
    RETURN narrowed[1];  -- a price or schedules alone: the least price, every schedule decide
END
$$;

-- 0024's clause, with the price ceiling and the schedules of the clause above instead of 0018's,
-- which read the offer's own only (the filter words of 0022 still narrow a text's hits by schedule).
CREATE OR REPLACE FUNCTION offer_search_where(f jsonb, text_column text) RETURNS text LANGUAGE plpgsql STABLE AS $$
DECLARE
    clauses text := offer_search_where_indexed(f - ARRAY['schedules', 'max_price_eur', 'schedule_walk'], text_column);
    price_schedule text := search_price_schedule_clause(f);
    formats text;
    first_day date := (f->>'start_from')::date;
    last_day date := (f->>'start_to')::date;
BEGIN
    IF text_column IS NULL OR NOT f ? 'q' THEN
        RETURN concat_ws(' AND ', clauses, price_schedule);
    END IF;
    IF f ? 'formats' THEN
        -- the clause 0018 wrote for the formats, one of those it joined with ' AND ' (no other
        -- clause starts with it: the place's conditions name formats as "o.format IN" and "NOT IN")
        formats := search_in_clause('format', f->'formats');
        clauses := replace(clauses, ' AND ' || formats, ' AND (' || formats || ') IS TRUE');
    END IF;
    clauses := clauses || coalesce((
        SELECT string_agg(format(' AND o.filter_words && %L::text[]',
                                 ARRAY(SELECT word || ':' || v FROM jsonb_array_elements_text(f->key) AS v)), '')
        FROM (VALUES ('formats', 'format'), ('schedules', 'schedule'), ('qualifications', 'qualification')) AS t(key, word)
        WHERE f ? key), '');
    IF last_day - first_day <= 731 THEN  -- (NULL unless both are given)
        clauses := clauses || format(' AND o.reach && %L::text[]', ARRAY(
            SELECT start_month_word(to_char(m, 'YYYY-MM-DD'))
            FROM generate_series(date_trunc('month', first_day), last_day, interval '1 month') AS m));
    END IF;
    RETURN concat_ws(' AND ', clauses, price_schedule);
END
$$;

-- 0021's page, and without a text, where schedules are asked, two walks merged: the offers whose
-- sessions follow them, by their own schedule, and those whose sessions differ. Each walk goes by id
-- through the filter walk's B-tree and stops at the page, as one walk did by the offer's schedule
-- (0010); asked together ("walk_schedule = ANY('{evening,zz_sessions}')") the B-tree gave the offers in
-- no order and each page sorted every hit (at 200,000 offers, hybrid in the evening at most 500 EUR:
-- 0.1 -> 4 ms).
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
    IF NOT f ? 'q' AND f ? 'schedules' THEN  -- (0026)
        RETURN QUERY EXECUTE format(
            'SELECT t.id, 0::real FROM ((SELECT o.id FROM offers o WHERE %1$s%3$s ORDER BY o.id DESC LIMIT %4$s)'
            ' UNION ALL (SELECT o.id FROM offers o WHERE %2$s%3$s ORDER BY o.id DESC LIMIT %4$s)) t'
            ' ORDER BY t.id DESC LIMIT %5$s OFFSET %6$s',
            offer_search_where(f || '{"schedule_walk": "own"}'),
            offer_search_where(f || '{"schedule_walk": "sessions"}'), before_id, n + s, n, s);
        RETURN;
    END IF;
    IF NOT f ? 'q' THEN
        RETURN QUERY EXECUTE format('SELECT o.id, 0::real FROM offers o WHERE %s%s ORDER BY o.id DESC LIMIT %s OFFSET %s',
            offer_search_where(f), before_id, n, s);
        RETURN;
    END IF;
    IF after_id IS NULL OR after_rank > 0.75 THEN
        -- tier 1: every word in title or skills (the title's document implies the whole one's);
        -- the newest offers first, at most walk_bound of them
        walk_bound := coalesce(walk_set, greatest(5000, 250 * (n + s)));
        walked := search_walk(f, before_id, format('o.search_title @@ %s', q), walk_bound, n + s);
        IF coalesce(cardinality(walked), 0) = n + s THEN
            RETURN QUERY SELECT w.id, 1::real FROM unnest(walked[s + 1:]) WITH ORDINALITY AS w(id, k) ORDER BY w.k;
            RETURN;
        END IF;
        -- the tier's hits from the title's index (the walk found fewer than a page)
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
    walk_bound := coalesce(walk_set, greatest(5000, 250 * (n - got + s)));
    walked := search_walk(f, before_id, format('o.search @@ %1$s AND NOT o.search_title @@ %1$s', q), walk_bound,
                          n - got + s);
    IF coalesce(cardinality(walked), 0) = n - got + s THEN
        RETURN QUERY SELECT w.id, 0.5::real FROM unnest(walked[s + 1:]) WITH ORDINALITY AS w(id, k) ORDER BY w.k;
        RETURN;
    END IF;
    RETURN QUERY EXECUTE format(
        'SELECT t.id, 0.5::real FROM (SELECT o.id, o.search_title FROM offers o WHERE %s%s OFFSET 0) t'
        ' WHERE NOT t.search_title @@ %s ORDER BY t.id DESC LIMIT %s OFFSET %s',
        offer_search_where(f, 'search'), before_id, q, n - got, s);
END
$$;
-- CREATE OR REPLACE resets a function's settings: those of 0021 again
ALTER FUNCTION search_offer_page(jsonb, real, uuid, int, int)
    SET jit = off SET max_parallel_workers_per_gather = 0 SET enable_seqscan = off SET work_mem = '32MB';

-- A hit's schedules for the facet where its sessions differ from it: those of its sessions that meet
-- the search's session conditions (it is a hit: there is one), all of them where the search sets
-- none; NULL where its sessions follow it (its own schedule then).
CREATE FUNCTION search_hit_schedules(f jsonb) RETURNS text LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE WHEN f ?| ARRAY['start_from', 'start_to', 'radius_km', 'max_price_eur', 'schedules']
                THEN format('CASE WHEN o.session_schedules IS NOT NULL THEN %s END', search_fitting_schedules(f))
                ELSE 'o.session_schedules' END
$$;

-- 0025's facets query, each hit counted under each of its schedules. Only the hits whose sessions
-- differ are unnested: unnesting each of 1,001 hits cost 1.5 ms more than grouping by a column.
CREATE FUNCTION search_facets_sql(clauses text, bound int, schedules text) RETURNS text LANGUAGE sql IMMUTABLE AS $$
    SELECT format(
        'WITH hits AS (SELECT o.id, o.format, o.schedule, %s AS sessions_schedules, o.qualification, o.funding'
        ' FROM offers o WHERE %s LIMIT %s)'
        ' SELECT ''format'' AS facet, format AS value, count(*) AS n, NULL::uuid[] AS ids FROM hits GROUP BY 2'
        ' UNION ALL SELECT ''schedule'', t.schedule, count(*), NULL FROM (SELECT schedule FROM hits'
        '  WHERE sessions_schedules IS NULL UNION ALL SELECT unnest(sessions_schedules) FROM hits'
        '  WHERE sessions_schedules IS NOT NULL) AS t GROUP BY 2'
        ' UNION ALL SELECT ''qualification'', qualification, count(*), NULL FROM hits GROUP BY 2'
        ' UNION ALL SELECT ''funding'', v.kind, v.n, NULL FROM (SELECT'
        '  count(*) FILTER (WHERE funding @> ''{"bildungsgutschein": true}'') AS bildungsgutschein,'
        '  count(*) FILTER (WHERE funding @> ''{"qcg": true}'') AS qcg,'
        '  count(*) FILTER (WHERE funding @> ''{"aufstiegsbafoeg": true}'') AS aufstiegsbafoeg FROM hits) c,'
        '  LATERAL (VALUES (''bildungsgutschein'', c.bildungsgutschein), (''qcg'', c.qcg),'
        '                  (''aufstiegsbafoeg'', c.aufstiegsbafoeg)) AS v(kind, n) WHERE v.n > 0'
        ' UNION ALL SELECT NULL, NULL, count(*), array_agg(id) FROM hits',
        schedules, clauses, bound)
$$;
DROP FUNCTION search_facets_sql(text, int);

-- 0021's function, the hits' schedules as above.
CREATE OR REPLACE FUNCTION search_offer_facets_page(f jsonb, bound int, after_rank real, after_id uuid, page_size int,
                                                    skip int)
RETURNS TABLE (facet text, value text, n bigint, id uuid, rank real)
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = public, pg_temp AS $$
DECLARE
    b int := least(greatest(bound, 1), 100000);
    clauses text := offer_search_where(f);
    sample text := search_sample_clause(f);
    schedules text := search_hit_schedules(f);
    counts jsonb;
    counted bigint;
    hits uuid[];
    gathered text := 'SELECT coalesce(jsonb_agg(jsonb_build_array(c.facet, c.value, c.n)) FILTER (WHERE c.facet IS NOT NULL),'
                     ' ''[]''), max(c.n) FILTER (WHERE c.facet IS NULL), max(c.ids) FROM (%s) c';
BEGIN
    IF sample IS NOT NULL THEN
        EXECUTE format(gathered, search_facets_sql(clauses || sample, b, schedules)) INTO counts, counted, hits;
    END IF;
    IF counted IS NULL OR counted < b THEN  -- no eighth asked, or it holds fewer: all hits
        EXECUTE format(gathered, search_facets_sql(clauses, b, schedules)) INTO counts, counted, hits;
    END IF;
    RETURN QUERY SELECT c->>0, c->>1, (c->>2)::bigint, NULL::uuid, NULL::real FROM jsonb_array_elements(counts) c;
    IF counted < b THEN
        RETURN QUERY SELECT NULL::text, NULL::text, NULL::bigint, r.id, r.rank
                     FROM search_rank_hits(f, hits, after_rank, after_id, page_size, skip) r;
    END IF;
END
$$;
-- CREATE OR REPLACE resets a function's settings: those of 0021 again
ALTER FUNCTION search_offer_facets_page(jsonb, int, real, uuid, int, int)
    SET jit = off SET max_parallel_workers_per_gather = 0 SET enable_seqscan = off SET work_mem = '32MB';
