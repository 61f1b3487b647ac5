-- Reverse matching checks the exact great-circle distance on the demand keys themselves, so an offer
-- event loads only the demands its sessions really reach (the grid cells alone are coarse).
ALTER TABLE demand_keys
    ADD COLUMN lat double precision,
    ADD COLUMN lon double precision,
    ADD COLUMN max_distance_km double precision;

-- Fill the keys of open demands (the owner reads past row-level security only while it is not forced).
ALTER TABLE demand_keys NO FORCE ROW LEVEL SECURITY;
ALTER TABLE demands NO FORCE ROW LEVEL SECURITY;
UPDATE demand_keys k SET lat = (d.state -> 'employer' ->> 'lat')::double precision,
                         lon = (d.state -> 'employer' ->> 'lon')::double precision,
                         max_distance_km = (d.state ->> 'max_distance_km')::double precision
    FROM demands d WHERE d.id = k.demand_id AND k.format IN ('presence', 'hybrid', 'blended');
ALTER TABLE demands FORCE ROW LEVEL SECURITY;
ALTER TABLE demand_keys FORCE ROW LEVEL SECURITY;
