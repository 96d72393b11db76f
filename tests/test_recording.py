"""The recorder (sfu.recording) on real packets from a real encoder.

A session fixture runs Debian's ffmpeg three times at once (``-re``, lavfi
test sources) sending RTP + RTCP to loopback sockets:

* VP8 + Opus, 5 s (150 video frames, 250 Opus packets), for WebM;
* H.264 (libx264, Constrained Baseline, SPS/PPS in band) + Opus, 3 s, for Matroska;
* VP9 (libvpx-vp9), 3 s, for WebM.

The captured datagrams (with their arrival times) are fed to a Recorder;
ffprobe counts the file's frames and durations, and ffmpeg decodes the
whole file, which must give no error.
"""

from __future__ import annotations

import json
import random
import select
import shutil
import socket
import struct
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from sfu.recording import Recorder, RecordingError, vp8
from sfu.recording.h264 import H264Depacketizer, nal_units, sps_size
from sfu.recording.reorder import Gap, ReorderBuffer
from sfu.recording.rtp import parse_rtp, parse_sender_reports

WAIT_S = 60.0  # bound on a capture; the machine is shared

pytestmark = pytest.mark.skipif(
    shutil.which("ffmpeg") is None or shutil.which("ffprobe") is None,
    reason="ffmpeg/ffprobe not installed (Debian's ffmpeg package)",
)


@dataclass(frozen=True)
class Datagram:
    arrival: float
    stream: int  # index of the ffmpeg output
    rtcp: bool
    data: bytes


def _port_pair() -> tuple[socket.socket, socket.socket]:
    for _ in range(200):
        rtp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        rtp.bind(("127.0.0.1", 0))
        port = rtp.getsockname()[1]
        if port % 2 == 0:
            rtcp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            try:
                rtcp.bind(("127.0.0.1", port + 1))
            except OSError:
                rtcp.close()
            else:
                for s in (rtp, rtcp):
                    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 22)
                return rtp, rtcp
        rtp.close()
    raise RuntimeError("no free UDP port pair on 127.0.0.1")


def capture(args: list[str], outputs: int) -> list[Datagram]:
    """Run a sender (ffmpeg, gst-launch-1.0) with ``{0}``, ``{1}``... in ``args`` replaced by the RTP
    ports of ``outputs`` socket pairs (RTCP on port + 1, ffmpeg's default);
    returns every datagram received, in arrival order."""
    socks: list[tuple[socket.socket, int, bool]] = []
    ports = []
    for i in range(outputs):
        rtp, rtcp = _port_pair()
        socks += [(rtp, i, False), (rtcp, i, True)]
        ports.append(rtp.getsockname()[1])
    cmd = [a.format(*ports) for a in args]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    out: list[Datagram] = []
    deadline = time.monotonic() + WAIT_S
    last = time.monotonic()
    try:
        while True:
            ready, _, _ = select.select([s for s, _, _ in socks], [], [], 0.05)
            now = time.monotonic()
            for s, i, rtcp in socks:
                if s in ready:
                    out.append(Datagram(now, i, rtcp, s.recv(65536)))
                    last = now
            if proc.poll() is not None and now - last > 0.5:
                break
            if now > deadline:
                raise TimeoutError(f"ffmpeg still running after {WAIT_S} s: {cmd}")
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        for s, _, _ in socks:
            s.close()
    assert proc.returncode == 0, f"{cmd}: {proc.stderr.read().decode()}"
    return out


