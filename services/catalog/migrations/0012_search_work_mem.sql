-- A search ANDs the text's bitmap with the funding index's (a fifth of all offers: 178,000 entries at
-- 1,000,000 offers). In the default 4 MB such a bitmap turns lossy: whole pages, each of whose offers
-- then has its text match recomputed ("Rows Removed by Index Recheck": 9,000 for one search). 32 MB
-- keeps it exact; measured on the combined shape (text, 100 km, funding, start window) at 1,000,000
-- offers: the bounded count 110–150 ms → 70–85 ms. Sixteen searches at once hold at most 0.5 GB.
ALTER FUNCTION search_offer_page(jsonb, real, uuid, int, int) SET work_mem = '32MB';
ALTER FUNCTION search_offer_count(jsonb, int) SET work_mem = '32MB';
ALTER FUNCTION search_offer_facets(jsonb, int) SET work_mem = '32MB';
