-- Owners below the tenant, richer preferences, per-address choices, digests, tenant branding and
-- the 'accepted' step of an attempt.

-- Provider membership comes from catalog.providers.v1 (`members`: the users' subs).
ALTER TABLE providers ADD COLUMN members text[] NOT NULL DEFAULT '{}';

-- Owner isolation: an acting provider user (app.acting_providers = 'providers:<id>,<id>') sees only
-- rows of the providers it acts for. Unset or empty: no owner restriction (network admins,
-- consumers, the worker), the tenant policy alone applies. RESTRICTIVE: ANDed with the tenant policy.
CREATE FUNCTION acting_for_provider(provider uuid) RETURNS boolean
    LANGUAGE sql STABLE SET search_path = public, pg_temp
AS $$
    SELECT coalesce(current_setting('app.acting_providers', true), '') = ''
        OR provider::text = ANY (string_to_array(
               substr(current_setting('app.acting_providers', true), length('providers:') + 1), ','))
$$;

-- Preferences of a provider (its default for all its contact addresses).
ALTER TABLE preferences DROP CONSTRAINT preferences_mode_check;
UPDATE preferences SET mode = 'daily' WHERE mode = 'digest';
ALTER TABLE preferences
    ADD CONSTRAINT preferences_mode_check CHECK (mode IN ('instant', 'daily', 'weekly', 'off')),
    ADD COLUMN digest_hour smallint NOT NULL DEFAULT 7 CHECK (digest_hour BETWEEN 0 AND 23),
    ADD COLUMN digest_weekday smallint NOT NULL DEFAULT 1 CHECK (digest_weekday BETWEEN 1 AND 7),
    -- empty: all of the provider's offers / every topic
    ADD COLUMN offer_ids uuid[] NOT NULL DEFAULT '{}',
    ADD COLUMN topics text[] NOT NULL DEFAULT '{}',
    -- unsubscribe links are signed now (HMAC), no stored secret per provider
    DROP COLUMN unsubscribe_token;
DROP FUNCTION unsubscribe(text);

-- One contact address's own choice, overriding its owner's default. Owner: a provider (its id)
-- or an employer firm (the firm id) opting in to alerts about good new offers for its demand.
CREATE TABLE address_preferences (
    tenant_id text NOT NULL,
    owner_kind text NOT NULL CHECK (owner_kind IN ('provider', 'employer')),
    owner_id text NOT NULL,
    address text NOT NULL,
    mode text NOT NULL CHECK (mode IN ('instant', 'daily', 'weekly', 'off')),
    digest_hour smallint NOT NULL DEFAULT 7 CHECK (digest_hour BETWEEN 0 AND 23),
    digest_weekday smallint NOT NULL DEFAULT 1 CHECK (digest_weekday BETWEEN 1 AND 7),
    min_score real,  -- employers: only offers at least this good
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (owner_kind, owner_id, address)
);
SELECT enable_tenant_isolation('address_preferences');
CREATE POLICY owner_scope ON address_preferences AS RESTRICTIVE
    USING (owner_kind <> 'provider' OR acting_for_provider(owner_id::uuid));
CREATE POLICY owner_scope ON preferences AS RESTRICTIVE USING (acting_for_provider(provider_id));

-- Deliveries: a match notice (per match and provider) or a digest (per recipient and period).
ALTER TABLE deliveries DROP CONSTRAINT deliveries_kind_check;
ALTER TABLE deliveries
    ADD CONSTRAINT deliveries_kind_check CHECK (kind IN ('match_found', 'digest', 'offer_alert')),
    ALTER COLUMN match_id DROP NOT NULL,
    ALTER COLUMN demand_id DROP NOT NULL,
    ALTER COLUMN demand_tenant DROP NOT NULL,
    ALTER COLUMN offer_id DROP NOT NULL,
    ADD COLUMN owner_kind text NOT NULL DEFAULT 'provider',
    ADD COLUMN owner_id text,
    ADD COLUMN period text;  -- a digest's period: 2027-03-20 (daily) or 2027-W12 (weekly)
ALTER TABLE deliveries ALTER COLUMN provider_id DROP NOT NULL;
UPDATE deliveries SET owner_id = provider_id::text WHERE owner_id IS NULL;
ALTER TABLE deliveries DROP CONSTRAINT deliveries_status_check;
ALTER TABLE deliveries ADD CONSTRAINT deliveries_status_check
    CHECK (status IN ('pending', 'sent', 'failed', 'suppressed', 'cancelled', 'digested'));
CREATE POLICY owner_scope ON deliveries AS RESTRICTIVE
    USING (owner_kind <> 'provider' OR acting_for_provider(provider_id));
CREATE POLICY owner_scope ON delivery_attempts AS RESTRICTIVE
    USING (delivery_id IN (SELECT d.id FROM deliveries d));

-- A MatchFound for a provider not yet known here: its deliveries (one per contact address) are
-- made when catalog.providers.v1 brings the provider.
CREATE TABLE waiting_matches (
    match_id uuid NOT NULL,
    provider_id uuid NOT NULL,
    tenant_id text NOT NULL,
    demand_id uuid NOT NULL,
    demand_tenant text NOT NULL,
    payload jsonb NOT NULL,
    traceparent text,
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (match_id, provider_id)
);
SELECT enable_tenant_isolation('waiting_matches');
DO $$
BEGIN
    EXECUTE format('CREATE POLICY owner_functions ON waiting_matches TO %I USING (true)', current_user);
END
$$;

-- A match waiting for a recipient's digest; taken by exactly one digest delivery.
CREATE TABLE digest_items (
    tenant_id text NOT NULL,
    owner_kind text NOT NULL,
    owner_id text NOT NULL,
    address text NOT NULL,
    notice_id uuid NOT NULL REFERENCES deliveries (id),
    match_id uuid,
    payload jsonb NOT NULL,
    digest_id uuid REFERENCES deliveries (id),
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (notice_id, address)
);
CREATE INDEX digest_items_open ON digest_items (owner_kind, owner_id, address) WHERE digest_id IS NULL;
SELECT enable_tenant_isolation('digest_items');

-- The mail was accepted by the SMTP server: committed on its own at once, so a worker that dies
-- before the delivery's own commit does not send it again.
ALTER TABLE delivery_attempts DROP CONSTRAINT delivery_attempts_outcome_check;
ALTER TABLE delivery_attempts ADD CONSTRAINT delivery_attempts_outcome_check
    CHECK (outcome IN ('started', 'accepted', 'sent', 'temporary_failure', 'permanent_failure', 'suppressed',
                       'interrupted', 'cancelled'));

-- Branding of each network, from identity.tenants.v1 (public facts: no tenant isolation).
CREATE TABLE tenant_branding (
    tenant_id text PRIMARY KEY,
    name text NOT NULL,
    logo_url text,
    imprint_url text,
    privacy_url text,
    updated_at timestamptz NOT NULL DEFAULT now()
);

-- A closed demand cancels what has not gone out yet, in whichever provider's tenant it waits.
CREATE FUNCTION cancel_for_demand(demand uuid, tenant text) RETURNS integer
    LANGUAGE sql VOLATILE SECURITY DEFINER SET search_path = public, pg_temp
AS $$
    WITH cancelled AS (
        UPDATE deliveries d SET status = 'cancelled', updated_at = now()
        WHERE d.demand_id = demand AND d.demand_tenant = tenant
          AND (d.status = 'pending' OR (d.status = 'digested' AND EXISTS (
               SELECT 1 FROM digest_items i WHERE i.notice_id = d.id AND i.digest_id IS NULL)))
        RETURNING 1),
    forgotten AS (
        DELETE FROM waiting_matches w WHERE w.demand_id = demand AND w.demand_tenant = tenant RETURNING 1)
    SELECT (SELECT count(*)::integer FROM cancelled) + (SELECT count(*)::integer FROM forgotten)
$$;

-- Recipients whose digest is due: the beat's one cross-tenant read (see digests.py).
CREATE FUNCTION open_digest_recipients()
    RETURNS TABLE (tenant_id text, owner_kind text, owner_id text, address text)
    LANGUAGE sql STABLE SECURITY DEFINER SET search_path = public, pg_temp
AS $$ SELECT DISTINCT i.tenant_id, i.owner_kind, i.owner_id, i.address FROM digest_items i WHERE i.digest_id IS NULL $$;

DO $$
BEGIN
    EXECUTE format('CREATE POLICY owner_functions ON digest_items TO %I USING (true)', current_user);
END
$$;
