-- A search ANDs the text's bitmap with the funding index's (a fifth of all offers: 178,000 entries at
-- 1,000,000 offers). In the default 4 MB such a bitmap turns lossy: whole pages, each of whose offers
-- then has its text match recomputed ("Rows Removed by Index Recheck": 9,000 for one search). 32 MB
-- keeps it exact: on the combined shape (text, 100 km, funding, start window) at 1,000,000 offers,
-- the bounded count took 110–150 ms before and 70–90 ms after. Sixteen searches at once hold at most
-- 0.5 GB.
--
-- With that much memory the planner hashed every session in the start window (714,000 for half a year:
-- 230 ms of a 610 ms count) instead of checking the candidate offer's own one to three sessions, as
-- it did with the radius before 0011. An EXISTS whose only link to the offer is "s.offer_id = o.id"
-- may be turned into such a hash; one that also names another offer column may not. So every
-- session check names the offer's format too (a condition that holds wherever it is said): see
-- offer_search_where in 0014, which also says the funding filter as one condition per kind, as the
-- indexes below name it.
--
-- A text search with a funding filter ANDed the text's bitmap (42,000 offers for a topic word) with
-- the funding index's (qcg: 178,000 offers; Bildungsgutschein: 425,000): 30–50 ms to build before a
-- single offer was read. A text index per kind of funding, over the offers that have it, gives the
-- offers with both at once (7,400: 3 ms). The combined shape's bounded count: 70–90 → about 30 ms.
-- Writing an offer costs one more index entry per kind of funding it has.
CREATE INDEX offers_search_bildungsgutschein ON offers USING gin (search) WHERE funding @> '{"bildungsgutschein": true}';
CREATE INDEX offers_search_qcg ON offers USING gin (search) WHERE funding @> '{"qcg": true}';
CREATE INDEX offers_search_aufstiegsbafoeg ON offers USING gin (search) WHERE funding @> '{"aufstiegsbafoeg": true}';

ALTER FUNCTION search_offer_page(jsonb, real, uuid, int, int) SET work_mem = '32MB';
ALTER FUNCTION search_offer_count(jsonb, int) SET work_mem = '32MB';
ALTER FUNCTION search_offer_facets(jsonb, int) SET work_mem = '32MB';
