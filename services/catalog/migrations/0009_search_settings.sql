-- A search is a short query: just-in-time compilation cost 260 ms of a 530 ms count at 1,000,000
-- offers (the planner's estimate crossed jit_above_cost) and parallel workers take longer to start
-- than they save, with sixteen searches at once on two cores. Off inside the search functions.
ALTER FUNCTION search_offer_page(jsonb, real, uuid, int, int) SET jit = off SET max_parallel_workers_per_gather = 0;
ALTER FUNCTION search_offer_count(jsonb, int) SET jit = off SET max_parallel_workers_per_gather = 0;
ALTER FUNCTION search_offer_facets(jsonb, int) SET jit = off SET max_parallel_workers_per_gather = 0;
