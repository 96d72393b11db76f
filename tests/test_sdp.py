"""signaling.sdp: WHIP/WHEP offer parsing, RTP parameter mapping and answers."""

from __future__ import annotations

import copy
import os
import re
from pathlib import Path
from unittest import mock

import pytest

from signaling.sdp import (
    MediaSection,
    SdpError,
    build_answer,
    offer_encodings,
    offer_to_consumer_capabilities,
    offer_to_producer_parameters,
    parse_offer,
    whip_media_answers,
)
from sfu import ortc

MEDIA_CODECS = [
    {"kind": "audio", "mimeType": "audio/opus", "clockRate": 48000, "channels": 2},
    {"kind": "video", "mimeType": "video/VP8", "clockRate": 90000},
    {"kind": "video", "mimeType": "video/VP9", "clockRate": 90000},
    {
        "kind": "video",
        "mimeType": "video/H264",
        "clockRate": 90000,
        "parameters": {"packetization-mode": 1, "profile-level-id": "42e01f", "level-asymmetry-allowed": 1},
    },
]


def crlf(text: str) -> str:
    """Literal offers are written with \\n; real SDP uses CRLF."""
    return "\r\n".join(line.strip() for line in text.strip().splitlines()) + "\r\n"


CHROME_FP = (
    "sha-256 6B:8B:5D:EA:59:04:20:D2:B4:A5:FE:71:A3:1B:2E:6C:12:F8:06:AE:57:D0:7B:4D:62:04:A2:FF:AD:3B:A8:1F"
)

CHROME_WHIP = crlf(f"""
v=0
o=- 4215775240449105457 2 IN IP4 127.0.0.1
s=-
t=0 0
a=group:BUNDLE 0 1
a=extmap-allow-mixed
a=msid-semantic: WMS 5nFJq6tBsa
m=audio 9 UDP/TLS/RTP/SAVPF 111 63 9 0 8 13 110 126
c=IN IP4 0.0.0.0
a=rtcp:9 IN IP4 0.0.0.0
a=ice-ufrag:Ow5y
a=ice-pwd:Pyd0lhWlBbAMm/hSq3QjlZbq
a=ice-options:trickle
a=fingerprint:{CHROME_FP}
a=setup:actpass
a=mid:0
a=extmap:1 urn:ietf:params:rtp-hdrext:ssrc-audio-level
a=extmap:2 http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time
a=extmap:3 http://www.ietf.org/id/draft-holmer-rmcat-transport-wide-cc-extensions-01
a=extmap:4 urn:ietf:params:rtp-hdrext:sdes:mid
a=sendonly
a=msid:5nFJq6tBsa 2b3a7c43-4ee3-44a8-8a5e-6f1e0c7a8b1d
a=rtcp-mux
a=rtpmap:111 opus/48000/2
a=rtcp-fb:111 transport-cc
a=fmtp:111 minptime=10;useinbandfec=1
a=rtpmap:63 red/48000/2
a=fmtp:63 111/111
a=rtpmap:9 G722/8000
a=rtpmap:0 PCMU/8000
a=rtpmap:8 PCMA/8000
a=rtpmap:13 CN/8000
a=rtpmap:110 telephone-event/48000
a=rtpmap:126 telephone-event/8000
a=ssrc:1473512781 cname:Zs4nI6eGtPaKDdqa
a=ssrc:1473512781 msid:5nFJq6tBsa 2b3a7c43-4ee3-44a8-8a5e-6f1e0c7a8b1d
m=video 9 UDP/TLS/RTP/SAVPF 96 97 98 99 100 101 102 103 104 105 106 107 108 109 116 117
c=IN IP4 0.0.0.0
a=rtcp:9 IN IP4 0.0.0.0
a=ice-ufrag:Ow5y
a=ice-pwd:Pyd0lhWlBbAMm/hSq3QjlZbq
a=ice-options:trickle
a=fingerprint:{CHROME_FP}
a=setup:actpass
a=mid:1
a=extmap:14 urn:ietf:params:rtp-hdrext:toffset
a=extmap:2 http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time
a=extmap:13 urn:3gpp:video-orientation
a=extmap:3 http://www.ietf.org/id/draft-holmer-rmcat-transport-wide-cc-extensions-01
a=extmap:5 http://www.webrtc.org/experiments/rtp-hdrext/playout-delay
a=extmap:6 http://www.webrtc.org/experiments/rtp-hdrext/video-content-type
a=extmap:7 http://www.webrtc.org/experiments/rtp-hdrext/video-timing
a=extmap:8 http://www.webrtc.org/experiments/rtp-hdrext/color-space
a=extmap:4 urn:ietf:params:rtp-hdrext:sdes:mid
a=extmap:10 urn:ietf:params:rtp-hdrext:sdes:rtp-stream-id
a=extmap:11 urn:ietf:params:rtp-hdrext:sdes:repaired-rtp-stream-id
a=sendonly
a=msid:5nFJq6tBsa 9f6ac5c0-b0d7-4a4c-9f6b-1b7d6e0e2f3a
a=rtcp-mux
a=rtcp-rsize
a=rtpmap:96 VP8/90000
a=rtcp-fb:96 goog-remb
a=rtcp-fb:96 transport-cc
a=rtcp-fb:96 ccm fir
a=rtcp-fb:96 nack
a=rtcp-fb:96 nack pli
a=rtpmap:97 rtx/90000
a=fmtp:97 apt=96
a=rtpmap:98 VP9/90000
a=rtcp-fb:98 goog-remb
a=rtcp-fb:98 transport-cc
a=rtcp-fb:98 ccm fir
a=rtcp-fb:98 nack
a=rtcp-fb:98 nack pli
a=fmtp:98 profile-id=0
a=rtpmap:99 rtx/90000
a=fmtp:99 apt=98
a=rtpmap:100 VP9/90000
a=rtcp-fb:100 nack pli
a=fmtp:100 profile-id=2
a=rtpmap:101 rtx/90000
a=fmtp:101 apt=100
a=rtpmap:102 H264/90000
a=rtcp-fb:102 goog-remb
a=rtcp-fb:102 transport-cc
a=rtcp-fb:102 ccm fir
a=rtcp-fb:102 nack
a=rtcp-fb:102 nack pli
a=fmtp:102 level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42001f
a=rtpmap:103 rtx/90000
a=fmtp:103 apt=102
a=rtpmap:104 H264/90000
a=rtcp-fb:104 nack pli
a=fmtp:104 level-asymmetry-allowed=1;packetization-mode=0;profile-level-id=42001f
a=rtpmap:105 rtx/90000
a=fmtp:105 apt=104
a=rtpmap:106 H264/90000
a=rtcp-fb:106 nack pli
a=fmtp:106 level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f
a=rtpmap:107 rtx/90000
a=fmtp:107 apt=106
a=rtpmap:108 H264/90000
a=rtcp-fb:108 nack pli
a=fmtp:108 level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=64001f
a=rtpmap:109 rtx/90000
a=fmtp:109 apt=108
a=rtpmap:116 red/90000
a=rtpmap:117 ulpfec/90000
a=ssrc-group:FID 2219380128 1399405432
a=ssrc:2219380128 cname:Zs4nI6eGtPaKDdqa
a=ssrc:2219380128 msid:5nFJq6tBsa 9f6ac5c0-b0d7-4a4c-9f6b-1b7d6e0e2f3a
a=ssrc:1399405432 cname:Zs4nI6eGtPaKDdqa
a=ssrc:1399405432 msid:5nFJq6tBsa 9f6ac5c0-b0d7-4a4c-9f6b-1b7d6e0e2f3a
""")

