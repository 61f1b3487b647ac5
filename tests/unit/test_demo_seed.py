"""The demo data `make up` seeds is what the catalog and matching accept, and looks like a region."""

from __future__ import annotations

import uuid

from deploy.local.seed import TOWNS, demo_demand, demo_offers
from services.catalog.domain import OfferIn
from services.matching.domain import DemandIn


def test_several_hundred_valid_offers_across_the_three_networks():
    offers = [o for tenant in TOWNS for o in demo_offers(tenant, [str(uuid.uuid4()) for _ in range(4)])]
    assert len(offers) >= 300
    for body in offers:
        OfferIn.model_validate(body)
    assert len({o["title"] for o in offers}) > 100  # not one course copied
    assert all(o["funding"]["qcg"] <= (o["hours"] > 120) for o in offers)  # § 82 needs more than 120 hours


def test_a_valid_demand_per_network():
    for tenant in TOWNS:
        DemandIn.model_validate(demo_demand(tenant))


def test_the_same_data_every_time():
    ids = [str(uuid.UUID(int=1)), str(uuid.UUID(int=2))]
    assert demo_offers("lueneburg", ids) == demo_offers("lueneburg", ids)