FFMPEG = ["ffmpeg", "-v", "error", "-nostdin"]
SOURCES = {
    "vp8_opus": (
        [*FFMPEG, "-re", "-f", "lavfi", "-i", "testsrc=size=320x240:rate=30:duration=5",
         "-f", "lavfi", "-i", "sine=frequency=1000:sample_rate=48000:duration=5",
         "-map", "0:v", "-c:v", "libvpx", "-deadline", "realtime", "-cpu-used", "8", "-g", "30",
         "-b:v", "600k", "-f", "rtp", "rtp://127.0.0.1:{0}?pkt_size=1200",
         "-map", "1:a", "-c:a", "libopus", "-ac", "2", "-f", "rtp", "rtp://127.0.0.1:{1}"],
        2,
    ),
    "h264_opus": (
        [*FFMPEG, "-re", "-f", "lavfi", "-i", "testsrc=size=320x240:rate=30:duration=3",
         "-f", "lavfi", "-i", "sine=frequency=1000:sample_rate=48000:duration=3",
         "-map", "0:v", "-c:v", "libx264", "-profile:v", "baseline", "-tune", "zerolatency",
         "-preset", "ultrafast", "-g", "30", "-pix_fmt", "yuv420p", "-bsf:v", "dump_extra",
         "-f", "rtp", "rtp://127.0.0.1:{0}?pkt_size=1200",
         "-map", "1:a", "-c:a", "libopus", "-f", "rtp", "rtp://127.0.0.1:{1}"],
        2,
    ),
    "vp9": (
        [*FFMPEG, "-re", "-f", "lavfi", "-i", "testsrc=size=320x240:rate=30:duration=3",
         "-c:v", "libvpx-vp9", "-deadline", "realtime", "-cpu-used", "8", "-g", "30",
         "-b:v", "600k", "-strict", "experimental", "-f", "rtp", "rtp://127.0.0.1:{0}?pkt_size=1200"],
        1,
    ),
    # GStreamer's VP9 payloader uses the full descriptor (P bit, picture ID,
    # scalability structure with the resolution on keyframes); 2 s.
    "vp9_gst": (
        ["gst-launch-1.0", "-q", "videotestsrc", "num-buffers=60", "!",
         "video/x-raw,width=320,height=240,framerate=30/1", "!",
         "vp9enc", "deadline=1", "cpu-used=8", "keyframe-max-dist=30", "!",
         "rtpvp9pay", "mtu=1200", "!", "udpsink", "host=127.0.0.1", "port={0}"],
        1,
    ),
}
if shutil.which("gst-launch-1.0") is None:
    del SOURCES["vp9_gst"]


@pytest.fixture(scope="module")
def captures() -> dict[str, list[Datagram]]:
    """All three ffmpeg runs at once (about 5 s)."""
    results: dict[str, list[Datagram] | Exception] = {}

    def run(name: str) -> None:
        try:
            results[name] = capture(*SOURCES[name])
        except Exception as e:  # noqa: BLE001 (re-raised below, in the test's thread)
            results[name] = e

    threads = [threading.Thread(target=run, args=(n,)) for n in SOURCES]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for r in results.values():
        if isinstance(r, Exception):
            raise r
    return results  # type: ignore[return-value]


def frames_sent(datagrams: list[Datagram], stream: int) -> int:
    """Frames the sender sent on a video stream: its marker packets."""
    return sum(
        1 for d in datagrams if d.stream == stream and not d.rtcp and parse_rtp(d.data).marker
    )


def feed(tracks, datagrams, *, drop=lambda d: False, reports=True, delay=None) -> None:
    """Feed datagrams in arrival order (``delay[stream]`` seconds added to a
    stream's arrivals), RTCP sender reports included unless ``reports`` is
    false; ``drop(d)`` true drops one before the recorder."""
    delay = delay or {}
    items = sorted(datagrams, key=lambda d: d.arrival + delay.get(d.stream, 0.0))
    for d in items:
        arrival = d.arrival + delay.get(d.stream, 0.0)
        track = tracks[d.stream]
        if d.rtcp:
            if reports:
                for sr in parse_sender_reports(d.data):
                    track.push_sender_report(sr.ntp_seconds, sr.rtp_timestamp, arrival)
        elif not drop(d):
            track.push_rtp(d.data, arrival)


def probe(path: Path) -> dict:
    out = subprocess.run(
        ["ffprobe", "-v", "error", "-count_frames", "-show_streams", "-show_format", "-of", "json", str(path)],
        capture_output=True, text=True, check=True, timeout=WAIT_S,
    )
    return json.loads(out.stdout)