FIREFOX_WHIP = crlf("""
v=0
o=mozilla...THIS_IS_SDPARTA-99.0 6480237345183432433 0 IN IP4 0.0.0.0
s=-
t=0 0
a=fingerprint:sha-256 A1:76:46:C1:18:2A:83:0C:5D:1B:97:63:9A:8E:1F:39:19:E1:3B:B4:5C:46:D5:8A:0C:96:9A:2A:6E:C8:4E:1A
a=group:BUNDLE 0 1
a=ice-options:trickle
a=msid-semantic:WMS *
m=audio 9 UDP/TLS/RTP/SAVPF 109 9 0 8 101
c=IN IP4 0.0.0.0
a=sendonly
a=extmap:1 urn:ietf:params:rtp-hdrext:ssrc-audio-level
a=extmap:2/recvonly urn:ietf:params:rtp-hdrext:csrc-audio-level
a=extmap:3 urn:ietf:params:rtp-hdrext:sdes:mid
a=fmtp:109 maxplaybackrate=48000;stereo=1;useinbandfec=1
a=fmtp:101 0-15
a=ice-pwd:9e3b2c0e8d1d2f0b3c1a5d6e7f809a1b
a=ice-ufrag:2a4c6e8f
a=mid:0
a=msid:{4c2b7a9e-0f5d-4b3e-9a61-2f8b6c1d3e5a} {6d9e1f2a-3b4c-4d5e-8f60-7a8b9c0d1e2f}
a=rtcp-mux
a=rtpmap:109 opus/48000/2
a=rtpmap:9 G722/8000/1
a=rtpmap:0 PCMU/8000
a=rtpmap:8 PCMA/8000
a=rtpmap:101 telephone-event/8000/1
a=setup:actpass
a=ssrc:3014515312 cname:{a5b3c1d9-7e2f-4a6b-8c0d-1e2f3a4b5c6d}
m=video 9 UDP/TLS/RTP/SAVPF 120 124 121 125 126 127 97 98
c=IN IP4 0.0.0.0
a=sendonly
a=extmap:3 urn:ietf:params:rtp-hdrext:sdes:mid
a=extmap:4 http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time
a=extmap:5 urn:ietf:params:rtp-hdrext:toffset
a=extmap:6/recvonly http://www.webrtc.org/experiments/rtp-hdrext/playout-delay
a=extmap:7 http://www.ietf.org/id/draft-holmer-rmcat-transport-wide-cc-extensions-01
a=fmtp:126 profile-level-id=42e01f;level-asymmetry-allowed=1;packetization-mode=1
a=fmtp:97 profile-level-id=42e01f;level-asymmetry-allowed=1
a=fmtp:120 max-fs=12288;max-fr=60
a=fmtp:124 apt=120
a=fmtp:121 max-fs=12288;max-fr=60
a=fmtp:125 apt=121
a=fmtp:127 apt=126
a=fmtp:98 apt=97
a=ice-pwd:9e3b2c0e8d1d2f0b3c1a5d6e7f809a1b
a=ice-ufrag:2a4c6e8f
a=mid:1
a=msid:{4c2b7a9e-0f5d-4b3e-9a61-2f8b6c1d3e5a} {0a1b2c3d-4e5f-4a6b-9c7d-8e9f0a1b2c3d}
a=rtcp-fb:120 nack
a=rtcp-fb:120 nack pli
a=rtcp-fb:120 ccm fir
a=rtcp-fb:120 goog-remb
a=rtcp-fb:120 transport-cc
a=rtcp-fb:121 nack
a=rtcp-fb:121 nack pli
a=rtcp-fb:121 ccm fir
a=rtcp-fb:121 goog-remb
a=rtcp-fb:121 transport-cc
a=rtcp-fb:126 nack
a=rtcp-fb:126 nack pli
a=rtcp-fb:126 ccm fir
a=rtcp-fb:126 goog-remb
a=rtcp-fb:126 transport-cc
a=rtcp-fb:97 nack
a=rtcp-fb:97 nack pli
a=rtcp-fb:97 ccm fir
a=rtcp-fb:97 goog-remb
a=rtcp-fb:97 transport-cc
a=rtcp-mux
a=rtcp-rsize
a=rtpmap:120 VP8/90000
a=rtpmap:124 rtx/90000
a=rtpmap:121 VP9/90000
a=rtpmap:125 rtx/90000
a=rtpmap:126 H264/90000
a=rtpmap:127 rtx/90000
a=rtpmap:97 H264/90000
a=rtpmap:98 rtx/90000
a=setup:actpass
a=ssrc:1955530318 cname:{a5b3c1d9-7e2f-4a6b-8c0d-1e2f3a4b5c6d}
a=ssrc:2871035290 cname:{a5b3c1d9-7e2f-4a6b-8c0d-1e2f3a4b5c6d}
a=ssrc-group:FID 1955530318 2871035290
""")

GSTREAMER_WHIP = crlf("""
v=0
o=- 1863617387795722839 0 IN IP4 0.0.0.0
s=-
t=0 0
a=ice-options:trickle
a=group:BUNDLE video0 audio1
m=video 9 UDP/TLS/RTP/SAVPF 96
c=IN IP4 0.0.0.0
a=setup:actpass
a=ice-ufrag:Vbb7DdGLq0HuHGDk5Uc6VSW0Jqx1Qprk
a=ice-pwd:hIq8v3Gj0wN1jXDh1l6tl0NTxvvSg4mF
a=rtcp-mux
a=rtcp-rsize
a=sendonly
a=rtpmap:96 H264/90000
a=rtcp-fb:96 nack
a=rtcp-fb:96 nack pli
a=rtcp-fb:96 ccm fir
a=fmtp:96 packetization-mode=1;profile-level-id=42c01f;sprop-parameter-sets=Z0LAH9kAUAW7ARAAAAMAEAAAAwPI8YMkgA==,aMuMsg==
a=ssrc:3484078952 msid:user3594476519@host-a4a5e3a5 webrtctransceiver0
a=ssrc:3484078952 cname:user3594476519@host-a4a5e3a5
a=mid:video0
a=fingerprint:sha-256 5D:0B:8E:2A:0C:35:F1:7A:9B:4E:3C:2D:1A:0F:8E:7D:6C:5B:4A:39:28:17:06:F5:E4:D3:C2:B1:A0:9F:8E:7D
m=audio 9 UDP/TLS/RTP/SAVPF 97
c=IN IP4 0.0.0.0
a=setup:actpass
a=ice-ufrag:Vbb7DdGLq0HuHGDk5Uc6VSW0Jqx1Qprk
a=ice-pwd:hIq8v3Gj0wN1jXDh1l6tl0NTxvvSg4mF
a=rtcp-mux
a=rtcp-rsize
a=sendonly
a=rtpmap:97 OPUS/48000/2
a=rtcp-fb:97 nack
a=rtcp-fb:97 nack pli
a=fmtp:97 sprop-maxcapturerate=48000;sprop-stereo=0
a=ssrc:1792207543 msid:user3594476519@host-a4a5e3a5 webrtctransceiver1
a=ssrc:1792207543 cname:user3594476519@host-a4a5e3a5
a=mid:audio1
a=fingerprint:sha-256 5D:0B:8E:2A:0C:35:F1:7A:9B:4E:3C:2D:1A:0F:8E:7D:6C:5B:4A:39:28:17:06:F5:E4:D3:C2:B1:A0:9F:8E:7D
""")

SIMULCAST_WHIP = crlf(f"""
v=0
o=- 1 2 IN IP4 127.0.0.1
s=-
t=0 0
a=group:BUNDLE 0
m=video 9 UDP/TLS/RTP/SAVPF 96 97
c=IN IP4 0.0.0.0
a=ice-ufrag:sImU
a=ice-pwd:simulcastpasswordsimulcast
a=fingerprint:{CHROME_FP}
a=setup:actpass
a=mid:0
a=extmap:4 urn:ietf:params:rtp-hdrext:sdes:mid
a=extmap:10 urn:ietf:params:rtp-hdrext:sdes:rtp-stream-id
a=extmap:11 urn:ietf:params:rtp-hdrext:sdes:repaired-rtp-stream-id
a=sendonly
a=msid:- 3f3b7a1c-0000-4000-8000-000000000001
a=rtcp-mux
a=rtcp-rsize
a=rtpmap:96 VP8/90000
a=rtcp-fb:96 nack
a=rtcp-fb:96 nack pli
a=rtpmap:97 rtx/90000
a=fmtp:97 apt=96
a=rid:q send
a=rid:h send
a=rid:f send
a=simulcast:send q;h;~f
""")

