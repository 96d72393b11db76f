"""Prometheus metrics: scraped over real HTTP from an app with a real worker,
a room and plain-RTP media, parsed with prometheus-client's own parser."""

from __future__ import annotations

import asyncio

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from prometheus_client.parser import text_string_to_metric_families

from conftest import build_rtp
from sfu._fastpath._engine import COUNTER_NAMES
from signaling.metrics import ENGINE_COUNTERS, METRICS, Metrics, metrics_handler, metrics_middleware
from signaling.server import start_rooms

OPUS = {"mimeType": "audio/opus", "payloadType": 111, "clockRate": 48000, "channels": 2}


def parse(text: str) -> dict[str, list]:
    """metric family name -> samples."""
    return {f.name: f.samples for f in text_string_to_metric_families(text)}


def value(families: dict, sample_name: str, **labels) -> float:
    for samples in families.values():
        for s in samples:
            if s.name == sample_name and all(s.labels.get(k) == v for k, v in labels.items()):
                return s.value
    raise AssertionError(f"no sample {sample_name} {labels}")


async def serve(metrics: Metrics, routes=()) -> TestClient:
    app = web.Application(middlewares=[metrics_middleware(metrics)])
    app[METRICS] = metrics
    app.router.add_get("/metrics", metrics_handler)
    for method, path, handler in routes:
        app.router.add_route(method, path, handler)
    client = TestClient(TestServer(app, host="127.0.0.1"))
    await client.start_server()
    return client


async def scrape(client: TestClient) -> dict:
    resp = await client.get("/metrics")
    assert resp.status == 200
    assert resp.headers["Content-Type"].startswith("text/plain")
    return parse(await resp.text())


def test_each_metrics_object_has_its_own_registry():
    a, b = Metrics(), Metrics()  # the same names twice: no clash on a shared registry
    a.auth_failures.inc()
    assert a.registry is not b.registry
    assert a.registry.get_sample_value("sfu_auth_failures_total") == 1
    assert b.registry.get_sample_value("sfu_auth_failures_total") == 0


def test_every_engine_counter_is_exported():
    exported = {name for _, _, _, mapping in ENGINE_COUNTERS for name in mapping}
    assert set(COUNTER_NAMES) <= exported, set(COUNTER_NAMES) - exported


async def test_unbound_metrics_report_zero_media():
    m = Metrics()
    client = await serve(m)
    try:
        fams = await scrape(client)
        assert value(fams, "sfu_workers") == 0
        assert value(fams, "sfu_rooms") == 0
        assert value(fams, "sfu_producers", kind="video") == 0
    finally:
        await client.close()


async def test_mode_switch_histogram_and_call_gauges():
    m = Metrics()
    m.observe_mode_switch("sfu", 0.3)
    m.observe_mode_switch("p2p", 0.07)
    m.mode_switches.labels(to_mode="sfu").inc()
    m.calls_active.set(2)
    m.participants_active.set(5)
    m.rate_limited.inc(3)
    client = await serve(m)
    try:
        fams = await scrape(client)
    finally:
        await client.close()
    assert value(fams, "sfu_call_mode_switches_total", to_mode="sfu") == 2
    assert value(fams, "sfu_call_mode_switches_total", to_mode="p2p") == 1
    assert value(fams, "sfu_call_mode_switch_seconds_count") == 2
    assert value(fams, "sfu_call_mode_switch_seconds_sum") == pytest.approx(0.37)
    assert value(fams, "sfu_call_mode_switch_seconds_bucket", le="0.05") == 0
    assert value(fams, "sfu_call_mode_switch_seconds_bucket", le="0.1") == 1
    assert value(fams, "sfu_call_mode_switch_seconds_bucket", le="0.5") == 2
    assert value(fams, "sfu_call_mode_switch_seconds_bucket", le="5.0") == 2
    assert value(fams, "sfu_calls_active") == 2
    assert value(fams, "sfu_participants_active") == 5
    assert value(fams, "sfu_rate_limited_requests_total") == 3