def decode_errors(path: Path) -> str:
    """ffmpeg's complaints while decoding the whole file (empty if none)."""
    r = subprocess.run(
        ["ffmpeg", "-v", "error", "-nostdin", "-i", str(path), "-f", "null", "-"],
        capture_output=True, text=True, timeout=WAIT_S, check=False,
    )
    return r.stderr + ("" if r.returncode == 0 else f"exit {r.returncode}")


def stream_of(info: dict, codec: str) -> dict:
    return next(s for s in info["streams"] if s["codec_name"] == codec)


# --- whole recordings ------------------------------------------------------


def test_vp8_opus_webm(captures, tmp_path):
    data = captures["vp8_opus"]
    rec = Recorder(tmp_path / "a.webm", "webm")
    video = rec.add_track("video", "video/VP8", 90000)
    audio = rec.add_track("audio", "audio/opus", 48000)
    feed([video, audio], data)
    rec.close()

    info = probe(rec.path)
    assert decode_errors(rec.path) == ""
    v, a = stream_of(info, "vp8"), stream_of(info, "opus")
    sent = frames_sent(data, 0)
    assert sent == 150
    assert int(v["nb_read_frames"]) >= 0.98 * sent
    assert (v["width"], v["height"]) == (320, 240)
    assert int(a["channels"]) == 2
    assert int(a["nb_read_frames"]) >= 0.98 * 250
    assert abs(float(info["format"]["duration"]) - 5.0) <= 0.2
    assert video.stats.frames_written == int(v["nb_read_frames"])
    assert video.stats.frames_dropped == 0 and video.stats.packets_lost == 0
    assert rec.bytes_written > 0 and rec.path.stat().st_size >= rec.bytes_written


def test_h264_opus_mkv(captures, tmp_path):
    data = captures["h264_opus"]
    rec = Recorder(tmp_path / "a.mkv", "mkv")
    video = rec.add_track("video", "video/H264", 90000)
    audio = rec.add_track("audio", "audio/opus", 48000)
    feed([video, audio], data)
    rec.close()

    info = probe(rec.path)
    assert decode_errors(rec.path) == ""
    v = stream_of(info, "h264")
    assert (v["width"], v["height"]) == (320, 240)
    sent = frames_sent(data, 0)
    assert sent == 90
    assert int(v["nb_read_frames"]) >= 0.98 * sent
    assert int(stream_of(info, "opus")["nb_read_frames"]) >= 0.98 * 150
    assert abs(float(info["format"]["duration"]) - 3.0) <= 0.2
    # FU-A was used (320x240 keyframes exceed one 1200-byte packet).
    assert any(parse_rtp(d.data).payload[0] & 0x1F == 28 for d in data if d.stream == 0 and not d.rtcp)


def test_vp9_webm(captures, tmp_path):
    data = captures["vp9"]
    rec = Recorder(tmp_path / "a.webm", "webm")
    video = rec.add_track("video", "video/VP9", 90000)
    feed([video], data)
    rec.close()

    info = probe(rec.path)
    assert decode_errors(rec.path) == ""
    v = stream_of(info, "vp9")
    assert (v["width"], v["height"]) == (320, 240)
    sent = frames_sent(data, 0)
    assert sent == 90
    assert int(v["nb_read_frames"]) >= 0.98 * sent
    assert abs(float(info["format"]["duration"]) - 3.0) <= 0.2


def test_vp9_gstreamer_webm(captures, tmp_path):
    if "vp9_gst" not in captures:
        pytest.skip("gst-launch-1.0 not installed")
    data = captures["vp9_gst"]
    first = parse_rtp(next(d.data for d in data if not d.rtcp)).payload
    assert first[0] & 0x02  # V: the scalability structure is there to be skipped
    rec = Recorder(tmp_path / "gst.webm", "webm")
    video = rec.add_track("video", "video/VP9", 90000)
    feed([video], data)
    rec.close()
    info = probe(rec.path)
    assert decode_errors(rec.path) == ""
    v = stream_of(info, "vp9")
    assert (v["width"], v["height"]) == (320, 240)
    assert int(v["nb_read_frames"]) == frames_sent(data, 0) == 60
    assert abs(float(info["format"]["duration"]) - 2.0) <= 0.2


