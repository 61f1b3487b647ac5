"""Who may call which identity route (runtime/authz.py): one row per route."""

from runtime.authz import Reach, RuleTable, everyone, rule

ANY, TENANT = Reach.ANY, Reach.TENANT
ADMINS = {"network_admin": TENANT, "operator": TENANT}

RULES = RuleTable(
    rule("GET /v1/me", **everyone(ANY)),
    rule("GET /v1/tenants", **everyone(ANY)),  # an operator sees all, others their own network
    rule("POST /v1/tenants", operator=ANY),
    rule("PUT /v1/tenants/{tenant_id}", **ADMINS),
    rule("GET /v1/members", **ADMINS),
    rule("POST /v1/members", **ADMINS),
    rule("DELETE /v1/members/{user_id}", **ADMINS),
    rule("GET /v1/audit", **ADMINS),
    rule("GET /v1/public/tenants", public=True),
    rule("GET /v1/public/tenants/{tenant_id}", public=True),
)
