-- Requests from a network's public demand form (firms without an account): kept unreviewed until a
-- counsellor of that network opens one as a demand. Private to the network like demands.
CREATE TABLE demand_requests (
    id uuid PRIMARY KEY,
    tenant_id text NOT NULL,
    body jsonb NOT NULL,            -- the demand as the firm stated it (the body of POST /v1/demands)
    status text NOT NULL DEFAULT 'new' CHECK (status IN ('new', 'opened')),
    demand_id uuid,
    opened_by text,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX demand_requests_by_status ON demand_requests (tenant_id, status, created_at DESC);
SELECT enable_tenant_isolation('demand_requests');
