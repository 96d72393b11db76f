"""Rate limiting of the REST API: token buckets per identity and per IP.

:class:`TokenBucket` is sans-IO (time is an argument) and bounded in memory:
it keeps at most ``max_keys`` buckets and evicts the least recently used
ones, which are the ones most likely to be full anyway (a full bucket and a
forgotten one behave the same).

:class:`RateLimiter` combines two bucket sets: a request passes only when both
the identity's and the IP's buckets allow it, and a request refused by one
takes nothing from the other. :func:`rate_limit_middleware` answers refused
requests with ``429 {"error": ...}`` and an integer ``Retry-After``; it must
run after the auth middleware so ``request["identity"]`` is known.
"""

from __future__ import annotations

import logging
import math
import re
import time
from collections import OrderedDict
from typing import Any, Awaitable, Callable, Optional

from aiohttp import web

logger = logging.getLogger("sfu.signaling.ratelimit")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
Rate = tuple[float, int]


class TokenBucket:
    """Token buckets keyed by string: each refills at ``rate_per_s`` up to
    ``burst`` tokens; at most ``max_keys`` are kept (LRU eviction)."""

    def __init__(self, rate_per_s: float, burst: int, max_keys: int = 10000) -> None:
        if not rate_per_s > 0:
            raise ValueError(f"rate must be > 0 requests per second, got {rate_per_s!r}")
        if int(burst) != burst or burst < 1:
            raise ValueError(f"burst must be an integer >= 1, got {burst!r}")
        if max_keys < 1:
            raise ValueError(f"max_keys must be >= 1, got {max_keys!r}")
        self.rate_per_s = float(rate_per_s)
        self.burst = int(burst)
        self.max_keys = max_keys
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()  # key -> (tokens, at)

    def __len__(self) -> int:
        return len(self._buckets)

    def _tokens(self, key: str, now: float) -> float:
        state = self._buckets.get(key)
        if state is None:
            return float(self.burst)
        tokens, at = state
        return min(float(self.burst), tokens + max(0.0, now - at) * self.rate_per_s)

    def wait_time(self, key: str, now: float, cost: float = 1.0) -> float:
        """Seconds until ``cost`` tokens are available (0.0: now), without
        taking any."""
        if cost > self.burst:
            raise ValueError(f"cost {cost} exceeds the burst {self.burst}: it could never be allowed")
        missing = cost - self._tokens(key, now)
        return 0.0 if missing <= 1e-9 else missing / self.rate_per_s

    def take(self, key: str, now: float, cost: float = 1.0) -> float:
        """Takes ``cost`` tokens if available and returns 0.0; otherwise takes
        nothing and returns the seconds until they will be."""
        wait = self.wait_time(key, now, cost)
        if wait > 0.0:
            return wait
        tokens = self._tokens(key, now) - cost
        self._buckets[key] = (tokens, now)
        self._buckets.move_to_end(key)
        while len(self._buckets) > self.max_keys:
            self._buckets.popitem(last=False)
        return 0.0


class RateLimiter:
    """Per-identity and per-IP limits (each ``(rate_per_s, burst)``, or None
    for no limit of that kind)."""

    def __init__(
        self,
        per_identity: Optional[Rate] = (5.0, 20),
        per_ip: Optional[Rate] = (20.0, 60),
        clock: Callable[[], float] = time.monotonic,
        max_keys: int = 10000,
    ) -> None:
        self.identities = TokenBucket(*per_identity, max_keys=max_keys) if per_identity else None
        self.ips = TokenBucket(*per_ip, max_keys=max_keys) if per_ip else None
        self.clock = clock

    def check(self, identity: Optional[str], ip: Optional[str], cost: float = 1.0) -> float:
        """0.0 when the request may go ahead (tokens are taken from both
        buckets), else the seconds to wait (nothing is taken)."""
        now = self.clock()
        checks = []
        if self.identities is not None and identity:
            checks.append((self.identities, identity))
        if self.ips is not None and ip:
            checks.append((self.ips, ip))
        wait = max((bucket.wait_time(key, now, cost) for bucket, key in checks), default=0.0)
        if wait > 0.0:
            return wait
        for bucket, key in checks:
            bucket.take(key, now, cost)
        return 0.0


def parse_rate(spec: str) -> Rate:
    """``"10/s"``, ``"120/m"``, ``"10/s:30"`` (30: burst; default: one
    second's worth, at least 1) -> ``(rate_per_s, burst)``."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*/\s*(s|sec|second|m|min|minute)\s*(?::\s*(\d+)\s*)?", spec or "")
    if m is None:
        raise ValueError(f"rate limit {spec!r}: expected RATE/s or RATE/m with an optional :BURST, e.g. '10/s:30'")
    rate = float(m.group(1)) / (60.0 if m.group(2).startswith("m") else 1.0)
    if rate <= 0:
        raise ValueError(f"rate limit {spec!r}: the rate must be > 0")
    burst = int(m.group(3)) if m.group(3) else max(1, math.ceil(rate))
    if burst < 1:
        raise ValueError(f"rate limit {spec!r}: the burst must be >= 1")
    return rate, burst


def _identity_key(request: web.Request) -> Optional[str]:
    identity = request.get("identity")
    if identity is None:
        return None
    return getattr(identity, "user_id", None) or str(identity)


def rate_limit_middleware(
    limiter: RateLimiter,
    applies: Callable[[str], bool] = lambda path: path.startswith("/api/"),
    on_limited: Optional[Callable[[web.Request, float], None]] = None,
    exempt: Callable[[web.Request], bool] = lambda request: False,
) -> Any:
    """aiohttp middleware: requests whose path ``applies`` pass the limiter
    (identity from ``request["identity"]``, so it goes after the auth
    middleware; IP from ``request.remote``) or get ``429`` with
    ``Retry-After`` (whole seconds, at least 1). ``on_limited`` (e.g. a
    metrics counter) is called for each refusal. Requests that are
    ``exempt`` pass uncounted (in a cluster: those another node forwarded,
    counted there against the client's own user and address)."""

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        if not applies(request.path) or exempt(request):
            return await handler(request)
        identity = _identity_key(request)
        wait = limiter.check(identity, request.remote)
        if wait > 0.0:
            retry = max(1, math.ceil(wait))
            logger.debug("rate limited %s %s for user %s at %s (retry in %.2f s)", request.method, request.path,
                         identity, request.remote, wait)
            if on_limited is not None:
                on_limited(request, wait)
            return web.json_response({"error": f"rate limit exceeded (limits apply per user and per IP address): "
                                               f"retry in {retry} s"},
                                     status=429, headers={"Retry-After": str(retry)})
        return await handler(request)

    return middleware
