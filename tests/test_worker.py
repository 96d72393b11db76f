"""Worker lifecycle: the subprocess, its channel, death, and close cascades."""

from __future__ import annotations

import asyncio
import os
import signal

import pytest

import sfu
from conftest import MEDIA_CODECS

OPUS = {"mimeType": "audio/opus", "payloadType": 111, "clockRate": 48000, "channels": 2}


async def test_worker_is_a_separate_process(worker):
    assert worker.pid != os.getpid()
    dump = await worker.dump()
    assert dump["pid"] == worker.pid
    usage = await worker.get_resource_usage()
    assert usage["ru_maxrss"] > 0


async def test_killed_worker_emits_died_fails_pending_and_later_calls_and_can_be_replaced():
    worker = await sfu.create_worker()
    router = await worker.create_router(MEDIA_CODECS)
    transport = await router.create_plain_transport(listen_ip="127.0.0.1")
    died = asyncio.get_running_loop().create_future()
    worker.on("died", lambda err: died.set_result(err))
    router_events = []
    router.on("workerclose", lambda: router_events.append("workerclose"))
    transport_events = []
    transport.on("routerclose", lambda: transport_events.append("routerclose"))

    # A request in flight when the process dies must fail, not hang.
    os.kill(worker.pid, signal.SIGSTOP)
    pending = asyncio.ensure_future(transport.get_stats())
    await asyncio.sleep(0.05)
    os.kill(worker.pid, signal.SIGKILL)
    err = await asyncio.wait_for(died, 5)
    assert isinstance(err, sfu.WorkerDiedError)
    assert "SIGKILL" in str(err)
    with pytest.raises(sfu.WorkerDiedError):
        await asyncio.wait_for(pending, 5)
    assert worker.died and worker.closed
    assert router.closed and transport.closed
    assert router_events == ["workerclose"] and transport_events == ["routerclose"]
    with pytest.raises(sfu.WorkerDiedError):
        await worker.create_router(MEDIA_CODECS)
    with pytest.raises(sfu.InvalidStateError):
        await router.create_plain_transport(listen_ip="127.0.0.1")

    replacement = await sfu.create_worker()
    try:
        r2 = await replacement.create_router(MEDIA_CODECS)
        t2 = await r2.create_plain_transport(listen_ip="127.0.0.1")
        assert (await t2.get_stats())[0]["rtpPacketsReceived"] == 0
    finally:
        replacement.close()
        await replacement.wait_closed()


async def test_worker_exit_with_code_is_reported():
    worker = await sfu.create_worker()
    died = asyncio.get_running_loop().create_future()
    worker.on("died", lambda err: died.set_result(err))
    os.kill(worker.pid, signal.SIGTERM)
    err = await asyncio.wait_for(died, 5)
    assert isinstance(err, sfu.WorkerDiedError)


async def test_close_worker_is_not_a_death():
    worker = await sfu.create_worker()
    deaths = []
    worker.on("died", deaths.append)
    router = await worker.create_router(MEDIA_CODECS)
    worker.close()
    await asyncio.wait_for(worker.wait_closed(), 5)
    assert deaths == [] and router.closed
    with pytest.raises(sfu.InvalidStateError, match="closed"):
        await worker.create_router(MEDIA_CODECS)


async def test_create_worker_validates_arguments():
    with pytest.raises(sfu.InvalidParametersError, match="log_level"):
        await sfu.create_worker(log_level="loud")
    with pytest.raises(sfu.InvalidParametersError, match="together"):
        await sfu.create_worker(rtc_min_port=40000)


async def test_worker_port_range_is_used():
    worker = await sfu.create_worker(rtc_min_port=47100, rtc_max_port=47110)
    try:
        router = await worker.create_router(MEDIA_CODECS)
        ports = set()
        for _ in range(5):
            t = await router.create_plain_transport(listen_ip="127.0.0.1")
            ports.add(t.tuple["localPort"])
        assert all(47100 <= p <= 47110 for p in ports) and len(ports) == 5
    finally:
        worker.close()
        await worker.wait_closed()


async def test_router_close_cascades_with_events(worker, router):
    t = await router.create_plain_transport(listen_ip="127.0.0.1")
    t2 = await router.create_plain_transport(listen_ip="127.0.0.1")
    p = await t.produce("audio", {"codecs": [OPUS], "encodings": [{"ssrc": 11}]})
    c = await t2.consume(p.id, router.rtp_capabilities)
    events = []
    t.on("routerclose", lambda: events.append("t.routerclose"))
    p.on("transportclose", lambda: events.append("p.transportclose"))
    c.on("transportclose", lambda: events.append("c.close"))
    c.on("producerclose", lambda: events.append("c.close"))
    router.close()
    assert router.closed and t.closed and t2.closed and p.closed and c.closed
    # Each object hears about its closure exactly once (the consumer through
    # whichever of its producer or transport closed first).
    assert sorted(events) == ["c.close", "p.transportclose", "t.routerclose"]
    dump = await worker.dump()
    assert dump["routerIds"] == [] and dump["transportIds"] == [] and dump["consumerIds"] == []


async def test_producer_close_closes_its_consumers_in_parent_and_worker(worker, router):
    t = await router.create_plain_transport(listen_ip="127.0.0.1")
    t2 = await router.create_plain_transport(listen_ip="127.0.0.1")
    p = await t.produce("audio", {"codecs": [OPUS], "encodings": [{"ssrc": 12}]})
    c1 = await t2.consume(p.id, router.rtp_capabilities)
    c2 = await t2.consume(p.id, router.rtp_capabilities)
    closed = []
    c1.on("producerclose", lambda: closed.append(1))
    c2.on("producerclose", lambda: closed.append(2))
    p.close()
    assert closed == [1, 2] and c1.closed and c2.closed
    assert t2.consumers == [] and router.get_producer(p.id) is None
    dump = await worker.dump()
    assert dump["producerIds"] == [] and dump["consumerIds"] == []
    with pytest.raises(sfu.InvalidStateError):
        await c1.get_stats()


