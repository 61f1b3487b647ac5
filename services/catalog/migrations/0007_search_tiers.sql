-- Ranking without reading every hit. ts_rank_cd ranked every hit of a text (40,000 for a topic
-- word among 1,000,000 offers), reading each one's document from the table: most of a query's
-- time. A page is now ranked in two tiers: offers whose title or skills hold every word of the
-- query (rank 1), then offers that hold them elsewhere (rank 0.5); within a tier the newest id first.
-- That order is what an index gives: the title tier walks offers by id and stops at the page's
-- end, or (for a rare word) reads its few hits from the title's own GIN index, whichever the
-- planner finds cheaper from the title's own statistics. The rank stays a property of offer and
-- query, so the keyset cursor (rank, id) pages through every hit exactly once.

-- Title and skills with their compound tails: the lexemes of weights A and C of `search`.
CREATE FUNCTION offer_title_document(title text, skills text[]) RETURNS tsvector
LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE AS $$
DECLARE
    head tsvector := to_tsvector('german', de_fold(title || ' ' || join_labels(skills)));
BEGIN
    RETURN head || compound_tails(head);
END
$$;

ALTER TABLE offers ADD COLUMN search_title tsvector;

CREATE OR REPLACE FUNCTION offers_keep_search() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' OR NEW.search IS NULL OR NEW.search_title IS NULL OR NEW.title IS DISTINCT FROM OLD.title
       OR NEW.skills IS DISTINCT FROM OLD.skills OR NEW.description IS DISTINCT FROM OLD.description THEN
        NEW.search := offer_document(NEW.title, NEW.skills, NEW.description);
        NEW.search_title := offer_title_document(NEW.title, NEW.skills);
    END IF;
    RETURN NEW;
END
$$;

ALTER TABLE offers DISABLE TRIGGER offers_visible_to;  -- neither visible_to nor search change here
ALTER TABLE offers DISABLE TRIGGER offers_search_document;
UPDATE offers SET search_title = offer_title_document(title, skills);
ALTER TABLE offers ENABLE TRIGGER offers_visible_to;
ALTER TABLE offers ENABLE TRIGGER offers_search_document;
CREATE INDEX offers_search_title ON offers USING gin (search_title);

-- The WHERE clause as before, with the text matched against the given document column (or left
-- out, for the page's tiers, which add their own).
CREATE FUNCTION offer_search_where(f jsonb, text_column text) RETURNS text LANGUAGE plpgsql STABLE AS $$
DECLARE
    clauses text := offer_search_where(f - 'q');
BEGIN
    IF f ? 'q' AND text_column IS NOT NULL THEN
        clauses := clauses || format(' AND o.%I @@ to_tsquery(''german'', de_fold(%L))', text_column, f->>'q');
    END IF;
    RETURN clauses;
END
$$;

CREATE OR REPLACE FUNCTION search_offer_page(f jsonb, after_rank real, after_id uuid, page_size int, skip int)
RETURNS TABLE (id uuid, rank real) LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = public, pg_temp AS $$
DECLARE
    n int := least(greatest(page_size, 1), 100);
    s int := least(greatest(skip, 0), 1000);
    q text := format('to_tsquery(''german'', de_fold(%L))', f->>'q');
    got int := 0;
    title_hits int;
BEGIN
    IF NOT f ? 'q' THEN
        RETURN QUERY EXECUTE format('SELECT o.id, 0::real FROM offers o WHERE %s%s ORDER BY o.id DESC LIMIT %s OFFSET %s',
            offer_search_where(f), CASE WHEN after_id IS NULL THEN '' ELSE format(' AND o.id < %L::uuid', after_id) END,
            n, s);
        RETURN;
    END IF;
    IF after_id IS NULL OR after_rank > 0.75 THEN
        -- tier 1: every word in title or skills (the title's document implies the whole one's)
        RETURN QUERY EXECUTE format(
            'SELECT o.id, 1::real FROM offers o WHERE %s%s ORDER BY o.id DESC LIMIT %s OFFSET %s',
            offer_search_where(f, 'search_title'),
            CASE WHEN after_id IS NULL THEN '' ELSE format(' AND o.id < %L::uuid', after_id) END, n, s);
        GET DIAGNOSTICS got = ROW_COUNT;
        IF got >= n THEN
            RETURN;
        END IF;
        IF got = 0 AND s > 0 THEN  -- the offset reached past the title tier: skip the rest in tier 2
            EXECUTE format('SELECT count(*) FROM (SELECT 1 FROM offers o WHERE %s%s LIMIT %s) t',
                offer_search_where(f, 'search_title'),
                CASE WHEN after_id IS NULL THEN '' ELSE format(' AND o.id < %L::uuid', after_id) END, s)
                INTO title_hits;
            s := s - title_hits;
        ELSE
            s := 0;
        END IF;
        after_id := NULL;
    END IF;
    -- tier 2: the words (also) elsewhere. Planned for all the text's hits (the outer ORDER BY), never
    -- as a walk by id that a title-only word would carry through the whole table.
    RETURN QUERY EXECUTE format(
        'SELECT t.id, 0.5::real FROM (SELECT o.id, o.search_title FROM offers o WHERE %s%s OFFSET 0) t'
        ' WHERE NOT t.search_title @@ %s ORDER BY t.id DESC LIMIT %s OFFSET %s',
        offer_search_where(f, 'search'),
        CASE WHEN after_id IS NULL THEN '' ELSE format(' AND o.id < %L::uuid', after_id) END, q, n - got, s);
END
$$;
