"""A provider changes an offer in the portal's form, over real HTTP against the real services: what
the form does not show stays as it was, and a change someone made meanwhile is not overwritten."""

from __future__ import annotations

import re

import pytest

from tests.e2e.portal.conftest import PortalUser
from tests.platform import Platform, future, offer_body

pytestmark = pytest.mark.e2e

PROVIDER = "lueneburg-provider"


def _form(page: str, **changes: str) -> dict[str, str]:
    """What the browser sends for the offer form as the page fills it, with ``changes``: its text
    and hidden fields, the checked radios and boxes, the text areas."""
    fields = dict(re.findall(r'<input(?![^>]*type="(?:radio|checkbox)")[^>]*name="([^"]+)"[^>]*value="([^"]*)"', page))
    fields |= {name: value for name, value, rest in re.findall(
        r'<input[^>]*type="(?:radio|checkbox)"[^>]*name="([^"]+)"[^>]*value="([^"]*)"([^>]*)>', page)
        if "checked" in rest}
    fields |= dict(re.findall(r'<textarea[^>]*name="([^"]+)"[^>]*>([^<]*)</textarea>', page))
    return fields | changes


def test_saving_the_form_keeps_what_it_does_not_show_and_refuses_to_overwrite_a_change(
        platform: Platform, visitor: PortalUser) -> None:
    """An imported course with three dates, its PRODUCT_ID, Maßnahmenummer and occupation code, shared
    with a named network: saving a new title in the form kept only the first date and lost the rest
    (the next import no longer knew the course). And a change made by someone else after the form was
    opened was overwritten without a word."""
    dates = [{"start": future(d), "end": future(d + 2),
              "location": {"zip": "21335", "city": "Lüneburg", "lat": 53.25, "lon": 10.41}} for d in (40, 70, 100)]
    with platform.client("catalog", PROVIDER) as api:
        provider = api.post("/v1/providers", json={"name": "Heide-Kolleg", "emails": ["kurse@heide.example"]}).json()
        offer = api.post("/v1/offers", json=offer_body(
            provider["id"], external_id="KURS-7", measure_number="962/0815/2026", occupation_codes=["25212"],
            sessions=dates)).json()
    visitor.sign_in(PROVIDER)
    page = visitor.http.get(f"/anbieter/angebote/{offer['id']}").text
    saved = visitor.http.post(f"/anbieter/angebote/{offer['id']}", data=_form(page, title="Staplerschein kompakt"))
    assert saved.status_code == 303, saved.text[:500]
    with platform.client("catalog", PROVIDER) as api:
        after = api.get(f"/v1/offers/{offer['id']}").json()
    assert after["title"] == "Staplerschein kompakt"
    assert [s["start"] for s in after["sessions"]] == [d["start"] for d in dates]
    assert (after["external_id"], after["measure_number"], after["occupation_codes"]) == (
        "KURS-7", "962/0815/2026", ["25212"])
    assert after["own_visibility"] == {"scope": "networks", "networks": ["lueneburg"]}

    page = visitor.http.get(f"/anbieter/angebote/{offer['id']}").text  # the form opened ...
    with platform.client("catalog", PROVIDER) as api:  # ... and meanwhile a colleague changes the offer
        changed = api.put(f"/v1/offers/{offer['id']}", headers={"If-Match": f'"{after["version"]}"'},
                          json={k: v for k, v in after.items() if k in offer_body("x")} | {"title": "Vom Kollegen"})
        assert changed.status_code == 200, changed.text
    refused = visitor.http.post(f"/anbieter/angebote/{offer['id']}", data=_form(page, title="Meine Fassung"))
    assert refused.status_code == 409 and "Jemand hat das Angebot geändert" in refused.text
    with platform.client("catalog", PROVIDER) as api:
        assert api.get(f"/v1/offers/{offer['id']}").json()["title"] == "Vom Kollegen"