# --- loss, reordering, joining mid-stream ----------------------------------


@pytest.mark.parametrize(
    ("source", "container", "mime", "codec", "seconds"),
    [("vp8_opus", "webm", "video/VP8", "vp8", 5), ("h264_opus", "mkv", "video/H264", "h264", 3)],
)
def test_five_percent_loss_gives_a_valid_file(captures, tmp_path, source, container, mime, codec, seconds):
    """5% of each stream's RTP packets (seeded choice) never reach the recorder."""
    data = captures[source]
    rng = random.Random(14)
    dropped: set[int] = set()
    for stream in (0, 1):
        packets = [d for d in data if d.stream == stream and not d.rtcp]
        dropped |= {id(d) for d in rng.sample(packets, max(1, round(0.05 * len(packets))))}
    requests = []
    rec = Recorder(tmp_path / f"lossy.{container}", container)
    video = rec.add_track("video", mime, 90000, on_keyframe_needed=lambda: requests.append(1))
    audio = rec.add_track("audio", "audio/opus", 48000)
    feed([video, audio], data, drop=lambda d: id(d) in dropped)
    rec.close()

    assert decode_errors(rec.path) == ""
    info = probe(rec.path)
    v, a = stream_of(info, codec), stream_of(info, "opus")
    sent_video = frames_sent(data, 0)
    vs, as_ = video.stats, audio.stats
    lost_video = sum(1 for d in data if id(d) in dropped and d.stream == 0)
    lost_audio = sum(1 for d in data if id(d) in dropped and d.stream == 1)
    # Every frame in the file is one the recorder wrote; the others were skipped and counted.
    assert int(v["nb_read_frames"]) == vs.frames_written
    assert 0 < vs.frames_written < sent_video
    assert vs.frames_dropped > 0
    assert lost_video - 2 <= vs.packets_lost <= lost_video  # a trailing loss is invisible
    assert requests, "no keyframe request after a loss"
    # Audio has no inter-frame dependency: only the lost packets are missing.
    assert int(a["nb_read_frames"]) == as_.frames_written >= 50 * seconds - lost_audio - 2
    assert as_.frames_dropped == 0
    assert abs(float(info["format"]["duration"]) - seconds) <= 0.2


def test_reordered_and_duplicated_packets_lose_nothing(captures, tmp_path):
    data = [d for d in captures["vp8_opus"] if d.stream == 0]
    shuffled: list[Datagram] = []
    for i in range(0, len(data) - 1, 2):  # swap neighbours, repeat every tenth
        shuffled += [data[i + 1], data[i]]
        if i % 10 == 0:
            shuffled.append(data[i])
    if len(data) % 2:
        shuffled.append(data[-1])
    # Arrival times stay increasing: the k-th datagram arrives when the k-th was sent.
    times = [d.arrival for d in data] + [data[-1].arrival] * (len(shuffled) - len(data))
    shuffled = [Datagram(t, d.stream, d.rtcp, d.data) for t, d in zip(times, shuffled)]
    rec = Recorder(tmp_path / "reordered.webm", "webm")
    video = rec.add_track("video", "video/VP8", 90000)
    feed([video], shuffled)
    rec.close()
    assert decode_errors(rec.path) == ""
    assert video.stats.frames_written == frames_sent(data, 0) == 150
    assert video.stats.packets_lost == 0 and video.stats.packets_late > 0