WHEP_OFFER = crlf(f"""
v=0
o=- 5 2 IN IP4 127.0.0.1
s=-
t=0 0
a=group:BUNDLE 0 1
a=msid-semantic: WMS
m=audio 9 UDP/TLS/RTP/SAVPF 111 0
c=IN IP4 0.0.0.0
a=rtcp:9 IN IP4 0.0.0.0
a=ice-ufrag:wHeP
a=ice-pwd:whepwhepwhepwhepwhepwhep
a=ice-options:trickle
a=fingerprint:{CHROME_FP}
a=setup:actpass
a=mid:0
a=extmap:1 urn:ietf:params:rtp-hdrext:ssrc-audio-level
a=extmap:3 http://www.ietf.org/id/draft-holmer-rmcat-transport-wide-cc-extensions-01
a=extmap:4 urn:ietf:params:rtp-hdrext:sdes:mid
a=recvonly
a=rtcp-mux
a=rtpmap:111 opus/48000/2
a=rtcp-fb:111 transport-cc
a=fmtp:111 minptime=10;useinbandfec=1
a=rtpmap:0 PCMU/8000
m=video 9 UDP/TLS/RTP/SAVPF 96 97 102 103
c=IN IP4 0.0.0.0
a=rtcp:9 IN IP4 0.0.0.0
a=ice-ufrag:wHeP
a=ice-pwd:whepwhepwhepwhepwhepwhep
a=ice-options:trickle
a=fingerprint:{CHROME_FP}
a=setup:actpass
a=mid:1
a=extmap:2 http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time
a=extmap:3 http://www.ietf.org/id/draft-holmer-rmcat-transport-wide-cc-extensions-01
a=extmap:4 urn:ietf:params:rtp-hdrext:sdes:mid
a=recvonly
a=rtcp-mux
a=rtcp-rsize
a=rtpmap:96 VP8/90000
a=rtcp-fb:96 transport-cc
a=rtcp-fb:96 ccm fir
a=rtcp-fb:96 nack
a=rtcp-fb:96 nack pli
a=rtpmap:97 rtx/90000
a=fmtp:97 apt=96
a=rtpmap:102 H264/90000
a=rtcp-fb:102 nack
a=rtcp-fb:102 nack pli
a=fmtp:102 level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f
a=rtpmap:103 rtx/90000
a=fmtp:103 apt=102
""")


def router_caps(codecs=MEDIA_CODECS):
    return ortc.generate_router_rtp_capabilities(copy.deepcopy(codecs))


def transport_params():
    """Fake SFU transport: ICE-lite credentials, one loopback candidate, sha-256 fingerprint."""
    return {
        "ice_parameters": {"usernameFragment": "sfuufrag1234abcd", "password": "sfupassword0123456789abcd", "iceLite": True},
        "ice_candidates": [
            {"foundation": "udpcandidate", "priority": 1076302079, "ip": "127.0.0.1", "port": 40000,
             "protocol": "udp", "type": "host"}
        ],
        "dtls_parameters": {
            "role": "auto",
            "fingerprints": [
                {"algorithm": "sha-512", "value": ":".join(f"{b:02X}" for b in os.urandom(64))},
                {"algorithm": "sha-256", "value": ":".join(f"{b:02X}" for b in os.urandom(32))},
            ],
        },
    }


def check_producer(params, kind):
    """validate_rtp_parameters + mapping against the router, like transport.produce does."""
    params = copy.deepcopy(params)
    ortc.validate_rtp_parameters(params)
    return ortc.get_producer_rtp_parameters_mapping(params, router_caps(), kind)


# ---------------------------------------------------------------------------
# Parsing.
# ---------------------------------------------------------------------------


def test_parse_chrome_offer():
    offer = parse_offer(CHROME_WHIP)
    assert offer.ice_ufrag == "Ow5y"
    assert offer.ice_pwd == "Pyd0lhWlBbAMm/hSq3QjlZbq"
    assert offer.fingerprints == [{"algorithm": "sha-256", "value": CHROME_FP.split()[1]}]
    assert offer.setup == "actpass"
    assert offer.bundle_mids == ["0", "1"]
    assert offer.ice_options == ["trickle"]
    audio, video = offer.media
    assert (audio.kind, audio.mid, audio.direction, audio.port) == ("audio", "0", "sendonly", 9)
    assert not audio.rejected and audio.rtcp_mux and not audio.rtcp_rsize
    assert [c.payload_type for c in audio.codecs] == [111, 63, 9, 0, 8, 13, 110, 126]
    opus = audio.codec(111)
    assert (opus.name, opus.clock_rate, opus.channels) == ("opus", 48000, 2)
    assert opus.parameters == {"minptime": 10, "useinbandfec": 1}
    assert opus.rtcp_feedback == [{"type": "transport-cc", "parameter": ""}]
    assert audio.codec(63).parameters == {"111/111": ""}
    assert [(e.id, e.uri) for e in audio.extmaps][3] == (4, "urn:ietf:params:rtp-hdrext:sdes:mid")
    assert audio.ssrcs == {
        1473512781: {"cname": "Zs4nI6eGtPaKDdqa", "msid": "5nFJq6tBsa 2b3a7c43-4ee3-44a8-8a5e-6f1e0c7a8b1d"}
    }
    assert audio.cname == "Zs4nI6eGtPaKDdqa"
    assert video.rtcp_rsize
    assert video.ssrc_groups == [("FID", [2219380128, 1399405432])]
    assert video.fid == {2219380128: 1399405432}
    assert video.codec(97).parameters == {"apt": 96}
    assert video.codec(106).parameters["profile-level-id"] == "42e01f"
    assert video.codec(96).rtcp_feedback[-1] == {"type": "nack", "parameter": "pli"}
    assert len(video.extmaps) == 11


def test_parse_firefox_session_level_fingerprint_and_static_codecs():
    offer = parse_offer(FIREFOX_WHIP)
    assert offer.fingerprints[0]["value"].startswith("A1:76:46")
    assert offer.ice_ufrag == "2a4c6e8f"
    assert offer.ice_options == ["trickle"]
    audio, video = offer.media
    assert audio.codec(101).parameters == {"0-15": ""}
    assert audio.codec(9).channels == 1
    assert audio.extmaps[1].direction == "recvonly"
    assert video.codec(126).parameters == {
        "profile-level-id": "42e01f", "level-asymmetry-allowed": 1, "packetization-mode": 1
    }
    assert video.fid == {1955530318: 2871035290}
    assert video.cname == "{a5b3c1d9-7e2f-4a6b-8c0d-1e2f3a4b5c6d}"


def test_parse_gstreamer_offer():
    offer = parse_offer(GSTREAMER_WHIP)
    assert offer.bundle_mids == ["video0", "audio1"]
    video, audio = offer.media
    assert video.mid == "video0" and audio.mid == "audio1"
    assert video.codec(96).parameters["sprop-parameter-sets"] == "Z0LAH9kAUAW7ARAAAAMAEAAAAwPI8YMkgA==,aMuMsg=="
    assert video.ssrcs[3484078952]["msid"] == "user3594476519@host-a4a5e3a5 webrtctransceiver0"
    assert audio.codec(97).name == "OPUS"


def test_parse_simulcast_rids():
    (video,) = parse_offer(SIMULCAST_WHIP).media
    assert [(r.id, r.direction) for r in video.rids] == [("q", "send"), ("h", "send"), ("f", "send")]
    assert video.simulcast_send == ["q", "h", "f"]
    assert video.ssrcs == {} and video.cname is None


