-- DESIGN.md's visibility rule, once, for every service that keeps offers: an offer is visible to
-- the acting tenant when it is the offer's home, or once published when shared with all or with it.
CREATE FUNCTION offer_visible(home text, status text, scope text, networks text[])
RETURNS boolean LANGUAGE sql STABLE PARALLEL SAFE AS $$
    SELECT home = current_setting('app.tenant_id', true)
        OR (status = 'published' AND (
            scope = 'all'
            OR (scope = 'networks' AND current_setting('app.tenant_id', true) = ANY (networks))
        ))
$$;
