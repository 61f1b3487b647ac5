-- Notifications: the providers read model (catalog.providers.v1), recipients' preferences and the
-- delivery log. Every table here is tenant-owned: a delivery belongs to the home tenant of the
-- provider it is addressed to (not to the demand's tenant).

CREATE TABLE providers (
    id uuid PRIMARY KEY,
    tenant_id text NOT NULL,
    name text NOT NULL,
    emails text[] NOT NULL,
    version integer NOT NULL DEFAULT 0,
    updated_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE preferences (
    provider_id uuid PRIMARY KEY,
    tenant_id text NOT NULL,
    mode text NOT NULL DEFAULT 'instant' CHECK (mode IN ('instant', 'digest', 'off')),
    -- One-click unsubscribe without logging in: a random secret per provider.
    unsubscribe_token text NOT NULL UNIQUE,
    updated_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE deliveries (
    id uuid PRIMARY KEY,  -- uuid5 of the idempotency key
    tenant_id text NOT NULL,
    kind text NOT NULL CHECK (kind IN ('match_found')),
    idempotency_key text NOT NULL UNIQUE,  -- match:<match_id>:provider:<provider_id>
    match_id uuid NOT NULL,
    demand_id uuid NOT NULL,
    demand_tenant text NOT NULL,
    offer_id uuid NOT NULL,
    provider_id uuid NOT NULL,
    recipient text,  -- NULL until resolved from the providers read model at send time
    payload jsonb NOT NULL,  -- the MatchFound state: all the mail needs
    status text NOT NULL DEFAULT 'pending'
        CHECK (status IN ('pending', 'sent', 'failed', 'suppressed', 'cancelled')),
    attempts integer NOT NULL DEFAULT 0,
    last_error text,
    message_id text NOT NULL,  -- carries the idempotency key
    traceparent text,
    created_at timestamptz NOT NULL DEFAULT now(),
    next_attempt_at timestamptz NOT NULL DEFAULT now(),
    enqueued_at timestamptz,
    sent_at timestamptz,
    updated_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX deliveries_due ON deliveries (next_attempt_at) WHERE status = 'pending';
CREATE INDEX deliveries_log ON deliveries (tenant_id, created_at DESC, id);
CREATE INDEX deliveries_provider_pending ON deliveries (provider_id) WHERE status = 'pending';
CREATE INDEX deliveries_match ON deliveries (match_id);

-- Every attempt: a send is logged as 'started' (committed on its own before talking SMTP) and
-- completed in the delivery's transaction; a worker killed in between leaves 'started', which the
-- next attempt marks 'interrupted'.
CREATE TABLE delivery_attempts (
    delivery_id uuid NOT NULL REFERENCES deliveries (id),
    tenant_id text NOT NULL,
    attempt integer NOT NULL,
    at timestamptz NOT NULL DEFAULT now(),
    finished_at timestamptz,
    outcome text NOT NULL CHECK (outcome IN ('started', 'sent', 'temporary_failure', 'permanent_failure',
                                             'suppressed', 'interrupted')),
    smtp_code integer,
    error text,
    PRIMARY KEY (delivery_id, attempt)
);

-- Row-level security: the app role sees the acting tenant's rows only.
SELECT enable_tenant_isolation('providers');
SELECT enable_tenant_isolation('preferences');
SELECT enable_tenant_isolation('deliveries');
SELECT enable_tenant_isolation('delivery_attempts');

-- Three narrow cross-tenant operations run as the owner role (SECURITY DEFINER functions below):
-- finding a delivery's tenant, claiming due deliveries for the dispatcher, and unsubscribing by
-- token. FORCE ROW LEVEL SECURITY binds the owner too, so the owner (a NOLOGIN role, reachable
-- only through these functions and migrations; current_user while migrating) gets its own policy.
DO $$
BEGIN
    EXECUTE format('CREATE POLICY owner_functions ON deliveries TO %I USING (true) WITH CHECK (true)', current_user);
    EXECUTE format('CREATE POLICY owner_functions ON preferences TO %I USING (true) WITH CHECK (true)', current_user);
    EXECUTE format('CREATE POLICY owner_functions ON providers TO %I USING (true)', current_user);
END
$$;

CREATE FUNCTION delivery_tenant(delivery uuid) RETURNS text
    LANGUAGE sql STABLE SECURITY DEFINER SET search_path = public, pg_temp
AS $$ SELECT d.tenant_id FROM deliveries d WHERE d.id = delivery $$;

-- Due, pending deliveries not enqueued in the last `grace`: marked enqueued now and returned
-- (rows a worker holds locked while sending are skipped).
CREATE FUNCTION claim_due_deliveries(grace interval, max_rows integer)
    RETURNS TABLE (delivery_id uuid, delivery_tenant text)
    LANGUAGE sql VOLATILE SECURITY DEFINER SET search_path = public, pg_temp
AS $$
    UPDATE deliveries d SET enqueued_at = now()
    WHERE d.id IN (
        SELECT c.id FROM deliveries c
        WHERE c.status = 'pending' AND c.next_attempt_at <= now()
          AND (c.enqueued_at IS NULL OR c.enqueued_at < now() - grace)
        ORDER BY c.next_attempt_at
        LIMIT max_rows
        FOR UPDATE SKIP LOCKED)
    RETURNING d.id, d.tenant_id
$$;

-- One-click unsubscribe: the token alone identifies the provider's preference.
CREATE FUNCTION unsubscribe(token text)
    RETURNS TABLE (provider_id uuid, tenant_id text, provider_name text)
    LANGUAGE sql VOLATILE SECURITY DEFINER SET search_path = public, pg_temp
AS $$
    UPDATE preferences p SET mode = 'off', updated_at = now()
    WHERE p.unsubscribe_token = token
    RETURNING p.provider_id, p.tenant_id, (SELECT v.name FROM providers v WHERE v.id = p.provider_id)
$$;