def test_parse_rejected_section_and_lf_only():
    sdp = CHROME_WHIP.replace("m=audio 9 ", "m=audio 0 ").replace("\r\n", "\n")
    offer = parse_offer(sdp)
    assert offer.media[0].rejected and not offer.media[1].rejected


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda s: s.replace(f"a=fingerprint:{CHROME_FP}\r\n", ""), "missing a=fingerprint"),
        (lambda s: s.replace("a=ice-ufrag:Ow5y\r\n", ""), "missing a=ice-ufrag"),
        (lambda s: s.replace("a=ice-pwd:Pyd0lhWlBbAMm/hSq3QjlZbq\r\n", ""), "missing a=ice-pwd"),
        (lambda s: s.replace("m=audio 9 UDP/TLS/RTP/SAVPF 111 63 9 0 8 13 110 126", "m=audio 9"), "bad m-line"),
        (lambda s: s.replace("m=audio 9 UDP", "m=audio x UDP"), "bad m-line port"),
        (lambda s: s.replace("SAVPF 111 63", "SAVPF opus 63"), "m-line payload type"),
        (lambda s: s.replace("a=setup:actpass", "a=setup:server"), "bad a=setup:server"),
        (lambda s: s.replace("a=rtpmap:111 opus/48000/2", "a=rtpmap:111 opus"), "bad a=rtpmap"),
        (lambda s: s.replace("a=extmap:1 ", "a=extmap:one "), "a=extmap id"),
        (lambda s: s.replace("s=-\r\n", "garbage\r\n"), "line 3: not a '<type>=<value>' line"),
        (lambda s: s[s.index("o="):], "must start with 'v='"),
        (lambda s: s[: s.index("m=audio")], "no m= section"),
    ],
)
def test_parse_errors(mutate, message):
    with pytest.raises(SdpError, match=message.replace("(", r"\(").replace("'", "'")):
        parse_offer(mutate(CHROME_WHIP))


def test_sdp_error_is_value_error():
    assert issubclass(SdpError, ValueError)


# ---------------------------------------------------------------------------
# Producer parameters (WHIP).
# ---------------------------------------------------------------------------


def test_chrome_producer_parameters():
    audio, video = parse_offer(CHROME_WHIP).media
    params = offer_to_producer_parameters(video, router_caps())
    # VP9 profile 2, H264 Baseline (42001f), packetization-mode 0 and High are not in the router.
    assert [c["payloadType"] for c in params["codecs"]] == [96, 97, 98, 99, 106, 107]
    assert params["codecs"][1] == {
        "mimeType": "video/rtx", "payloadType": 97, "clockRate": 90000,
        "parameters": {"apt": 96}, "rtcpFeedback": [],
    }
    # Offer's feedback the router also supports, in the offer's order.
    assert params["codecs"][0]["rtcpFeedback"] == [
        {"type": "goog-remb", "parameter": ""}, {"type": "transport-cc", "parameter": ""},
        {"type": "ccm", "parameter": "fir"}, {"type": "nack", "parameter": ""},
        {"type": "nack", "parameter": "pli"},
    ]
    assert [(e["id"], e["uri"].rsplit("/", 1)[-1]) for e in params["headerExtensions"]] == [
        (14, "urn:ietf:params:rtp-hdrext:toffset"), (2, "abs-send-time"), (13, "urn:3gpp:video-orientation"),
        (3, "draft-holmer-rmcat-transport-wide-cc-extensions-01"), (5, "playout-delay"),
        (4, "urn:ietf:params:rtp-hdrext:sdes:mid"), (10, "urn:ietf:params:rtp-hdrext:sdes:rtp-stream-id"),
        (11, "urn:ietf:params:rtp-hdrext:sdes:repaired-rtp-stream-id"),
    ]
    assert params["encodings"] == [{"ssrc": 2219380128, "rtx": {"ssrc": 1399405432}}]
    assert params["rtcp"] == {"reducedSize": True, "cname": "Zs4nI6eGtPaKDdqa"}
    assert params["mid"] == "1"
    mapping = check_producer(params, "video")
    assert {m["payloadType"] for m in mapping["codecs"]} == {96, 97, 98, 99, 106, 107}
    assert mapping["encodings"][0]["ssrc"] == 2219380128

    a = offer_to_producer_parameters(audio, router_caps())
    assert a["codecs"] == [{
        "mimeType": "audio/opus", "payloadType": 111, "clockRate": 48000, "channels": 2,
        "parameters": {"minptime": 10, "useinbandfec": 1},
        "rtcpFeedback": [{"type": "transport-cc", "parameter": ""}],
    }]
    # transport-cc is receive-only for audio in the router: still accepted from a publisher.
    assert [e["id"] for e in a["headerExtensions"]] == [1, 2, 3, 4]
    assert a["rtcp"] == {"reducedSize": False, "cname": "Zs4nI6eGtPaKDdqa"}
    check_producer(a, "audio")


@pytest.mark.parametrize("sdp", [FIREFOX_WHIP, GSTREAMER_WHIP])
def test_firefox_and_gstreamer_producer_parameters(sdp):
    for section in parse_offer(sdp).media:
        params = offer_to_producer_parameters(section, router_caps())
        assert params["codecs"] and params["encodings"][0]["ssrc"] in section.ssrcs
        check_producer(params, section.kind)


def test_firefox_video_codecs_and_rtx():
    video = parse_offer(FIREFOX_WHIP).media[1]
    params = offer_to_producer_parameters(video, router_caps())
    # H264 97 is packetization-mode 0: the router only has mode 1.
    assert [c["payloadType"] for c in params["codecs"]] == [120, 124, 121, 125, 126, 127]
    assert params["encodings"] == [{"ssrc": 1955530318, "rtx": {"ssrc": 2871035290}}]


def test_gstreamer_h264_constrained_baseline_matches():
    video = parse_offer(GSTREAMER_WHIP).media[0]
    params = offer_to_producer_parameters(video, router_caps())
    assert [c["mimeType"] for c in params["codecs"]] == ["video/H264"]
    assert params["rtcp"]["cname"] == "user3594476519@host-a4a5e3a5"


def test_simulcast_producer_parameters():
    (video,) = parse_offer(SIMULCAST_WHIP).media
    params = offer_to_producer_parameters(video, router_caps())
    assert params["encodings"] == [{"rid": "q"}, {"rid": "h"}, {"rid": "f"}]
    assert "cname" not in params["rtcp"]
    mapping = check_producer(params, "video")
    assert [e["rid"] for e in mapping["encodings"]] == ["q", "h", "f"]


def test_sim_ssrc_group_encodings():
    sdp = SIMULCAST_WHIP.replace(
        "a=rid:q send\r\n",
        "a=ssrc-group:SIM 11 22\r\na=ssrc-group:FID 11 12\r\na=ssrc-group:FID 22 23\r\n"
        + "".join(f"a=ssrc:{s} cname:c\r\n" for s in (11, 12, 22, 23)),
    )
    params = offer_to_producer_parameters(parse_offer(sdp).media[0], router_caps())
    assert params["encodings"] == [{"ssrc": 11, "rtx": {"ssrc": 12}}, {"ssrc": 22, "rtx": {"ssrc": 23}}]


def test_unsupported_codecs_only_rejects_section():
    offer = parse_offer(CHROME_WHIP)
    caps = router_caps(MEDIA_CODECS[:1])  # opus only
    with pytest.raises(SdpError, match=r"mid=1: no codec supported by the router \(offered: VP8/90000"):
        offer_to_producer_parameters(offer.media[1], caps)
    answers = whip_media_answers(offer, caps)
    assert answers[0]["direction"] == "recvonly" and answers[1] is None
    answer = parse_offer(build_answer(offer, transport_params(), answers))
    assert answer.bundle_mids == ["0"]
    assert answer.media[1].rejected and answer.media[1].mid == "1"


def test_no_ssrc_nor_rid_is_an_error():
    sdp = GSTREAMER_WHIP.replace("a=ssrc:3484078952 msid:user3594476519@host-a4a5e3a5 webrtctransceiver0\r\n", "")
    sdp = sdp.replace("a=ssrc:3484078952 cname:user3594476519@host-a4a5e3a5\r\n", "")
    with pytest.raises(SdpError, match="mid=video0: no a=ssrc or a=rid"):
        offer_to_producer_parameters(parse_offer(sdp).media[0], router_caps())


# ---------------------------------------------------------------------------
# Consumer capabilities (WHEP) and answers.
# ---------------------------------------------------------------------------


