-- Matching at national scale: indexed hard constraints on both sides, offer vectors kept here
-- (a restart re-encodes nothing), demands complete (owner, lifecycle), the providers read model
-- and the provider's view of its matched demands.

-- ---- offers: one row per session with every hard-constraint column, indexed ------------------
-- Located sessions (presence, hybrid, blended with a place) by grid cell and start; the others
-- (online, distance) by format and start. Visibility is the offers' own rule (row-level security).
CREATE TABLE offer_sessions (
    offer_id uuid NOT NULL REFERENCES offers (id) ON DELETE CASCADE,
    n int NOT NULL,
    tenant_id text NOT NULL,
    status text NOT NULL,
    visibility_scope text NOT NULL,
    visibility_networks text[] NOT NULL DEFAULT '{}',
    format text NOT NULL,
    price_eur numeric,
    qcg boolean NOT NULL,
    start_date date NOT NULL,
    lat double precision,
    lon double precision,
    cell int,                       -- grid cell of a located session; NULL for online and distance
    city text,
    region text,                    -- for the gap report
    PRIMARY KEY (offer_id, n)
);
CREATE INDEX offer_sessions_located ON offer_sessions (cell, start_date)
    WHERE status = 'published' AND cell IS NOT NULL;
CREATE INDEX offer_sessions_remote ON offer_sessions (format, start_date)
    WHERE status = 'published' AND cell IS NULL;
CREATE INDEX offer_sessions_wide ON offer_sessions (start_date)
    WHERE status = 'published' AND cell IS NOT NULL;

ALTER TABLE offer_sessions ENABLE ROW LEVEL SECURITY;
ALTER TABLE offer_sessions FORCE ROW LEVEL SECURITY;
CREATE POLICY offer_sessions_visible ON offer_sessions FOR SELECT
    USING (offer_visible(tenant_id, status, visibility_scope, visibility_networks));
CREATE POLICY offer_sessions_insert ON offer_sessions FOR INSERT
    WITH CHECK (tenant_id = current_setting('app.tenant_id', true));
CREATE POLICY offer_sessions_delete ON offer_sessions FOR DELETE
    USING (tenant_id = current_setting('app.tenant_id', true));

ALTER TABLE offers
    ADD COLUMN skill_cluster text,
    ADD COLUMN remote boolean NOT NULL DEFAULT false;

-- Offer vectors (sentence encoder, float16) for every replica's in-process index. change_seq is
-- given at the end of the writing transaction under a short lock, so it grows in commit order:
-- a replica that has read everything up to N has missed nothing below N. No tenant data but an
-- embedding of the offer's text: no row-level security, the index of each process holds them all.
CREATE SEQUENCE offer_vector_seq;
CREATE TABLE offer_vectors (
    offer_id uuid PRIMARY KEY,
    text_hash text NOT NULL,
    vector bytea NOT NULL,
    change_seq bigint NOT NULL DEFAULT 0
);
CREATE INDEX offer_vectors_seq ON offer_vectors (change_seq);

-- ---- demands: complete, and indexed for reverse matching ----------------------------------------
ALTER TABLE demands
    ADD COLUMN owner text,                -- the employer's firm (or the recording user without one)
    ADD COLUMN closed_reason text,        -- closed by a person, or expired after its start window
    ADD COLUMN vector bytea,
    ADD COLUMN skill_cluster text,
    ADD COLUMN region text,
    ADD COLUMN participants int;
UPDATE demands SET owner = created_by WHERE owner IS NULL;
ALTER TABLE demands ALTER COLUMN owner SET NOT NULL;
CREATE INDEX demands_by_owner ON demands (tenant_id, owner, created_at DESC);
CREATE INDEX demands_by_created ON demands (tenant_id, created_at DESC);
CREATE INDEX demands_open_until ON demands (start_to) WHERE status = 'open';

-- One row per open demand, acceptable format and grid cell its distance box covers (cell -1:
-- anywhere: online, distance, or a box too wide to list). An offer session finds the demands it can
-- concern by (tenant, format, cell, start) without visiting the others.
CREATE TABLE demand_keys (
    demand_id uuid NOT NULL REFERENCES demands (id) ON DELETE CASCADE,
    tenant_id text NOT NULL,
    format text NOT NULL,
    cell int NOT NULL,
    start_from date NOT NULL,
    start_to date NOT NULL,
    max_price_eur numeric,
    funding_required boolean NOT NULL,
    PRIMARY KEY (demand_id, format, cell)
);
CREATE INDEX demand_keys_lookup ON demand_keys (tenant_id, format, cell, start_from)
    INCLUDE (start_to, max_price_eur, funding_required);
SELECT enable_tenant_isolation('demand_keys');

-- ---- matches: who was told ----------------------------------------------------------------------
ALTER TABLE matches
    ADD COLUMN provider_id uuid,
    ADD COLUMN offer_tenant text,
    ADD COLUMN announced boolean NOT NULL DEFAULT true;  -- MatchFound was written for this pair
CREATE INDEX matches_demand_active ON matches (demand_id) WHERE status = 'active';

-- ---- providers (catalog.providers.v1): who acts for which provider -----------------------------
CREATE TABLE providers (
    id uuid PRIMARY KEY,
    tenant_id text NOT NULL,
    name text NOT NULL,
    members text[] NOT NULL DEFAULT '{}',
    version int NOT NULL DEFAULT 0,
    updated_at timestamptz NOT NULL DEFAULT now()
);
SELECT enable_tenant_isolation('providers');

-- ---- the provider's view: its active matches, in the provider's own tenant ----------------------
-- A demand is private to its network, but a provider matched to it sees its content (the employer's
-- contact only with consent). Kept here, in the provider's tenant, whenever a match changes.
CREATE TABLE provider_matches (
    match_id uuid PRIMARY KEY,
    tenant_id text NOT NULL,              -- the provider's (the offer's home) tenant
    provider_id uuid NOT NULL,
    offer_id uuid NOT NULL,
    offer_title text NOT NULL,
    demand_id uuid NOT NULL,
    demand_tenant text NOT NULL,
    demand jsonb NOT NULL,
    employer jsonb NOT NULL,
    score double precision NOT NULL,
    reasons jsonb NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX provider_matches_by_provider ON provider_matches (tenant_id, provider_id, updated_at DESC);
CREATE INDEX provider_matches_by_demand ON provider_matches (demand_id);
SELECT enable_tenant_isolation('provider_matches');
