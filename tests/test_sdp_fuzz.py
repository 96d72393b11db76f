"""Property tests of the WHIP/WHEP SDP path: no offer, however mangled, makes
anything but SdpError (a 400) escape, in-process and through the real aiohttp
app (never a 500).

The inputs are the real offers of tests/fixtures/sdp with lines dropped,
duplicated, swapped or rewritten, truncated, bytes flipped, random attributes
and random unicode or bytes injected. The in-suite run is a few thousand
examples; a bigger run by hand:

    SDP_FUZZ_EXAMPLES=50000 .venv/bin/python -m pytest tests/test_sdp_fuzz.py -q

(the count is per property test).
"""

from __future__ import annotations

import copy
import os
import random
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sfu import ortc
from sfu.errors import InvalidParametersError, UnsupportedError
from signaling.sdp import (
    SdpError,
    build_answer,
    offer_to_consumer_capabilities,
    offer_to_producer_parameters,
    parse_offer,
    whip_media_answers,
)

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "sdp"
OFFERS = {p.name: p.read_bytes() for p in sorted(FIXTURES.glob("*.sdp"))}
EXAMPLES = int(os.environ.get("SDP_FUZZ_EXAMPLES", "500"))
FUZZ = settings(max_examples=EXAMPLES, deadline=None, derandomize=not os.environ.get("SDP_FUZZ_EXAMPLES"),
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

MEDIA_CODECS = [
    {"kind": "audio", "mimeType": "audio/opus", "clockRate": 48000, "channels": 2},
    {"kind": "video", "mimeType": "video/VP8", "clockRate": 90000},
    {"kind": "video", "mimeType": "video/VP9", "clockRate": 90000},
    {"kind": "video", "mimeType": "video/H264", "clockRate": 90000,
     "parameters": {"packetization-mode": 1, "profile-level-id": "42e01f", "level-asymmetry-allowed": 1}},
]
ROUTER_CAPS = ortc.generate_router_rtp_capabilities(copy.deepcopy(MEDIA_CODECS))
TRANSPORT = {
    "ice_parameters": {"usernameFragment": "sfuufrag1234abcd", "password": "sfupassword0123456789abcd"},
    "ice_candidates": [{"foundation": "f", "priority": 1, "ip": "127.0.0.1", "port": 40000, "protocol": "udp"}],
    "dtls_parameters": {"role": "auto", "fingerprints": [{"algorithm": "sha-256", "value": "AB:" * 31 + "AB"}]},
}
# What the SFU-side ORTC layer may raise: the HTTP layer answers both with 400.
ORTC_4XX = (InvalidParametersError, UnsupportedError)


def _consumables() -> dict[str, dict]:
    """The router-side parameters of what Chromium publishes (the WHEP side consumes them)."""
    offer = parse_offer(OFFERS["chromium-156.0.8078.114-whip-sendonly.sdp"].decode())
    result = {}
    for section in offer.media:
        params = offer_to_producer_parameters(section, ROUTER_CAPS)
        ortc.validate_rtp_parameters(params)
        mapping = ortc.get_producer_rtp_parameters_mapping(params, ROUTER_CAPS, section.kind)
        result[section.kind] = ortc.get_consumable_rtp_parameters(section.kind, params, ROUTER_CAPS, mapping)
    return result


CONSUMABLE = _consumables()


def handle_offer(body: bytes) -> str:
    """What POST /whip and POST /whep do with a body, minus the I/O: decode,
    parse, map to producers (WHIP) and consumers (WHEP) through the same ORTC
    functions the transports call, answer. Returns "400" or "answered"."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        return "400"
    try:
        offer = parse_offer(text)
        # WHIP
        answers = whip_media_answers(offer, ROUTER_CAPS, [])
        for section, answer in zip(offer.media, answers):
            if answer is not None:
                try:
                    params = copy.deepcopy(answer["rtp_parameters"])
                    ortc.validate_rtp_parameters(params)
                    ortc.get_producer_rtp_parameters_mapping(params, ROUTER_CAPS, section.kind)
                except ORTC_4XX:
                    pass
        if any(answers):
            build_answer(offer, TRANSPORT, answers)
        # WHEP
        consumers = []
        for section in offer.media:
            consumer = None
            if not section.rejected and section.mid and section.kind in CONSUMABLE \
                    and section.direction in ("recvonly", "sendrecv"):
                caps = offer_to_consumer_capabilities(section)
                try:
                    caps = copy.deepcopy(caps)
                    ortc.validate_rtp_capabilities(caps)
                    if ortc.can_consume(CONSUMABLE[section.kind], caps):
                        params = ortc.get_consumer_rtp_parameters(CONSUMABLE[section.kind], caps, False, True)
                        consumer = {"direction": "sendonly", "rtp_parameters": params}
                except ORTC_4XX:
                    pass
            consumers.append(consumer)
        if any(consumers):
            build_answer(offer, TRANSPORT, consumers)
    except SdpError as exc:
        assert str(exc), "an SdpError must name the problem"
        return "400"
    return "answered"


# ---------------------------------------------------------------------------
# Mutations of the real offers.
# ---------------------------------------------------------------------------

ATTRIBUTES = [
    "mid", "msid", "msid-semantic", "ice-ufrag", "ice-pwd", "ice-options", "ice-lite", "fingerprint", "setup",
    "rtpmap", "fmtp", "rtcp-fb", "extmap", "extmap-allow-mixed", "ssrc", "ssrc-group", "rid", "simulcast",
    "group", "bundle-only", "rtcp-mux", "rtcp-rsize", "sendonly", "recvonly", "sendrecv", "inactive",
    "candidate", "end-of-candidates", "rtcp",
]
NUMBERS = st.sampled_from(["0", "1", "2", "96", "97", "111", "127", "128", "255", "256", "65535", "65536",
                           "4294967295", "4294967296", "-1", "+1", "1_0", " 1", "\u0661", "\u00b2", "",
                           "99999999999999999999999999"])
WORDS = st.one_of(NUMBERS, st.sampled_from(["FID", "SIM", "FEC-FR", "BUNDLE", "send", "recv", "apt=96", "*",
                                            "sha-256", "actpass", "passive", "VP8/90000", "opus/48000/2",
                                            "rtx/90000", "nack", "pli", "0 1", "audio0", "video0", "~",
                                            "urn:ietf:params:rtp-hdrext:sdes:mid", "h;m;l", "/", ":", "="]),
                  st.text(max_size=12))
RANDOM_ATTRIBUTE = st.builds(lambda name, words: f"a={name}:{' '.join(words)}",
                             st.sampled_from(ATTRIBUTES), st.lists(WORDS, max_size=4))
RANDOM_LINE = st.one_of(RANDOM_ATTRIBUTE, st.text(max_size=40),
                        st.builds(lambda c, t: f"{c}={t}", st.sampled_from("vostcmabkz"), st.text(max_size=30)))


@st.composite
def mutated_offer(draw) -> bytes:
    name = draw(st.sampled_from(sorted(OFFERS)))
    lines = OFFERS[name].decode().split("\r\n")
    for _ in range(draw(st.integers(1, 6))):
        op = draw(st.sampled_from(["drop", "dup", "swap", "inject", "rewrite", "word", "move-m"]))
        i = draw(st.integers(0, len(lines) - 1))
        if op == "drop" and len(lines) > 1:
            del lines[i]
        elif op == "dup":
            lines.insert(draw(st.integers(0, len(lines))), lines[i])
        elif op == "swap":
            j = draw(st.integers(0, len(lines) - 1))
            lines[i], lines[j] = lines[j], lines[i]
        elif op == "inject":
            lines.insert(i, draw(RANDOM_LINE))
        elif op == "rewrite":
            lines[i] = draw(RANDOM_LINE)
        elif op == "word":  # one whitespace/colon/slash-separated field of a line replaced
            parts = lines[i].replace(":", " : ").replace("/", " / ").split(" ")
            k = draw(st.integers(0, len(parts) - 1))
            parts[k] = draw(WORDS)
            lines[i] = " ".join(parts).replace(" : ", ":").replace(" / ", "/")
        elif op == "move-m":  # a random line moved behind another m= line
            m_lines = [k for k, ln in enumerate(lines) if ln.startswith("m=")]
            if m_lines:
                lines.insert(draw(st.sampled_from(m_lines)) + 1, lines.pop(i))
    text = draw(st.sampled_from(["\r\n", "\n", "\r"])).join(lines)
    data = bytearray(text.encode("utf-8", errors="surrogatepass"))
    for _ in range(draw(st.integers(0, 3))):
        if not data:
            break
        at = draw(st.integers(0, len(data) - 1))
        how = draw(st.sampled_from(["flip", "byte", "truncate", "insert"]))
        if how == "flip":
            data[at] ^= 1 << draw(st.integers(0, 7))
        elif how == "byte":
            data[at] = draw(st.integers(0, 255))
        elif how == "truncate":
            del data[at:]
        else:
            data[at:at] = draw(st.binary(max_size=8))
    return bytes(data)


@FUZZ
@given(mutated_offer())
def test_mutated_real_offers_give_an_answer_or_an_sdp_error(body):
    assert handle_offer(body) in ("400", "answered")


@FUZZ
@given(st.binary(max_size=300) | st.text(max_size=300).map(lambda t: t.encode("utf-8", errors="surrogatepass")))
def test_random_bytes_and_text(body):
    assert handle_offer(body) in ("400", "answered")
    assert handle_offer(b"v=0\r\n" + body) in ("400", "answered")


@FUZZ
@given(st.sampled_from(sorted(OFFERS)), st.lists(RANDOM_ATTRIBUTE, min_size=1, max_size=8), st.data())
def test_random_attributes_injected_anywhere(name, attributes, data):
    lines = OFFERS[name].decode().split("\r\n")
    for attribute in attributes:
        lines.insert(data.draw(st.integers(1, len(lines))), attribute)
    assert handle_offer("\r\n".join(lines).encode("utf-8", errors="surrogatepass")) in ("400", "answered")


@pytest.mark.parametrize("name", sorted(OFFERS))
def test_every_unmutated_offer_is_answered(name):
    assert handle_offer(OFFERS[name]) == "answered"
    assert handle_offer(OFFERS[name].replace(b"\r\n", b"\n")) == "answered"


# ---------------------------------------------------------------------------
# Through the real aiohttp app: malformed and non-UTF-8 bodies are 4xx, never 500.
# ---------------------------------------------------------------------------

ISSUE_9_BODIES = [
    # the StopIteration of issue #9 (FID names 2 as media, only its RTX 1 has a=ssrc)
    OFFERS["gstreamer-1.22.0-webrtcbin-max-bundle-whip-sendonly-vp8.sdp"].replace(
        b"a=ssrc:2820240764 msid:user3971565186@host-41c98abf webrtctransceiver0\r\n",
        b"a=ssrc-group:FID 2 1\r\n").replace(b"a=ssrc:2820240764 cname", b"a=ssrc:1 cname"),
    b"v=0\r\n\xff\xfe\xfd garbage",  # not UTF-8
    OFFERS["firefox-153.8.0esr-whip-sendonly.sdp"].replace(b"a=mid:0", b"a=mid:\xe9"),  # Latin-1 byte
    b"",
    b"v=0",
    b"\x00" * 64,
    OFFERS["aiortc-1.16.0-whip-sendonly.sdp"][:700],
    OFFERS["chromium-156.0.8078.114-whip-sendonly.sdp"].replace(b"a=mid:1", b"a=mid:0"),
    OFFERS["chromium-156.0.8078.114-whip-sendonly.sdp"].replace(b"a=ssrc:3311482314", b"a=ssrc:2729770722"),
    OFFERS["chromium-156.0.8078.114-whip-sendonly.sdp"].replace(b"111 63", b"999 63"),
]


@pytest.fixture
async def client():
    from aiohttp.test_utils import TestClient, TestServer

    from signaling.server import create_app, start_rooms

    rooms = await start_rooms(workers=1)
    c = TestClient(TestServer(create_app(rooms), host="127.0.0.1"))
    await c.start_server()
    try:
        yield c
    finally:
        await c.close()
        await rooms.close()


def _mutations(count: int, seed: int) -> list[bytes]:
    """Seeded byte- and line-level mutations of the fixtures (the HTTP round
    trips are too slow for hypothesis's example counts)."""
    rng = random.Random(seed)
    bodies = []
    names = sorted(OFFERS)
    for _ in range(count):
        lines = OFFERS[rng.choice(names)].split(b"\r\n")
        for _ in range(rng.randint(1, 4)):
            i = rng.randrange(len(lines))
            op = rng.choice(["drop", "dup", "swap", "bytes", "truncate", "attr"])
            if op == "drop":
                del lines[i]
            elif op == "dup":
                lines.insert(rng.randrange(len(lines) + 1), lines[i])
            elif op == "swap":
                j = rng.randrange(len(lines))
                lines[i], lines[j] = lines[j], lines[i]
            elif op == "bytes":
                line = bytearray(lines[i] or b"x")
                line[rng.randrange(len(line))] = rng.randrange(256)
                lines[i] = bytes(line)
            elif op == "truncate":
                lines[i] = lines[i][: rng.randrange(len(lines[i]) + 1)]
            else:
                lines.insert(i, f"a={rng.choice(ATTRIBUTES)}:{rng.choice(['2 1', 'x', '', '96 VP8', '1/x u'])}"
                             .encode())
            if not lines:
                lines = [b"v=0"]
        bodies.append(b"\r\n".join(lines))
    return bodies


async def test_http_whip_and_whep_never_answer_500(client):
    from signaling.server import ROOMS

    headers = {"Content-Type": "application/sdp"}
    publisher = OFFERS["chromium-156.0.8078.114-whip-sendonly.sdp"]
    statuses: dict[int, int] = {}
    for body in ISSUE_9_BODIES + _mutations(int(os.environ.get("SDP_FUZZ_HTTP", "150")), seed=9):
        # something to view, so WHEP offers get as far as consuming (the server closes a
        # transport that never connects after a while: publish again when it did)
        if not any(p.producers for room in client.server.app[ROOMS].rooms.values() for p in room.participants.values()):
            resp = await client.post("/whip/fuzz", data=publisher, headers=headers)
            assert resp.status == 201, await resp.text()
        for url in ("/whip/fuzz", "/whep/fuzz"):
            resp = await client.post(url, data=body, headers=headers)
            text = await resp.text()
            statuses[resp.status] = statuses.get(resp.status, 0) + 1
            assert resp.status == 201 or 400 <= resp.status < 500, (url, resp.status, text, body[:2000])
            if resp.status == 201:  # end the session: the room's admission limits stay out of the way
                assert (await client.delete(resp.headers["Location"])).status == 200
            else:
                assert (await resp.json())["error"], (url, text)  # a message naming the problem
    print("HTTP statuses of the mutated offers:", statuses)
    assert statuses.get(400, 0) > 0 and statuses.get(201, 0) > 0


async def test_http_issue_9_offers(client):
    headers = {"Content-Type": "application/sdp"}
    resp = await client.post("/whip/i9", data=ISSUE_9_BODIES[0], headers=headers)
    assert resp.status == 201, await resp.text()  # FID 2 1: 2 is the media SSRC, 1 its RTX
    resp = await client.post("/whip/i9", data=ISSUE_9_BODIES[1], headers=headers)
    assert resp.status == 400 and "not UTF-8 (byte 0xff at offset 5)" in (await resp.json())["error"]
    resp = await client.post("/whip/i9", data=ISSUE_9_BODIES[7], headers=headers)
    assert resp.status == 400 and "a=mid:0 is used by two m-sections" in (await resp.json())["error"]
    resp = await client.post("/whep/i9", data=ISSUE_9_BODIES[2], headers=headers)
    assert resp.status == 400 and "not UTF-8" in (await resp.json())["error"]
    # nothing to publish: the 400 says why, section by section
    viewer = OFFERS["gstreamer-1.22.0-webrtcbin-max-bundle-whep-recvonly.sdp"]
    resp = await client.post("/whip/i9", data=viewer.replace(b"a=rtpmap:96 VP8", b"a=rtpmap:96 H265"), headers=headers)
    error = (await resp.json())["error"]
    assert resp.status == 400 and error.endswith(
        "video m-section mid=video0: a=recvonly: nothing to publish; "
        "audio m-section mid=audio1: a=recvonly: nothing to publish"), error


async def test_http_bundle_only_sections_are_published_and_viewed(client):
    """GStreamer's and Firefox's max-bundle offers: the bundle-only section
    becomes a producer (WHIP) and a consumer (WHEP), answered inside the bundle."""
    from signaling.server import ROOMS

    headers = {"Content-Type": "application/sdp"}
    for room, name, whep in (
        ("gst", "gstreamer-1.22.0-webrtcbin-max-bundle-whip-sendonly-vp8.sdp",
         "gstreamer-1.22.0-webrtcbin-max-bundle-whep-recvonly.sdp"),
        ("ff", "firefox-153.8.0esr-whip-sendonly-max-bundle.sdp", "firefox-153.8.0esr-whep-recvonly.sdp"),
    ):
        offer = parse_offer(OFFERS[name].decode())
        resp = await client.post(f"/whip/{room}", data=OFFERS[name], headers=headers)
        answer = await resp.text()
        assert resp.status == 201, answer
        parsed = parse_offer(answer)
        assert [m.port for m in parsed.media] == [9, 9] and "a=inactive" not in answer
        assert parsed.bundle_mids == offer.bundle_mids
        producers = [pr for p in client.server.app[ROOMS].rooms[room].participants.values()
                     for pr in p.producers.values()]
        assert sorted(pr.kind for pr in producers) == ["audio", "video"]
        resp = await client.post(f"/whep/{room}", data=OFFERS[whep], headers=headers)
        answer = await resp.text()
        assert resp.status == 201, answer
        parsed = parse_offer(answer)
        assert [m.port for m in parsed.media] == [9, 9] and [m.direction for m in parsed.media] == ["sendonly"] * 2
        assert all(m.ssrcs for m in parsed.media)
        # each consumer carries the viewer's own mid (the engine writes it on the forwarded RTP)
        viewer = client.server.app[ROOMS].rooms[room].participants[resp.headers["X-Sfu-Participant-Id"]]
        assert sorted((c.kind, c.rtp_parameters["mid"]) for c in viewer.consumers.values()) == sorted(
            (m.kind, m.mid) for m in parse_offer(OFFERS[whep].decode()).media)


async def test_http_whep_mids_are_the_viewers(client):
    """A Chromium viewer with video first: its mids are the publisher's swapped."""
    from signaling.server import ROOMS

    headers = {"Content-Type": "application/sdp"}
    resp = await client.post("/whip/mids", data=OFFERS["chromium-156.0.8078.114-whip-sendonly.sdp"], headers=headers)
    assert resp.status == 201
    whep = OFFERS["chromium-156.0.8078.114-whep-recvonly-video-first.sdp"]
    resp = await client.post("/whep/mids", data=whep, headers=headers)
    assert resp.status == 201, await resp.text()
    viewer = client.server.app[ROOMS].rooms["mids"].participants[resp.headers["X-Sfu-Participant-Id"]]
    assert sorted((c.kind, c.rtp_parameters["mid"]) for c in viewer.consumers.values()) == [("audio", "1"),
                                                                                          ("video", "0")]
    # a mid RTP cannot carry (over 16 bytes) is a 400 naming it
    resp = await client.post("/whep/mids", data=whep.replace(b"a=mid:0", b"a=mid:" + b"v" * 17), headers=headers)
    assert resp.status == 400 and "mid" in (await resp.json())["error"]