def test_whep_consumer_capabilities():
    audio, video = parse_offer(WHEP_OFFER).media
    caps = offer_to_consumer_capabilities(audio)
    ortc.validate_rtp_capabilities(caps)
    assert caps["codecs"][0] == {
        "kind": "audio", "mimeType": "audio/opus", "preferredPayloadType": 111, "clockRate": 48000,
        "channels": 2, "parameters": {"minptime": 10, "useinbandfec": 1},
        "rtcpFeedback": [{"type": "transport-cc", "parameter": ""}],
    }
    assert caps["codecs"][1]["mimeType"] == "audio/PCMU"
    assert caps["headerExtensions"][2] == {
        "kind": "audio", "uri": "urn:ietf:params:rtp-hdrext:sdes:mid", "preferredId": 4,
        "preferredEncrypt": False, "direction": "sendrecv",
    }
    vcaps = offer_to_consumer_capabilities(video)
    ortc.validate_rtp_capabilities(vcaps)
    assert [(c["mimeType"], c["preferredPayloadType"]) for c in vcaps["codecs"]] == [
        ("video/VP8", 96), ("video/rtx", 97), ("video/H264", 102), ("video/rtx", 103)
    ]


def _consumer_params(producer_section, viewer_section):
    """Producer (WHIP) -> consumable -> consumer for the viewer's caps, as the router does."""
    caps = router_caps()
    params = offer_to_producer_parameters(producer_section, caps)
    ortc.validate_rtp_parameters(params)
    mapping = ortc.get_producer_rtp_parameters_mapping(params, caps, producer_section.kind)
    consumable = ortc.get_consumable_rtp_parameters(producer_section.kind, params, caps, mapping)
    return ortc.get_consumer_rtp_parameters(consumable, offer_to_consumer_capabilities(viewer_section))


def test_whep_answer_has_ssrcs_fid_and_msid():
    whip, whep = parse_offer(CHROME_WHIP), parse_offer(WHEP_OFFER)
    answers = [
        {"direction": "sendonly", "rtp_parameters": _consumer_params(p, v), "msid": f"stream track{v.mid}"}
        for p, v in zip(whip.media, whep.media)
    ]
    sdp = build_answer(whep, transport_params(), answers)
    assert sdp.endswith("\r\n") and "\n" not in sdp.replace("\r\n", "")
    parsed = parse_offer(sdp)
    video = parsed.media[1]
    enc = answers[1]["rtp_parameters"]["encodings"][0]
    assert video.direction == "sendonly"
    assert video.fid == {enc["ssrc"]: enc["rtx"]["ssrc"]}
    assert video.ssrcs[enc["ssrc"]] == {"cname": "Zs4nI6eGtPaKDdqa", "msid": "stream track1"}
    assert video.msid == "stream track1"
    assert [c.payload_type for c in video.codecs] == [
        c["payloadType"] for c in answers[1]["rtp_parameters"]["codecs"]
    ]
    assert "a=setup:passive\r\n" in sdp and "a=ice-lite\r\n" in sdp


def test_whip_answer_lines():
    offer = parse_offer(CHROME_WHIP)
    tp = transport_params()
    sdp = build_answer(offer, tp, whip_media_answers(offer, router_caps()))
    lines = sdp.split("\r\n")
    assert lines[0] == "v=0" and lines[-1] == ""
    assert "a=group:BUNDLE 0 1" in lines and "a=ice-lite" in lines
    assert lines.count("a=candidate:udpcandidate 1 udp 1076302079 127.0.0.1 40000 typ host") == 2
    assert lines.count("a=end-of-candidates") == 2
    sha256 = tp["dtls_parameters"]["fingerprints"][1]["value"]
    assert lines.count(f"a=fingerprint:sha-256 {sha256}") == 2
    assert not any(line.startswith("a=fingerprint:sha-512") for line in lines)
    assert lines.count("a=setup:passive") == 2 and lines.count("a=recvonly") == 2
    assert lines.count("a=rtcp-mux") == 2 and "a=ice-ufrag:sfuufrag1234abcd" in lines
    assert "m=video 9 UDP/TLS/RTP/SAVPF 96 97 98 99 106 107" in lines
    assert "a=fmtp:97 apt=96" in lines and "a=rtcp-fb:96 nack pli" in lines
    assert "a=rtpmap:111 opus/48000/2" in lines and "a=extmap:4 urn:ietf:params:rtp-hdrext:sdes:mid" in lines
    assert not any(line.startswith("a=ssrc") for line in lines)  # recvonly: no SFU streams
    parsed = parse_offer(sdp)
    assert parsed.ice_ufrag == "sfuufrag1234abcd" and parsed.setup == "passive"


def test_answer_setup_active_when_offer_passive_and_camelcase_params():
    offer = parse_offer(GSTREAMER_WHIP.replace("a=setup:actpass", "a=setup:passive"))
    tp = transport_params()
    camel = {"iceParameters": tp["ice_parameters"], "iceCandidates": tp["ice_candidates"],
             "dtlsParameters": tp["dtls_parameters"]}
    sdp = build_answer(offer, camel, whip_media_answers(offer, router_caps()))
    assert sdp.count("a=setup:active\r\n") == 2


def test_build_answer_errors():
    offer = parse_offer(CHROME_WHIP)
    with pytest.raises(SdpError, match="1 media answers for 2 m-sections"):
        build_answer(offer, transport_params(), [None])
    with pytest.raises(SdpError, match="no m-section accepted"):
        build_answer(offer, transport_params(), [None, {"rejected": True}])
    tp = transport_params()
    tp["dtls_parameters"]["fingerprints"] = []
    with pytest.raises(SdpError, match="no fingerprint"):
        build_answer(offer, tp, whip_media_answers(offer, router_caps()))


# ---------------------------------------------------------------------------
# Interop with a real stack: aiortc.
# ---------------------------------------------------------------------------


@pytest.fixture
def loopback_only():
    with mock.patch("aioice.ice.get_host_addresses", lambda use_ipv4=True, use_ipv6=True: ["127.0.0.1"]):
        yield


async def _aiortc_offer(direction):
    from aiortc import RTCConfiguration, RTCPeerConnection

    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    pc.addTransceiver("audio", direction=direction)
    pc.addTransceiver("video", direction=direction)
    await pc.setLocalDescription(await pc.createOffer())
    return pc, pc.localDescription.sdp


async def _accept(pc, answer):
    from aiortc import RTCSessionDescription

    try:
        await pc.setRemoteDescription(RTCSessionDescription(sdp=answer, type="answer"))
        return [t.currentDirection for t in pc.getTransceivers()]
    finally:
        await pc.close()


async def test_aiortc_whip_offer_answer_accepted(loopback_only):
    pc, sdp = await _aiortc_offer("sendonly")
    offer = parse_offer(sdp)
    assert [m.kind for m in offer.media] == ["audio", "video"]
    assert offer.setup == "actpass" and offer.bundle_mids == ["0", "1"]
    answers = whip_media_answers(offer, router_caps())
    for section, answer in zip(offer.media, answers):
        check_producer(answer["rtp_parameters"], section.kind)
    video = answers[1]["rtp_parameters"]
    # aiortc offers H264 42001f (Baseline, not in the router) and 42e01f (Constrained Baseline).
    assert [(c["mimeType"], c["parameters"].get("profile-level-id")) for c in video["codecs"]] == [
        ("video/VP8", None), ("video/rtx", None), ("video/H264", "42e01f"), ("video/rtx", None)
    ]
    assert video["encodings"][0]["rtx"]["ssrc"] == offer.media[1].fid[video["encodings"][0]["ssrc"]]
    assert await _accept(pc, build_answer(offer, transport_params(), answers)) == ["sendonly", "sendonly"]


async def test_aiortc_whip_with_rejected_video_accepted(loopback_only):
    pc, sdp = await _aiortc_offer("sendonly")
    offer = parse_offer(sdp)
    answers = whip_media_answers(offer, router_caps(MEDIA_CODECS[:1]))
    assert answers[1] is None
    await _accept(pc, build_answer(offer, transport_params(), answers))


async def test_aiortc_whep_offer_answer_accepted(loopback_only):
    pc, sdp = await _aiortc_offer("recvonly")
    whep = parse_offer(sdp)
    whip = parse_offer(CHROME_WHIP)
    answers = [
        {"direction": "sendonly", "rtp_parameters": _consumer_params(p, v)}
        for p, v in zip(whip.media, whep.media)
    ]
    assert await _accept(pc, build_answer(whep, transport_params(), answers)) == ["recvonly", "recvonly"]


