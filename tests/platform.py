"""What the integration, end-to-end tests and the benchmark share: a running stack, real tokens
from the dev issuer, API calls, the mails in the SMTP sink."""

from __future__ import annotations

import asyncio
import email
import json
import random
import time
import uuid
from datetime import UTC, datetime, timedelta
from email.message import Message

import asyncpg
import httpx
import jwt
import redis
from kafka import KafkaConsumer

from deploy.local.stack import ROOT, Stack, StackConfig


def start_test_stack() -> Stack:
    config = StackConfig.for_tests(ROOT / "var" / "test")
    stack = Stack(config)
    for sub in ("mail", "log"):
        for path in (config.var_dir / sub).glob("*"):
            path.unlink()
    stack.reset_databases()
    stack.ensure_postgres()
    stack.ensure_redis()
    redis.Redis.from_url(config.redis_url).flushdb()
    try:
        stack.start()
    except Exception:
        stack.stop_all()
        raise
    return stack


class Platform:
    """A user's view of a running stack."""

    def __init__(self, stack: Stack) -> None:
        self.stack = stack
        self.config = stack.config
        self._tokens: dict[str, str] = {}

    def token(self, username: str) -> str:
        """A fresh enough access token (cached; fetched anew a minute before it expires, since a slow
        suite outlives the issuer's five-minute tokens)."""
        cached = self._tokens.get(username)
        if cached is None or jwt.decode(cached, options={"verify_signature": False})["exp"] < time.time() + 60:
            response = httpx.post(
                f"{self.config.issuer_url}/protocol/openid-connect/token",
                data={"grant_type": "password", "client_id": "bildungsraum-cli", "username": username,
                      "password": "dev", "scope": "openid"},
            )
            response.raise_for_status()
            self._tokens[username] = response.json()["access_token"]
        return self._tokens[username]

    def client(self, service: str, username: str | None = None, **headers: str) -> httpx.Client:
        if username:
            headers["Authorization"] = f"Bearer {self.token(username)}"
        return httpx.Client(base_url=self.config.url(service), headers=headers, timeout=15)

    def signing_key(self) -> dict:
        return json.loads((self.config.var_dir / "dev-issuer" / "jwks.json").read_text())["keys"][0]

    def mint(self, username: str, **overrides) -> str:
        """A token signed with the issuer's real key, claims changed as given (e.g. expired)."""
        claims = jwt.decode(self.token(username), options={"verify_signature": False})
        claims.update(overrides)
        key = self.signing_key()
        return jwt.encode(claims, jwt.PyJWK(key).key, algorithm="RS256", headers={"kid": key["kid"]})

    def events(self, topic: str, key: str) -> list[tuple[str, dict]]:
        """(CloudEvents type, data) of every event of ``key`` in ``topic``, in topic order."""
        consumer = KafkaConsumer(topic, bootstrap_servers=self.config.bootstrap, group_id=None,
                                 auto_offset_reset="earliest", consumer_timeout_ms=700)
        found = [(dict(r.headers)["ce_type"].decode(), json.loads(r.value)) for r in consumer
                 if r.key == key.encode()]  # (the poison test's keys need not be UTF-8)
        consumer.close()
        return found

    def matching_knows(self, offer_id: str) -> bool:
        """Whether matching has consumed the offer's publication: offer events are keyed by offer, so one
        offer's arrival says nothing of another's, and "not ranked" proves nothing before."""
        async def look() -> bool:
            conn = await asyncpg.connect(self.config.service_admin_url("matching"))
            try:
                return await conn.fetchval("SELECT status FROM offers WHERE id = $1",
                                           uuid.UUID(offer_id)) == "published"
            finally:
                await conn.close()
        return asyncio.run(look())

    def mails(self) -> list[Message]:
        return [email.message_from_bytes(p.read_bytes()) for p in sorted(self.config.mail_dir.glob("*.eml"))]

    def mails_for_offer(self, offer_id: str) -> list[Message]:
        return [m for m in self.mails() if m.get("X-Bildungsraum-Offer") == offer_id]


def wait_until(what: str, check, timeout: float = 30.0, interval: float = 0.1):
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(interval)


def server_timing(header: str) -> dict[str, float]:
    """A ``Server-Timing`` header's spans in milliseconds by name (entries without a duration left out)."""
    spans = {}
    for entry in header.split(","):
        name, _, params = entry.strip().partition(";")
        if params.startswith("dur="):
            spans[name] = float(params[4:])
    return spans


def body_text(message: Message) -> str:
    parts = message.walk() if message.is_multipart() else [message]
    return "\n".join(
        p.get_payload(decode=True).decode(p.get_content_charset() or "utf-8")
        for p in parts if p.get_content_type() in ("text/plain", "text/html")
    )


def future(days: int) -> str:
    return (datetime.now(UTC).date() + timedelta(days=days)).isoformat()


def offer_body(provider_id: str, **overrides) -> dict:
    body = {
        "provider_id": provider_id,
        "external_id": f"ext-{uuid.uuid4().hex[:8]}",
        "title": "Staplerschein: Flurförderzeuge sicher führen",
        "description": "Ausbildung zum Gabelstaplerfahrer nach DGUV Grundsatz 308-001 mit Prüfung.",
        "skills": ["Gabelstapler", "Flurförderzeuge", "DGUV 308-001"],
        "qualification": "certificate", "format": "presence", "schedule": "full_time",
        "hours": 24, "price_eur": 390,
        "funding": {"bildungsgutschein": True, "qcg": False, "aufstiegsbafoeg": False},
        "sessions": [{"start": future(40), "end": future(42),
                      "location": {"zip": "21335", "city": "Lüneburg", "lat": 53.25, "lon": 10.41}}],
        "visibility": {"scope": "networks", "networks": ["lueneburg"]},
        "language": "de",
    }
    body.update(overrides)
    return body


def lonely_place() -> dict:
    """A random spot in Germany: a demand there with a small radius sees only the offers a test puts
    there, whatever earlier tests of the session left elsewhere (matching announces only the best few
    pairs of a demand, so a crowd of older look-alikes would take the places)."""
    return {"zip": "21335", "city": "Lüneburg", "lat": round(random.uniform(47.6, 54.4), 4),
            "lon": round(random.uniform(6.3, 14.6), 4)}


def alone_at(place: dict) -> tuple[dict, dict]:
    """Overrides of offer_body and demand_body that put the pair at ``place``, 2 km around it (a
    circle that some 500 look-alike offers of other tests at random places hit once in 150 times)."""
    employer = {"name": "Logistik Heide GmbH", "employees": 35, "zip": place["zip"], "city": place["city"],
                "lat": place["lat"], "lon": place["lon"]}
    sessions = [{"start": future(40), "end": future(42), "location": dict(place)}]
    return {"sessions": sessions}, {"employer": employer, "max_distance_km": 2}


def demand_body(**overrides) -> dict:
    body = {
        "employer": {"name": "Logistik Heide GmbH", "employees": 35, "zip": "21335", "city": "Lüneburg",
                     "lat": 53.25, "lon": 10.41},
        "title": "Gabelstapler-Ausbildung für Lagerhelfer",
        "description": "Drei Lagerhelfer sollen den Staplerschein machen und Flurförderzeuge sicher führen.",
        "skills": ["Gabelstapler", "Flurförderzeuge"],
        "participants": 3, "start_from": future(10), "start_to": future(90),
        "formats": ["presence"], "schedules": ["full_time"], "max_distance_km": 50,
        "max_price_eur": 800, "funding_required": False,
    }
    body.update(overrides)
    return body
