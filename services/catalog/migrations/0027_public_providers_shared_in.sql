-- The public provider directory ("Übersicht der Bildungsträger und ihrer Angebote") of a network
-- listed only the network's own providers: row-level security shows a network its own providers
-- only, while offers are shared across networks. An offer another network shared into this one was
-- in the public list, but its provider was not in the directory, so the portal showed the offer
-- without a provider and the provider's page answered 404.
--
-- Like the search's functions (0003), this one runs with the table owner's rights and applies the
-- offers' visibility rule itself, from the transaction's acting tenant, never from an argument: a
-- provider is listed only with published offers this network may see, and only the fields the
-- public view shows of a provider (no members, no import bookkeeping). Without an acting tenant it
-- lists nothing. For it to read another network's provider, providers are no longer forced under
-- row-level security for their owner (as offers since 0003): the owner runs only the migrations and
-- these definer functions; the service's role stays bound by every policy.
ALTER TABLE providers NO FORCE ROW LEVEL SECURITY;

CREATE FUNCTION public_providers()
RETURNS TABLE (id uuid, name text, emails text[], address jsonb, azav jsonb, published_offers bigint)
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = public, pg_temp AS $$
    SELECT p.id, p.name, p.emails, p.address, p.azav, c.n
    FROM (SELECT o.provider_id, count(*) AS n FROM offers o
          WHERE o.status = 'published'
            AND o.visible_to && ARRAY[current_setting('app.tenant_id', true), '*']
            AND coalesce(current_setting('app.tenant_id', true), '') <> ''
          GROUP BY o.provider_id) c
    JOIN providers p ON p.id = c.provider_id
    ORDER BY p.name, p.id
    LIMIT 2000
$$;