# ---------------------------------------------------------------------------
# Real offers (tests/fixtures/sdp, captured by capture_offers.py there).
# ---------------------------------------------------------------------------

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "sdp"


def fixture(name: str) -> str:
    with open(FIXTURES / name, encoding="utf-8", newline="") as f:
        return f.read()


# file -> per m-section (kind, mid, direction, bundle-only, first codecs, SSRCs), and for
# WHIP offers the producer encodings and codecs the router takes per section.
REAL_OFFERS = {
    "aiortc-1.16.0-whip-sendonly.sdp": {
        "media": [("audio", "0", "sendonly", False, ["opus", "G722", "PCMU", "PCMA"], [3949481012]),
                  ("video", "1", "sendonly", False, ["VP8", "rtx", "H264"], [1771458347, 295765627])],
        "encodings": [[{"ssrc": 3949481012}], [{"ssrc": 1771458347, "rtx": {"ssrc": 295765627}}]],
        "codecs": [["audio/opus"], ["video/VP8", "video/rtx", "video/H264", "video/rtx"]],
    },
    "aiortc-1.16.0-whep-recvonly.sdp": {
        "media": [("audio", "0", "recvonly", False, ["opus", "G722", "PCMU", "PCMA"], [2077451924]),
                  ("video", "1", "recvonly", False, ["VP8", "rtx", "H264"], [2085485978, 180735392])],
    },
    "chromium-156.0.8078.114-whip-sendonly.sdp": {
        "media": [("audio", "0", "sendonly", False, ["opus", "red", "G722", "PCMU"], [2729770722]),
                  ("video", "1", "sendonly", False, ["VP8", "rtx", "H264"], [3311482314, 1478744469])],
        "encodings": [[{"ssrc": 2729770722}], [{"ssrc": 3311482314, "rtx": {"ssrc": 1478744469}}]],
        "codecs": [["audio/opus"], ["video/VP8", "video/rtx", "video/H264", "video/rtx", "video/VP9", "video/rtx"]],
    },
    "chromium-156.0.8078.114-whip-sendonly-max-bundle.sdp": {
        "media": [("audio", "0", "sendonly", False, ["opus", "red", "G722", "PCMU"], [2254562588]),
                  ("video", "1", "sendonly", False, ["VP8", "rtx", "H264"], [2517828207, 169945044])],
        "encodings": [[{"ssrc": 2254562588}], [{"ssrc": 2517828207, "rtx": {"ssrc": 169945044}}]],
        "codecs": [["audio/opus"], ["video/VP8", "video/rtx", "video/H264", "video/rtx", "video/VP9", "video/rtx"]],
    },
    "chromium-156.0.8078.114-mediasoup-client-shape-simulcast.sdp": {
        "media": [("audio", "0", "sendonly", False, ["opus", "red", "G722", "PCMU"], [195429707]),
                  ("video", "1", "sendonly", False, ["VP8", "rtx", "H264"], [])],
        "encodings": [[{"ssrc": 195429707}], [{"rid": "r0"}, {"rid": "r1"}, {"rid": "r2"}]],
        "codecs": [["audio/opus"], ["video/VP8", "video/rtx", "video/H264", "video/rtx", "video/VP9", "video/rtx"]],
    },
    "chromium-156.0.8078.114-whep-recvonly.sdp": {
        "media": [("audio", "0", "recvonly", False, ["opus", "red", "G722", "PCMU"], []),
                  ("video", "1", "recvonly", False, ["VP8", "rtx", "VP9"], [])],
    },
    "chromium-156.0.8078.114-whep-recvonly-video-first.sdp": {
        "media": [("video", "0", "recvonly", False, ["VP8", "rtx", "VP9"], []),
                  ("audio", "1", "recvonly", False, ["opus", "red", "G722", "PCMU"], [])],
    },
    "firefox-153.8.0esr-whip-sendonly.sdp": {
        "media": [("audio", "0", "sendonly", False, ["opus", "G722", "PCMU", "PCMA"], [2339564777]),
                  ("video", "1", "sendonly", False, ["VP8", "rtx", "VP9"], [4108741779, 3031237747])],
        "encodings": [[{"ssrc": 2339564777}], [{"ssrc": 4108741779, "rtx": {"ssrc": 3031237747}}]],
        "codecs": [["audio/opus"], ["video/VP8", "video/rtx", "video/VP9", "video/rtx"]],
    },
    "firefox-153.8.0esr-whip-sendonly-max-bundle.sdp": {
        "media": [("audio", "0", "sendonly", False, ["opus", "G722", "PCMU", "PCMA"], [1701281039]),
                  ("video", "1", "sendonly", True, ["VP8", "rtx", "VP9"], [3555338824, 1428875446])],
        "encodings": [[{"ssrc": 1701281039}], [{"ssrc": 3555338824, "rtx": {"ssrc": 1428875446}}]],
        "codecs": [["audio/opus"], ["video/VP8", "video/rtx", "video/VP9", "video/rtx"]],
    },
    "firefox-153.8.0esr-whep-recvonly.sdp": {
        "media": [("audio", "0", "recvonly", False, ["opus", "G722", "PCMU", "PCMA"], [3305819620]),
                  ("video", "1", "recvonly", False, ["VP8", "rtx", "VP9"], [439544391])],
    },
    "gstreamer-1.22.0-webrtcbin-max-bundle-whip-sendonly-vp8.sdp": {
        "media": [("video", "video0", "sendonly", False, ["VP8"], [2820240764]),
                  ("audio", "audio1", "sendonly", True, ["OPUS"], [3317314588])],
        "encodings": [[{"ssrc": 2820240764}], [{"ssrc": 3317314588}]],
        "codecs": [["video/VP8"], ["audio/OPUS"]],
    },
    "gstreamer-1.22.0-webrtcbin-max-bundle-whip-sendonly-h264.sdp": {
        "media": [("video", "video0", "sendonly", False, ["H264"], [940364124]),
                  ("audio", "audio1", "sendonly", True, ["OPUS"], [554325739])],
        "encodings": [[{"ssrc": 940364124}], [{"ssrc": 554325739}]],
        "codecs": [["video/H264"], ["audio/OPUS"]],
    },
    "gstreamer-1.22.0-webrtcbin-max-bundle-whep-recvonly.sdp": {
        "media": [("video", "video0", "recvonly", False, ["VP8"], []),
                  ("audio", "audio1", "recvonly", True, ["OPUS"], [])],
    },
}


def test_every_fixture_is_listed():
    assert sorted(p.name for p in FIXTURES.glob("*.sdp")) == sorted(REAL_OFFERS)


def _check_answer(offer, sdp, accepted):
    """Our answer: accepted sections (bundle-only ones too) have port 9, our
    ICE/DTLS/candidate lines and rtcp-mux; the BUNDLE group lists them,
    starting with the first mid of the offer's group."""
    answer = parse_offer(sdp)
    mids = [s.mid for s, ok in zip(offer.media, accepted) if ok]
    assert answer.bundle_mids[0] == next(m for m in offer.bundle_mids if m in mids)
    assert sorted(answer.bundle_mids) == sorted(mids)
    sections = sdp.split("\r\nm=")[1:]
    assert len(sections) == len(offer.media)
    for section, text, ok in zip(answer.media, sections, accepted):
        assert not section.bundle_only
        if ok:
            assert section.port == 9 and not section.rejected
            assert section.rtcp_mux and section.ice_ufrag == "sfuufrag1234abcd" and section.fingerprints
            assert "a=candidate:udpcandidate 1 udp" in text and "a=end-of-candidates" in text
        else:
            assert section.port == 0 and section.direction == "inactive"


