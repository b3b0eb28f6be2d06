"""Realistic synthetic Braze Currents files, fully determined by a seed.

The files look like what Braze writes to S3: one event type per Avro container file, the
writer schema of :func:`~currents_export.currents.schemas.writer_schema` in the header, keys
laid out by :func:`~currents_export.currents.keys.object_key`, several files per type in
successive queue hours, event times shortly before the file's queue hour, a mix of known,
anonymous and identity-less users, and a few duplicate records (Braze delivers at least once).

Every random choice comes from ``random.Random`` instances seeded with strings derived from
the run seed (``f"{seed}:{event_type}"`` per type), so the same arguments always produce the
same bytes, and generating a subset of the types produces the same files for those types.
"""

from __future__ import annotations

import hashlib
import json
import math
import random
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, BinaryIO, TypeVar, cast

import fastavro

from currents_export.currents.keys import object_key
from currents_export.currents.schemas import (
    FieldSpec,
    event_type_fields,
    known_event_types,
    writer_schema,
)

__all__ = [
    "ANONYMOUS_RATE",
    "CODECS",
    "NO_IDENTITY_RATE",
    "FixtureFile",
    "Identity",
    "generate_fixtures",
    "identity_pool",
    "make_record",
    "write_avro",
]

CODECS: tuple[str, ...] = ("null", "deflate")
CLUSTER = "prod-01"
CONNECTION = "S3"

NULL_RATE = 0.20  # share of optional (non-identity) fields left null
ANONYMOUS_RATE = 0.15  # records of anonymous users: no external id, a device id
NO_IDENTITY_RATE = 0.03  # records with neither external id nor device id
INVALID_JSON_RATE = 0.01  # CustomEvent/Purchase `properties` that are not valid JSON
EMPTY_JSON_RATE = 0.05  # CustomEvent/Purchase `properties` that are "{}"
DUPLICATE_SAMPLE_SIZE = 256  # earlier records kept per type as duplicate candidates

_KNOWN_USERS = 300
_EMAIL_USERS = 8
_UUID_USERS = 6
_ANONYMOUS_USERS = 80
_UNIDENTIFIED_USERS = 20

_T = TypeVar("_T")


# --------------------------------------------------------------------------- public types


@dataclass(frozen=True, slots=True)
class Identity:
    """Who a record belongs to: Braze's internal id plus the customer-facing identifiers."""

    external_user_id: str | None
    device_id: str | None
    braze_id: str


@dataclass(frozen=True, slots=True)
class FixtureFile:
    """One written fixture file."""

    path: Path  # absolute path of the written .avro file
    key: str  # path relative to out_dir with "/" separators (the would-be S3 key)
    event_type: str
    records: int  # records written, duplicates included
    duplicates: int  # records whose id already appeared in an earlier file of the type


# --------------------------------------------------------------------------- value pools

_FIRST_NAMES = (
    "Ana", "Zoë", "Liam", "Chloé", "Noah", "Søren", "Mia", "José", "Yuki", "Aarav",
    "Emma", "Lukas", "Fatima", "Olivia", "Mateo", "Hana", "Jürgen", "Amélie", "Kofi", "Ines",
)
_LAST_NAMES = (
    "García", "Smith", "Müller", "Dubois", "Tanaka", "Kowalski", "Rossi", "Nguyen", "Silva",
    "Johnson", "Østergaard", "O'Brien", "Patel", "Martin", "Schmidt", "Lefèvre",
)
_CITIES = ("New York", "London", "Paris", "東京", "São Paulo", "Zürich", "Kraków", "Berlin")
_LOCATIONS = (  # (latitude, longitude, altitude m) of city centres
    (40.7128, -74.0060, 10.0), (51.5074, -0.1278, 11.0), (48.8566, 2.3522, 35.0),
    (35.6762, 139.6503, 40.0), (-23.5505, -46.6333, 760.0), (47.3769, 8.5417, 408.0),
    (50.0647, 19.9450, 219.0), (52.5200, 13.4050, 34.0),
)
_TIMEZONES = (
    "America/New_York", "America/Los_Angeles", "America/Chicago", "America/Sao_Paulo",
    "Europe/London", "Europe/Paris", "Europe/Berlin", "Europe/Zurich", "Europe/Warsaw",
    "Asia/Tokyo", "Asia/Kolkata", "Australia/Sydney", "Africa/Lagos", "Pacific/Auckland",
)
_COUNTRIES = ("US", "GB", "FR", "DE", "JP", "BR", "CA", "AU", "IN", "ES", "CH", "PL", "NG")
_LANGUAGES = ("en", "fr", "de", "es", "ja", "pt", "it", "pl", "hi", "zh")
_LOCALE_KEYS = ("en", "en-GB", "fr-FR", "de-DE", "ja-JP", "pt-BR", "es-ES")
_GENDERS = ("M", "F", "O", "N", "P")
_CURRENCIES = ("USD", "USD", "USD", "EUR", "EUR", "GBP", "JPY", "CAD", "BRL", "CHF")
_PRICES = (0.99, 1.99, 2.49, 4.99, 9.99, 12.5, 14.99, 19.99, 29.99, 49.95, 99.99, 3.14)
_JPY_PRICES = (120.0, 480.0, 980.0, 1200.0, 3300.0)
_PRODUCTS = (
    "sku_1042_blue_m", "premium_monthly", "premium_annual", "coins_pack_500",
    "crème-brûlée-kit", "gift_card_25", "com.example.app.removeads", "tshirt-東京-L",
)
_PRODUCT_NAMES = ("Crème brûlée kit", "東京 T-shirt", "Café au lait mug", "Zürich map", "Socks")
_CUSTOM_EVENT_NAMES = (
    "Added to Cart", "checkout_started", "Viewed Product", "song_played", "level_complete",
    "Search", "subscription_renewed", "Ajouté au panier", "Video Watched 50%", "app_rated",
)
_NOTES = (
    "Crème brûlée", "東京で受け取り", "🎉 bienvenue !", "naïve café", "Grüße aus Zürich",
    "plain ascii note", "Ünïcödé 👍🏽", "São João", "emoji only 🚀🔥",
)
_CAMPAIGN_NAMES = (
    "Welcome Series – Day 1", "Spring Sale 2026", "Abandoned Cart Reminder",
    "Réactivation clients", "Weekly Digest", "Price Drop Alert", "Onboarding Push",
    "Black Friday Early Access", "Back in Stock", "お得なクーポン",
)
_CANVAS_NAMES = (
    "Onboarding Journey", "Cart Recovery Flow", "Win-back 90d", "Loyalty Tier Upgrade",
    "新規ユーザー歓迎", "Trial Conversion", "Birthday Rewards",
)
_STEP_NAMES = (
    "Welcome Email", "Wait 1 day", "Push Reminder", "SMS Follow-up", "Audience Split",
    "In-App Offer", "Final Nudge", "Webhook to CRM",
)
_VARIATION_NAMES = ("Variant 1", "Variant 2", "Variant 3", "Control")
_AGENT_NAMES = ("Product Recommender", "Support Triage", "Copy Writer", "Churn Scorer")
_MODELS = (("openai", "gpt-4o-mini"), ("anthropic", "claude-3-5-haiku"), ("google", "gemini-1.5"))

