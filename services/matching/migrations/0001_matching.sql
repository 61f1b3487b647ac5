-- Matching's own read model of the offers it may match (from catalog.offers.v1), demands and matches.
CREATE TABLE offers (
    id uuid PRIMARY KEY,
    tenant_id text NOT NULL,
    provider_id uuid NOT NULL,
    external_id text,
    title text NOT NULL,
    format text NOT NULL,
    price_eur numeric,
    qcg boolean NOT NULL,
    visibility_scope text NOT NULL,
    visibility_networks text[] NOT NULL DEFAULT '{}',
    status text NOT NULL,
    version int NOT NULL,
    state jsonb NOT NULL,
    first_start date,
    last_start date,
    updated_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX offers_candidates ON offers (format, first_start, last_start) WHERE status = 'published';

CREATE TABLE demands (
    id uuid PRIMARY KEY,
    tenant_id text NOT NULL,
    created_by text NOT NULL,
    status text NOT NULL CHECK (status IN ('open', 'closed')),
    formats text[] NOT NULL,
    start_from date NOT NULL,
    start_to date NOT NULL,
    state jsonb NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX demands_open ON demands (tenant_id) WHERE status = 'open';

CREATE TABLE matches (
    id uuid PRIMARY KEY,
    tenant_id text NOT NULL,
    demand_id uuid NOT NULL REFERENCES demands (id),
    offer_id uuid NOT NULL,
    score double precision NOT NULL,
    reasons jsonb NOT NULL,
    status text NOT NULL CHECK (status IN ('active', 'retracted')),
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    UNIQUE (demand_id, offer_id)
);
CREATE INDEX matches_offer ON matches (offer_id);

ALTER TABLE offers ENABLE ROW LEVEL SECURITY;
ALTER TABLE offers FORCE ROW LEVEL SECURITY;
CREATE POLICY offers_visible ON offers FOR SELECT
    USING (offer_visible(tenant_id, status, visibility_scope, visibility_networks));
-- The consumer writes an offer acting as the offer's home tenant.
CREATE POLICY offers_write ON offers FOR INSERT WITH CHECK (tenant_id = current_setting('app.tenant_id', true));
CREATE POLICY offers_update ON offers FOR UPDATE
    USING (tenant_id = current_setting('app.tenant_id', true))
    WITH CHECK (tenant_id = current_setting('app.tenant_id', true));

SELECT enable_tenant_isolation('demands');

SELECT enable_tenant_isolation('matches');
