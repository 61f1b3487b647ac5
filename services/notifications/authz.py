"""Who may call which notifications route (runtime/authz.py): one row per route. A provider user
reaches its own providers' preferences and delivery log (OWN); network admins and operators the
network's; an employer its own alert opt-ins."""

from runtime.authz import Reach, RuleTable, rule

OWN, TENANT = Reach.OWN, Reach.TENANT
PROVIDER_SIDE = {"provider": OWN, "network_admin": TENANT, "operator": TENANT}

RULES = RuleTable(
    rule("GET /v1/deliveries", **PROVIDER_SIDE),
    rule("GET /v1/preferences/{provider_id}", **PROVIDER_SIDE),
    rule("PUT /v1/preferences/{provider_id}", **PROVIDER_SIDE),
    rule("GET /v1/employer-alerts", employer=OWN),
    rule("PUT /v1/employer-alerts", employer=OWN),
    rule("DELETE /v1/employer-alerts", employer=OWN),
    rule("GET /v1/unsubscribe", public=True),
    rule("POST /v1/unsubscribe", public=True),
)