_PLATFORM_WEIGHTS = {"ios": 38, "android": 34, "web": 18, "kindle": 4, "tvos": 3, "roku": 3}
_OS_VERSIONS = {
    "ios": ("16.7.8", "17.5.1", "17.6", "18.1", "18.2.1"),
    "tvos": ("17.4", "18.0", "18.2"),
    "android": ("12", "13", "14", "15"),
    "kindle": ("Fire OS 7.3.2.9", "Fire OS 8.3.2.1"),
    "web": ("Mac OS X 14.5", "Windows 10", "Windows 11", "Linux", "iOS 17.5"),
    "roku": ("12.5.0", "13.0.0"),
}
_DEVICE_MODELS = {
    "ios": ("iPhone15,2", "iPhone14,5", "iPhone16,1", "iPad13,4"),
    "tvos": ("AppleTV11,1", "AppleTV6,2"),
    "android": ("Pixel 8", "SM-S918B", "SM-A546B", "moto g54 5G", "CPH2451"),
    "kindle": ("KFTRWI", "AFTKA", "AFTMM"),
    "web": ("Macintosh", "Windows PC", "iPhone"),
    "roku": ("3941X", "4802R", "4670X"),
}
_SDK_VERSIONS = {
    "ios": ("9.2.0", "10.3.1", "11.0.0"), "tvos": ("10.3.1", "11.0.0"),
    "android": ("30.4.0", "31.1.0", "32.0.0"), "kindle": ("30.4.0", "31.1.0"),
    "web": ("5.3.2", "5.4.0"), "roku": ("2.1.0", "2.2.0"),
}
_AD_ID_TYPES = {
    "ios": "ios_idfa", "tvos": "ios_idfa", "android": "google_ad_id",
    "kindle": "google_ad_id", "web": "windows_ad_id", "roku": "roku_ad_id",
}
_RESOLUTIONS = ("1179x2556", "1290x2796", "1080x2400", "1440x3120", "1920x1080", "2560x1440")
_CARRIERS = ("Verizon", "T-Mobile", "AT&T", "Vodafone UK", "Orange F", "NTT DOCOMO", "Vivo")
_BROWSERS = ("Chrome", "Safari", "Firefox", "Edge", "Samsung Internet")
_USER_AGENTS = (
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 "
    "(KHTML, like Gecko) Version/17.5 Mobile/15E148 Safari/604.1",
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/126.0.0.0 Safari/537.36",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 10.15; rv:127.0) Gecko/20100101 Firefox/127.0",
    "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/126.0.6478.122 Mobile Safari/537.36",
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/125.0.0.0 Safari/537.36 Edg/125.0.2535.92",
    "Mozilla/5.0 (compatible; Googlebot-Image/1.0)",
)
_IP_PREFIXES = ("192.0.2.", "198.51.100.", "203.0.113.")
_URL_PATHS = (
    "/", "/sale", "/products/crème-brûlée-kit", "/account/settings", "/blog/spring-2026",
    "/cart?utm_source=braze&utm_medium=email", "/app/open?deeplink=offers",
)


def _table(**entries: Callable[[_Ctx], Any]) -> dict[str, Callable[[_Ctx], Any]]:
    return entries


# --------------------------------------------------------------------------- id helpers


def _uuid4(rng: random.Random) -> str:
    return str(uuid.UUID(int=rng.getrandbits(128), version=4))


def _hex24(rng: random.Random) -> str:
    return f"{rng.getrandbits(96):024x}"


def _token(rng: random.Random, length: int, alphabet: str) -> str:
    return "".join(rng.choice(alphabet) for _ in range(length))


_B64URL = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
_ALNUM = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"
_HEX = "0123456789abcdef"


def _ascii_slug(text: str) -> str:
    table = str.maketrans("éèëêàâäçïîôöüûùñøåßÿ'", "eeeeaaaciioouuunoasy ")
    return "".join(ch for ch in text.lower().translate(table) if ch.isascii() and ch.isalnum())


# --------------------------------------------------------------------------- messaging pools


@dataclass(frozen=True, slots=True)
class _Campaign:
    id: str
    name: str
    variations: tuple[tuple[str, str], ...]  # (message_variation_id, name)


@dataclass(frozen=True, slots=True)
class _Canvas:
    id: str
    api_id: str
    name: str
    variations: tuple[tuple[str, str, str], ...]  # (id, api id, name)
    steps: tuple[tuple[str, str, str, str], ...]  # (id, api id, name, message variation id)


def _build_campaigns(rng: random.Random) -> tuple[_Campaign, ...]:
    campaigns = []
    for index, name in enumerate(_CAMPAIGN_NAMES):
        campaign_id = _hex24(rng) if index % 3 == 0 else _uuid4(rng)
        count = rng.randint(1, 3)
        variations = tuple((_uuid4(rng), _VARIATION_NAMES[i]) for i in range(count))
        campaigns.append(_Campaign(campaign_id, name, variations))
    return tuple(campaigns)


def _build_canvases(rng: random.Random) -> tuple[_Canvas, ...]:
    canvases = []
    for name in _CANVAS_NAMES:
        variations = tuple(
            (_uuid4(rng), _uuid4(rng), _VARIATION_NAMES[i]) for i in range(rng.randint(1, 3))
        )
        step_names = rng.sample(_STEP_NAMES, rng.randint(2, 5))
        steps = tuple((_uuid4(rng), _uuid4(rng), step, _uuid4(rng)) for step in step_names)
        canvases.append(_Canvas(_uuid4(rng), _uuid4(rng), name, variations, steps))
    return tuple(canvases)


_POOL_RNG = random.Random("currents-export fixtures: messaging pools v1")
_CAMPAIGNS = _build_campaigns(_POOL_RNG)
_CANVASES = _build_canvases(_POOL_RNG)
_APP_GROUPS = (_uuid4(_POOL_RNG), _uuid4(_POOL_RNG))
_APPS = {platform: _uuid4(_POOL_RNG) for platform in _PLATFORM_WEIGHTS}
_SUBSCRIPTION_GROUPS = tuple(_uuid4(_POOL_RNG) for _ in range(4))
_AGENTS = tuple((_uuid4(_POOL_RNG), name) for name in _AGENT_NAMES)
_LINE_CHANNELS = (("1657012345", "Example Shop JP"), ("2001234567", "Example News"))