@pytest.mark.parametrize("name", sorted(REAL_OFFERS))
def test_real_offer(name):
    expected = REAL_OFFERS[name]
    sdp = fixture(name)
    offer = parse_offer(sdp)
    assert offer.setup == "actpass" and offer.fingerprints and offer.ice_ufrag and offer.ice_pwd
    assert offer.bundle_mids == [m[1] for m in expected["media"]]
    got = []
    for section, (kind, *_rest, first_codecs, _ssrcs) in zip(offer.media, expected["media"]):
        got.append((section.kind, section.mid, section.direction, section.bundle_only,
                    [c.name for c in section.codecs][: len(first_codecs)], sorted(section.ssrcs)))
        assert not section.rejected  # bundle-only sections are in the bundle, not rejected
        assert section.port == 0 or not section.bundle_only
    assert got == [(k, mid, d, bo, codecs, sorted(ssrcs)) for k, mid, d, bo, codecs, ssrcs in expected["media"]]
    # the same parse with bare LF line ends
    assert parse_offer(sdp.replace("\r\n", "\n")) == offer

    tp = transport_params()
    if "encodings" in expected:  # WHIP publisher
        problems: list[str] = []
        answers = whip_media_answers(offer, router_caps(), problems)
        assert problems == []
        assert [a["rtp_parameters"]["encodings"] for a in answers] == expected["encodings"]
        assert [[c["mimeType"] for c in a["rtp_parameters"]["codecs"]] for a in answers] == expected["codecs"]
        for section, answer in zip(offer.media, answers):
            check_producer(answer["rtp_parameters"], section.kind)
            assert answer["rtp_parameters"]["mid"] == section.mid
        sdp_answer = build_answer(offer, tp, answers)
        assert sdp_answer.count("a=recvonly\r\n") == len(offer.media)
    else:  # WHEP viewer: consume what Chrome publishes (CHROME_WHIP)
        publisher = {s.kind: s for s in parse_offer(CHROME_WHIP).media}
        answers = []
        for section in offer.media:
            ortc.validate_rtp_capabilities(offer_to_consumer_capabilities(section))
            params = _consumer_params(publisher[section.kind], section)
            assert params["codecs"][0]["mimeType"].lower() == f"{section.kind}/{'opus' if section.kind == 'audio' else 'vp8'}"
            answers.append({"direction": "sendonly", "rtp_parameters": params})
        sdp_answer = build_answer(offer, tp, answers)
        assert sdp_answer.count("a=sendonly\r\n") == len(offer.media)
    _check_answer(offer, sdp_answer, [True] * len(offer.media))


def test_firefox_extmap_directions_are_mirrored_in_the_answer():
    offer = parse_offer(fixture("firefox-153.8.0esr-whip-sendonly-max-bundle.sdp"))
    audio, video = offer.media
    assert (audio.extmaps[1].id, audio.extmaps[1].direction) == (2, "recvonly")
    answers = whip_media_answers(offer, router_caps())
    # 6/recvonly (playout-delay) is never sent by Firefox: not part of its producer
    assert 6 not in [e["id"] for e in answers[1]["rtp_parameters"]["headerExtensions"]]
    whep = parse_offer(fixture("firefox-153.8.0esr-whep-recvonly.sdp"))
    caps = offer_to_consumer_capabilities(whep.media[0])
    assert [e["preferredId"] for e in caps["headerExtensions"]] == [e.id for e in whep.media[0].extmaps]
    # a /recvonly extmap of a viewer's offer is answered /sendonly by us, the sender
    whep.media[0].extmaps[1].direction = "recvonly"
    params = {"codecs": [{"mimeType": "audio/opus", "payloadType": 109, "clockRate": 48000, "channels": 2}],
              "headerExtensions": [{"uri": whep.media[0].extmaps[1].uri, "id": whep.media[0].extmaps[1].id}],
              "encodings": [{"ssrc": 5}], "rtcp": {"cname": "c"}}
    sdp = build_answer(whep, transport_params(), [{"direction": "sendonly", "rtp_parameters": params}, None])
    assert f"a=extmap:{whep.media[0].extmaps[1].id}/sendonly {whep.media[0].extmaps[1].uri}\r\n" in sdp


# ---------------------------------------------------------------------------
# Bundle-only (RFC 8843 §6), issue #9.
# ---------------------------------------------------------------------------


def test_port_zero_is_rejected_only_without_bundle_only_in_the_group():
    sdp = fixture("gstreamer-1.22.0-webrtcbin-max-bundle-whip-sendonly-vp8.sdp")
    assert not parse_offer(sdp).media[1].rejected
    assert parse_offer(sdp.replace("a=bundle-only\r\n", "")).media[1].rejected
    # bundle-only, but its mid is not in the BUNDLE group: rejected
    assert parse_offer(sdp.replace("a=group:BUNDLE video0 audio1", "a=group:BUNDLE video0")).media[1].rejected
    assert parse_offer(sdp.replace("a=group:BUNDLE video0 audio1\r\n", "")).media[1].rejected


def test_rejected_sections_and_bundle_order():
    """The answer's BUNDLE starts with the first mid of the offer's group that
    we accept; a section we reject is port 0, inactive and not in the group."""
    sdp = fixture("gstreamer-1.22.0-webrtcbin-max-bundle-whip-sendonly-vp8.sdp")
    offer = parse_offer(sdp.replace("a=group:BUNDLE video0 audio1", "a=group:BUNDLE audio1 video0"))
    answers = whip_media_answers(offer, router_caps())
    assert parse_offer(build_answer(offer, transport_params(), answers)).bundle_mids == ["audio1", "video0"]
    # video (the offerer-tagged section) rejected: audio, bundle-only, becomes the tagged one
    offer = parse_offer(sdp)
    problems: list[str] = []
    answers = whip_media_answers(offer, router_caps(MEDIA_CODECS[:1]), problems)
    assert answers[0] is None and answers[1] is not None
    assert problems == ["video m-section mid=video0: no codec supported by the router (offered: VP8/90000)"]
    answer_sdp = build_answer(offer, transport_params(), answers)
    _check_answer(offer, answer_sdp, [False, True])
    # the offer's own rejection (no bundle-only) is kept
    offer = parse_offer(sdp.replace("a=bundle-only\r\n", ""))
    problems = []
    answers = whip_media_answers(offer, router_caps(), problems)
    assert answers[1] is None and "port 0" in problems[0]
    _check_answer(offer, build_answer(offer, transport_params(), answers), [True, False])


# ---------------------------------------------------------------------------
# Offers that used to crash (HTTP 500) or were mis-read, issue #9.
# ---------------------------------------------------------------------------

GST_VP8 = "gstreamer-1.22.0-webrtcbin-max-bundle-whip-sendonly-vp8.sdp"


def _with_video_ssrc_lines(lines: str) -> MediaSection:
    """GStreamer's VP8 offer with its video a=ssrc lines replaced by ``lines``."""
    sdp = fixture(GST_VP8)
    kept = [ln for ln in sdp.split("\r\n") if not ln.startswith("a=ssrc:2820240764")]
    at = kept.index("a=mid:video0")
    return parse_offer("\r\n".join(kept[:at] + lines.strip().split("\n") + kept[at:])).media[0]


@pytest.mark.parametrize(("lines", "encodings"), [
    # the StopIteration of issue #9: the group names 2 as media, 1 as its RTX, only 1 has a=ssrc
    ("a=ssrc-group:FID 2 1\na=ssrc:1 cname:c", [{"ssrc": 2, "rtx": {"ssrc": 1}}]),
    ("a=ssrc:1 cname:c\na=ssrc:2 cname:c\na=ssrc-group:FID 2 1", [{"ssrc": 2, "rtx": {"ssrc": 1}}]),
    ("a=ssrc-group:FID 1 2\na=ssrc:2 cname:c\na=ssrc:1 cname:c", [{"ssrc": 1, "rtx": {"ssrc": 2}}]),
    ("a=ssrc:5 cname:c\na=ssrc-group:FEC-FR 5 6\na=ssrc:6 cname:c", [{"ssrc": 5}]),
    ("a=ssrc:6 cname:c\na=ssrc:5 cname:c\na=ssrc-group:FEC-FR 5 6", [{"ssrc": 5}]),
    ("a=ssrc-group:FID 12 13\na=ssrc-group:SIM 10 12\na=ssrc-group:FID 10 11\n"
     + "\n".join(f"a=ssrc:{s} cname:c" for s in (13, 12, 11, 10)),
     [{"ssrc": 10, "rtx": {"ssrc": 11}}, {"ssrc": 12, "rtx": {"ssrc": 13}}]),
    ("a=ssrc-group:FID 1 2\na=ssrc-group:FID 1 2\na=ssrc:1 cname:c\na=ssrc:1 cname:c", [{"ssrc": 1, "rtx": {"ssrc": 2}}]),
])
def test_ssrc_groups_in_any_order(lines, encodings):
    section = _with_video_ssrc_lines(lines)
    assert offer_to_producer_parameters(section, router_caps())["encodings"] == encodings