async def test_transport_close_closes_what_it_produced_and_consumed(worker, router):
    t = await router.create_plain_transport(listen_ip="127.0.0.1")
    t2 = await router.create_plain_transport(listen_ip="127.0.0.1")
    p = await t.produce("audio", {"codecs": [OPUS], "encodings": [{"ssrc": 13}]})
    c = await t2.consume(p.id, router.rtp_capabilities)
    back = await t.consume(p.id, router.rtp_capabilities)
    events = []
    p.on("transportclose", lambda: events.append("p"))
    back.on("transportclose", lambda: events.append("back"))
    c.on("producerclose", lambda: events.append("c.producerclose"))
    t.close()
    assert sorted(events) == ["back", "c.producerclose", "p"]
    assert t2.consumers == []
    dump = await worker.dump()
    assert dump["transportIds"] == [t2.id] and dump["consumerIds"] == [] and dump["producerIds"] == []


async def test_bad_parameters_raise_errors_naming_the_field(router):
    t = await router.create_plain_transport(listen_ip="127.0.0.1")
    with pytest.raises(sfu.InvalidParametersError, match="kind"):
        await t.produce("data", {"codecs": [OPUS], "encodings": [{"ssrc": 1}]})
    with pytest.raises(sfu.InvalidParametersError, match=r"encodings\[0\]\.ssrc"):
        await t.produce("audio", {"codecs": [OPUS], "encodings": [{}]})
    with pytest.raises(sfu.InvalidParametersError, match=r"codecs\[0\]\.clockRate"):
        await t.produce("audio", {"codecs": [{"mimeType": "audio/opus", "payloadType": 111}],
                                  "encodings": [{"ssrc": 1}]})
    with pytest.raises(sfu.UnsupportedError, match="(?i)g722|codec"):
        await t.produce("audio", {"codecs": [{"mimeType": "audio/G722", "payloadType": 9, "clockRate": 8000}],
                                  "encodings": [{"ssrc": 1}]})
    with pytest.raises(sfu.InvalidParametersError, match="not a video codec|is not a"):
        await t.produce("video", {"codecs": [OPUS], "encodings": [{"ssrc": 1}]})
    p = await t.produce("audio", {"codecs": [OPUS], "encodings": [{"ssrc": 1}]})
    with pytest.raises(sfu.InvalidParametersError, match="SSRC|ssrc|could not add producer"):
        # Same SSRC twice on one transport cannot be routed.
        await t.produce("audio", {"codecs": [OPUS], "encodings": [{"ssrc": 1}]})
    video_only = {"codecs": [{"kind": "video", "mimeType": "video/VP8", "clockRate": 90000,
                              "preferredPayloadType": 96}], "headerExtensions": []}
    assert not router.can_consume(p.id, video_only)
    with pytest.raises(sfu.UnsupportedError, match="cannot consume"):
        await t.consume(p.id, video_only)
    with pytest.raises(sfu.InvalidParametersError, match="ip"):
        await t.connect(port=1234)
    with pytest.raises(sfu.InvalidParametersError, match="port"):
        await t.connect(ip="127.0.0.1", port=70000)
    with pytest.raises(sfu.InvalidParametersError, match="invalid address|127.0.0.300"):
        await t.connect(ip="127.0.0.300", port=1000)
    # The transport still works after all of that.
    assert (await t.get_stats())[0]["rtpPacketsReceived"] == 0


async def test_port_already_in_use_is_a_clear_error(router):
    t = await router.create_plain_transport(listen_ip="127.0.0.1")
    with pytest.raises(sfu.InvalidParametersError, match=f"cannot bind UDP 127.0.0.1:{t.tuple['localPort']}"):
        await router.create_plain_transport(listen_ip="127.0.0.1", port=t.tuple["localPort"])


async def test_unsupported_router_codec_is_rejected(worker):
    with pytest.raises(sfu.UnsupportedError):
        await worker.create_router([{"kind": "audio", "mimeType": "audio/G722", "clockRate": 8000}])


async def test_feedback_options_are_validated():
    with pytest.raises(sfu.InvalidParametersError, match="keyframe_request_interval_ms"):
        await sfu.create_worker(keyframe_request_interval_ms=-1)
    with pytest.raises(sfu.InvalidParametersError, match="remb_floor_bps"):
        await sfu.create_worker(remb_floor_bps=-5)
    w = await sfu.create_worker(keyframe_request_interval_ms=250, remb_floor_bps=100_000)
    try:
        assert (await w.dump())["pid"] == w.pid
    finally:
        w.close()
        await w.wait_closed()


async def test_channel_methods_come_from_a_table_and_ids_are_checked_by_kind(worker, router):
    """Unknown methods (also private helpers reachable by name before) and ids
    of the wrong kind are refused with a message; the worker keeps serving."""
    with pytest.raises(sfu.InvalidParametersError, match="unknown method 'worker.close_transport'"):
        await worker._request("worker.close_transport", None, {"transportId": "x"})
    with pytest.raises(sfu.InvalidParametersError, match="unknown method 'transport._close_transport'"):
        await worker._request("transport._close_transport", "x", {})
    with pytest.raises(sfu.errors.ChannelError, match=f"transport {router.id} not found"):
        await worker._request("transport.getStats", router.id, {})  # a router id where a transport's goes
    assert (await worker.dump())["routerIds"] == [router.id]
