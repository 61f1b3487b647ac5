"""Who may call which catalog route (runtime/authz.py): one row per route. A provider user reaches
only its own providers and their offers (OWN); network admins and operators the whole network."""

from runtime.authz import Reach, RuleTable, everyone, rule

OWN, TENANT = Reach.OWN, Reach.TENANT
PUBLISHERS = {"provider": OWN, "network_admin": TENANT, "operator": TENANT}
ADMINS = {"network_admin": TENANT, "operator": TENANT}

RULES = RuleTable(
    rule("POST /v1/providers", **PUBLISHERS),  # its creator becomes a member
    rule("GET /v1/providers", **everyone(TENANT)),
    rule("GET /v1/providers/{provider_id}", **everyone(TENANT)),
    rule("PUT /v1/providers/{provider_id}", **PUBLISHERS),
    rule("PUT /v1/providers/{provider_id}/members", **ADMINS),
    rule("GET /v1/sharing", **everyone(TENANT)),
    rule("PUT /v1/sharing", **ADMINS),
    rule("GET /v1/audit", **ADMINS),
    rule("POST /v1/offers", **PUBLISHERS),
    rule("GET /v1/offers", **everyone(TENANT)),
    rule("GET /v1/offers/{offer_id}", **everyone(TENANT)),
    rule("PUT /v1/offers/{offer_id}", **PUBLISHERS),
    rule("POST /v1/offers/{offer_id}/withdraw", **PUBLISHERS),
    rule("POST /v1/imports/openqcat", **PUBLISHERS),
    rule("POST /v1/imports/wbsuche", **PUBLISHERS),
    # The public network view: no login, published and visible offers only.
    rule("GET /v1/public/{tenant}/offers", public=True),
    rule("GET /v1/public/{tenant}/offers/{offer_id}", public=True),
    rule("GET /v1/public/{tenant}/providers", public=True),
)