@pytest.mark.parametrize(("lines", "message"), [
    ("a=ssrc-group:FID 1 2\na=ssrc-group:FID 2 1\na=ssrc:1 cname:c", "1 is both a media SSRC and an RTX"),
    ("a=ssrc-group:FEC-FR 2 1\na=ssrc:1 cname:c", "no media SSRC"),
    ("a=ssrc-group:FID 1\na=ssrc:1 cname:c", "FID needs two SSRCs"),
    ("a=ssrc-group:FID 1 1\na=ssrc:1 cname:c", "repeats an SSRC"),
    ("a=ssrc-group:FID 1 2\na=ssrc-group:FID 1 3\na=ssrc:1 cname:c", "two a=ssrc-group:FID"),
    ("a=ssrc-group:SIM 1 2\na=ssrc-group:FID 1 2\na=ssrc:1 cname:c", "both a media SSRC and an RTX"),
    ("a=ssrc:99999999999 cname:c", "a=ssrc: 99999999999 is out of range"),
])
def test_contradicting_ssrc_groups_are_sdp_errors(lines, message):
    with pytest.raises(SdpError, match=message):
        offer_to_producer_parameters(_with_video_ssrc_lines(lines), router_caps())


def test_same_ssrc_in_two_sections_rejects_the_second():
    sdp = fixture(GST_VP8).replace("a=ssrc:3317314588", "a=ssrc:2820240764")
    problems: list[str] = []
    answers = whip_media_answers(parse_offer(sdp), router_caps(), problems)
    assert answers[0] and answers[1] is None
    assert problems == ["audio m-section mid=audio1: SSRC 2820240764 is already used by m-section mid=video0"]


def test_msid_forms_and_session_attributes():
    chrome = parse_offer(fixture("chromium-156.0.8078.114-whip-sendonly.sdp"))
    assert chrome.extmap_allow_mixed and chrome.media[0].msid.startswith("- ")
    assert chrome.media[0].msid_track == "ef1c5443-8bcf-486c-9e3e-aed4e6331ef4"
    firefox = parse_offer(fixture("firefox-153.8.0esr-whip-sendonly.sdp"))
    assert firefox.media[0].msid_track == "{de06a038-63c2-424f-95c3-b120a403d8c4}"
    # Firefox's session-level a=sendrecv is the default only: each section says sendonly
    assert [m.direction for m in firefox.media] == ["sendonly", "sendonly"]
    sdp = fixture(GST_VP8).replace("a=sendonly\r\n", "").replace("t=0 0\r\n", "t=0 0\r\na=sendonly\r\n")
    assert [m.direction for m in parse_offer(sdp).media] == ["sendonly", "sendonly"]


def test_line_ends_and_duplicate_attributes():
    sdp = fixture(GST_VP8)
    offer = parse_offer(sdp)
    assert parse_offer(sdp.replace("\r\n", "\n")) == offer
    assert parse_offer(sdp.replace("\r\n", "\r")) == offer
    assert parse_offer(sdp.replace("\r\n", "\r\n\r\n")) == offer
    assert parse_offer("\ufeff" + sdp) == offer  # a byte-order mark
    doubled = "\r\n".join(
        ln + ("\r\n" + ln if ln.startswith("a=") and not ln.startswith("a=ssrc:") else "")
        for ln in sdp.split("\r\n")
    )
    again = parse_offer(doubled)
    assert again.media == offer.media and again.fingerprints == offer.fingerprints
    for variant in (sdp.replace("a=setup:actpass", "a=setup:ACTPASS"), sdp.replace("a=setup:actpass", "a=setup:active")):
        assert parse_offer(variant).setup in ("actpass", "active")


@pytest.mark.parametrize(("mutate", "message"), [
    (lambda s: s.replace("a=mid:audio1", "a=mid:video0"), "a=mid:video0 is used by two m-sections"),
    (lambda s: s.replace("a=mid:audio1", "a=mid:audio1\r\na=mid:audio2"), "a second a=mid:audio2"),
    (lambda s: s.replace("a=mid:audio1", "a=mid:audio 1"), "a=mid: 'audio 1' is not a token"),
    (lambda s: s.replace("a=rtpmap:96 VP8/90000", "a=rtpmap:96 VP8/90000\r\na=rtpmap:96 H264/90000"),
     "payload type 96 mapped twice"),
    (lambda s: s.replace("a=rtpmap:96 VP8/90000", "a=rtpmap:96 VP8/9\u0660000"), "clock rate"),
    (lambda s: s.replace("m=video 9 ", "m=video 99999 "), "m-line port: 99999 is out of range"),
    (lambda s: s.replace("m=video 9 UDP/TLS/RTP/SAVPF 96", "m=video 9 UDP/TLS/RTP/SAVPF 200"), "payload type: 200"),
    (lambda s: s.replace("m=video 9 ", "m=video \u00b2 "), "bad m-line port"),
    (lambda s: s.replace("a=rtcp-mux\r\n", "a=extmap:3 urn:a\r\na=extmap:3 urn:b\r\n", 1), "extmap id 3 used for"),
    (lambda s: s.replace("a=rtcp-mux\r\n", "a=extmap:3/sideways urn:a\r\n", 1), "bad a=extmap direction"),
    (lambda s: s.replace("a=fingerprint:sha-256 ", "a=fingerprint:sha-256 ZZ"), "bad a=fingerprint"),
    (lambda s: s.replace("a=fingerprint:sha-256 ", "a=fingerprint:md5 "), "missing a=fingerprint"),
    # bounds that keep parsing linear (a 1 MB body of distinct lines took seconds of CPU before)
    (lambda s: s.replace("a=rtcp-mux\r\n", "".join(f"a=rtcp-fb:96 x{i}\r\n" for i in range(70)), 1),
     "more than 64 different a=rtcp-fb"),
    (lambda s: s.replace("a=rtcp-mux\r\n", "".join(f"a=ssrc-group:SIM {i} {i + 1000}\r\n" for i in range(70)), 1),
     "more than 64 different a=ssrc-group"),
    (lambda s: s + "".join(f"m=audio 9 UDP/TLS/RTP/SAVPF 0\r\na=mid:x{i}\r\n" for i in range(260)),
     "more than 256 m-sections"),
])
def test_more_parse_errors(mutate, message):
    with pytest.raises(SdpError, match=re.escape(message)):
        parse_offer(mutate(fixture(GST_VP8)))


def test_rid_and_simulcast_lines_are_accepted():
    sdp = fixture("chromium-156.0.8078.114-mediasoup-client-shape-simulcast.sdp")
    video = parse_offer(sdp).media[1]
    assert [(r.id, r.direction) for r in video.rids] == [("r0", "send"), ("r1", "send"), ("r2", "send")]
    # old Firefox's "rid=" form, malformed lines and a repeated rid are ignored, not errors
    for line in ("a=simulcast: send rid=r0;r1;r2", "a=simulcast:send", "a=rid:r0", "a=rid:r0 send", "a=rid:bad\x01 send"):
        again = parse_offer(sdp.replace("a=simulcast:send r0;r1;r2", "a=simulcast:send r0;r1;r2\r\n" + line))
        assert offer_encodings(again.media[1]) == [{"rid": "r0"}, {"rid": "r1"}, {"rid": "r2"}]


def test_whep_rtx_without_a_usable_apt_is_left_out():
    for fmtp in ("a=fmtp:97 apt=x", "a=fmtp:97 apt=55", ""):
        video = parse_offer(WHEP_OFFER.replace("a=fmtp:97 apt=96\r\n", fmtp + ("\r\n" if fmtp else ""))).media[1]
        caps = offer_to_consumer_capabilities(video)
        ortc.validate_rtp_capabilities(caps)
        assert [c["preferredPayloadType"] for c in caps["codecs"]] == [96, 102, 103]
