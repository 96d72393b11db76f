"""`sfu-example`: three simulated plain-RTP participants in one router.

Each participant publishes an Opus-like audio stream and a VP8-like video
stream to its own PlainTransport and consumes the other two participants'
streams on the same transport. The SFU forwards without decoding, rewriting
SSRC, payload type and sequence numbers per consumer; the example prints
what each participant received.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import socket
import struct
import time
from dataclasses import dataclass, field

import sfu

MEDIA_CODECS = [
    {"kind": "audio", "mimeType": "audio/opus", "clockRate": 48000, "channels": 2},
    {"kind": "video", "mimeType": "video/VP8", "clockRate": 90000},
]

# What a simulated participant sends (its own payload types and SSRCs) and
# what it can receive (the router's codecs).
AUDIO_PT, VIDEO_PT = 111, 96


def rtp_packet(pt: int, seq: int, ts: int, ssrc: int, payload: bytes, marker: bool = False) -> bytes:
    return struct.pack("!BBHII", 0x80, (0x80 if marker else 0) | pt, seq & 0xFFFF, ts & 0xFFFFFFFF, ssrc) + payload


@dataclass
class ReceivedStream:
    payload_type: int
    packets: int = 0
    first_seq: int = -1
    last_seq: int = -1
    out_of_order: int = 0


@dataclass
class Participant:
    name: str
    sock: socket.socket
    audio_ssrc: int
    video_ssrc: int
    sent: int = 0
    received: dict[int, ReceivedStream] = field(default_factory=dict)

    def on_datagram(self, data: bytes) -> None:
        if len(data) < 12:
            return
        pt = data[1] & 0x7F
        seq, ssrc = struct.unpack_from("!H", data, 2)[0], struct.unpack_from("!I", data, 8)[0]
        st = self.received.setdefault(ssrc, ReceivedStream(pt))
        if st.packets and ((seq - st.last_seq) & 0xFFFF) != 1:
            st.out_of_order += 1
        if not st.packets:
            st.first_seq = seq
        st.last_seq = seq
        st.packets += 1


async def run(seconds: float, log_level: str) -> int:
    worker = await sfu.create_worker(log_level=log_level)
    router = await worker.create_router(MEDIA_CODECS)
    caps = router.rtp_capabilities
    participants: list[Participant] = []
    transports = []
    loop = asyncio.get_running_loop()

    for name in ("alice", "bob", "carol"):
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.bind(("127.0.0.1", 0))
        sock.setblocking(False)
        p = Participant(name, sock, random.getrandbits(32), random.getrandbits(32))
        transport = await router.create_plain_transport(listen_ip="127.0.0.1", rtcp_mux=True, comedia=False)
        await transport.connect(ip="127.0.0.1", port=sock.getsockname()[1])
        await transport.produce("audio", {
            "codecs": [{"mimeType": "audio/opus", "payloadType": AUDIO_PT, "clockRate": 48000, "channels": 2}],
            "encodings": [{"ssrc": p.audio_ssrc}],
        })
        await transport.produce("video", {
            "codecs": [{"mimeType": "video/VP8", "payloadType": VIDEO_PT, "clockRate": 90000}],
            "encodings": [{"ssrc": p.video_ssrc}],
        })
        loop.add_reader(sock.fileno(), lambda p=p: _drain(p))
        participants.append(p)
        transports.append(transport)

    for i, t in enumerate(transports):
        for j, other in enumerate(transports):
            if i != j:
                for producer in other.producers:
                    await t.consume(producer.id, caps)

    # 50 audio packets/s and 30 video frames/s of 3 packets each.
    start = time.monotonic()
    seq = {p.name: [0, 0] for p in participants}
    tick = 0
    while time.monotonic() - start < seconds:
        for p in participants:
            a, v = seq[p.name]
            dst = ("127.0.0.1", transports[participants.index(p)].tuple["localPort"])
            p.sock.sendto(rtp_packet(AUDIO_PT, a, a * 960, p.audio_ssrc, os.urandom(100)), dst)
            seq[p.name][0] += 1
            p.sent += 1
            if tick % 5 < 3:  # 30 frames/s out of 50 ticks/s
                for k in range(3):
                    p.sock.sendto(
                        rtp_packet(VIDEO_PT, v + k, v * 1000, p.video_ssrc, os.urandom(1000), marker=(k == 2)), dst
                    )
                seq[p.name][1] += 3
                p.sent += 3
        tick += 1
        await asyncio.sleep(0.02)
    await asyncio.sleep(0.2)

    failures = 0
    print(f"{'participant':<12}{'sent':>6}  received streams (ssrc/pt: packets, gaps)")
    for p in participants:
        streams = ", ".join(
            f"{ssrc:08x}/{st.payload_type}: {st.packets} pkts, {st.out_of_order} gaps" for ssrc, st in p.received.items()
        )
        print(f"{p.name:<12}{p.sent:>6}  {streams}")
        if len(p.received) != 4 or any(st.out_of_order for st in p.received.values()):
            failures += 1
    counters = await worker.get_counters()
    print(
        f"worker {worker.pid}: {counters['rx_rtp']} RTP packets in, {counters['tx_datagrams']} out, "
        f"{counters['recv_calls']} recvmmsg and {counters['send_calls']} sendmmsg calls"
    )
    for p in participants:
        loop.remove_reader(p.sock.fileno())
        p.sock.close()
    worker.close()
    await worker.wait_closed()
    return 1 if failures else 0


def _drain(p: Participant) -> None:
    while True:
        try:
            data = p.sock.recv(2048)
        except BlockingIOError:
            return
        p.on_datagram(data)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=3.0, help="how long the participants send")
    parser.add_argument("--log-level", default="warning")
    args = parser.parse_args()
    raise SystemExit(asyncio.run(run(args.seconds, args.log_level)))


if __name__ == "__main__":
    main()
