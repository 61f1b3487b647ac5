-- The one policy of a plain tenant-owned table: rows of the acting tenant only, for reading and
-- writing; forced, so it binds the owner too. Service migrations call it per table.
CREATE FUNCTION enable_tenant_isolation(target regclass) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    EXECUTE format('ALTER TABLE %s ENABLE ROW LEVEL SECURITY', target);
    EXECUTE format('ALTER TABLE %s FORCE ROW LEVEL SECURITY', target);
    EXECUTE format('CREATE POLICY tenant_isolation ON %s'
                   ' USING (tenant_id = current_setting(''app.tenant_id'', true))'
                   ' WITH CHECK (tenant_id = current_setting(''app.tenant_id'', true))', target);
END
$$;