def test_joining_mid_stream_starts_at_the_next_keyframe(captures, tmp_path):
    data = captures["vp8_opus"]
    video_packets = [d for d in data if d.stream == 0 and not d.rtcp]
    # Join at the 11th frame: the next keyframe is frame 31 (-g 30).
    markers = [i for i, d in enumerate(video_packets) if parse_rtp(d.data).marker]
    joined = video_packets[markers[9] + 1 :]
    requests = []
    rec = Recorder(tmp_path / "join.webm", "webm")
    video = rec.add_track("video", "video/VP8", 90000, on_keyframe_needed=lambda: requests.append(1))
    assert video.needs_keyframe
    feed([video], joined)
    rec.close()
    assert decode_errors(rec.path) == ""
    assert video.stats.frames_before_keyframe == 20 == video.stats.frames_dropped
    assert video.stats.frames_written == 120
    assert requests == [1] and not video.needs_keyframe
    assert float(probe(rec.path)["format"]["duration"]) == pytest.approx(4.0, abs=0.2)


# --- A/V sync from sender reports -------------------------------------------


@pytest.mark.parametrize("audio_later", [0.0, 0.25])
def test_sender_reports_put_audio_and_video_on_one_timeline(captures, tmp_path, audio_later):
    """The sender's reports say the first audio sample was captured
    ``audio_later`` s after the first video frame; the audio reaches the
    recorder 0.4 s late (uplink delay). The file's start times follow the
    reports, not the arrival times; without reports they follow arrival."""
    data = captures["vp8_opus"]
    first_ts = {}
    first_arrival = {}
    for d in data:
        if not d.rtcp and d.stream not in first_ts:
            first_ts[d.stream] = parse_rtp(d.data).timestamp
            first_arrival[d.stream] = d.arrival
    ntp = 3_900_000_000.0
    reports = [
        Datagram(first_arrival[0] - 0.001, 0, True, _sender_report(ntp, first_ts[0])),
        Datagram(first_arrival[1] - 0.001, 1, True, _sender_report(ntp + audio_later, first_ts[1])),
    ]
    media = [d for d in data if not d.rtcp]
    offsets = {}
    for with_reports in (True, False):
        rec = Recorder(tmp_path / f"sync-{with_reports}.webm", "webm")
        video = rec.add_track("video", "video/VP8", 90000)
        audio = rec.add_track("audio", "audio/opus", 48000)
        feed([video, audio], reports + media, delay={1: 0.4}, reports=with_reports)
        rec.close()
        assert decode_errors(rec.path) == ""
        info = probe(rec.path)
        offsets[with_reports] = float(stream_of(info, "opus")["start_time"]) - float(
            stream_of(info, "vp8")["start_time"]
        )
    assert abs(offsets[True] - audio_later) <= 0.040, offsets
    # Arrival times only: the 0.4 s uplink delay shows (give or take the
    # sender's own start-up skew between its two streams).
    assert offsets[False] > 0.3, offsets


def _sender_report(ntp_seconds: float, rtp_ts: int, ssrc: int = 1) -> bytes:
    sec = int(ntp_seconds)
    frac = int((ntp_seconds - sec) * 2**32)
    return struct.pack("!BBHIIIIII", 0x80, 200, 6, ssrc, sec, frac, rtp_ts, 0, 0)


# --- H.264 packetizations ---------------------------------------------------


def _access_units(datagrams: list[Datagram]) -> list[list[bytes]]:
    units: list[list[bytes]] = [[]]
    for d in datagrams:
        if d.stream == 0 and not d.rtcp:
            p = parse_rtp(d.data)
            units[-1].append(p.payload)
            if p.marker:
                units.append([])
    return [u for u in units if u]


