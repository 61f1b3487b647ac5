-- Each process's offer index holds, beside the vectors, the facts the six hard constraints read, so a
-- demand's feasible offers are found in memory instead of by a query that returned up to 100,000 rows
-- (at 1,000,000 offers: 60-240 ms in PostgreSQL, as much again to decode and look up in Python).
--
-- The index serves every network, so it reads the facts of every offer: one narrow cross-tenant
-- read, run as the owner role (FORCE ROW LEVEL SECURITY binds the owner too, so it gets a policy of
-- its own, for reading only; the owner is a NOLOGIN role reached only through this function and
-- migrations). It returns no text and no contact: the offer's network, status, format, price,
-- funding and sharing, and only for published offers their sessions' starts, places and towns.
-- What a demand is shown is still read through the policy of the demand's network.
DO $$
BEGIN
    EXECUTE format('CREATE POLICY offer_index ON offers FOR SELECT TO %I USING (true)', current_user);
    EXECUTE format('CREATE POLICY offer_index ON offer_sessions FOR SELECT TO %I USING (true)', current_user);
END
$$;

-- The facts of the given offers (those whose change sequence the index has not read yet), as one row
-- of columns: by offer its 1-based place in `ids` (`at`), and by session of a published offer the
-- place of its offer (`session_at`), in the offer's order. Columns, not a row per offer or session:
-- a process loads a million offers' facts in batches of 20,000 at start.
CREATE FUNCTION offer_index_facts(ids uuid[])
    RETURNS TABLE (at integer[], published boolean[], format text[], price double precision[], qcg boolean[],
                   tenant text[], scope text[], networks text[], session_at integer[], starts integer[],
                   lats double precision[], lons double precision[], cities text[])
    LANGUAGE sql STABLE SECURITY DEFINER SET search_path = public, pg_temp
AS $$
    WITH wanted AS (
        SELECT w.id, w.at::integer AS at FROM unnest(ids) WITH ORDINALITY AS w(id, at)
    ), offer_facts AS (
        SELECT w.at, o.status = 'published' AS published, o.format, o.price_eur::double precision AS price,
               o.qcg, o.tenant_id, o.visibility_scope, array_to_string(o.visibility_networks, ' ') AS networks
        FROM wanted w JOIN offers o ON o.id = w.id
    ), session_facts AS (
        SELECT w.at, s.n, s.start_date - date '1970-01-01' AS start,
               CASE WHEN s.cell IS NOT NULL THEN s.lat END AS lat,
               CASE WHEN s.cell IS NOT NULL THEN s.lon END AS lon, s.city
        FROM wanted w JOIN offer_sessions s ON s.offer_id = w.id
        WHERE s.status = 'published'
    )
    SELECT o.*, s.*
    FROM (SELECT array_agg(at ORDER BY at), array_agg(published ORDER BY at), array_agg(format ORDER BY at),
                 array_agg(price ORDER BY at), array_agg(qcg ORDER BY at), array_agg(tenant_id ORDER BY at),
                 array_agg(visibility_scope ORDER BY at), array_agg(networks ORDER BY at)
          FROM offer_facts) o,
         (SELECT array_agg(at ORDER BY at, n), array_agg(start ORDER BY at, n), array_agg(lat ORDER BY at, n),
                 array_agg(lon ORDER BY at, n), array_agg(city ORDER BY at, n)
          FROM session_facts) s
$$;

-- Their only reader was the feasible-offers query, which the index now answers.
DROP INDEX offer_sessions_located_covering;
DROP INDEX offer_sessions_remote_covering;
