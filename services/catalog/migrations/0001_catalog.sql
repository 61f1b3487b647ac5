-- cube and earthdistance are created at provisioning (superuser only).

-- array_to_string is only STABLE; a generated column needs an IMMUTABLE expression.
CREATE FUNCTION join_labels(text[]) RETURNS text LANGUAGE sql IMMUTABLE PARALLEL SAFE
    AS $$ SELECT coalesce(array_to_string($1, ' '), '') $$;

CREATE TABLE providers (
    id uuid PRIMARY KEY,
    tenant_id text NOT NULL,
    external_id text,
    name text NOT NULL,
    emails text[] NOT NULL,
    address jsonb,
    azav jsonb,
    version int NOT NULL DEFAULT 1,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    UNIQUE (tenant_id, external_id)
);

CREATE TABLE offers (
    id uuid PRIMARY KEY,
    tenant_id text NOT NULL,
    provider_id uuid NOT NULL REFERENCES providers (id),
    external_id text,
    title text NOT NULL,
    description text NOT NULL DEFAULT '',
    skills text[] NOT NULL DEFAULT '{}',
    qualification text NOT NULL,
    format text NOT NULL,
    schedule text NOT NULL,
    hours numeric,
    price_eur numeric,
    funding jsonb NOT NULL,
    visibility_scope text NOT NULL CHECK (visibility_scope IN ('home', 'networks', 'all')),
    visibility_networks text[] NOT NULL DEFAULT '{}',
    language text NOT NULL DEFAULT 'de',
    status text NOT NULL CHECK (status IN ('draft', 'published', 'withdrawn')),
    version int NOT NULL DEFAULT 1,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    search tsvector GENERATED ALWAYS AS (
        setweight(to_tsvector('german', title), 'A')
        || setweight(to_tsvector('german', join_labels(skills)), 'A')
        || setweight(to_tsvector('german', description), 'B')
    ) STORED,
    UNIQUE (provider_id, external_id)
);
CREATE INDEX offers_search ON offers USING gin (search);
CREATE INDEX offers_tenant ON offers (tenant_id, status);
CREATE INDEX offers_provider ON offers (provider_id);

CREATE TABLE offer_sessions (
    id bigserial PRIMARY KEY,
    offer_id uuid NOT NULL REFERENCES offers (id) ON DELETE CASCADE,
    tenant_id text NOT NULL,
    position int NOT NULL,
    start_date date NOT NULL,
    end_date date,
    zip text,
    city text,
    lat double precision,
    lon double precision
);
CREATE INDEX offer_sessions_offer ON offer_sessions (offer_id, position);
CREATE INDEX offer_sessions_start ON offer_sessions (start_date);
CREATE INDEX offer_sessions_place ON offer_sessions USING gist (ll_to_earth(lat, lon)) WHERE lat IS NOT NULL;

-- Row-level security: the app role is neither owner nor superuser, so these bind every query.
SELECT enable_tenant_isolation('providers');

ALTER TABLE offers ENABLE ROW LEVEL SECURITY;
ALTER TABLE offers FORCE ROW LEVEL SECURITY;
CREATE POLICY offers_visible ON offers FOR SELECT
    USING (offer_visible(tenant_id, status, visibility_scope, visibility_networks));
CREATE POLICY offers_insert ON offers FOR INSERT WITH CHECK (tenant_id = current_setting('app.tenant_id', true));
CREATE POLICY offers_update ON offers FOR UPDATE
    USING (tenant_id = current_setting('app.tenant_id', true))
    WITH CHECK (tenant_id = current_setting('app.tenant_id', true));
CREATE POLICY offers_delete ON offers FOR DELETE USING (tenant_id = current_setting('app.tenant_id', true));

ALTER TABLE offer_sessions ENABLE ROW LEVEL SECURITY;
ALTER TABLE offer_sessions FORCE ROW LEVEL SECURITY;
-- A session is as visible as its offer (the subquery is itself bound by offers_visible).
CREATE POLICY sessions_visible ON offer_sessions FOR SELECT
    USING (EXISTS (SELECT 1 FROM offers o WHERE o.id = offer_id));
CREATE POLICY sessions_insert ON offer_sessions FOR INSERT
    WITH CHECK (tenant_id = current_setting('app.tenant_id', true));
CREATE POLICY sessions_delete ON offer_sessions FOR DELETE
    USING (tenant_id = current_setting('app.tenant_id', true));