# --------------------------------------------------------------------------- identities


@dataclass(frozen=True, slots=True)
class _UserPool:
    known: tuple[Identity, ...]
    anonymous: tuple[Identity, ...]
    unidentified: tuple[Identity, ...]

    def pick(self, rng: random.Random) -> Identity:
        roll = rng.random()
        if roll < NO_IDENTITY_RATE:
            return rng.choice(self.unidentified)
        if roll < NO_IDENTITY_RATE + ANONYMOUS_RATE:
            return rng.choice(self.anonymous)
        return rng.choice(self.known)


def _device_id(rng: random.Random) -> str:
    device = _uuid4(rng)
    return device.upper() if rng.random() < 0.45 else device  # upper-case: iOS IDFV


def identity_pool(seed: int) -> tuple[Identity, ...]:
    """All identities used for ``seed``: known users, then anonymous, then identity-less."""
    pool = _user_pool(seed)
    return pool.known + pool.anonymous + pool.unidentified


def _user_pool(seed: int) -> _UserPool:
    rng = random.Random(f"{seed}:users")
    numbers = rng.sample(range(1, 1_000_000), _KNOWN_USERS)
    known = []
    for index, number in enumerate(numbers):
        if index < _EMAIL_USERS:
            first, last = rng.choice(_FIRST_NAMES), rng.choice(_LAST_NAMES)
            domain = rng.choice(("example.com", "example.org"))
            external = f"{_ascii_slug(first)}.{_ascii_slug(last)}{number % 100}@{domain}"
        elif index < _EMAIL_USERS + _UUID_USERS:
            external = _uuid4(rng)
        else:
            external = f"cust_{number:06d}"
        device = _device_id(rng) if rng.random() < 0.9 else None
        known.append(Identity(external, device, _hex24(rng)))
    anonymous = [Identity(None, _device_id(rng), _hex24(rng)) for _ in range(_ANONYMOUS_USERS)]
    unidentified = [Identity(None, None, _hex24(rng)) for _ in range(_UNIDENTIFIED_USERS)]
    return _UserPool(tuple(known), tuple(anonymous), tuple(unidentified))


# --------------------------------------------------------------------------- record context


@dataclass(slots=True)
class _Ctx:
    """What one record's value factories share: rng, identity and per-record choices."""

    rng: random.Random
    event_type: str
    identity: Identity
    time_s: int
    memo: dict[str, Any] = field(default_factory=dict)

    def once(self, key: str, factory: Callable[[], _T]) -> _T:
        if key not in self.memo:
            self.memo[key] = factory()
        return cast(_T, self.memo[key])  # what ``factory`` made: a key is made by one factory

    def pick(self, options: Sequence[_T]) -> _T:
        return self.rng.choice(options)

    def chance(self, p: float) -> bool:
        return self.rng.random() < p

    @property
    def platform(self) -> str:
        return self.once("platform", self._choose_platform)

    def _choose_platform(self) -> str:
        device = self.identity.device_id
        if device is not None and device.isupper():
            return "tvos" if self.chance(0.08) else "ios"
        options = {
            name: weight for name, weight in _PLATFORM_WEIGHTS.items()
            if device is None or name not in ("ios", "tvos")  # lower-case ids: not Apple
        }
        return self.rng.choices(list(options), list(options.values()))[0]

    @property
    def campaign(self) -> _Campaign:
        return self.once("campaign", lambda: self.pick(_CAMPAIGNS))

    @property
    def campaign_variation(self) -> tuple[str, str]:
        return self.once("campaign_variation", lambda: self.pick(self.campaign.variations))

    @property
    def canvas(self) -> _Canvas:
        return self.once("canvas", lambda: self.pick(_CANVASES))

    @property
    def canvas_variation(self) -> tuple[str, str, str]:
        return self.once("canvas_variation", lambda: self.pick(self.canvas.variations))

    @property
    def canvas_step(self) -> tuple[str, str, str, str]:
        return self.once("canvas_step", lambda: self.pick(self.canvas.steps))

    @property
    def source(self) -> str:
        """Whether a message came from a campaign or from a Canvas."""
        return self.once("source", lambda: "campaign" if self.chance(0.5) else "canvas")

    @property
    def person(self) -> _Person:
        return _person(self.identity.braze_id)

    @property
    def location(self) -> tuple[float, float, float]:
        def choose() -> tuple[float, float, float]:
            lat, lon, alt = self.pick(_LOCATIONS)
            jitter = self.rng.uniform
            return lat + jitter(-0.05, 0.05), lon + jitter(-0.05, 0.05), alt + jitter(-5, 30)

        return self.once("location", choose)

    @property
    def model(self) -> tuple[str, str]:
        return self.once("model", lambda: self.pick(_MODELS))

    @property
    def agent(self) -> tuple[str, str]:
        return self.once("agent", lambda: self.pick(_AGENTS))

    @property
    def line_channel(self) -> tuple[str, str]:
        return self.once("line_channel", lambda: self.pick(_LINE_CHANNELS))


@dataclass(frozen=True, slots=True)
class _Person:
    first_name: str
    last_name: str
    email: str
    phone: str
    city: str
    dob: str


def _person(braze_id: str) -> _Person:
    """Profile attributes derived from the Braze id, so one user keeps them across events."""
    n = int.from_bytes(hashlib.blake2b(braze_id.encode(), digest_size=8).digest(), "big")
    first = _FIRST_NAMES[n % len(_FIRST_NAMES)]
    last = _LAST_NAMES[(n >> 8) % len(_LAST_NAMES)]
    domain = ("example.com", "example.org")[(n >> 16) & 1]
    email = f"{_ascii_slug(first)}.{_ascii_slug(last)}{(n >> 17) % 100}@{domain}"
    if (n >> 24) % 3 == 0:
        phone = f"+447700900{(n >> 26) % 1000:03d}"
    else:
        phone = f"+1555{(n >> 26) % 10_000_000:07d}"
    dob = f"{1950 + (n >> 40) % 55}-{1 + (n >> 46) % 12:02d}-{1 + (n >> 50) % 28:02d}"
    return _Person(first, last, email, phone, _CITIES[(n >> 33) % len(_CITIES)], dob)


# --------------------------------------------------------------------------- JSON values


