"""Deterministic, realistic demo data: an online shop's users, profiles and events.

Same ``(users, events, seed, end)`` -> the same rows, byte for byte, whatever ``batch_rows``:
each day of the ~6-month span is generated from its own generator seeded with
``(seed, day)``, then the days are cut into batches. The span ends at ``end``
(``end_time``: midnight UTC starting today unless given), so windowed queries over the
demo ("ordered in the last 30 days") keep matching as time passes; benchmarks pass a
fixed ``end`` so their figures stay comparable.

Shape of the data (all vectorized with numpy + polars; 10M events in seconds):

* Users sign up over the 18 months before the span's end (growth: more recently);
  about 40 % of the signups fall inside the span and emit a ``signup`` event.
* Activity is skewed: each user has a Zipf weight (1/rank), so a few users produce
  most sessions. Only signed-up users are active. Daily volume grows over the span,
  dips on weekends and peaks in the evening (UTC).
* A session is a funnel: page_viewed+ -> product_viewed+ -> added_to_cart ->
  checkout_started -> order_placed, stopping at a random depth (about 9 % of sessions
  order). Some sessions start from a campaign email (email_opened, sometimes
  email_clicked, then browsing). The cart and order carry the last viewed product.
* Properties: page ``path``/``referrer``; ``product_id``, ``category``, ``price``;
  cart ``quantity``; checkout and order ``items`` (int), ``total`` (float), ``currency``
  (from the user's country), order ``payment``; email ``campaign``/``url``; signup
  ``method``/``plan``. Every distinct properties text is built once (``_World.vocabulary``)
  and rows pick theirs by index, which keeps generation vectorized.
* Profiles: email, first_name, country, timezone, plan (free/pro/enterprise),
  signup_date.
"""
from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from functools import cached_property

import numpy as np
import polars as pl
import pyarrow as pa

from common.time import naive_utc, utc_now

SPAN_DAYS = 182
DAY_US = 86_400_000_000
EVENT_TYPES = ("email_opened", "email_clicked", "page_viewed", "product_viewed", "added_to_cart",
               "checkout_started", "order_placed", "signup")
_EMAIL_OPENED, _EMAIL_CLICKED, _PAGE, _PRODUCT, _CART, _CHECKOUT, _ORDER, _SIGNUP = range(8)
# Funnel depth of a shopping session: browse only, view products, cart, checkout, order.
_DEPTH_P = (0.35, 0.38, 0.13, 0.05, 0.09)
_EMAIL_SESSION_P = 0.12
_EMAIL_CLICK_P = 0.35
_MEAN_SESSION_ROWS = 4.0

COUNTRIES = ("US", "GB", "DE", "FR", "CA", "AU", "IN", "BR", "ES", "NL", "JP", "MX")
_COUNTRY_P = (0.38, 0.10, 0.09, 0.07, 0.06, 0.04, 0.07, 0.05, 0.04, 0.03, 0.04, 0.03)
_CURRENCY = ("USD", "GBP", "EUR", "EUR", "CAD", "AUD", "INR", "BRL", "EUR", "EUR", "JPY", "MXN")
_TIMEZONES = ("America/New_York", "Europe/London", "Europe/Berlin", "Europe/Paris", "America/Toronto",
              "Australia/Sydney", "Asia/Kolkata", "America/Sao_Paulo", "Europe/Madrid", "Europe/Amsterdam",
              "Asia/Tokyo", "America/Mexico_City")
_US_TIMEZONES = ("America/New_York", "America/Chicago", "America/Denver", "America/Los_Angeles")
PLANS = ("free", "pro", "enterprise")
_PLAN_P = (0.72, 0.23, 0.05)
FIRST_NAMES = ("Ana", "Ben", "Chloe", "David", "Emma", "Farid", "Grace", "Hiro", "Isla", "Jonas", "Kira",
               "Liam", "Maya", "Noah", "Olivia", "Pedro", "Quinn", "Rosa", "Sam", "Tara", "Umar", "Vera",
               "Wei", "Xenia", "Yusuf", "Zoe", "Lucas", "Mia", "Arjun", "Sofia", "Mateo", "Lena")
LAST_NAMES = ("smith", "garcia", "muller", "martin", "tanaka", "silva", "brown", "rossi", "kumar",
              "dubois", "jensen", "novak", "kim", "lopez", "wilson", "costa")
CATEGORIES = ("shoes", "apparel", "electronics", "home", "beauty", "sports", "books", "toys")
PATHS = ("/", "/products", "/pricing", "/blog", "/cart", "/account", "/search", "/sale", "/about",
         "/help", "/blog/spring-lookbook", "/blog/gift-guide", *(f"/category/{c}" for c in CATEGORIES))