async def test_http_latency_is_labelled_by_route_pattern_not_raw_path():
    m = Metrics()

    async def leave(request: web.Request) -> web.Response:
        return web.json_response({"left": request.match_info["callId"]})

    async def boom(request: web.Request) -> web.Response:
        raise web.HTTPForbidden(text="no")

    client = await serve(m, [("POST", "/api/calls/{callId}/leave", leave), ("GET", "/api/forbidden", boom)])
    try:
        for call_id in ("a", "b", "c"):
            assert (await client.post(f"/api/calls/{call_id}/leave")).status == 200
        assert (await client.get("/api/forbidden")).status == 403
        assert (await client.get("/no/such/path/42")).status == 404
        fams = await scrape(client)
    finally:
        await client.close()
    route = "/api/calls/{callId}/leave"
    assert value(fams, "sfu_http_request_seconds_count", method="POST", route=route, status="200") == 3
    assert value(fams, "sfu_http_request_seconds_count", method="GET", route="/api/forbidden", status="403") == 1
    assert value(fams, "sfu_http_request_seconds_count", method="GET", route="unmatched", status="404") == 1
    routes = {s.labels.get("route") for s in fams["sfu_http_request_seconds"]}
    assert not any("/a/" in r or "42" in r for r in routes if r)


async def test_media_metrics_from_a_real_worker_room_and_rtp(peers):
    rooms = await start_rooms(workers=1)
    m = Metrics()
    m.bind_rooms(rooms)
    client = await serve(m)
    try:
        room, _ = await rooms.create_room("r1")
        send = await room.router.create_plain_transport(listen_ip="127.0.0.1", comedia=True)
        producer = await send.produce("audio", {"codecs": [OPUS], "encodings": [{"ssrc": 4242}]})
        viewer = peers()
        recv = await room.router.create_plain_transport(listen_ip="127.0.0.1")
        await recv.connect(ip="127.0.0.1", port=viewer.port)
        await recv.consume(producer.id, room.router.rtp_capabilities)

        publisher = peers()
        port = send.tuple["localPort"]
        sent = [seq for seq in range(100, 130) if seq not in (110, 111)]  # two packets lost on the way
        for seq in sent:
            publisher.send(build_rtp(111, seq, seq * 960, 4242, b"opus" * 20), port)
            await asyncio.sleep(0.001)
        await viewer.wait_for(len(sent))
        assert viewer.count() == len(sent)

        fams = await scrape(client)
        pid = str(rooms.workers[0].pid)
        assert value(fams, "sfu_workers") == 1
        assert value(fams, "sfu_workers_alive") == 1
        assert value(fams, "sfu_rooms") == 1
        assert value(fams, "sfu_routers") == 1
        assert value(fams, "sfu_transports") == 2
        assert value(fams, "sfu_producers", kind="audio") == 1
        assert value(fams, "sfu_producers", kind="video") == 0
        assert value(fams, "sfu_consumers", kind="audio") == 1
        assert value(fams, "sfu_received_packets_total", worker=pid, kind="rtp") == len(sent)
        assert value(fams, "sfu_received_bytes_total", worker=pid) >= len(sent) * 92
        assert value(fams, "sfu_sent_datagrams_total", worker=pid) >= len(sent)
        assert value(fams, "sfu_sent_bytes_total", worker=pid) >= len(sent) * 92
        for name, labels in (("sfu_nack_packets_total", {"direction": "sent"}),
                             ("sfu_pli_packets_total", {"direction": "received"}),
                             ("sfu_retransmissions_total", {}),
                             ("sfu_dropped_datagrams_total", {"reason": "unknown_ssrc"})):
            assert value(fams, name, worker=pid, **labels) >= 0
        assert value(fams, "sfu_producer_packets_received") == len(sent)
        assert value(fams, "sfu_producer_packets_lost") == 2

        # a datagram for an SSRC nobody produces is counted as a drop by reason
        publisher.send(build_rtp(111, 1, 1, 999, b"x" * 10), port)
        for _ in range(100):
            fams = await scrape(client)
            if value(fams, "sfu_dropped_datagrams_total", worker=pid, reason="unknown_ssrc") >= 1:
                break
            await asyncio.sleep(0.02)
        assert value(fams, "sfu_dropped_datagrams_total", worker=pid, reason="unknown_ssrc") == 1

        # closing the room's router: objects go, the counters stay
        room.router.close()
        fams = await scrape(client)
        assert value(fams, "sfu_rooms") == 0
        assert value(fams, "sfu_transports") == 0
        assert value(fams, "sfu_producers", kind="audio") == 0
        assert value(fams, "sfu_received_packets_total", worker=pid, kind="rtp") == len(sent) + 1

        # a worker that is gone: reported as not alive, its series disappear
        rooms.workers[0].close()
        await rooms.workers[0].wait_closed()
        fams = await scrape(client)
        assert value(fams, "sfu_workers") == 1
        assert value(fams, "sfu_workers_alive") == 0
        assert not fams["sfu_received_packets"]
    finally:
        await client.close()
        await rooms.close()