def _json(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def _custom_properties(c: _Ctx) -> dict[str, Any]:
    rng = c.rng
    candidates: dict[str, Callable[[], Any]] = {
        "product": lambda: {
            "name": c.pick(_PRODUCT_NAMES),
            "sku": f"SKU-{rng.randrange(100_000):05d}",
            "price": c.pick((4.5, 12.99, 3, 1999)),
            "tags": rng.sample(["sale", "nouveauté", "限定", "gift", "eco"], 2),
        },
        "city": lambda: c.pick(_CITIES),
        "quantity": lambda: rng.randint(1, 5),
        "first_time": lambda: c.chance(0.3),
        "note": lambda: c.pick(_NOTES),
        "items": lambda: [
            {"id": rng.randrange(1000), "label": c.pick(_PRODUCT_NAMES), "qty": rng.randint(1, 3)}
            for _ in range(rng.randint(1, 3))
        ],
        "score": lambda: round(rng.uniform(0, 100), 3),
        "screen": lambda: c.pick(("home", "checkout", "product_detail", "recherche")),
        "coupon": lambda: None if c.chance(0.5) else "WELCOME10",
        "ab": lambda: {"experiment": "new_onboarding", "arm": c.pick(("a", "b")), "n": 2},
    }
    keys = ["note", *rng.sample(sorted(candidates), rng.randint(2, 5))]
    return {key: candidates[key]() for key in dict.fromkeys(keys)}


def _purchase_properties(c: _Ctx) -> dict[str, Any]:
    rng = c.rng
    props: dict[str, Any] = {
        "quantity": rng.randint(1, 4),
        "order_id": f"ORD-{rng.randrange(10**8):08d}",
        "gift": c.chance(0.15),
        "shipping": {"method": c.pick(("standard", "express", "retrait")), "city": c.pick(_CITIES)},
        "note": c.pick(_NOTES),
    }
    if c.chance(0.4):
        props["discounts"] = [{"code": "SPRING26", "amount": 2.5}]
    return props


def _properties(build: Callable[[_Ctx], dict[str, Any]]) -> Callable[[_Ctx], str]:
    """A ``properties`` factory: mostly JSON objects, some "{}", a few truncated ones."""

    def factory(c: _Ctx) -> str:
        roll = c.rng.random()
        if roll < EMPTY_JSON_RATE:
            return "{}"
        text = _json(build(c))
        if roll < EMPTY_JSON_RATE + INVALID_JSON_RATE:
            return text[: c.rng.randrange(1, len(text) - 1)]  # truncated: never valid JSON
        return text

    return factory


def _message_extras(c: _Ctx) -> str:
    return _json({"coupon_code": c.pick(("WELCOME10", "SPRING26", "VIP")),
                  "first_name": c.person.first_name, "offer": c.pick(_PRODUCT_NAMES)})


def _conversion_behavior(c: _Ctx) -> str:
    behavior = c.pick((
        {"type": "opens app", "window": 259200},
        {"type": "makes purchase", "product": c.pick(_PRODUCTS), "window": 604800},
        {"type": "performs custom event", "custom_event_name": c.pick(_CUSTOM_EVENT_NAMES),
         "window": 86400},
    ))
    return _json(behavior)


def _custom_attributes(c: _Ctx) -> str:
    return _json({
        "loyalty_tier": c.pick(("bronze", "silver", "gold")),
        "favorite_dish": c.pick(("Crème brûlée", "ラーメン", "Pierogi")),
        "pets": c.rng.sample(["dog", "cat", "parrot"], c.rng.randint(0, 2)),
        "newsletter": c.chance(0.6),
    })


def _flow_response(c: _Ctx) -> str:
    return _json({"flow_token": _uuid4(c.rng), "screen_0_rating": c.rng.randint(1, 5),
                  "screen_0_comment": c.pick(("Très bien 👍", "fast delivery", "良い"))})


def _tool_arguments(c: _Ctx) -> str:
    return _json({"query": c.pick(_PRODUCT_NAMES), "limit": c.rng.randint(1, 10),
                  "filters": {"in_stock": True, "country": c.pick(_COUNTRIES)}})


def _raw_response(c: _Ctx) -> str:
    status = c.pick(("error", "timeout", "rate_limited"))
    return _json({"status": status, "error": {"code": c.pick((429, 500, 503)), "retry": True}})


# --------------------------------------------------------------------------- value factories


def _business_number(c: _Ctx) -> str:
    return c.pick(("+15550100123", "+15550100456", "+447700900001"))


def _url(c: _Ctx) -> str:
    host = c.pick(("https://www.example.com", "https://shop.example.com", "https://example.com"))
    return host + c.pick(_URL_PATHS)


def _ip(c: _Ctx) -> str:
    return f"{c.pick(_IP_PREFIXES)}{c.rng.randint(1, 254)}"


def _price(c: _Ctx) -> float:
    if c.once("currency", lambda: c.pick(_CURRENCIES)) == "JPY":
        return c.pick(_JPY_PRICES)
    if c.chance(0.3):
        return c.rng.randint(100, 20_000) / 100
    return c.pick(_PRICES)


def _duration(c: _Ctx) -> float | int:
    if c.event_type.endswith("SessionEnd"):
        return round(c.rng.lognormvariate(4.5, 1.2), 3)  # seconds, float
    return c.rng.randint(150, 25_000)  # agent console: milliseconds, int


def _ad_id(c: _Ctx) -> str:
    ad_id = _uuid4(c.rng)
    return ad_id.upper() if c.platform in ("ios", "tvos") else ad_id


def _push_token(c: _Ctx) -> str:
    if c.platform in ("ios", "tvos"):
        return _token(c.rng, 64, _HEX)
    if c.platform == "web":
        endpoint = "https://fcm.googleapis.com/fcm/send/"
        return f"{endpoint}{_token(c.rng, 22, _B64URL)}:APA91b{_token(c.rng, 40, _B64URL)}"
    return f"{_token(c.rng, 22, _B64URL)}:APA91b{_token(c.rng, 134, _B64URL)}"


def _token_created_at(c: _Ctx) -> int:
    return c.once("token_created", lambda: c.time_s - c.rng.randrange(3600, 400 * 86400))


def _token_updated_at(c: _Ctx) -> int:
    created = _token_created_at(c)
    return c.rng.randint(created, c.time_s)


def _media_urls(c: _Ctx) -> list[str | None]:
    urls: list[str | None] = [
        f"https://media.example.com/inbound/{_uuid4(c.rng)}.jpg"
        for _ in range(c.rng.randint(1, 2))
    ]
    if c.chance(0.1):
        urls.append(None)
    return urls


_FIELD_FACTORIES: dict[str, Callable[[_Ctx], Any]] = _table(
    # ids and time
    id=lambda c: _uuid4(c.rng),
    time=lambda c: c.time_s,
    time_ms=lambda c: c.time_s * 1000 + c.rng.randrange(1000),
    app_group_id=lambda c: c.pick(_APP_GROUPS),
    app_group_api_id=lambda c: c.pick(_APP_GROUPS),
    app_id=lambda c: _APPS[c.platform],
    orphaned_by_id=lambda c: _hex24(c.rng),
    session_id=lambda c: _uuid4(c.rng),
    send_id=lambda c: _hex24(c.rng) if c.chance(0.5) else _uuid4(c.rng),
    dispatch_id=lambda c: _hex24(c.rng),
    # device
    platform=lambda c: c.platform,
    os_version=lambda c: c.pick(_OS_VERSIONS[c.platform]),
    device_model=lambda c: c.pick(_DEVICE_MODELS[c.platform]),
    sdk_version=lambda c: c.pick(_SDK_VERSIONS[c.platform]),
    resolution=lambda c: c.pick(_RESOLUTIONS),
    carrier=lambda c: c.pick(_CARRIERS),
    browser=lambda c: c.pick(_BROWSERS),
    user_agent=lambda c: c.pick(_USER_AGENTS),
    ad_id=_ad_id,
    ad_id_type=lambda c: _AD_ID_TYPES[c.platform],
    ad_tracking_enabled=lambda c: c.chance(0.7),
    device_class=lambda c: c.pick(("Desktop", "Mobile", "Tablet")),
    device_os=lambda c: c.pick(("iOS", "Android", "Windows", "macOS")),
    mailbox_provider=lambda c: c.pick(("Gmail", "Yahoo", "Microsoft", "Apple", "GMX")),
    # user profile
    timezone=lambda c: c.pick(_TIMEZONES),
    country=lambda c: c.pick(_COUNTRIES),
    language=lambda c: c.pick(_LANGUAGES),
    locale_key=lambda c: c.pick(_LOCALE_KEYS),
    gender=lambda c: c.pick(_GENDERS),
    first_name=lambda c: c.person.first_name,
    last_name=lambda c: c.person.last_name,
    email_address=lambda c: (
        c.identity.external_user_id
        if c.identity.external_user_id and "@" in c.identity.external_user_id
        else c.person.email
    ),
    phone_number=lambda c: c.person.phone,
    to_phone_number=lambda c: c.person.phone,
    user_phone_number=lambda c: c.person.phone,
    from_phone_number=_business_number,
    inbound_phone_number=_business_number,
    dob=lambda c: c.person.dob,
    home_city=lambda c: c.person.city,
    custom_attributes=_custom_attributes,
    update_source=lambda c: c.pick(("REST API", "SDK", "CSV Import", "Dashboard")),
    archived=lambda c: c.chance(0.02),
    random_bucket_number=lambda c: c.rng.randint(0, 9999),
    prev_random_bucket_number=lambda c: c.rng.randint(0, 9999),
    # behaviours
    name=lambda c: c.pick(_CUSTOM_EVENT_NAMES),
    properties=_properties(_custom_properties),
    product_id=lambda c: c.pick(_PRODUCTS),
    price=_price,
    currency=lambda c: c.once("currency", lambda: c.pick(_CURRENCIES)),
    source=lambda c: c.pick(("Organic", "Facebook Ads", "Google Ads", "Apple Search Ads")),
    latitude=lambda c: c.location[0],
    longitude=lambda c: c.location[1],
    altitude=lambda c: c.location[2],
    ll_accuracy=lambda c: round(c.rng.uniform(3, 65), 1),
    alt_accuracy=lambda c: round(c.rng.uniform(2, 30), 1),
    duration=_duration,
    # messaging context (campaign / Canvas ids and names stay consistent within a record)
    campaign_id=lambda c: c.campaign.id,
    campaign_name=lambda c: c.campaign.name,
    message_variation_id=lambda c: c.campaign_variation[0],
    message_variation_name=lambda c: c.campaign_variation[1],
    canvas_id=lambda c: c.canvas.id,
    canvas_api_id=lambda c: c.canvas.api_id,
    canvas_name=lambda c: c.canvas.name,
    canvas_variation_id=lambda c: c.canvas_variation[0],
    canvas_variation_api_id=lambda c: c.canvas_variation[1],
    canvas_variation_name=lambda c: c.canvas_variation[2],
    canvas_step_id=lambda c: c.canvas_step[0],
    canvas_step_api_id=lambda c: c.canvas_step[1],
    canvas_step_name=lambda c: c.canvas_step[2],
    canvas_step_message_variation_id=lambda c: c.canvas_step[3],
    canvas_entry_id=lambda c: _uuid4(c.rng),
    next_step_id=lambda c: _uuid4(c.rng),
    progression_type=lambda c: c.pick(("entered_step", "advanced", "exited_canvas")),
    is_canvas_entry=lambda c: c.chance(0.2),
    exit_reason=lambda c: c.pick(("exit_criteria_met", "audience_mismatch", "canvas_completed")),
    in_control_group=lambda c: c.chance(0.1),
    experiment_step_id=lambda c: _uuid4(c.rng),
    experiment_split_id=lambda c: _uuid4(c.rng),
    experiment_split_name=lambda c: c.pick(("Path 1", "Path 2", "Control")),
    content_optimizer_step_id=lambda c: _uuid4(c.rng),
    combination_token=lambda c: _token(c.rng, 16, _B64URL),
    conversion_behavior=_conversion_behavior,
    conversion_behavior_index=lambda c: c.rng.randint(0, 3),
    message_extras=_message_extras,
    subscription_group_id=lambda c: c.pick(_SUBSCRIPTION_GROUPS),
    subscription_status=lambda c: (
        c.pick(("Subscribed", "Unsubscribed", "Opted In"))
        if c.event_type.endswith("GlobalStateChange")
        else c.pick(("Subscribed", "Unsubscribed"))
    ),
    state_change_source=lambda c: c.pick(
        ("SDK", "REST API", "Dashboard", "CSV Import", "Subscription Center", "Keyword")
    ),
    channel=lambda c: c.pick(("email", "sms", "whatsapp", "push")),
    channel_identifier=lambda c: c.person.email if c.chance(0.5) else c.person.phone,
    category=lambda c: c.pick(("marketing", "transactional", "opt-in", "help")),
    abort_type=lambda c: c.pick(
        ("liquid_abort_message", "rate_limit", "connected_content_error", "user_not_subscribed")
    ),
    abort_log=lambda c: c.pick(
        ("Aborted by Liquid: {% abort_message('no stock') %}", "Frequency cap reached",
         "Connected Content returned 500")
    ),
    retry_type=lambda c: c.pick(("rate_limit", "connected_content", "provider_error")),
    retry_log=lambda c: c.pick(("429 Too Many Requests; retrying in 60s", "timeout after 2s")),
    # email
    ip_pool=lambda c: c.pick(("default", "marketing", "transactional")),
    sending_ip=_ip,
    esp=lambda c: c.pick(("sendgrid", "sparkpost", "amazon_ses")),
    from_domain=lambda c: c.pick(("mail.example.com", "news.example.org")),
    recipient_domain=lambda c: c.person.email.rsplit("@", 1)[1],
    bounce_reason=lambda c: c.pick(
        ("550 5.1.1 The email account that you tried to reach does not exist",
         "552 5.2.2 Mailbox full", "554 5.7.1 Message rejected")
    ),
    deferral_reason=lambda c: c.pick(("421 4.7.0 Try again later", "451 4.3.0 Temporary error")),
    attempt_count=lambda c: c.rng.randint(1, 5),
    is_drop=lambda c: c.chance(0.1),
    is_amp=lambda c: c.chance(0.05),
    machine_open=lambda c: "true" if c.chance(0.4) else "false",
    link_id=lambda c: _token(c.rng, 8, _ALNUM),
    link_alias=lambda c: c.pick(("hero_cta", "footer_unsubscribe", "product_1", "logo")),
    is_suspected_bot_click=lambda c: c.chance(0.05),
    suspected_bot_click_reason=lambda c: c.rng.sample(
        ["user_agent", "ip_address", "time_since_send", "honeypot_link"], c.rng.randint(1, 2)
    ),
    url=_url,
    short_url=lambda c: f"https://s.example.com/{_token(c.rng, 7, _ALNUM)}",
    # push, in-app, cards, banners, feature flags, live activities
    push_token=_push_token,
    push_token_device_id=lambda c: c.identity.device_id,
    push_token_created_at=_token_created_at,
    push_token_updated_at=_token_updated_at,
    push_token_state_change_type=lambda c: c.pick(("add", "update", "remove")),
    push_token_provisionally_opted_in=lambda c: c.chance(0.1),
    push_token_foreground_push_disabled=lambda c: c.chance(0.05),
    ios_push_token_apns_gateway=lambda c: c.pick((1, 2)),
    web_push_token_user_auth=lambda c: _token(c.rng, 22, _B64URL),
    web_push_token_public_key=lambda c: "B" + _token(c.rng, 86, _B64URL),
    web_push_token_vapid_public_key=lambda c: "B" + _token(c.rng, 86, _B64URL),
    push_to_start_token=lambda c: _token(c.rng, 160, _HEX),
    update_token=lambda c: _token(c.rng, 160, _HEX),
    activity_id=lambda c: f"order-{c.rng.randrange(10**6):06d}",
    activity_attributes_type=lambda c: c.pick(("DeliveryAttributes", "ScoreAttributes")),
    live_activity_event_type=lambda c: c.pick(("start", "update", "end")),
    live_activity_event_outcome=lambda c: c.pick(("success", "failure")),
    button_id=lambda c: c.pick(("0", "1", "cta_primary")),
    button_action_type=lambda c: c.pick(("URI", "DEEP_LINK", "NONE")),
    button_string=lambda c: c.pick(("Shop now", "Voir l'offre", "今すぐ見る")),
    card_id=lambda c: _uuid4(c.rng),
    content_card_id=lambda c: _hex24(c.rng),
    version=lambda c: c.pick(("2", "3")),
    banner_placement_id=lambda c: c.pick(("homepage_top", "checkout_sidebar", "profile_footer")),
    feature_flag_id_name=lambda c: c.pick(("new_checkout_flow", "dark_mode", "live_chat")),
    # SMS, WhatsApp, RCS, LINE
    message_body=lambda c: c.pick(("STOP", "YES", "HELP", "Bonjour 👋", "Où est ma commande ?")),
    action=lambda c: c.pick(("Subscribed", "Unsubscribed", "None")),
    media_urls=_media_urls,
    media_id=lambda c: str(c.rng.randrange(10**15, 10**16)),
    is_sms_fallback=lambda c: c.chance(0.1),
    error=lambda c: c.pick(("Undeliverable", "Carrier violation", "Unknown error")),
    provider_error_code=lambda c: c.pick(("30003", "30007", "131026", "131047")),
    provider_error_title=lambda c: c.pick(("Message undeliverable", "Re-engagement message")),
    from_rcs_sender=lambda c: c.pick(("example_shop_agent", "example_news_agent")),
    to_rcs_sender=lambda c: c.pick(("example_shop_agent", "example_news_agent")),
    interaction_type=lambda c: c.pick(("suggested_reply", "suggested_action", "link")),
    element_label=lambda c: c.pick(("Track order", "Voir plus", "Yes")),
    element_type=lambda c: c.pick(("button", "chip", "card")),
    bsuid=lambda c: f"bsuid.{_token(c.rng, 20, _ALNUM)}",
    flow_id=lambda c: str(c.rng.randrange(10**14, 10**15)),
    flow_response_json=_flow_response,
    template_name=lambda c: c.pick(("order_update", "welcome_offer", "appointment_reminder")),
    message_id=lambda c: f"wamid.{_token(c.rng, 40, _B64URL)}",
    in_reply_to=lambda c: f"wamid.{_token(c.rng, 40, _B64URL)}",
    quick_reply_text=lambda c: c.pick(("Yes", "No", "Plus tard", "はい")),
    catalog_id=lambda c: str(c.rng.randrange(10**14, 10**15)),
    line_channel_id=lambda c: c.line_channel[0],
    line_channel_name=lambda c: c.line_channel[1],
    native_line_id=lambda c: "U" + _token(c.rng, 32, _HEX),
    # webhooks
    http_status_code=lambda c: c.pick((400, 401, 404, 429, 500, 502, 503)),
    endpoint_url=lambda c: f"https://hooks.example.com/braze/{_token(c.rng, 10, _ALNUM)}",
    host=lambda c: "hooks.example.com",
    url_path=lambda c: c.pick(("/braze/events", "/v1/notify", "/crm/update")),
    content_length=lambda c: c.rng.randint(0, 4096),
    retry_count=lambda c: c.rng.randint(0, 5),
    webhook_duration=lambda c: c.rng.randint(20, 30_000),
    webhook_failure_source=lambda c: c.pick(("connection", "response")),
    raw_response=_raw_response,
    is_terminal=lambda c: c.chance(0.3),
    # agent console
    invocation_id=lambda c: _uuid4(c.rng),
    request_id=lambda c: _uuid4(c.rng),
    provider_request_id=lambda c: f"req_{_token(c.rng, 24, _ALNUM)}",
    prompt_tokens=lambda c: c.rng.randint(50, 4000),
    completion_tokens=lambda c: c.rng.randint(5, 800),
    total_tokens=lambda c: c.rng.randint(60, 4800),
    cache_tokens=lambda c: c.rng.randint(0, 2000),
    reasoning_tokens=lambda c: c.rng.randint(0, 500),
    agent_id=lambda c: c.agent[0],
    agent_name=lambda c: c.agent[1],
    model_provider=lambda c: c.model[0],
    model_name=lambda c: c.model[1],
    cache_hit=lambda c: c.chance(0.2),
    llm_owned_by_customer=lambda c: c.chance(0.3),
    is_error=lambda c: c.chance(0.03),
    input=lambda c: c.pick(
        ("Recommend a dessert for Zoë", "Résume la commande", "次のおすすめは？")
    ),
    output=lambda c: c.pick(("Try the crème brûlée kit 🍮", "Commande expédiée.", "東京 T-shirt")),
    invocation_source=lambda c: c.pick(("canvas", "catalog", "test")),
    tool_call_id=lambda c: f"call_{_token(c.rng, 24, _ALNUM)}",
    tool_name=lambda c: c.pick(("search_catalog", "lookup_order", "get_weather")),
    tool_arguments=_tool_arguments,
)

_PURCHASE_FACTORIES: dict[str, Callable[[_Ctx], Any]] = {
    "properties": _properties(_purchase_properties),
}

_SUFFIX_FACTORIES: tuple[tuple[str, Callable[[_Ctx], Any]], ...] = (
    ("_id", lambda c: _uuid4(c.rng)),
    ("_name", lambda c: c.pick(_STEP_NAMES)),
    ("_at", lambda c: c.time_s - c.rng.randrange(86_400)),
    ("_url", _url),
    ("_count", lambda c: c.rng.randint(0, 10)),
    ("_json", lambda c: _json({"value": c.rng.randint(0, 100)})),
)

_TYPE_FACTORIES: dict[str, Callable[[_Ctx], Any]] = {
    "string": lambda c: _token(c.rng, 12, _ALNUM),
    "int": lambda c: c.rng.randint(0, 1000),
    "long": lambda c: c.rng.randint(0, 10**12),
    "float": lambda c: round(c.rng.uniform(0, 100), 2),
    "double": lambda c: c.rng.uniform(0, 100),
    "boolean": lambda c: c.chance(0.5),
    "bytes": lambda c: c.rng.randbytes(8),
}

# identity fields: their presence follows the identity of the record, never NULL_RATE
_IDENTITY_FIELDS = frozenset(
    {"user_id", "external_user_id", "device_id", "push_token_device_id"}
)
# optional fields always filled (they are present in every real event that has them)
_ALWAYS_SET = frozenset({"time_ms", "app_group_id", "platform"})
# optional fields that only exist for some platforms (null elsewhere)
_PLATFORM_ONLY: dict[str, tuple[str, ...]] = {
    "web_push_token_user_auth": ("web",),
    "web_push_token_public_key": ("web",),
    "web_push_token_vapid_public_key": ("web",),
    "ios_push_token_apns_gateway": ("ios", "tvos"),
    "push_token_provisionally_opted_in": ("ios",),
}
_CAMPAIGN_FIELDS = frozenset(
    {"campaign_id", "campaign_name", "message_variation_id", "message_variation_name"}
)


def _factory(event_type: str, spec: FieldSpec) -> Callable[[_Ctx], Any]:
    if event_type == "users.behaviors.Purchase" and spec.name in _PURCHASE_FACTORIES:
        return _PURCHASE_FACTORIES[spec.name]
    if spec.name in _FIELD_FACTORIES:
        return _FIELD_FACTORIES[spec.name]
    if spec.item_type is not None:
        item = _TYPE_FACTORIES.get(spec.item_type, _TYPE_FACTORIES["string"])
        return lambda c: [item(c) for _ in range(c.rng.randint(1, 3))]
    if spec.avro_type == "string":
        for suffix, factory in _SUFFIX_FACTORIES:
            if spec.name.endswith(suffix):
                return factory
    return _TYPE_FACTORIES[spec.avro_type]


def _identity_value(spec: FieldSpec, c: _Ctx) -> Any:
    identity = c.identity
    if spec.name == "user_id":
        anonymous = identity.external_user_id is None and identity.device_id is None
        return None if spec.nullable and anonymous else identity.braze_id
    if spec.name == "external_user_id":
        return identity.external_user_id
    return identity.device_id  # device_id, push_token_device_id


def _left_out(spec: FieldSpec, c: _Ctx, names: frozenset[str]) -> bool:
    """Whether an optional field stays null: platform, campaign xor Canvas, then NULL_RATE."""
    if spec.name in _ALWAYS_SET:
        return False
    if spec.name in _PLATFORM_ONLY and c.platform not in _PLATFORM_ONLY[spec.name]:
        return True
    if "campaign_id" in names and "canvas_id" in names:
        if c.source == "canvas" and spec.name in _CAMPAIGN_FIELDS:
            return True
        if c.source == "campaign" and spec.name.startswith(("canvas_", "experiment_")):
            return True
    return c.rng.random() < NULL_RATE


def _known_type(event_type: str) -> tuple[FieldSpec, ...]:
    try:
        return event_type_fields(event_type)
    except KeyError:
        raise ValueError(_unknown_types_message([event_type])) from None


def _unknown_types_message(names: Iterable[str]) -> str:
    listed = ", ".join(repr(name) for name in names)
    return (
        f"unknown Currents event type(s): {listed}; the {len(known_event_types())} valid names "
        "are listed by currents_export.currents.schemas.known_event_types()"
    )


def make_record(
    event_type: str, rng: random.Random, *, identity: Identity, time_s: int
) -> dict[str, Any]:
    """One record of ``event_type`` that validates against ``writer_schema(event_type)``."""
    fields = _known_type(event_type)
    names = frozenset(spec.name for spec in fields)
    ctx = _Ctx(rng=rng, event_type=event_type, identity=identity, time_s=time_s)
    record: dict[str, Any] = {}
    for spec in fields:
        if spec.name in _IDENTITY_FIELDS:
            record[spec.name] = _identity_value(spec, ctx)
        elif spec.nullable and _left_out(spec, ctx, names):
            record[spec.name] = None
        else:
            record[spec.name] = _factory(event_type, spec)(ctx)
    return record


# --------------------------------------------------------------------------- writing


def _check_codec(codec: str) -> None:
    if codec not in CODECS:
        raise ValueError(f"unsupported codec {codec!r}; use one of {', '.join(CODECS)}")


def _default_sync_marker(label: str) -> bytes:
    return hashlib.blake2b(label.encode(), digest_size=16).digest()


def write_avro(
    fileobj: BinaryIO,
    event_type: str,
    records: Iterable[dict[str, Any]],
    codec: str = "null",
    *,
    sync_marker: bytes | None = None,
) -> int:
    """Stream ``records`` into an Avro container with ``writer_schema(event_type)``.

    The sync marker defaults to one derived from the event type, so output is reproducible.
    Returns the number of records written.
    """
    _check_codec(codec)
    _known_type(event_type)
    count = 0

    def counted() -> Iterator[dict[str, Any]]:
        nonlocal count
        for record in records:
            count += 1
            yield record

    fastavro.writer(
        fileobj,
        writer_schema(event_type),
        counted(),
        codec=codec,
        sync_marker=sync_marker or _default_sync_marker(event_type),
    )
    return count


class _Reservoir:
    """A bounded uniform sample of earlier records: the candidates for duplicates."""

    def __init__(self, rng: random.Random, size: int = DUPLICATE_SAMPLE_SIZE) -> None:
        self.rng = rng
        self.size = size
        self.items: list[dict[str, Any]] = []
        self.seen = 0

    def offer(self, record: dict[str, Any]) -> None:
        self.seen += 1
        if len(self.items) < self.size:
            self.items.append(record)
            return
        slot = self.rng.randrange(self.seen)
        if slot < self.size:
            self.items[slot] = record


def _event_time(rng: random.Random, queue_hour: datetime) -> int:
    """A time before the moment the event was queued, within ``queue_hour``."""
    queued = int(queue_hour.timestamp()) + rng.randrange(3600)
    roll = rng.random()
    if roll < 0.80:
        lag = rng.randint(2, 15 * 60)  # usual SDK/API latency
    elif roll < 0.97:
        lag = rng.randint(15 * 60, 3 * 3600)  # flushed late
    else:
        lag = rng.randint(3 * 3600, 24 * 3600)  # offline device
    return queued - lag


def _file_records(
    event_type: str,
    rng: random.Random,
    users: _UserPool,
    queue_hour: datetime,
    size: int,
    duplicates: dict[int, dict[str, Any]],
    reservoir: _Reservoir,
) -> Iterator[dict[str, Any]]:
    for position in range(size):
        duplicate = duplicates.get(position)
        if duplicate is not None:
            yield duplicate
            continue
        record = make_record(
            event_type,
            rng,
            identity=users.pick(rng),
            time_s=_event_time(rng, queue_hour),
        )
        reservoir.offer(record)
        yield record


def _split(total: int, parts: int) -> list[int]:
    base, extra = divmod(total, parts)
    return [base + (1 if index < extra else 0) for index in range(parts)]


def _resolve_types(event_types: Sequence[str] | None) -> list[str]:
    if event_types is None:
        return known_event_types()
    if isinstance(event_types, str):
        raise TypeError("event_types must be a sequence of names, not a single string")
    known = set(known_event_types())
    unknown = [name for name in event_types if name not in known]
    if unknown:
        raise ValueError(_unknown_types_message(unknown))
    return list(dict.fromkeys(event_types))


def _floor_hour(moment: datetime) -> datetime:
    moment = moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)
    return moment.replace(minute=0, second=0, microsecond=0)


