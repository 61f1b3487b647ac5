-- A text with a format, schedule or qualification: the text's index answers the filter too.
--
-- Such a search read every offer holding the words and checked the filter on each: "Pflege" with
-- the qualification "language" (none of its 41,000 hits has it) took 32.9 ms to count nothing, and as
-- long again for its facets; "Python" in the hybrid format in the evening (357 hits) 54.9 ms
-- (the handler's store calls, as the app role, warm, alone, at the 1,000,000 offers of make
-- bench-catalog, 2026-12-07 07:28 UTC: a diagnosis). A B-tree of a filter does not help: 0020 found
-- that ANDing the text's bitmap with one costs more than checking each hit.
--
-- Each offer now carries its format, schedule and qualification as words of its own
-- (`filter_words`: "format:hybrid", ...), a column of every text index beside the document and the
-- places (0016). GIN then finds the offers holding the words and the filter's word in one scan,
-- stepping through a common filter word's entries to the text's hits rather than reading them all.
-- The exact conditions stay in the clause. A generated column: it depends on the row alone, so no
-- write can forget it.
DROP INDEX offers_search;
DROP INDEX offers_search_title;
DROP INDEX offers_search_bildungsgutschein;
DROP INDEX offers_search_qcg;
DROP INDEX offers_search_aufstiegsbafoeg;
ALTER TABLE offers ADD COLUMN filter_words text[] NOT NULL
    GENERATED ALWAYS AS (ARRAY['format:' || format, 'schedule:' || schedule, 'qualification:' || qualification]) STORED;
CREATE INDEX offers_search ON offers USING gin (search, reach, filter_words);
CREATE INDEX offers_search_title ON offers USING gin (search_title, reach, filter_words);
CREATE INDEX offers_search_bildungsgutschein ON offers USING gin (search, reach, filter_words)
    WHERE funding @> '{"bildungsgutschein": true}';
CREATE INDEX offers_search_qcg ON offers USING gin (search, reach, filter_words) WHERE funding @> '{"qcg": true}';
CREATE INDEX offers_search_aufstiegsbafoeg ON offers USING gin (search, reach, filter_words)
    WHERE funding @> '{"aufstiegsbafoeg": true}';
-- the planner's counts of the new words (how many offers hold "format:online"); the rewrite also
-- left the visibility map empty, which the next VACUUM (autovacuum's, or an operator's) refills
ANALYZE offers;

-- 0020's clause, and where a text is part of it, each of the three filters as the words of its
-- values too: `o.filter_words && '{format:hybrid}'`, which the text's index answers.
CREATE OR REPLACE FUNCTION offer_search_where(f jsonb, text_column text) RETURNS text LANGUAGE plpgsql STABLE AS $$
DECLARE
    clauses text := offer_search_where_indexed(f, text_column);
    formats text;
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
    RETURN clauses || coalesce((
        SELECT string_agg(format(' AND o.filter_words && %L::text[]',
                                 ARRAY(SELECT word || ':' || v FROM jsonb_array_elements_text(f->key) AS v)), '')
        FROM (VALUES ('formats', 'format'), ('schedules', 'schedule'), ('qualifications', 'qualification')) AS t(key, word)
        WHERE f ? key), '');
END
$$;

-- 0019's test, without the `few` flag that 0021 removed.
CREATE OR REPLACE FUNCTION search_sample_clause(f jsonb) RETURNS text LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE WHEN f ? 'q' AND f - 'q' = '{}'::jsonb THEN ' AND uuid_hash(o.id) & 7 = 0' END
$$;
