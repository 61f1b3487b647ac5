-- The search document is kept by a trigger instead of a generated column. A generated column is
-- recomputed on every write of the row (each import update, each status change) and cannot be
-- filled in bulk: loading 100,000 offers spent most of its 646 s computing it row by row. The
-- trigger computes it only when title, skills or description change, and a bulk load (triggers
-- off) may fill it set-based, once per distinct text. The document itself is unchanged
-- (offer_document), only computed with the title's vector once and the compound tails in a
-- loop (about half the time per offer, which the import's rate needs).

CREATE OR REPLACE FUNCTION compound_tails(doc tsvector) RETURNS tsvector
LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE AS $$
DECLARE
    lexeme text;
    tails text[] := '{}';
BEGIN
    FOREACH lexeme IN ARRAY tsvector_to_array(doc) LOOP
        IF length(lexeme) >= 8 THEN
            FOR i IN 2 .. length(lexeme) - 4 LOOP
                tails := tails || substr(lexeme, i);
            END LOOP;
        END IF;
    END LOOP;
    RETURN array_to_tsvector(tails);  -- duplicates fold into one lexeme
END
$$;

CREATE OR REPLACE FUNCTION offer_document(title text, skills text[], description text) RETURNS tsvector
LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE AS $$
DECLARE
    head tsvector := to_tsvector('german', de_fold(title || ' ' || join_labels(skills)));
BEGIN
    RETURN setweight(head, 'A') || setweight(compound_tails(head), 'C')
        || setweight(to_tsvector('german', de_fold(description)), 'B');
END
$$;

ALTER TABLE offers ALTER COLUMN search DROP EXPRESSION;

CREATE FUNCTION offers_keep_search() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' OR NEW.search IS NULL OR NEW.title IS DISTINCT FROM OLD.title
       OR NEW.skills IS DISTINCT FROM OLD.skills OR NEW.description IS DISTINCT FROM OLD.description THEN
        NEW.search := offer_document(NEW.title, NEW.skills, NEW.description);
    END IF;
    RETURN NEW;
END
$$;
CREATE TRIGGER offers_search_document BEFORE INSERT OR UPDATE ON offers
    FOR EACH ROW EXECUTE FUNCTION offers_keep_search();
