"""Request limits: token buckets per client address and per key, and daily caps per key.

A bucket holds up to ``per_minute`` requests and refills at ``per_minute / 60`` a second, so a client
may burst up to its minute's allowance and then goes at the steady rate. Daily caps count requests per
key per UTC day; the counts are saved to the key table every few seconds and read back at start-up.
"""

from __future__ import annotations

import ipaddress
import logging
import math
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta

from api.state.keys import ApiKey, KeyRing

log = logging.getLogger("api.state.limits")
_MAX_BUCKETS = 100_000
_SAVE_EVERY_SECONDS = 5.0
Networks = Sequence[ipaddress.IPv4Network | ipaddress.IPv6Network]


@dataclass(frozen=True)
class Verdict:
    """The outcome of one limit for one request."""

    allowed: bool
    limit: int
    remaining: int
    reset_seconds: int
    """Seconds until the next request would be allowed (when refused) or the bucket is full again."""
    kind: str
    """Which limit: ``address``, ``key`` or ``daily``."""


@dataclass
class _Bucket:
    tokens: float
    stamp: float


class Buckets:
    """Token buckets by name, thread-safe; idle full buckets are forgotten."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._buckets: dict[str, _Bucket] = {}
        self._lock = threading.Lock()

    def take(self, name: str, per_minute: int, kind: str) -> Verdict:
        rate = per_minute / 60.0
        now = self._clock()
        with self._lock:
            bucket = self._buckets.get(name)
            if bucket is None:
                if len(self._buckets) >= _MAX_BUCKETS:
                    self._forget_full(now)
                bucket = self._buckets[name] = _Bucket(float(per_minute), now)
            bucket.tokens = min(float(per_minute), bucket.tokens + (now - bucket.stamp) * rate)
            bucket.stamp = now
            if bucket.tokens >= 1.0:
                bucket.tokens -= 1.0
                full_in = math.ceil((per_minute - bucket.tokens) / rate)
                return Verdict(True, per_minute, int(bucket.tokens), full_in, kind)
            wait = math.ceil((1.0 - bucket.tokens) / rate)
            return Verdict(False, per_minute, 0, max(wait, 1), kind)

    def _forget_full(self, now: float) -> None:
        for name in [n for n, b in self._buckets.items() if now - b.stamp > 3600]:
            del self._buckets[name]


class DailyCaps:
    """Requests per key per UTC day, persisted through the key ring by a background thread (a request
    never waits for a database write)."""

    def __init__(self, keys: KeyRing, today: Callable[[], date] = lambda: datetime.now(UTC).date()) -> None:
        self._keys = keys
        self._today = today
        self._day = today()
        self._used = keys.usage(self._day)
        self._dirty = False
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._saver = threading.Thread(target=self._save_periodically, name="daily-caps", daemon=True)
        self._saver.start()

    def take(self, key: ApiKey) -> Verdict | None:
        if key.per_day is None:
            return None
        with self._lock:
            self._roll()
            used = self._used.get(key.name, 0)
            if used >= key.per_day:
                midnight = datetime.combine(self._day + timedelta(days=1), datetime.min.time(), UTC)
                wait = math.ceil((midnight - datetime.now(UTC)).total_seconds())
                return Verdict(False, key.per_day, 0, max(wait, 1), "daily")
            self._used[key.name] = used + 1
            self._dirty = True
            remaining = key.per_day - used - 1
        return Verdict(True, key.per_day, remaining, 0, "daily")

    def save(self) -> None:
        """Write today's counts to the key table if they changed."""
        with self._lock:
            if not self._dirty:
                return
            day, used = self._day, dict(self._used)
            self._dirty = False
        self._keys.save_usage(day, used)

    def close(self) -> None:
        """Stop the saving thread and save once more."""
        self._stop.set()
        self._saver.join(timeout=60)
        self.save()

    def _save_periodically(self) -> None:
        while not self._stop.wait(_SAVE_EVERY_SECONDS):
            try:
                self.save()
            except Exception:
                log.exception("saving daily usage failed; retrying")

    def _roll(self) -> None:
        today = self._today()
        if today != self._day:
            self._day, self._used = today, {}


def client_address(
    peer: str | None,
    forwarded_for: str | None,
    trusted: Sequence[ipaddress.IPv4Network | ipaddress.IPv6Network],
) -> str:
    """The address a request came from: the peer, or, when the peer is a trusted proxy, the last address
    in ``X-Forwarded-For`` that is not itself a trusted proxy."""
    if not peer:
        return "unknown"
    if not trusted or not forwarded_for or not _is_trusted(peer, trusted):
        return peer
    for hop in reversed([h.strip() for h in forwarded_for.split(",") if h.strip()]):
        if not _is_trusted(hop, trusted):
            return hop
    return peer


def _is_trusted(address: str, trusted: Sequence[ipaddress.IPv4Network | ipaddress.IPv6Network]) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in network for network in trusted)


def parse_networks(values: Sequence[str]) -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
    """``["10.0.0.0/8", "127.0.0.1"]`` as networks; raises ValueError on a bad one."""
    return [ipaddress.ip_network(v.strip(), strict=False) for v in values if v.strip()]


@dataclass
class Doorkeeper:
    """The state the guard consults; created when the index has loaded."""

    keys: KeyRing
    daily: DailyCaps
    open_without_keys: bool
    """Whether the service answers without a key when none is configured (loopback or --insecure)."""
    per_address_per_minute: int
    """Requests a minute from one client address on limited routes; 0: no limit."""
    trusted_proxies: Networks = ()
    allowed_hosts: frozenset[str] = frozenset()
    """``Host`` names answered while open, beside the loopback ones (lowercase, no port)."""
    buckets: Buckets = field(default_factory=Buckets)
