-- A text near a place is counted in a quarter of the offers first, as a text alone is in an eighth (0019).
--
-- A text within 25-100 km counted its first 1,001 hits from a bitmap of every offer holding the
-- words (in the box's cells, or online): 11.7-11.9 ms on average over the catalog bench's 24
-- parameter sets of that shape, the most of its page's 14 ms (the handler's store calls, as the app
-- role, warm, alone, at the bench's 1,000,000 offers, 2026-12-07 07:48 UTC: a diagnosis). An online
-- or distance offer is near every place, so such a search has many hits wherever its words are
-- common: 6,732-22,161 for those 23 of the 24 that have any, of which a quarter of the offers (those
-- whose id hashes to 0 of 4) held 1,616-5,620, each more than the bound, where an eighth held more
-- for only 14 of them.
--
-- So a text with a place and no other filter is counted in that quarter first, with a text index of
-- its own that holds the places (`reach`) and the visibility as well; where more than the bound of
-- its offers match, so do more than the bound of all, else the whole count follows, as for the eighth.
-- Its hits are a quarter of the whole index's, so the box's cells pay for themselves in it up to 100
-- (100 km), where in the whole index they did only up to 36 (0016): the clause asks for them there.
-- The same 24: 11.8 -> 7.8 ms with the quarter alone; within 100 km 10.6 -> 6.5 ms with its cells.
CREATE INDEX offers_search_quarter ON offers USING gin (search, reach, (visible_to || '{}'::text[]))
    WHERE uuid_hash(id) & 3 = 0 AND status = 'published';

-- The clause that restricts a count to its sample, or NULL where it should not try one.
CREATE OR REPLACE FUNCTION search_sample_clause(f jsonb) RETURNS text LANGUAGE plpgsql IMMUTABLE AS $$
DECLARE
    lat float8 := (f->>'lat')::float8;
    lon float8 := (f->>'lon')::float8;
    dlat float8;
    dlon float8;
    cells int[];
BEGIN
    IF f ? 'q' AND f - 'q' = '{}'::jsonb THEN
        RETURN ' AND uuid_hash(o.id) & 7 = 0';
    END IF;
    IF NOT (f ? 'q' AND f ? 'radius_km' AND f - ARRAY['q', 'lat', 'lon', 'radius_km'] = '{}'::jsonb) THEN
        RETURN NULL;
    END IF;
    -- the box offer_search_where draws around the circle (0016), and its cells where that clause
    -- leaves them out (more than 36)
    dlat := (f->>'radius_km')::float8 * 1000 / 111000.0 + 0.01;
    dlon := least(180, dlat / greatest(cos(radians(least(abs(lat) + dlat, 89.9))), 0.01));
    cells := place_cells(lat - dlat, lat + dlat, lon - dlon, lon + dlon);
    RETURN ' AND uuid_hash(o.id) & 3 = 0'
        || CASE WHEN cardinality(cells) BETWEEN 37 AND 100
                THEN format(' AND o.reach && %L::text[]', ARRAY(SELECT 'c' || c FROM unnest(cells) AS c) || 'o'::text)
                ELSE '' END;
END
$$;
ANALYZE offers;