REFERRERS = ("direct", "google", "instagram", "newsletter", "facebook", "bing", "tiktok")
CAMPAIGNS = ("welcome", "spring_sale", "new_arrivals", "abandoned_cart", "weekly_digest", "vip_offer")
SIGNUP_METHODS = ("email", "google", "apple")
PAYMENTS = ("card", "paypal", "apple_pay")
N_PRODUCTS = 600
_MAX_QUANTITY = 5

EVENT_COLUMNS = ("event_id", "user_id", "event_type", "occurred_at", "received_at", "properties")


def end_time(end: date | datetime | None = None) -> datetime:
    """The end of the span (naive UTC): ``end`` (a date: its midnight), by default today's midnight (UTC)."""
    if end is None:
        end = utc_now().date()
    if isinstance(end, datetime):
        return naive_utc(end)
    return datetime.combine(end, time())


def _zipf_cdf(n: int, exponent: float, rng: np.random.Generator) -> np.ndarray:
    """Cumulative weights of n items with weight 1/rank**exponent, ranks shuffled."""
    weights = 1.0 / np.arange(1, n + 1, dtype=np.float64) ** exponent
    rng.shuffle(weights)
    return np.cumsum(weights)


@dataclass
class _World:
    """Everything fixed across days: users (sorted by signup) and the product catalog."""

    users: int
    seed: int
    end: datetime  # naive UTC

    @cached_property
    def end_us(self) -> int:
        return int((self.end - datetime(1970, 1, 1)) / timedelta(microseconds=1))

    @cached_property
    def start_us(self) -> int:
        return self.end_us - SPAN_DAYS * DAY_US

    @cached_property
    def user_arrays(self) -> dict[str, np.ndarray]:
        rng = np.random.default_rng([self.seed, 0])
        n = self.users
        # Signups over the 18 months before the end, denser recently (growth).
        back = (1.0 - rng.random(n) ** 0.75) * (3 * SPAN_DAYS * DAY_US)
        signup = (self.end_us - back).astype(np.int64)
        weights = 1.0 / np.arange(1, n + 1, dtype=np.float64)
        rng.shuffle(weights)
        country = rng.choice(len(COUNTRIES), size=n, p=_COUNTRY_P)
        return {
            "signup": signup, "weight": weights, "country": country,
            "plan": rng.choice(len(PLANS), size=n, p=_PLAN_P),
            "first": rng.integers(0, len(FIRST_NAMES), n), "last": rng.integers(0, len(LAST_NAMES), n),
            "us_tz": rng.integers(0, len(_US_TIMEZONES), n),
            "method": rng.choice(len(SIGNUP_METHODS), size=n, p=(0.6, 0.3, 0.1)),
        }

    @cached_property
    def by_signup(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(user index order, signup times, cumulative weights) sorted by signup."""
        arrays = self.user_arrays
        order = np.argsort(arrays["signup"], kind="stable")
        return order, arrays["signup"][order], np.cumsum(arrays["weight"][order])

    @cached_property
    def catalog(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(cumulative popularity, category index, price) per product."""
        rng = np.random.default_rng([self.seed, 2])
        cdf = _zipf_cdf(N_PRODUCTS, 1.05, rng)
        category = rng.integers(0, len(CATEGORIES), N_PRODUCTS)
        price = np.round(np.exp(rng.normal(3.4, 0.8, N_PRODUCTS)) + 0.99, 2)
        return cdf, category, price

    @cached_property
    def user_ids(self) -> pa.Array:
        return pl.select(pl.format("user-{}", pl.int_range(0, self.users))).to_series().to_arrow().cast(pa.string())

    @cached_property
    def vocabulary(self) -> tuple[pa.Array, dict[int, int]]:
        """Every distinct properties JSON text, and where each event kind's section starts;
        rows pick theirs by index (``_day_rows``), so no JSON is formatted per row."""
        _, category, price = self.catalog
        products = [f'"product_id":"p-{i:04d}","category":"{CATEGORIES[category[i]]}","price":{float(price[i])}'
                    for i in range(N_PRODUCTS)]
        priced = [(q + 1, round(float(price[i]) * (q + 1), 2), currency)
                  for i in range(N_PRODUCTS) for q in range(_MAX_QUANTITY) for currency in _CURRENCY]
        sections = {
            _PAGE: [f'{{"path":"{p}","referrer":"{r}"}}' for p in PATHS for r in REFERRERS],
            _PRODUCT: [f"{{{p}}}" for p in products],
            _CART: [f'{{{p},"quantity":{q + 1}}}' for p in products for q in range(_MAX_QUANTITY)],
            _CHECKOUT: [f'{{"items":{n},"total":{t},"currency":"{c}"}}' for n, t, c in priced],
            _ORDER: [f'{{"items":{n},"total":{t},"currency":"{c}","payment":"{pay}"}}'
                     for n, t, c in priced for pay in PAYMENTS],
            _EMAIL_OPENED: [f'{{"campaign":"{c}"}}' for c in CAMPAIGNS],
            _EMAIL_CLICKED: [f'{{"campaign":"{c}","url":"/products?utm_campaign={c}"}}' for c in CAMPAIGNS],
            _SIGNUP: [f'{{"method":"{m}","plan":"{p}"}}' for m in SIGNUP_METHODS for p in PLANS],
        }
        base, texts = {}, []
        for kind, strings in sections.items():
            base[kind] = len(texts)
            texts.extend(strings)
        return pa.array(texts, pa.string()), base

    @cached_property
    def product_sampler(self) -> np.ndarray:
        return _sampler(self.catalog[0])

    def day_counts(self, events: int) -> np.ndarray:
        """Events per day summing exactly to ``events``: growth, weekly dip."""
        days = np.arange(SPAN_DAYS)
        weekday = (self.start_us // DAY_US + days + 3) % 7  # 1970-01-01 was a Thursday
        weights = (1.0 + days / SPAN_DAYS) * np.where(weekday >= 5, 0.8, 1.0)
        exact = events * weights / weights.sum()
        counts = np.floor(exact).astype(np.int64)
        remainder = events - counts.sum()
        counts[np.argsort(-(exact - counts), kind="stable")[:remainder]] += 1
        return counts


def _pick(cdf: np.ndarray, count: int, rng: np.random.Generator, limit: int | None = None) -> np.ndarray:
    """Indexes drawn with the weights whose prefix sums are ``cdf`` (first ``limit`` only)."""
    limit = len(cdf) if limit is None else limit
    draws = rng.random(count) * cdf[limit - 1]
    return np.minimum(np.searchsorted(cdf, draws, side="right"), limit - 1)


_TABLE_BITS = 16


def _sampler(cdf: np.ndarray) -> np.ndarray:
    """Inverse-CDF lookup table: ``table[rng.integers(0, len(table), n)]`` draws indexes
    with the weights behind ``cdf`` (to 1/65536 resolution), without a binary search per draw."""
    points = (np.arange(1 << _TABLE_BITS) + 0.5) / (1 << _TABLE_BITS) * cdf[-1]
    return np.searchsorted(cdf, points, side="right").astype(np.int64)


def _sessions(rng: np.random.Generator, count: int) -> dict[str, np.ndarray]:
    email = rng.random(count) < _EMAIL_SESSION_P
    clicked = email & (rng.random(count) < _EMAIL_CLICK_P)
    shopping = ~email | clicked
    depth = np.where(shopping, rng.choice(len(_DEPTH_P), size=count, p=_DEPTH_P), -1)
    parts = np.stack([
        email.astype(np.int64), clicked.astype(np.int64),
        np.where(shopping, rng.geometric(0.5, count), 0),          # page views
        np.where(depth >= 1, rng.geometric(0.6, count), 0),        # product views
        (depth >= 2).astype(np.int64), (depth >= 3).astype(np.int64), (depth >= 4).astype(np.int64),
    ], axis=1)
    return {"parts": parts, "length": parts.sum(axis=1)}


def _day_rows(world: _World, day: int, count: int) -> dict[str, np.ndarray]:
    """Events of one day (``count`` rows) as arrays: kind, user, occurred, received, props."""
    rng = np.random.default_rng([world.seed, 1, day])
    order, signup_sorted, user_cdf = world.by_signup
    arrays = world.user_arrays
    day_start = world.start_us + day * DAY_US
    lo, hi = np.searchsorted(signup_sorted, [day_start, day_start + DAY_US])
    signups = int(min(hi - lo, count))
    rest = count - signups

    # Sessions until the day's volume is reached; the last one is cut short.
    n_sessions = int(rest / _MEAN_SESSION_ROWS * 1.3) + 8
    while True:
        sessions = _sessions(rng, n_sessions)
        ends = np.cumsum(sessions["length"])
        if rest == 0 or ends[-1] >= rest:
            break
        n_sessions *= 2
    used = int(np.searchsorted(ends, rest)) + 1 if rest else 0
    length = sessions["length"][:used].copy()
    if used:
        length[-1] -= ends[used - 1] - rest
    bounds = np.cumsum(sessions["parts"][:used], axis=1)  # end of each funnel step within a session
    session = np.repeat(np.arange(used), length)
    first = np.cumsum(length) - length
    pos = np.arange(rest) - np.repeat(first, length)
    kind = (pos[:, None] >= bounds[session]).sum(axis=1)

    s_user = order[_pick(user_cdf, used, rng, max(int(hi), 1))]
    hour = rng.choice(24, size=used, p=_HOUR_P)
    s_start = day_start + hour * 3_600_000_000 + rng.integers(0, 3_600_000_000, used)
    s_start = np.maximum(s_start, arrays["signup"][s_user] + 60_000_000)
    gaps = rng.exponential(40e6, rest).astype(np.int64) + 2_000_000
    gaps[pos == 0] = 0
    offsets = np.cumsum(gaps)
    offsets -= np.repeat(offsets[first], length)

    # The cart, checkout and order carry the session's focus product, also its last view.
    products = world.product_sampler
    focus = products[rng.integers(0, len(products), used)][session]
    product = products[rng.integers(0, len(products), rest)]
    last_view = (kind == _PRODUCT) & (pos == bounds[session, _PRODUCT] - 1)
    product = np.where(last_view | (kind >= _CART), focus, product)
    quantity = np.minimum(rng.geometric(0.65, used), _MAX_QUANTITY)[session] - 1
    campaign = rng.integers(0, len(CAMPAIGNS), used)[session]
    page = _PATH_SAMPLER[rng.integers(0, len(_PATH_SAMPLER), rest)] * len(REFERRERS) + rng.integers(0, len(REFERRERS), rest)
    payment = rng.integers(0, len(PAYMENTS), used)[session]
    user = s_user[session]
    priced = (product * _MAX_QUANTITY + quantity) * len(_CURRENCY) + arrays["country"][user]
    base = world.vocabulary[1]
    code = np.select(
        [kind == _PAGE, kind == _PRODUCT, kind == _CART, kind == _CHECKOUT, kind == _ORDER,
         kind == _EMAIL_OPENED],
        [base[_PAGE] + page, base[_PRODUCT] + product, base[_CART] + product * _MAX_QUANTITY + quantity,
         base[_CHECKOUT] + priced, base[_ORDER] + priced * len(PAYMENTS) + payment,
         base[_EMAIL_OPENED] + campaign],
        base[_EMAIL_CLICKED] + campaign)
    new_users = order[lo:lo + signups]
    signup_code = (base[_SIGNUP] + arrays["method"][new_users] * len(PLANS) + arrays["plan"][new_users])
    occurred = np.concatenate([signup_sorted[lo:lo + signups], s_start[session] + offsets])
    lag = np.where(rng.random(count) < 0.03, rng.integers(0, 6 * 3_600_000_000, count),
                   rng.exponential(400_000, count).astype(np.int64))
    return {
        "kind": np.concatenate([np.full(signups, _SIGNUP), kind]),
        "user": np.concatenate([new_users, user]),
        "occurred": occurred,
        "received": occurred + lag,
        "props": np.concatenate([signup_code, code]),
    }


_HOUR_P = np.array([2, 1.5, 1, 1, 1, 1.5, 2.5, 4, 5, 5.5, 6, 6, 6.5, 6, 5.5, 5.5, 6, 6.5, 7.5, 8.5, 8.5, 7, 5, 3.5])
_HOUR_P = _HOUR_P / _HOUR_P.sum()
_PATH_SAMPLER = _sampler(np.cumsum(1.0 / np.arange(1, len(PATHS) + 1)))
_TS = pa.timestamp("us")
_DIGITS4 = np.array([list(f"{i:04d}".encode()) for i in range(10_000)], dtype=np.uint8)


def _event_ids(seed: int, first_row: int, count: int) -> pa.Array:
    """``evt-<seed>-<12-digit row>`` built as fixed-width bytes (no per-row Python)."""
    prefix = f"evt-{seed}-".encode()
    width = len(prefix) + 12
    data = np.empty((count, width), dtype=np.uint8)
    data[:, :len(prefix)] = np.frombuffer(prefix, dtype=np.uint8)
    rows = np.arange(first_row, first_row + count, dtype=np.int64)
    for end in (width, width - 4, width - 8):
        data[:, end - 4:end] = _DIGITS4[rows % 10_000]
        rows //= 10_000
    offsets = np.arange(0, (count + 1) * width, width, dtype=np.int64)
    return pa.Array.from_buffers(pa.large_string(), count, [None, pa.py_buffer(offsets), pa.py_buffer(data)]
                                 ).cast(pa.string())


def _to_table(world: _World, rows: dict[str, np.ndarray], first_row: int) -> pa.Table:
    count = len(rows["kind"])
    return pa.Table.from_arrays([
        _event_ids(world.seed, first_row, count),
        world.user_ids.take(rows["user"]),
        _EVENT_TYPE_ARRAY.take(rows["kind"]),
        pa.array(rows["occurred"]).cast(_TS),
        pa.array(rows["received"]).cast(_TS),
        world.vocabulary[0].take(rows["props"]),
    ], names=list(EVENT_COLUMNS))


_EVENT_TYPE_ARRAY = pa.array(EVENT_TYPES, pa.string())


def event_batches(users: int, events: int, seed: int, batch_rows: int = 1_000_000,
                  end: date | datetime | None = None) -> Iterator[pa.Table]:
    """The demo events as tables of ``batch_rows`` rows (the last may be shorter), in day
    order; columns event_id, user_id, event_type, occurred_at, received_at, properties."""
    if users < 1 or events < 0 or batch_rows < 1:
        raise ValueError("users must be >= 1, events >= 0, batch_rows >= 1")
    world = _World(users, seed, end_time(end))
    pending: list[dict[str, np.ndarray]] = []
    pending_rows = first_row = 0
    counts = world.day_counts(events)
    for day, count in enumerate(counts):
        if count:
            pending.append(_day_rows(world, day, int(count)))
            pending_rows += int(count)
        last = day == len(counts) - 1
        while pending_rows >= batch_rows or (last and pending_rows):
            rows = {k: np.concatenate([p[k] for p in pending]) for k in pending[0]}
            take = min(batch_rows, pending_rows)
            yield _to_table(world, {k: v[:take] for k, v in rows.items()}, first_row)
            first_row += take
            pending_rows -= take
            pending = [{k: v[take:] for k, v in rows.items()}] if pending_rows else []


def profile_table(users: int, seed: int, end: date | datetime | None = None) -> pa.Table:
    """One row per user: user_id, traits (JSON object text), updated_at (signup time)."""
    world = _World(users, seed, end_time(end))
    arrays = world.user_arrays
    country = arrays["country"]
    timezone = np.where(country == 0, np.array(_US_TIMEZONES)[arrays["us_tz"]], np.array(_TIMEZONES)[country])
    frame = pl.DataFrame({
        "user": np.arange(users), "signup": arrays["signup"], "first": arrays["first"], "last": arrays["last"],
        "country": country, "plan": arrays["plan"], "timezone": timezone,
    })
    first = _lookup(FIRST_NAMES, "first")
    traits = pl.format(
        '{{"email":"{}.{}{}@example.com","first_name":"{}","country":"{}","timezone":"{}","plan":"{}",'
        '"signup_date":"{}"}}',
        first.str.to_lowercase(), _lookup(LAST_NAMES, "last"), pl.col("user"), first, _lookup(COUNTRIES, "country"),
        pl.col("timezone"), _lookup(PLANS, "plan"), pl.col("signup").cast(pl.Datetime("us")).dt.strftime("%Y-%m-%d"))
    out = frame.select(traits.alias("traits"), pl.col("signup").cast(pl.Datetime("us")).alias("updated_at"))
    return pa.table({"user_id": world.user_ids, "traits": out["traits"].to_arrow().cast(pa.string()),
                     "updated_at": out["updated_at"].to_arrow().cast(_TS)})


def _lookup(values: tuple[str, ...], column: str) -> pl.Expr:
    return pl.lit(pl.Series(values, dtype=pl.String)).gather(pl.col(column))


@dataclass(frozen=True)
class DemoResult:
    tenant_id: int
    users: int
    events: int      # written
    duplicates: int  # skipped: already in the lake (a second run writes none)
    end: datetime


def generate(target, tenant_id: int, users: int, events: int, seed: int, *, end: date | datetime | None = None,
             batch_rows: int = 1_000_000, progress: Callable[[int], None] | None = None) -> DemoResult:
    """Write the demo dataset through the lake: profiles, then events in batches, deduplicated
    like any bulk load (``engine.ingest.bulk.ingest_tables``), so running it twice writes no
    event twice. ``target`` is a Runtime (its lake) or an EventLake; ``progress`` gets rows done."""
    from engine.ingest.bulk import ingest_tables

    lake = getattr(target, "lake", target)
    end = end_time(end)
    lake.upsert_profiles(tenant_id, profile_table(users, seed, end))
    result = ingest_tables(lake, tenant_id, event_batches(users, events, seed, batch_rows, end), progress=progress)
    return DemoResult(tenant_id, users, result.written, result.duplicates, end)
