"""The portal as its users reach it: over HTTP with cookies (security tests) and in Debian's
Chromium driven by Playwright (journeys), with axe-core checking every page a journey visits."""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import urljoin

import httpx
import pytest

from deploy.local.stack import ROOT
from tests.platform import Platform

AXE = ROOT / "services" / "portal" / "node_modules" / "axe-core" / "axe.min.js"
SHOTS = ROOT / "var" / "test" / "screenshots"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                  "--disable-sync", "--no-first-run"]


class PortalUser:
    """A browser-less visitor: follows the sign-in through the issuer's login page with a cookie jar."""

    def __init__(self, platform: Platform) -> None:
        self.base = platform.config.url("portal")
        self.http = httpx.Client(base_url=self.base, timeout=30)

    def sign_in(self, username: str, next_path: str | None = None, password: str = "dev") -> httpx.Response:
        response = self.http.get("/anmelden", params={"next": next_path} if next_path else None)
        assert response.status_code == 302, response.text
        response = self._follow(response)
        action = re.search(r'<form method="post" action="([^"]+)"', response.text)
        assert action, f"no login form at {response.url}: {response.text[:300]}"
        response = self.http.post(urljoin(str(response.url), action.group(1)),
                                  data={"username": username, "password": password})
        return self._follow(response)

    def _follow(self, response: httpx.Response) -> httpx.Response:
        while response.status_code in (302, 303):
            response = self.http.get(urljoin(str(response.url), response.headers["location"]))
        return response

    def csrf(self, path: str) -> str:
        page = self.http.get(path)
        match = re.search(r'name="csrf_token" value="([^"]+)"', page.text)
        assert match, f"no form on {path}"
        return match.group(1)

    def close(self) -> None:
        self.http.close()


@pytest.fixture
def visitor(platform: Platform):
    user = PortalUser(platform)
    yield user
    user.close()


@pytest.fixture(scope="module")  # not longer: Playwright's sync API holds an event loop while it runs
def browser():
    from playwright.sync_api import sync_playwright

    if not Path(CHROMIUM).exists():
        pytest.fail("Chromium missing: `make install` installs Debian's chromium")
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS, headless=True)
        yield chromium
        chromium.close()


class Journey:
    """One user's browser: every page it lands on is checked with axe-core (WCAG 2.1 A/AA)."""

    def __init__(self, browser, platform: Platform, name: str, phone: bool = False) -> None:
        # bypass_csp: only so that the test can inject axe-core; the portal's own CSP forbids inline script.
        options = {"viewport": {"width": 390, "height": 844}, "is_mobile": True} if phone else {}
        self.context = browser.new_context(bypass_csp=True, locale="de-DE", **options)
        self.page = self.context.new_page()
        self.base = platform.config.url("portal")
        self.name = name
        self.checked: list[str] = []

    def goto(self, path: str) -> None:
        self.page.goto(self.base + path)
        self.check()

    def check(self) -> None:
        """axe-core on the current page: no violation of impact serious or critical."""
        self.page.wait_for_load_state("load")
        self.page.add_script_tag(path=str(AXE))
        result = self.page.evaluate(
            "async () => await axe.run(document, {runOnly: {type: 'tag', values: "
            "['wcag2a', 'wcag2aa', 'wcag21a', 'wcag21aa']}})")
        serious = [(v["id"], v["impact"], v["help"], [n["target"] for n in v["nodes"]][:3])
                   for v in result["violations"] if v["impact"] in ("serious", "critical")]
        assert not serious, f"axe-core on {self.page.url}: {serious}"
        self.checked.append(self.page.url)

    def sign_in(self, username: str) -> None:
        self.page.get_by_label("Benutzername").fill(username)
        self.page.get_by_label("Passwort").fill("dev")
        self.page.get_by_role("button", name="Anmelden").click()
        self.page.wait_for_load_state("load")

    def screenshot(self) -> Path:
        SHOTS.mkdir(parents=True, exist_ok=True)
        path = SHOTS / f"{self.name}.png"
        self.page.screenshot(path=str(path), full_page=True)
        return path

    def close(self) -> None:
        self.context.close()


@pytest.fixture
def journey(browser, platform, request):
    journeys: list[Journey] = []

    def start(name: str | None = None, phone: bool = False) -> Journey:
        j = Journey(browser, platform, name or request.node.name, phone)
        journeys.append(j)
        return j

    yield start
    for j in journeys:
        j.close()