def test_h264_stap_a_single_nal_and_missing_parameter_sets(captures):
    """Real access units from libx264 as FFmpeg packetizes them (SPS, PPS and
    SEI in one STAP-A, IDR slices in FU-A): the same NAL units sent as single
    NAL unit packets give the same access unit; a keyframe sent without its
    parameter sets gets the last ones in front; an FU-A without its start
    fragment is not a frame."""
    units = _access_units(captures["h264_opus"])
    key_units = [u for u in units if 5 in [n[0] & 0x1F for n in nal_units(u)]]
    assert len(key_units) == 3  # -g 30, 3 s
    first = key_units[0]
    assert first[0][0] & 0x1F == 24 and any(p[0] & 0x1F == 28 for p in first)
    aggregated = nal_units(first[:1])
    assert [n[0] & 0x1F for n in aggregated][:2] == [7, 8]
    reference, key = H264Depacketizer().assemble(first)
    assert key and reference.startswith(b"\x00\x00\x00\x01" + aggregated[0])
    dep = H264Depacketizer()
    assert dep.assemble(aggregated + first[1:]) == (reference, True)
    assert sps_size(dep.sps) == (320, 240)

    later = [p for p in key_units[1] if not (p[0] & 0x1F == 24 and 7 in [n[0] & 0x1F for n in nal_units([p])])]
    assert len(later) == len(key_units[1]) - 1
    frame, key = dep.assemble(later)
    assert key and frame.startswith(b"\x00\x00\x00\x01" + dep.sps + b"\x00\x00\x00\x01" + dep.pps)

    fu = [p for p in first if p[0] & 0x1F == 28]
    assert fu[0][1] & 0x80 and not fu[1][1] & 0x80
    assert H264Depacketizer().assemble(first[:1] + fu[1:]) is None


# --- sans-IO pieces ---------------------------------------------------------


def _rtp(seq: int, ts: int = 0, marker: bool = False) -> bytes:
    return struct.pack("!BBHII", 0x80, 0x60 | (0x80 if marker else 0), seq & 0xFFFF, ts & 0xFFFFFFFF, 1) + b"\x10x"


def test_reorder_across_sequence_wrap_and_gap_after_window():
    buf = ReorderBuffer(max_packets=4, max_delay=10.0)
    out = []
    for seq in (65533, 65535, 65534, 0, 2, 3, 4, 5, 6):  # 1 is lost
        out += buf.push(parse_rtp(_rtp(seq)), 0.0)
    seqs = [x.count if isinstance(x, Gap) else x.packet.sequence_number for x in out]
    assert seqs == [65533, 65534, 65535, 0, 1, 2, 3, 4, 5, 6][:4] + [1] + [2, 3, 4, 5, 6]
    assert isinstance(out[4], Gap) and buf.packets_lost == 1
    assert buf.push(parse_rtp(_rtp(1)), 0.0) == [] and buf.packets_late == 1


def test_reorder_gap_after_delay():
    buf = ReorderBuffer(max_packets=100, max_delay=0.2)
    assert [x.packet.sequence_number for x in buf.push(parse_rtp(_rtp(10)), 1.0)] == [10]
    assert buf.push(parse_rtp(_rtp(12)), 1.1) == []
    out = buf.push(parse_rtp(_rtp(13)), 1.35)
    assert isinstance(out[0], Gap) and [x.packet.sequence_number for x in out[1:]] == [12, 13]


def test_poll_declares_a_loss_when_packets_stop():
    rec = Recorder("/nonexistent/never-written.webm")
    audio = rec.add_track("audio", "audio/opus", 48000)
    audio.push_rtp(_rtp(100, 0), 1.0)
    audio.push_rtp(_rtp(102, 1920), 1.04)  # 101 missing: 102 is held
    assert audio.stats.packets_lost == 0 and len(audio.pending) == 1
    audio.poll(1.2)  # not waited long enough
    assert len(audio.pending) == 1
    audio.poll(1.3)
    assert audio.stats.packets_lost == 1 and len(audio.pending) == 2


def test_timestamps_unwrap_across_32_bits():
    from sfu.recording.timeline import Timeline

    clock = Timeline().clock(90000)
    start = 0xFFFFFFFF - 4500  # 50 ms before the wrap
    assert clock.local_time(start, 100.0) == 100.0
    assert clock.local_time((start + 9000) & 0xFFFFFFFF, 100.1) == pytest.approx(100.1)
    clock.push_sender_report(5000.0, (start + 18000) & 0xFFFFFFFF, 100.3)  # sender says +0.2 s at NTP 5000
    # The first report sets the sender clock offset: local = ntp + (100.3 - 5000).
    assert clock.local_time((start + 27000) & 0xFFFFFFFF, 100.4) == pytest.approx(100.4)


