-- A demand's ranking vector: its own vector expanded towards its nearest feasible offers
-- (relevance.expand_query), computed when the demand is (re)matched and kept to judge a single changed
-- offer later the way the whole ranking judged it; best_score is the demand's best offer's score then
-- (a new pair is a match only within relevance.MATCH_MARGIN of it).
ALTER TABLE demands
    ADD COLUMN ranking_vector bytea,
    ADD COLUMN best_score double precision;
