"""Rate limiting: token buckets in virtual time, the two-key limiter, and the
middleware over a real aiohttp server."""

from __future__ import annotations

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from signaling.auth import AuthConfig, Authenticator, auth_middleware
from signaling.ratelimit import RateLimiter, TokenBucket, parse_rate, rate_limit_middleware


class FakeClock:
    def __init__(self, t: float = 1000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def test_burst_then_refill():
    b = TokenBucket(rate_per_s=2.0, burst=3)
    now = 50.0
    assert [b.take("k", now) for _ in range(3)] == [0.0, 0.0, 0.0]
    assert b.take("k", now) == pytest.approx(0.5)  # one token every 0.5 s
    assert b.take("k", now + 0.25) == pytest.approx(0.25)  # refusals take nothing
    assert b.take("k", now + 0.5) == 0.0
    assert b.take("k", now + 0.5) == pytest.approx(0.5)
    # a long idle period refills only up to the burst
    assert [b.take("k", now + 100) for _ in range(3)] == [0.0, 0.0, 0.0]
    assert b.take("k", now + 100) > 0


def test_cost_and_wait_time_without_taking():
    b = TokenBucket(1.0, 4)
    assert b.wait_time("k", 0.0, cost=4) == 0.0
    assert b.take("k", 0.0, cost=3) == 0.0
    assert b.wait_time("k", 0.0, cost=2) == pytest.approx(1.0)
    assert b.wait_time("k", 0.0, cost=2) == pytest.approx(1.0)  # peeking twice changes nothing
    with pytest.raises(ValueError, match="exceeds the burst"):
        b.take("k", 0.0, cost=5)


def test_time_going_backwards_does_not_mint_tokens():
    b = TokenBucket(1.0, 1)
    assert b.take("k", 10.0) == 0.0
    assert b.take("k", 5.0) > 0


@pytest.mark.parametrize("rate,burst", [(0, 1), (-1, 1), (1, 0), (1, 1.5)])
def test_bad_parameters(rate, burst):
    with pytest.raises(ValueError):
        TokenBucket(rate, burst)


def test_eviction_keeps_memory_bounded_and_forgets_least_recently_used():
    b = TokenBucket(1.0, 1, max_keys=100)
    for i in range(1000):
        assert b.take(f"ip-{i}", 0.0) == 0.0
    assert len(b) == 100
    # the most recent keys are still remembered (empty), the oldest forgotten (full)
    assert b.take("ip-999", 0.0) > 0
    assert b.take("ip-0", 0.0) == 0.0
    assert len(b) == 100


def test_recently_used_key_survives_eviction():
    b = TokenBucket(1.0, 1, max_keys=3)
    b.take("a", 0.0)
    b.take("b", 0.0)
    b.take("c", 0.0)
    b.take("a", 1.0)  # touch a: b is now the least recently used
    b.take("d", 1.0)
    assert b.take("a", 1.0) > 0  # still empty: remembered
    assert b.take("b", 1.0) == 0.0  # forgotten, so full


def test_identity_and_ip_limits_are_independent_and_a_refusal_takes_from_neither():
    clock = FakeClock()
    lim = RateLimiter(per_identity=(1.0, 2), per_ip=(1.0, 3), clock=clock)
    assert lim.check("alice", "10.0.0.1") == 0.0
    assert lim.check("alice", "10.0.0.1") == 0.0
    # alice is out of tokens; the IP still has one, which the refusal must not take
    assert lim.check("alice", "10.0.0.1") == pytest.approx(1.0)
    assert lim.check("bob", "10.0.0.1") == 0.0  # the IP's last token
    # the IP is now empty: bob (with tokens left) is refused by it, and keeps his tokens
    assert lim.check("bob", "10.0.0.1") == pytest.approx(1.0)
    assert lim.check("bob", "10.0.0.2") == 0.0  # same user from elsewhere: his second token
    assert lim.check("bob", "10.0.0.2") == pytest.approx(1.0)  # bob's own limit, whatever the address
    assert lim.check("carol", "10.0.0.3") == 0.0
    clock.t += 1.0
    assert lim.check("alice", "10.0.0.1") == 0.0


def test_anonymous_requests_count_against_the_ip_only():
    lim = RateLimiter(per_identity=(1.0, 1), per_ip=(1.0, 2), clock=FakeClock())
    assert lim.check(None, "1.2.3.4") == 0.0
    assert lim.check(None, "1.2.3.4") == 0.0
    assert lim.check(None, "1.2.3.4") > 0


def test_a_kind_of_limit_can_be_disabled():
    lim = RateLimiter(per_identity=None, per_ip=(1.0, 1), clock=FakeClock())
    assert lim.check("a", "ip") == 0.0
    assert lim.check("b", "ip") > 0
    lim = RateLimiter(per_identity=(1.0, 1), per_ip=None, clock=FakeClock())
    assert lim.check("a", "ip") == 0.0
    assert lim.check("b", "ip") == 0.0
    assert lim.check("a", "other") > 0


@pytest.mark.parametrize("spec,expected", [
    ("10/s", (10.0, 10)), ("10/s:30", (10.0, 30)), ("120/m", (2.0, 2)), ("30/min:5", (0.5, 5)),
    ("0.5/s", (0.5, 1)), (" 2 / s : 4 ", (2.0, 4)),
])
def test_parse_rate(spec, expected):
    assert parse_rate(spec) == expected


@pytest.mark.parametrize("spec", ["", "10", "ten/s", "10/h", "0/s", "10/s:0", "10/s:x"])
def test_parse_rate_refuses_with_an_example(spec):
    with pytest.raises(ValueError, match="rate limit"):
        parse_rate(spec)


async def hello(request: web.Request) -> web.Response:
    return web.json_response({"ok": True})


async def test_middleware_returns_429_with_retry_after_over_real_http():
    clock = FakeClock()
    auth = Authenticator(AuthConfig.from_options(dev=True))
    limited = []
    lim = RateLimiter(per_identity=(0.4, 2), per_ip=(100.0, 100), clock=clock)
    app = web.Application(middlewares=[
        auth_middleware(auth),
        rate_limit_middleware(lim, on_limited=lambda request, wait: limited.append(wait)),
    ])
    app.router.add_get("/api/hello", hello)
    app.router.add_get("/healthz", hello)
    client = TestClient(TestServer(app, host="127.0.0.1"))
    await client.start_server()
    try:
        alice = {"Authorization": f"Bearer {auth.mint('alice')}"}
        bob = {"Authorization": f"Bearer {auth.mint('bob')}"}
        for _ in range(2):
            assert (await client.get("/api/hello", headers=alice)).status == 200
        resp = await client.get("/api/hello", headers=alice)
        assert resp.status == 429
        assert resp.headers["Retry-After"] == "3"  # 2.5 s rounded up
        body = await resp.json()
        assert body["error"].startswith("rate limit exceeded") and "retry in 3 s" in body["error"]
        assert limited == [pytest.approx(2.5)]
        # another identity from the same address is not affected
        assert (await client.get("/api/hello", headers=bob)).status == 200
        # paths the limiter does not apply to are never limited
        for _ in range(5):
            assert (await client.get("/healthz")).status == 200
        clock.t += 0.1
        resp = await client.get("/api/hello", headers=alice)
        assert resp.headers["Retry-After"] == "3"  # 2.4 s -> 3
        clock.t += 2.4
        assert (await client.get("/api/hello", headers=alice)).status == 200
    finally:
        await client.close()


async def test_middleware_limits_per_ip_and_retry_after_is_at_least_one():
    clock = FakeClock()
    lim = RateLimiter(per_identity=None, per_ip=(50.0, 1), clock=clock)
    app = web.Application(middlewares=[rate_limit_middleware(lim, applies=lambda path: True)])
    app.router.add_get("/x", hello)
    client = TestClient(TestServer(app, host="127.0.0.1"))
    await client.start_server()
    try:
        assert (await client.get("/x")).status == 200
        resp = await client.get("/x")
        assert resp.status == 429 and resp.headers["Retry-After"] == "1"  # 0.02 s -> 1
    finally:
        await client.close()
