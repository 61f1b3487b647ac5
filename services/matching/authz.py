"""Who may call which matching route (runtime/authz.py): one row per route. An employer reaches only
its firm's demands (OWN); counsellors, network admins and operators the whole network. A provider
user sees the open demands matched to the offers of the providers it acts for (OWN); network admins
those of all the network's providers."""

from runtime.authz import Reach, RuleTable, rule

OWN, TENANT = Reach.OWN, Reach.TENANT
DEMAND_SIDE = {"employer": OWN, "counselor": TENANT, "network_admin": TENANT, "operator": TENANT}

RULES = RuleTable(
    rule("POST /v1/demands", **DEMAND_SIDE),
    rule("GET /v1/demands", **DEMAND_SIDE),
    rule("GET /v1/demands/{demand_id}", **DEMAND_SIDE),
    rule("PUT /v1/demands/{demand_id}", **DEMAND_SIDE),
    rule("POST /v1/demands/{demand_id}/close", **DEMAND_SIDE),
    rule("GET /v1/demands/{demand_id}/matches", **DEMAND_SIDE),
    rule("GET /v1/demands/{demand_id}/offers", **DEMAND_SIDE),
    rule("GET /v1/matched-demands", provider=OWN, network_admin=TENANT, operator=TENANT),
    rule("GET /v1/insights/gaps", network_admin=TENANT, operator=TENANT),
)
