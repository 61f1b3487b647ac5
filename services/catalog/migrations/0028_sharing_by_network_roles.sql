-- A network's default shares are changed only by a network-wide role (network_admin, operator: the
-- transaction acts for every provider, app.acting_providers = '*'), in the database as in the code.
-- Not a restrictive UPDATE policy: every offer write reads the row FOR SHARE (store.hold_sharing),
-- and PostgreSQL applies UPDATE policies to that read, so a provider's user could no longer write.
-- The empty row that such a write makes where the network has none stays allowed.
CREATE FUNCTION network_sharing_by_network_roles() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' AND NEW.networks = '{}'::text[] THEN
        RETURN NEW;
    END IF;
    IF coalesce(current_setting('app.acting_providers', true), '') <> '*' THEN
        RAISE EXCEPTION 'only a network-wide role changes the network''s default shares'
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    RETURN NEW;
END $$;

CREATE TRIGGER network_sharing_by_network_roles BEFORE INSERT OR UPDATE ON network_sharing
    FOR EACH ROW EXECUTE FUNCTION network_sharing_by_network_roles();
