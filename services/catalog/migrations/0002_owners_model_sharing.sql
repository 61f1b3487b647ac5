-- Owners inside a network, the full offer model, network-level sharing, index-friendly visibility.

-- ---- provider membership: who acts for which provider (TEAM contract 2) ----------------------
CREATE TABLE provider_members (
    provider_id uuid NOT NULL REFERENCES providers (id) ON DELETE CASCADE,
    tenant_id text NOT NULL,
    subject text NOT NULL,
    added_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (provider_id, subject)
);
CREATE INDEX provider_members_subject ON provider_members (subject);
SELECT enable_tenant_isolation('provider_members');

-- The providers a transaction may write for, set per transaction by the catalog (SET LOCAL):
-- '*' for network-wide roles, else a comma list of provider ids. Unset or empty allows nothing,
-- so a write path that forgets to say whom it acts for fails closed.
CREATE FUNCTION acting_for_provider(provider uuid) RETURNS boolean LANGUAGE sql STABLE PARALLEL SAFE AS $$
    SELECT coalesce(current_setting('app.acting_providers', true), '') = '*'
        OR provider::text = ANY (string_to_array(current_setting('app.acting_providers', true), ','))
$$;

CREATE POLICY providers_owner_update ON providers AS RESTRICTIVE FOR UPDATE
    USING (acting_for_provider(id)) WITH CHECK (acting_for_provider(id));
CREATE POLICY providers_owner_delete ON providers AS RESTRICTIVE FOR DELETE USING (acting_for_provider(id));
CREATE POLICY members_owner_write ON provider_members AS RESTRICTIVE FOR INSERT
    WITH CHECK (acting_for_provider(provider_id));
CREATE POLICY members_owner_delete ON provider_members AS RESTRICTIVE FOR DELETE
    USING (acting_for_provider(provider_id));
CREATE POLICY offers_owner_insert ON offers AS RESTRICTIVE FOR INSERT WITH CHECK (acting_for_provider(provider_id));
CREATE POLICY offers_owner_update ON offers AS RESTRICTIVE FOR UPDATE
    USING (acting_for_provider(provider_id)) WITH CHECK (acting_for_provider(provider_id));
CREATE POLICY offers_owner_delete ON offers AS RESTRICTIVE FOR DELETE USING (acting_for_provider(provider_id));
CREATE POLICY sessions_owner_insert ON offer_sessions AS RESTRICTIVE FOR INSERT
    WITH CHECK (EXISTS (SELECT 1 FROM offers o WHERE o.id = offer_id AND acting_for_provider(o.provider_id)));
CREATE POLICY sessions_owner_delete ON offer_sessions AS RESTRICTIVE FOR DELETE
    USING (EXISTS (SELECT 1 FROM offers o WHERE o.id = offer_id AND acting_for_provider(o.provider_id)));

-- ---- the full offer model ------------------------------------------------------------------
ALTER TABLE offers
    ADD COLUMN occupation_codes text[] NOT NULL DEFAULT '{}',
    ADD COLUMN esco_skills text[] NOT NULL DEFAULT '{}',
    ADD COLUMN measure_number text,
    ADD COLUMN url text,
    ADD COLUMN import_hash text,
    -- Who may see the offer, denormalised so row-level security and search answer it from a GIN
    -- index: the home tenant always; once published its shared networks, its home network's
    -- default shares, and '*' when shared with all. Kept by the trigger below.
    ADD COLUMN visible_to text[] NOT NULL DEFAULT '{}';

ALTER TABLE offer_sessions
    ADD COLUMN external_id text,
    ADD COLUMN price_eur numeric,
    ADD COLUMN schedule text,
    ADD COLUMN street text;

-- ---- network-level sharing defaults ----------------------------------------------------------
CREATE TABLE network_sharing (
    tenant_id text PRIMARY KEY,
    networks text[] NOT NULL DEFAULT '{}',
    updated_at timestamptz NOT NULL DEFAULT now()
);
-- Which networks a network shares with is no secret (every reader of a shared offer learns it);
-- only the network itself writes its row.
ALTER TABLE network_sharing ENABLE ROW LEVEL SECURITY;
ALTER TABLE network_sharing FORCE ROW LEVEL SECURITY;
CREATE POLICY sharing_read ON network_sharing FOR SELECT USING (true);
CREATE POLICY sharing_write ON network_sharing FOR INSERT
    WITH CHECK (tenant_id = current_setting('app.tenant_id', true));
CREATE POLICY sharing_update ON network_sharing FOR UPDATE
    USING (tenant_id = current_setting('app.tenant_id', true))
    WITH CHECK (tenant_id = current_setting('app.tenant_id', true));

CREATE FUNCTION offer_visible_to(home text, status text, scope text, networks text[]) RETURNS text[]
LANGUAGE sql STABLE AS $$
    SELECT CASE WHEN status <> 'published' THEN ARRAY[home] ELSE
        ARRAY(SELECT DISTINCT unnest(
            ARRAY[home]
            || CASE WHEN scope = 'all' THEN ARRAY['*'] ELSE '{}'::text[] END
            || CASE WHEN scope = 'networks' THEN networks ELSE '{}'::text[] END
            || coalesce((SELECT n.networks FROM network_sharing n WHERE n.tenant_id = home), '{}'::text[])))
    END
$$;

CREATE FUNCTION offers_keep_visible_to() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    NEW.visible_to := offer_visible_to(NEW.tenant_id, NEW.status, NEW.visibility_scope, NEW.visibility_networks);
    RETURN NEW;
END
$$;
CREATE TRIGGER offers_visible_to BEFORE INSERT OR UPDATE ON offers
    FOR EACH ROW EXECUTE FUNCTION offers_keep_visible_to();
UPDATE offers SET visible_to = offer_visible_to(tenant_id, status, visibility_scope, visibility_networks);
CREATE INDEX offers_visible_to ON offers USING gin (visible_to);

-- The read policy answers from the indexed column (same rule as runtime's offer_visible).
DROP POLICY offers_visible ON offers;
CREATE POLICY offers_visible ON offers FOR SELECT
    USING (visible_to && ARRAY[current_setting('app.tenant_id', true), '*']);
