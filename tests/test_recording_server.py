"""Recording through the server (signaling/recording.py): REST routes with
JWT room grants (roomRecord), the proctoring option that records each
candidate when it publishes, events, metrics. Real aiortc publishers over
WHIP; ffprobe reads the downloaded files."""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import time

import jwt
import pytest

pytest.importorskip("aiortc")
from aiohttp.test_utils import TestClient, TestServer  # noqa: E402
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription  # noqa: E402
from aiortc.mediastreams import AudioStreamTrack, VideoStreamTrack  # noqa: E402

from aiortc_peer import pin_loopback  # noqa: E402
from signaling.auth import AuthConfig, Authenticator  # noqa: E402
from signaling.metrics import Metrics  # noqa: E402
from signaling.recording import RECORDINGS  # noqa: E402
from signaling.server import create_app, start_rooms  # noqa: E402

pytestmark = pytest.mark.skipif(shutil.which("ffprobe") is None, reason="ffprobe not installed (Debian's ffmpeg)")
SECRET = "recording-server-test-secret-0123456789abcdef"


def token(user: str, **claims) -> str:
    now = int(time.time())
    return jwt.encode({"sub": user, "iat": now, "exp": now + 600, **claims}, SECRET, algorithm="HS256")


def bearer(tok: str) -> dict:
    return {"Authorization": f"Bearer {tok}"}


@pytest.fixture(autouse=True)
def loopback_only(monkeypatch):
    pin_loopback(monkeypatch)


async def serve(tmp_path, **kw) -> tuple[TestClient, object]:
    rooms = await start_rooms(workers=1)
    app = create_app(rooms, auth=Authenticator(AuthConfig.from_options(secret=SECRET)), metrics=Metrics(),
                     recordings_dir=str(tmp_path / "rec"), **kw)
    client = TestClient(TestServer(app, host="127.0.0.1"))
    await client.start_server()
    return client, rooms


async def publish(client: TestClient, url: str, tok: str) -> tuple[RTCPeerConnection, str, str]:
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    pc.addTransceiver(AudioStreamTrack(), direction="sendonly")
    pc.addTransceiver(VideoStreamTrack(), direction="sendonly")
    await pc.setLocalDescription(await pc.createOffer())
    resp = await client.post(url, data=pc.localDescription.sdp,
                             headers={"Content-Type": "application/sdp", **bearer(tok)})
    assert resp.status == 201, await resp.text()
    await pc.setRemoteDescription(RTCSessionDescription(sdp=await resp.text(), type="answer"))
    return pc, resp.headers["Location"], resp.headers["X-Sfu-Participant-Id"]


