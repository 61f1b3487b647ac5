-- A tenant's settings the other services show (branding, legal pages), and the Keycloak Organization
-- it is provisioned as.
ALTER TABLE tenants
    ADD COLUMN logo_url text,
    ADD COLUMN imprint_url text,
    ADD COLUMN privacy_url text,
    ADD COLUMN organization_id text;

-- Administrative actions (who, what, when, in which tenant); read by the network's admins and by
-- operators. Rows are only ever added.
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