@dataclass(frozen=True, slots=True)
class _Run:
    out_dir: Path
    prefix: str
    integration: str
    schema_id: int
    users: _UserPool
    codec: str
    seed: int
    start_hour: datetime
    files_per_type: int
    max_events_per_file: int
    duplicate_rate: float


def _write_type(run: _Run, event_type: str, events: int) -> list[FixtureFile]:
    rng = random.Random(f"{run.seed}:{event_type}")
    partition = rng.randrange(12)
    zone = rng.choice("abcd")
    offset = rng.randrange(10_000, 5_000_000)
    files = max(run.files_per_type, math.ceil(events / run.max_events_per_file))
    sizes = [size for size in _split(events, files) if size]  # Braze never writes empty files
    reservoir = _Reservoir(rng)
    written: list[FixtureFile] = []
    for index, size in enumerate(sizes):
        queue_hour = run.start_hour + timedelta(hours=index)
        wanted = size * run.duplicate_rate
        wanted_int = math.floor(wanted) + (1 if rng.random() < wanted - math.floor(wanted) else 0)
        count = 0 if index == 0 else min(wanted_int, len(reservoir.items), size)
        positions = sorted(rng.sample(range(size), count))
        duplicates = dict(zip(positions, rng.sample(reservoir.items, count), strict=True))
        key = object_key(
            run.prefix, run.integration, event_type, queue_hour, run.schema_id, zone,
            partition, offset,
        )
        path = run.out_dir / key
        path.parent.mkdir(parents=True, exist_ok=True)
        records = _file_records(
            event_type, rng, run.users, queue_hour, size, duplicates, reservoir
        )
        with path.open("wb") as fileobj:
            count_written = write_avro(
                fileobj, event_type, records, run.codec,
                sync_marker=_default_sync_marker(f"{run.seed}:{key}"),
            )
        written.append(FixtureFile(path, key, event_type, count_written, len(duplicates)))
        offset += size
    return written