@pytest.mark.parametrize(
    ("container", "kind", "mime", "message"),
    [
        ("webm", "video", "video/H264", "webm cannot hold video/H264 \\(use container='mkv'\\)"),
        ("mkv", "video", "video/AV1", "AV1 depacketization"),
        ("webm", "audio", "audio/PCMU", "cannot be recorded"),
        ("webm", "audio", "video/VP8", "is a video codec"),
    ],
)
def test_container_and_codec_are_checked(tmp_path, container, kind, mime, message):
    rec = Recorder(tmp_path / "x", container)
    with pytest.raises(RecordingError, match=message):
        rec.add_track(kind, mime, 90000)


def test_unknown_container_and_empty_recording(tmp_path):
    with pytest.raises(RecordingError, match="container must be one of"):
        Recorder(tmp_path / "x.avi", "avi")
    rec = Recorder(tmp_path / "empty.webm")
    track = rec.add_track("video", "video/VP8", 90000)
    track.push_rtp(b"\x00" * 5, 0.0)  # not RTP
    rec.close()
    assert track.stats.packets_invalid == 1 and not rec.path.exists()


def test_vp8_descriptor_of_a_chrome_packet():
    """Chromium's descriptor (X, S, 15-bit picture ID) in the repository's
    RTP fixture, behind header extensions; its truncated and version-1
    variants are rejected."""
    fixtures = Path(__file__).parent / "fixtures"
    packet = parse_rtp((fixtures / "rtp_vp8_chrome.bin").read_bytes())
    assert packet is not None and packet.payload_type == 96
    assert vp8.parse_descriptor(packet.payload) == (4, True, 0)
    assert vp8.frame_size(packet.payload[4:]) == (640, 480)
    for bad in ("rtp_vp8_chrome_truncated.bin", "rtp_vp8_chrome_invalid.bin"):
        assert parse_rtp((fixtures / bad).read_bytes()) is None


def test_reorder_resynchronises_on_a_sequence_jump():
    buf = ReorderBuffer()
    buf.push(parse_rtp(_rtp(10)), 0.0)
    out = buf.push(parse_rtp(_rtp(40000)), 0.1)  # a sender restart, not 30000 losses
    assert isinstance(out[0], Gap) and out[0].count == 0
    assert [x.packet.sequence_number for x in out[1:]] == [40000] and buf.packets_lost == 0
    assert [x.packet.sequence_number for x in buf.push(parse_rtp(_rtp(40001)), 0.2)] == [40001]


def test_reorder_poll_before_any_packet_releases_nothing():
    """A session's timer polls tracks that have not received a packet yet."""
    buf = ReorderBuffer(max_packets=100, max_delay=0.2)
    assert buf.poll(5.0) == []
    rec = Recorder("/nonexistent/never-written.webm")
    video = rec.add_track("video", "video/vp8", 90000)
    video.poll(5.0)
    assert video.stats.packets_lost == 0


def test_later_sender_reports_slew_the_anchor_and_a_jump_reanchors():
    from sfu.recording.timeline import Timeline

    clock = Timeline().clock(90000)
    clock.push_sender_report(5000.0, 0, 100.0)  # local = ntp - 4900
    assert clock.local_time(90000, 101.0) == pytest.approx(101.0)
    # a report 32 ms off (a sender pairing "now" with the last packet's timestamp)
    # moves the anchor by an eighth of it, so no frame moves back by a frame interval
    clock.push_sender_report(5002.032, 180000, 102.0)
    assert clock.local_time(180000, 102.0) == pytest.approx(102.004)
    for k in range(40):  # a steady disagreement is followed
        clock.push_sender_report(5003.032 + k, 270000 + 90000 * k, 103.0 + k)
    assert clock.local_time(270000, 103.0) == pytest.approx(103.032, abs=1e-3)
    # a jump of the sender's timestamps (a new source clock) re-anchors at once
    clock.push_sender_report(6000.0, 10_000_000, 1100.0)
    assert clock.local_time(10_000_000 + 9000, 1100.1) == pytest.approx(1100.1)
