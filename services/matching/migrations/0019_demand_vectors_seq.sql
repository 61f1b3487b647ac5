-- A stamp of a demand's two vectors (its own and its ranking vector): a new number whenever either
-- changes. A replica keeps the vectors of the open demands its offer changes reached in memory
-- (kept_demands.DemandVectors) and reads only the stamps and the vectors whose stamp moved: reading
-- some 15,000 reached demands' vectors cost about 110 ms per offer change at 100,000 open demands.
-- The default stamps new rows (COPY included); the trigger stamps every change of a vector.
CREATE SEQUENCE demand_vectors_seq;
ALTER TABLE demands ADD COLUMN vectors_seq bigint NOT NULL DEFAULT nextval('demand_vectors_seq');

CREATE FUNCTION demands_stamp_vectors() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.vector IS DISTINCT FROM OLD.vector OR NEW.ranking_vector IS DISTINCT FROM OLD.ranking_vector THEN
        NEW.vectors_seq := nextval('demand_vectors_seq');
    END IF;
    RETURN NEW;
END $$;

CREATE TRIGGER demands_stamp_vectors BEFORE UPDATE OF vector, ranking_vector ON demands
    FOR EACH ROW EXECUTE FUNCTION demands_stamp_vectors();