def generate_fixtures(
    out_dir: Path,
    *,
    events_per_type: int = 200,
    event_types: Sequence[str] | None = None,
    codec: str = "null",
    seed: int = 0,
    prefix: str = "currents",
    start_hour: datetime = datetime(2026, 1, 15, 10, tzinfo=UTC),
    files_per_type: int = 2,
    max_events_per_file: int = 15_000,
    duplicate_rate: float = 0.02,
) -> list[FixtureFile]:
    """Write Braze-style Currents Avro files under ``out_dir`` and describe them.

    ``events_per_type`` records (duplicates included) per type, spread over
    ``files_per_type`` files (more if ``max_events_per_file`` demands) in successive queue
    hours from ``start_hour``. From the second file of a type on, about ``duplicate_rate`` of
    the records are exact copies of records of earlier files. Same arguments, same bytes.
    """
    _check_codec(codec)
    types = _resolve_types(event_types)
    if events_per_type < 0:
        raise ValueError(f"events_per_type must be >= 0, got {events_per_type}")
    if files_per_type < 1 or max_events_per_file < 1:
        raise ValueError("files_per_type and max_events_per_file must be >= 1")
    if not 0 <= duplicate_rate < 1:
        raise ValueError(f"duplicate_rate must be in [0, 1), got {duplicate_rate}")
    run_rng = random.Random(f"{seed}:run")
    run = _Run(
        out_dir=Path(out_dir).absolute(),
        prefix=prefix,
        integration=f"dataexport.{CLUSTER}.{CONNECTION}.integration.{_hex24(run_rng)}",
        schema_id=run_rng.randrange(100, 1000),
        users=_user_pool(seed),
        codec=codec,
        seed=seed,
        start_hour=_floor_hour(start_hour),
        files_per_type=files_per_type,
        max_events_per_file=max_events_per_file,
        duplicate_rate=duplicate_rate,
    )
    written: list[FixtureFile] = []
    for event_type in types:
        written.extend(_write_type(run, event_type, events_per_type))
    return written