def probe(data: bytes, tmp_path) -> dict:
    f = tmp_path / "downloaded.webm"
    f.write_bytes(data)
    out = subprocess.run(["ffprobe", "-v", "error", "-count_frames", "-show_entries",
                          "stream=codec_type,codec_name,nb_read_frames:format=duration", "-of", "json", str(f)],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


async def test_start_list_stop_and_download_a_recording_with_room_grants(tmp_path):
    client, rooms = await serve(tmp_path)
    publisher_tok = token("pub", video={"rooms": ["exam"], "canPublish": True})
    recorder_tok = token("rec", video={"rooms": ["exam"], "canPublish": False, "roomRecord": True})
    viewer_tok = token("viewer", video={"rooms": ["exam"], "canPublish": False})
    other_room_tok = token("other", video={"rooms": ["elsewhere"], "roomRecord": True})
    pc = None
    try:
        pc, _, pid = await publish(client, "/whip/exam", publisher_tok)
        await asyncio.sleep(0.5)
        base = "/api/rooms/exam/recordings"
        # who may record: the grant must allow the room and recording
        resp = await client.post(base, json={"participantId": pid}, headers=bearer(viewer_tok))
        assert resp.status == 403 and "roomRecord" in (await resp.json())["error"]
        resp = await client.get(base, headers=bearer(other_room_tok))
        assert resp.status == 403 and "exam" in (await resp.json())["error"]
        # bad requests name the problem, nothing is started
        resp = await client.post(base, json={"participantId": "nobody"}, headers=bearer(recorder_tok))
        assert resp.status == 404 and "nobody" in (await resp.json())["error"]
        resp = await client.post(base, json={"participantId": pid, "container": "avi"}, headers=bearer(recorder_tok))
        assert resp.status == 400 and "container" in (await resp.json())["error"]
        resp = await client.post(base, data="{not json", headers={**bearer(recorder_tok),
                                                                     "Content-Type": "application/json"})
        assert resp.status == 400 and "JSON" in (await resp.json())["error"]
        assert client.server.app[RECORDINGS].recordings == {}

        resp = await client.post(base, json={"participantId": pid}, headers=bearer(recorder_tok))
        assert resp.status == 201, await resp.text()
        (rec,) = (await resp.json())["recordings"]
        assert rec["participantId"] == pid and rec["state"] == "recording"
        meta = json.loads(next((tmp_path / "rec").rglob("*.json")).read_text())  # kept beside the file
        assert (meta["recordingId"], meta["state"]) == (rec["recordingId"], "recording"), meta
        resp = await client.post(base, json={"participantId": pid}, headers=bearer(recorder_tok))
        assert resp.status == 409  # once at a time
        resp = await client.get(f"{base}/{rec['recordingId']}/file", headers=bearer(recorder_tok))
        assert resp.status == 409 and "still running" in (await resp.json())["error"]
        metrics = await (await client.get("/metrics")).text()
        assert "sfu_recordings_active 1.0" in metrics
        await asyncio.sleep(3.0)
        listed = (await (await client.get(base, headers=bearer(recorder_tok))).json())["recordings"]
        assert [r["recordingId"] for r in listed] == [rec["recordingId"]] and listed[0]["framesWritten"] > 0

        resp = await client.post(f"{base}/{rec['recordingId']}/stop", headers=bearer(recorder_tok))
        stopped = (await resp.json())["recording"]
        assert resp.status == 200 and stopped["state"] == "stopped" and stopped["error"] is None, stopped
        resp = await client.get(f"{base}/{rec['recordingId']}/file", headers=bearer(recorder_tok))
        assert resp.status == 200 and resp.content_type == "video/webm"
        info = probe(await resp.read(), tmp_path)
        kinds = {s["codec_type"]: s for s in info["streams"]}
        assert kinds["video"]["codec_name"] == "vp8" and int(kinds["video"]["nb_read_frames"]) > 40, info
        assert 2.0 < float(info["format"]["duration"]) < 5.0, info
        resp = await client.get(f"{base}/nope/file", headers=bearer(recorder_tok))
        assert resp.status == 404
        metrics = await (await client.get("/metrics")).text()
        assert "sfu_recordings_active 0.0" in metrics
        assert "sfu_recording_bytes_total " in metrics and "sfu_recording_bytes_total 0.0" not in metrics
    finally:
        if pc is not None:
            await pc.close()
        await client.close()
        await rooms.close()


async def test_proctoring_records_each_candidate_and_only_proctors_get_the_files(tmp_path):
    client, rooms = await serve(tmp_path, record_publishers=True)
    proctor, candidate = token("proctor"), token("candidate")
    pc = None
    try:
        resp = await client.post("/api/calls", json={"roles": True}, headers=bearer(proctor))
        call_id = (await resp.json())["callId"]
        resp = await client.post(f"/api/calls/{call_id}/participants", json={"role": "subscriber"},
                                 headers=bearer(proctor))
        assert resp.status == 201, await resp.text()
        resp = await client.post(f"/api/calls/{call_id}/participants", json={"role": "publisher"},
                                 headers=bearer(candidate))
        cand_id = (await resp.json())["participantId"]
        pc, _, _ = await publish(client, f"/whip/{call_id}?as={cand_id}", candidate)
        base = f"/api/rooms/{call_id}/recordings"
        recs: list = []
        for _ in range(100):  # started by itself once the candidate publishes
            recs = (await (await client.get(base, headers=bearer(proctor))).json())["recordings"]
            if recs:
                break
            await asyncio.sleep(0.1)
        assert len(recs) == 1 and recs[0]["automatic"] and recs[0]["participantId"] == cand_id, recs
        resp = await client.get(base, headers=bearer(candidate))  # candidates do not see recordings
        assert resp.status == 403 and "proctor" in (await resp.json())["error"]
        await asyncio.sleep(2.5)
        # the candidate leaves: its recording stops by itself and the file is complete
        resp = await client.post(f"/api/calls/{call_id}/leave", json={}, headers=bearer(candidate))
        assert resp.status == 200
        for _ in range(100):
            recs = (await (await client.get(base, headers=bearer(proctor))).json())["recordings"]
            if recs[0]["state"] == "stopped":
                break
            await asyncio.sleep(0.1)
        assert recs[0]["state"] == "stopped" and recs[0]["framesWritten"] > 0, recs
        resp = await client.get(f"{base}/{recs[0]['recordingId']}/file", headers=bearer(proctor))
        assert resp.status == 200
        data = await resp.read()
        info = probe(data, tmp_path)
        assert {s["codec_type"] for s in info["streams"]} == {"audio", "video"}, info
        await pc.close()
        pc = None
        # the server restarts: the call is gone, its recordings are still listed,
        # for the proctor only, and the file is still served
        await client.close()
        await rooms.close()
        client, rooms = await serve(tmp_path, record_publishers=True)
        listed = (await (await client.get(base, headers=bearer(proctor))).json())["recordings"]
        assert [(r["recordingId"], r["state"], r["framesWritten"]) for r in listed] == \
            [(recs[0]["recordingId"], "stopped", recs[0]["framesWritten"])], listed
        resp = await client.get(base, headers=bearer(candidate))
        assert resp.status == 403 and "proctors" in (await resp.json())["error"]
        resp = await client.get(f"{base}/{recs[0]['recordingId']}/file", headers=bearer(token("stranger")))
        assert resp.status == 403
        resp = await client.get(f"{base}/{recs[0]['recordingId']}/file", headers=bearer(proctor))
        assert resp.status == 200 and await resp.read() == data
    finally:
        if pc is not None:
            await pc.close()
        await client.close()
        await rooms.close()


async def test_a_recording_the_server_did_not_stop_is_listed_as_interrupted(tmp_path):
    """A description left in the 'recording' state (the server was killed)
    is listed as interrupted and its file served; a malformed or escaping
    description is skipped, never served."""
    rec_dir = tmp_path / "rec" / "room1"
    rec_dir.mkdir(parents=True)
    (rec_dir / "a.webm").write_bytes(b"partial webm")
    (rec_dir / "a.webm.json").write_text(json.dumps({
        "recordingId": "r1", "roomId": "room1", "participantId": "p1", "container": "webm", "file": "a.webm",
        "state": "recording", "startedAt": 1.0, "stoppedAt": None, "automatic": False,
        "path": "room1/a.webm", "callUsers": None}))
    (rec_dir / "b.webm.json").write_text("{not json")
    (rec_dir / "c.webm.json").write_text(json.dumps({
        "recordingId": "r2", "roomId": "room1", "participantId": "p1", "path": "../../etc/passwd"}))
    client, rooms = await serve(tmp_path)
    tok = token("rec", video={"rooms": ["room1"], "roomRecord": True})
    try:
        listed = (await (await client.get("/api/rooms/room1/recordings", headers=bearer(tok))).json())["recordings"]
        assert [(r["recordingId"], r["state"]) for r in listed] == [("r1", "interrupted")], listed
        resp = await client.get("/api/rooms/room1/recordings/r1/file", headers=bearer(tok))
        assert resp.status == 200 and await resp.read() == b"partial webm"
        resp = await client.post("/api/rooms/room1/recordings/r1/stop", headers=bearer(tok))
        assert resp.status == 200 and (await resp.json())["recording"]["state"] == "interrupted"
        resp = await client.get("/api/rooms/room1/recordings/r2/file", headers=bearer(tok))
        assert resp.status == 404
    finally:
        await client.close()
        await rooms.close()
