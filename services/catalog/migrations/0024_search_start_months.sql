-- A text in a start window: the months an offer's sessions start in are words of `reach` too.
--
-- A text near a place with a kind of funding and a start window (the catalog bench's costliest
-- shape) counted its hits by reading each offer the text's index gave for the box's cells and
-- looking up its sessions for the window: 14.7 ms on average over the bench's 23 parameter sets
-- with hits (the count's statement as the search's owner, warm, alone, at the bench's 1,000,000
-- offers, 2026-12-07 08:09 UTC: a diagnosis). With the window's months asked of the same index as
-- well, GIN leaves out the offers with no session starting in them: 11.2 ms (its sessions start over
-- 18 months, a window of seven holds some start of about half the offers).
--
-- Each offer's `reach` (0016) gains a word per month one of its sessions starts in ("m202703");
-- the writes set it from the sessions they write, as they set the places. The exact window stays in
-- the clause. Filling it for 1,000,000 offers took 89 s in psql, the indexes dropped first as here.
-- The word of the month an ISO date (YYYY-MM-DD, as JSON carries a date) falls in: "m202703".
-- Plain text operations: with extract() and a cast, offer_reach took 29 us an offer of two sessions
-- where it took 7 without the months; this way 12.5 (20,000 such offers in psql).
CREATE FUNCTION start_month_word(start text) RETURNS text LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT 'm' || left(start, 4) || substr(start, 6, 2)
$$;

CREATE OR REPLACE FUNCTION offer_reach(format text, sessions jsonb) RETURNS text[] LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT coalesce(array_agg(DISTINCT t ORDER BY t), '{}') FROM (
        SELECT 'o' AS t WHERE format IN ('online', 'distance')
        UNION ALL
        SELECT w FROM jsonb_to_recordset(coalesce(sessions, '[]')) AS s(lat float8, lon float8, start text),
            LATERAL (VALUES (CASE WHEN format NOT IN ('online', 'distance') AND s.lat IS NOT NULL AND s.lon IS NOT NULL
                                  THEN 'c' || place_cell(s.lat, s.lon) END),
                            (start_month_word(s.start))) AS v(w)
        WHERE w IS NOT NULL
    ) AS words
$$;

DROP INDEX offers_search;
DROP INDEX offers_search_title;
DROP INDEX offers_search_bildungsgutschein;
DROP INDEX offers_search_qcg;
DROP INDEX offers_search_aufstiegsbafoeg;
DROP INDEX offers_search_quarter;
ALTER TABLE offers DISABLE TRIGGER offers_visible_to;  -- neither visible_to nor the documents change here
ALTER TABLE offers DISABLE TRIGGER offers_search_document;
UPDATE offers o SET reach = offer_reach(o.format, (
    SELECT jsonb_agg(jsonb_build_object('lat', s.lat, 'lon', s.lon, 'start', s.start_date))
    FROM offer_sessions s WHERE s.offer_id = o.id));
ALTER TABLE offers ENABLE TRIGGER offers_visible_to;
ALTER TABLE offers ENABLE TRIGGER offers_search_document;
CREATE INDEX offers_search ON offers USING gin (search, reach, filter_words);
CREATE INDEX offers_search_title ON offers USING gin (search_title, reach, filter_words);
CREATE INDEX offers_search_bildungsgutschein ON offers USING gin (search, reach, filter_words)
    WHERE funding @> '{"bildungsgutschein": true}';
CREATE INDEX offers_search_qcg ON offers USING gin (search, reach, filter_words) WHERE funding @> '{"qcg": true}';
CREATE INDEX offers_search_aufstiegsbafoeg ON offers USING gin (search, reach, filter_words)
    WHERE funding @> '{"aufstiegsbafoeg": true}';
CREATE INDEX offers_search_quarter ON offers USING gin (search, reach, (visible_to || '{}'::text[]))
    WHERE uuid_hash(id) & 3 = 0 AND status = 'published';
ANALYZE offers;

-- 0022's clause, and where a text is part of it with a start window of at most two years, the
-- window's months as words of `reach` too.
CREATE OR REPLACE FUNCTION offer_search_where(f jsonb, text_column text) RETURNS text LANGUAGE plpgsql STABLE AS $$
DECLARE
    clauses text := offer_search_where_indexed(f, text_column);
    formats text;
    first_day date := (f->>'start_from')::date;
    last_day date := (f->>'start_to')::date;
BEGIN
    IF text_column IS NULL OR NOT f ? 'q' THEN
        RETURN clauses;
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
    RETURN clauses;
END
$$;
