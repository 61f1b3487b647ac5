-- What the offer index reads of an offer and of a session was spelled out twice, in
-- offer_index_facts (the offers a process has not read yet) and offer_index_all_facts (its first
-- load). One view each now says it, and both functions read the views.
--
-- security_invoker: a view otherwise reads its tables with its owner's rights, and the owner's
-- policy offer_index (0015) shows it every network's rows; the service's role, which may select
-- from new views (default privileges), would then see them all. With it, the role reading the view
-- is bound by the tables' policies as with the tables themselves; the two functions, which run as
-- the owner (SECURITY DEFINER), read every network's facts as before.
CREATE VIEW offer_index_offers WITH (security_invoker = true) AS
    SELECT id, status = 'published' AS published, format, price_eur::double precision AS price, qcg,
           tenant_id AS tenant, visibility_scope AS scope,
           array_to_string(visibility_networks, ' ') AS networks
    FROM offers;

-- sessions of published offers only; a place only where it counts for distance (a located format)
CREATE VIEW offer_index_sessions WITH (security_invoker = true) AS
    SELECT offer_id, n, start_date - date '1970-01-01' AS start,
           CASE WHEN cell IS NOT NULL THEN lat END AS lat,
           CASE WHEN cell IS NOT NULL THEN lon END AS lon, city
    FROM offer_sessions
    WHERE status = 'published';

CREATE OR REPLACE FUNCTION offer_index_facts(ids uuid[])
    RETURNS TABLE (at integer[], published boolean[], format text[], price double precision[], qcg boolean[],
                   tenant text[], scope text[], networks text[], session_at integer[], starts integer[],
                   lats double precision[], lons double precision[], cities text[])
    LANGUAGE sql STABLE SECURITY DEFINER SET search_path = public, pg_temp
AS $$
    WITH wanted AS (
        SELECT w.id, w.at::integer AS at FROM unnest(ids) WITH ORDINALITY AS w(id, at)
    ), o AS (
        SELECT w.at, f.* FROM wanted w JOIN offer_index_offers f ON f.id = w.id
    ), s AS (
        SELECT w.at, f.* FROM wanted w JOIN offer_index_sessions f ON f.offer_id = w.id
    )
    SELECT o.*, s.*
    FROM (SELECT array_agg(at ORDER BY at), array_agg(published ORDER BY at), array_agg(format ORDER BY at),
                 array_agg(price ORDER BY at), array_agg(qcg ORDER BY at), array_agg(tenant ORDER BY at),
                 array_agg(scope ORDER BY at), array_agg(networks ORDER BY at)
          FROM o) o,
         (SELECT array_agg(at ORDER BY at, n), array_agg(start ORDER BY at, n), array_agg(lat ORDER BY at, n),
                 array_agg(lon ORDER BY at, n), array_agg(city ORDER BY at, n)
          FROM s) s
$$;

CREATE OR REPLACE FUNCTION offer_index_all_facts()
    RETURNS TABLE (id text[], published boolean[], format text[], price double precision[], qcg boolean[],
                   tenant text[], scope text[], networks text[], session_id text[], session_n integer[],
                   starts integer[], lats double precision[], lons double precision[], cities text[])
    LANGUAGE sql STABLE SECURITY DEFINER SET search_path = public, pg_temp
AS $$
    SELECT o.*, s.*
    FROM (SELECT array_agg(id::text), array_agg(published), array_agg(format), array_agg(price), array_agg(qcg),
                 array_agg(tenant), array_agg(scope), array_agg(networks)
          FROM offer_index_offers) o,
         (SELECT array_agg(offer_id::text), array_agg(n), array_agg(start), array_agg(lat), array_agg(lon),
                 array_agg(city)
          FROM offer_index_sessions) s
$$;
