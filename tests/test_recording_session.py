"""RecordingSession (sfu.recording.session) on a live router: a real aiortc
publisher over WHIP (VP8 + Opus), recorded through a plain transport toward
the session's own socket; ffprobe reads the file and ffmpeg decodes it."""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess

import pytest

pytest.importorskip("aiortc")
from aiohttp.test_utils import TestClient, TestServer  # noqa: E402
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription  # noqa: E402
from aiortc.mediastreams import AudioStreamTrack, VideoStreamTrack  # noqa: E402

from aiortc_peer import pin_loopback  # noqa: E402
from sfu.recording import RecordingError  # noqa: E402
from sfu.recording.session import RecordingSession  # noqa: E402
from signaling.server import ROOMS, create_app, start_rooms  # noqa: E402

pytestmark = pytest.mark.skipif(shutil.which("ffprobe") is None, reason="ffprobe not installed (Debian's ffmpeg)")


@pytest.fixture(autouse=True)
def loopback_only(monkeypatch):
    pin_loopback(monkeypatch)


@pytest.fixture
async def client():
    rooms = await start_rooms(workers=1)
    c = TestClient(TestServer(create_app(rooms), host="127.0.0.1"))
    await c.start_server()
    try:
        yield c
    finally:
        await c.close()
        await rooms.close()


def ffprobe(path) -> dict:
    out = subprocess.run(["ffprobe", "-v", "error", "-count_frames", "-show_entries",
                          "stream=codec_name,codec_type,nb_read_frames:format=duration", "-of", "json", str(path)],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


async def test_an_aiortc_publisher_is_recorded_into_a_webm_that_plays(client, tmp_path):
    publisher = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    publisher.addTransceiver(AudioStreamTrack(), direction="sendonly")
    publisher.addTransceiver(VideoStreamTrack(), direction="sendonly")
    try:
        await publisher.setLocalDescription(await publisher.createOffer())
        resp = await client.post("/whip/rec", data=publisher.localDescription.sdp,
                                 headers={"Content-Type": "application/sdp"})
        assert resp.status == 201, await resp.text()
        await publisher.setRemoteDescription(RTCSessionDescription(sdp=await resp.text(), type="answer"))
        room = client.server.app[ROOMS].rooms["rec"]
        producers = [pr for p in room.participants.values() for pr in p.producers.values()]
        for _ in range(200):  # both producers exist once the offer is taken; wait for media
            if len(producers) == 2:
                break
            await asyncio.sleep(0.05)
        assert sorted(p.kind for p in producers) == ["audio", "video"]
        session = await RecordingSession.start(room.router, producers, tmp_path / "rec.webm")
        await asyncio.sleep(4.0)
        live = session.info()
        assert live.packets_received > 50 and live.frames_written > 0, live
        info = await session.stop()
        assert info.error is None and info.packets_dropped == 0, info
        assert not session.running
        probe = ffprobe(tmp_path / "rec.webm")
        kinds = {s["codec_type"]: s for s in probe["streams"]}
        assert kinds["video"]["codec_name"] == "vp8" and kinds["audio"]["codec_name"] == "opus"
        duration = float(probe["format"]["duration"])
        frames = int(kinds["video"]["nb_read_frames"])
        print(f"\nrecorded {duration:.2f} s, {frames} video frames, {info.frames_written} frames written, "
              f"{info.frames_dropped} dropped, {info.packets_received} packets")
        assert 2.5 <= duration <= 6.0, (probe, info)
        assert frames >= 45, (probe, info)  # aiortc sends 30 fps; the recording starts at a keyframe
        decode = subprocess.run(["ffmpeg", "-v", "error", "-i", str(tmp_path / "rec.webm"), "-f", "null", "-"],
                                capture_output=True, text=True, timeout=60)
        assert decode.returncode == 0 and not decode.stderr.strip(), decode.stderr[-2000:]
        # the consumers and the transport are gone from the router
        assert all(t.closed for t in [session._transport]) and all(c.closed for c in session._consumers)
    finally:
        await publisher.close()


async def test_a_codec_the_container_cannot_hold_is_refused_before_anything_is_made(client, tmp_path):
    publisher = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    publisher.addTransceiver(AudioStreamTrack(), direction="sendonly")
    try:
        await publisher.setLocalDescription(await publisher.createOffer())
        resp = await client.post("/whip/rec2", data=publisher.localDescription.sdp,
                                 headers={"Content-Type": "application/sdp"})
        assert resp.status == 201
        room = client.server.app[ROOMS].rooms["rec2"]
        producers = [pr for p in room.participants.values() for pr in p.producers.values()]
        transports_before = len(room.router.transports)
        with pytest.raises(RecordingError, match="container"):
            await RecordingSession.start(room.router, producers, tmp_path / "x.avi", container="avi")
        with pytest.raises(RecordingError, match="nothing to record"):
            await RecordingSession.start(room.router, [], tmp_path / "y.webm")
        assert len(room.router.transports) == transports_before  # nothing left behind
    finally:
        await publisher.close()
