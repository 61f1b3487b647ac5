-- A demand's feasible offers read from the session indexes alone (index-only scans): every column the
-- search, its row-level security (offer_visible) and its answer need is in the index. At 1,000,000
-- offers a demand near a city has 70,000 feasible sessions, and reading them from the table took
-- 400 of its 540 ms (10,000 scattered pages).
CREATE INDEX offer_sessions_located_covering ON offer_sessions (cell, start_date)
    INCLUDE (format, lat, lon, price_eur, qcg, offer_id, city, status, tenant_id, visibility_scope,
             visibility_networks)
    WHERE status = 'published' AND cell IS NOT NULL;
DROP INDEX offer_sessions_located;
CREATE INDEX offer_sessions_remote_covering ON offer_sessions (format, start_date)
    INCLUDE (offer_id, price_eur, qcg, city, status, tenant_id, visibility_scope, visibility_networks)
    WHERE status = 'published' AND cell IS NULL;
DROP INDEX offer_sessions_remote;

-- The order of a demand's best feasible offers as its last full ranking found them, so browsing its
-- first pages does not rank tens of thousands of offers again. Deleted whenever an offer change
-- reaches the demand (reverse matching finds those demands anyway); a page then ranks in full. A table
-- of its own: forgetting hundreds of them per offer change deletes small rows instead of rewriting
-- (and locking) the demands' rows.
CREATE TABLE demand_rankings (
    demand_id uuid PRIMARY KEY REFERENCES demands (id) ON DELETE CASCADE,
    tenant_id text NOT NULL,
    offers uuid[] NOT NULL,
    total int NOT NULL
);
ALTER TABLE demand_rankings ENABLE ROW LEVEL SECURITY;
ALTER TABLE demand_rankings FORCE ROW LEVEL SECURITY;
CREATE POLICY demand_rankings_tenant ON demand_rankings
    USING (tenant_id = current_setting('app.tenant_id', true))
    WITH CHECK (tenant_id = current_setting('app.tenant_id', true));
