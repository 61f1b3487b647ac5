-- Administrative actions in the catalog (network sharing, who acts for a provider): who, what,
-- when, in which tenant; the same shape as identity's audit_log (runtime/audit.py writes both).
-- Rows are only ever added.
CREATE TABLE audit_log (
    id bigserial PRIMARY KEY,
    tenant_id text NOT NULL,
    at timestamptz NOT NULL DEFAULT now(),
    actor_sub text NOT NULL,
    actor_username text NOT NULL,
    action text NOT NULL,
    target text NOT NULL,
    details jsonb NOT NULL DEFAULT '{}'
);
CREATE INDEX audit_log_tenant_at ON audit_log (tenant_id, at DESC);
SELECT enable_tenant_isolation('audit_log');
