-- Outbox and inbox of the shared runtime; every service database has them.
-- They are infrastructure, not tenant data: no row-level security, the relay reads every tenant's rows.
CREATE TABLE outbox (
    id bigserial PRIMARY KEY,
    topic text NOT NULL,
    event_id uuid NOT NULL UNIQUE,
    event_type text NOT NULL,
    tenant_id text NOT NULL,
    aggregate_key text NOT NULL,
    headers jsonb NOT NULL,
    payload bytea NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    sent_at timestamptz,
    attempts int NOT NULL DEFAULT 0,
    last_error text
);
CREATE INDEX outbox_unsent ON outbox (id) WHERE sent_at IS NULL;

CREATE TABLE inbox (
    consumer text NOT NULL,
    event_id text NOT NULL,
    event_type text NOT NULL,
    received_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (consumer, event_id)
);

-- What each consumer knows of the tenants (identity.tenants.v1); identity keeps its own table.
CREATE TABLE known_tenants (
    id text PRIMARY KEY,
    name text NOT NULL,
    status text NOT NULL DEFAULT 'active',
    updated_at timestamptz NOT NULL DEFAULT now()
);
