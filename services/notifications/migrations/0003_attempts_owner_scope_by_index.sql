-- The attempt log's owner policy was `delivery_id IN (SELECT d.id FROM deliveries d)`: PostgreSQL
-- ran it as a hashed subplan over every delivery the role may see, once per statement, so each
-- write to the log (three per mail) read the whole deliveries table; at 10,000 deliveries the
-- database spent most of the mail benchmark's CPU there. Same rule, by the primary key, and not
-- looked up at all when no provider user is acting (the worker, consumers, network admins): then
-- the deliveries' own owner policy lets every row of the tenant through anyway.
DROP POLICY owner_scope ON delivery_attempts;
CREATE POLICY owner_scope ON delivery_attempts AS RESTRICTIVE
    USING (coalesce(current_setting('app.acting_providers', true), '') = ''
           OR EXISTS (SELECT 1 FROM deliveries d WHERE d.id = delivery_attempts.delivery_id));
