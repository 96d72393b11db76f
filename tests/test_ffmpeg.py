"""ffmpeg (Debian's, run unchanged) publishes plain RTP into comedia
PlainTransports; a second ffmpeg records the SFU's consumers from an SDP file.

    ffmpeg -re lavfi testsrc/sine -> VP8 + Opus -f rtp  ->  comedia PlainTransport (one per kind)
        -> Producer -> Consumer -> PlainTransport connected to the recorder's ports
        -> ffmpeg -i consumer.sdp -c copy out.webm  ->  ffprobe -count_frames

The library API is used directly (no signaling). The sender sends a fixed
number of video frames (``-frames:v``) and a fixed duration of Opus; the
recording must hold at least 90% of them and decode without an error.

Two ways to point ffmpeg at a comedia transport:

* the default ``rtcp_mux=True``: one port, so ffmpeg is told to send its
  RTCP there too (``rtp://ip:port?rtcpport=port``). ffmpeg sends RTCP from
  a second socket (its RTP port + 1), and its first datagram is an RTCP
  sender report, so comedia must learn the remote tuple from RTP only;
* the README's recipe: ``rtcp_mux=False``, ffmpeg's ``rtcpport`` set to the
  transport's RTCP port.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import socket
import subprocess
from pathlib import Path

import pytest

VIDEO_SSRC = 22222222
AUDIO_SSRC = 33333333
VIDEO_PT = 96
AUDIO_PT = 111
VIDEO_FRAMES = 150  # 5 s at 30 fps
AUDIO_SECONDS = 5
OPUS_FRAME_MS = 20  # libopus' default frame duration
VP8 = {"mimeType": "video/VP8", "payloadType": VIDEO_PT, "clockRate": 90000}
OPUS = {"mimeType": "audio/opus", "payloadType": AUDIO_PT, "clockRate": 48000, "channels": 2}
WAIT_S = 60.0  # bound of every wait; the machine is shared
# The recorder stops after this long without a packet (ffmpeg's SDP input
# -listen_timeout, seconds); it also bounds the sending ffmpeg's start-up.
RECORDER_IDLE_S = 15


@pytest.fixture(autouse=True)
def _ffmpeg_installed():
    missing = [b for b in ("ffmpeg", "ffprobe") if shutil.which(b) is None]
    if missing:
        msg = f"{' and '.join(missing)} not installed (Debian's ffmpeg package)"
        if os.environ.get("CI"):
            pytest.fail(msg)
        pytest.skip(msg)


def _bindable(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_port_pair() -> int:
    """An even port p with p and p + 1 free on 127.0.0.1 (RTP and RTCP of an
    ffmpeg SDP input)."""
    for _ in range(200):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1] & ~1
        if port > 1024 and _bindable(port) and _bindable(port + 1):
            return port
    raise RuntimeError("no free UDP port pair on 127.0.0.1")


async def _wait(predicate, what: str, timeout: float = WAIT_S, step: float = 0.1) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not await predicate():
        if loop.time() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        await asyncio.sleep(step)


def consumer_sdp(video_port: int, video_pt: int, audio_port: int, audio_pt: int) -> str:
    return "\r\n".join([
        "v=0",
        "o=- 0 0 IN IP4 127.0.0.1",
        "s=sfu consumers",
        "c=IN IP4 127.0.0.1",
        "t=0 0",
        f"m=video {video_port} RTP/AVP {video_pt}",
        f"a=rtpmap:{video_pt} VP8/90000",
        "a=recvonly",
        f"m=audio {audio_port} RTP/AVP {audio_pt}",
        f"a=rtpmap:{audio_pt} opus/48000/2",
        "a=recvonly",
        "",
    ])


def sender_argv(video_dest: str, audio_dest: str, progress: Path) -> list[str]:
    return [
        "ffmpeg", "-hide_banner", "-nostdin", "-v", "error", "-progress", str(progress),
        "-re", "-f", "lavfi", "-i", "testsrc=size=320x240:rate=30",
        "-re", "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000",
        "-map", "0:v", "-frames:v", str(VIDEO_FRAMES), "-c:v", "libvpx", "-deadline", "realtime",
        "-g", "30", "-b:v", "300k",
        "-ssrc", str(VIDEO_SSRC), "-payload_type", str(VIDEO_PT), "-f", "rtp", video_dest,
        "-map", "1:a", "-t", str(AUDIO_SECONDS), "-c:a", "libopus", "-b:a", "48k",
        "-ssrc", str(AUDIO_SSRC), "-payload_type", str(AUDIO_PT), "-f", "rtp", audio_dest,
    ]


def sent_video_frames(progress: Path) -> int:
    """ffmpeg's own count of the frames it encoded and sent (its last
    ``frame=`` progress line)."""
    frames = [int(line.split("=", 1)[1]) for line in progress.read_text().splitlines() if line.startswith("frame=")]
    return frames[-1] if frames else 0


def count_frames(path: Path, stream: str) -> tuple[int, str]:
    """ffprobe's count of the frames of one stream (0 when it cannot tell),
    and its errors."""
    run = subprocess.run(
        ["ffprobe", "-v", "error", "-count_frames", "-select_streams", stream,
         "-show_entries", "stream=nb_read_frames", "-of", "csv=p=0", str(path)],
        capture_output=True, text=True, timeout=WAIT_S)
    out = run.stdout.strip()
    return (int(out) if run.returncode == 0 and out.isdigit() else 0), run.stderr


def packet_times(path: Path, stream: str) -> list[float]:
    run = subprocess.run(
        ["ffprobe", "-v", "error", "-select_streams", stream, "-show_entries", "packet=dts_time",
         "-of", "csv=p=0", str(path)], capture_output=True, text=True, timeout=WAIT_S)
    return [float(x) for x in run.stdout.split() if x.strip() not in ("", "N/A")]


MAX_STEP_S = 0.25  # a 30 fps video steps 0.033 s, Opus 0.020 s; nothing is lost on loopback


def irregular_steps(times: list[float]) -> list[tuple[int, float, float]]:
    """(index, previous, this) wherever a stream's dts does not increase, or
    jumps ahead by more than MAX_STEP_S."""
    return [(i, a, b) for i, (a, b) in enumerate(zip(times, times[1:]), 1) if not 0 < b - a <= MAX_STEP_S]


def decode_errors(path: Path) -> tuple[int, str]:
    run = subprocess.run(["ffmpeg", "-hide_banner", "-nostdin", "-v", "error", "-i", str(path), "-f", "null", "-"],
                         capture_output=True, text=True, timeout=WAIT_S)
    return run.returncode, run.stderr


async def finish(proc: asyncio.subprocess.Process, timeout: float) -> str:
    """Waits for an ffmpeg to end by itself (killed after ``timeout``); its stderr."""
    err = asyncio.ensure_future(proc.stderr.read())
    try:
        await asyncio.wait_for(proc.wait(), timeout)
    except asyncio.TimeoutError:
        proc.kill()
        await proc.wait()
        err.cancel()
        return f"killed: still running after {timeout:.0f} s"
    return (await err).decode(errors="replace")


async def publish_and_record(router, tmp_path: Path, rtcp_mux: bool) -> dict:
    # Publisher side: one comedia transport per kind (ffmpeg sends each RTP
    # output from a socket of its own, so each kind has its own tuple).
    ins = {}
    producers = {}
    for kind, codec, ssrc in (("video", VP8, VIDEO_SSRC), ("audio", OPUS, AUDIO_SSRC)):
        t = await router.create_plain_transport(listen_ip="127.0.0.1", comedia=True, rtcp_mux=rtcp_mux)
        ins[kind] = t
        producers[kind] = await t.produce(kind, {"codecs": [codec], "encodings": [{"ssrc": ssrc}]})

    # Recorder side: the consumers go to the recorder's RTP ports (RTCP on +1).
    ports = {"video": free_port_pair(), "audio": free_port_pair()}
    while ports["audio"] == ports["video"]:
        ports["audio"] = free_port_pair()
    consumers = {}
    outs = []
    for kind in ("video", "audio"):
        out = await router.create_plain_transport(listen_ip="127.0.0.1", rtcp_mux=False)
        outs.append(out)
        await out.connect(ip="127.0.0.1", port=ports[kind], rtcp_port=ports[kind] + 1)
        consumers[kind] = await out.consume(producers[kind].id, router.rtp_capabilities)
    pts = {k: c.rtp_parameters["codecs"][0]["payloadType"] for k, c in consumers.items()}
    sdp = tmp_path / "consumer.sdp"
    sdp.write_text(consumer_sdp(ports["video"], pts["video"], ports["audio"], pts["audio"]))
    recording = tmp_path / "out.webm"
    recorder = await asyncio.create_subprocess_exec(
        "ffmpeg", "-hide_banner", "-nostdin", "-v", "error", "-protocol_whitelist", "file,udp,rtp",
        "-listen_timeout", str(RECORDER_IDLE_S), "-i", str(sdp), "-c", "copy", "-y", str(recording),
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE)
    sender = None
    try:
        async def recorder_listening() -> bool:
            assert recorder.returncode is None, "the recording ffmpeg exited early"
            return not any(_bindable(p) for p in (ports["video"], ports["audio"]))

        await _wait(recorder_listening, "the recording ffmpeg to bind its RTP ports")

        def dest(kind: str) -> str:
            t = ins[kind]
            rtp = t.tuple["localPort"]
            rtcp = rtp if rtcp_mux else t.rtcp_tuple["localPort"]
            # ffmpeg binds an ephemeral RTP port and that port + 1 for RTCP;
            # on a busy machine the + 1 may be taken (ffmpeg 5.1 then crashes),
            # so it gets a free pair.
            local = free_port_pair()
            return f"rtp://127.0.0.1:{rtp}?rtcpport={rtcp}&localrtpport={local}&localrtcpport={local + 1}"

        progress = tmp_path / "progress.txt"
        sender = await asyncio.create_subprocess_exec(
            *sender_argv(dest("video"), dest("audio"), progress),
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE)
        sender_err = (await asyncio.wait_for(sender.stderr.read(), WAIT_S)).decode(errors="replace")
        await asyncio.wait_for(sender.wait(), WAIT_S)
        assert sender.returncode == 0, sender_err

        # Everything the SFU forwards reaches the recorder's socket: once the
        # consumers' counters stop moving, the recording can be closed.
        last: list[int] = []

        async def forwarding_done() -> bool:
            nonlocal last
            counts = [(await c.get_stats())[0]["packetCount"] for c in consumers.values()]
            done = counts == last
            last = counts
            return done

        await _wait(forwarding_done, "the consumers to stop forwarding", step=1.0)
        consumer_packets = {k: (await c.get_stats())[0]["packetCount"] for k, c in consumers.items()}
        # The SFU's sender reports would keep the recorder's input awake.
        for out in outs:
            out.close()
        # ffmpeg's SDP input ends (and the file gets its trailer) after
        # -listen_timeout seconds without a packet. A signal would not do:
        # with the input idle only a second SIGINT interrupts the read, and it
        # also interrupts writing the trailer.
        recorder_err = await finish(recorder, RECORDER_IDLE_S + WAIT_S)
    finally:
        if recorder.returncode is None:
            recorder.kill()
            await recorder.wait()
        if sender is not None and sender.returncode is None:
            sender.kill()
            await sender.wait()

    result = {
        "sent_video_frames": sent_video_frames(progress),
        "sent_audio_frames": AUDIO_SECONDS * 1000 // OPUS_FRAME_MS,
        "recorder_returncode": recorder.returncode,
        "recorder_stderr": recorder_err,
        "recording_exists": recording.exists() and recording.stat().st_size > 0,
        "tuples": {k: (t.tuple, t.rtcp_tuple) for k, t in ins.items()},
        "producer_packets": {k: (await p.get_stats())[0].get("packetCount") for k, p in producers.items()},
        "consumer_packets": consumer_packets,
        "in_transports": {k: {s: (await t.get_stats())[0].get(s) for s in (
            "rtpPacketsReceived", "rtcpPacketsReceived", "packetsDiscarded")} for k, t in ins.items()},
    }
    result["recorded_video_frames"], result["probe_errors"] = count_frames(recording, "v:0")
    result["recorded_audio_frames"], _ = count_frames(recording, "a:0")
    if result["recording_exists"]:
        result["decode"] = decode_errors(recording)
        result["irregular_dts"] = {k: irregular_steps(packet_times(recording, s))[:10]
                                  for k, s in (("video", "v:0"), ("audio", "a:0"))}
    print(result)
    return result


def check_recording(result: dict) -> None:
    assert result["sent_video_frames"] == VIDEO_FRAMES, result
    assert result["recording_exists"], result
    assert result["recorded_video_frames"] >= 0.9 * result["sent_video_frames"], result
    assert result["recorded_audio_frames"] >= 0.9 * result["sent_audio_frames"], result
    returncode, errors = result["decode"]
    assert returncode == 0, errors
    decoder_errors = [line for line in errors.splitlines()
                      if "non monotonically increasing dts" not in line and "Last message repeated" not in line]
    assert not decoder_errors, errors


async def test_ffmpeg_vp8_opus_into_comedia_rtcp_mux_transport_recorded_back(router, tmp_path):
    """The default form: rtcp_mux=True, ffmpeg sends RTP and RTCP to the one
    port (its RTCP leaves from another socket, its RTP port + 1)."""
    result = await publish_and_record(router, tmp_path, rtcp_mux=True)
    assert all(t["rtpPacketsReceived"] > 0 for t in result["in_transports"].values()), result["in_transports"]
    check_recording(result)


async def test_ffmpeg_vp8_opus_into_comedia_transport_with_separate_rtcp_recorded_back(router, tmp_path):
    """The README's recipe: rtcp_mux=False and ffmpeg's rtcpport set to the
    transport's RTCP port; comedia learns the RTP and the RTCP tuples."""
    result = await publish_and_record(router, tmp_path, rtcp_mux=False)
    for kind, (rtp_tuple, rtcp_tuple) in result["tuples"].items():
        assert rtp_tuple.get("remotePort") and rtcp_tuple and rtcp_tuple.get("remotePort"), (kind, rtp_tuple, rtcp_tuple)
        assert rtcp_tuple["remotePort"] == rtp_tuple["remotePort"] + 1, (kind, rtp_tuple, rtcp_tuple)
    check_recording(result)


async def test_ffmpeg_recording_of_consumers_has_increasing_timestamps(router, tmp_path):
    """ffmpeg's RTP input re-times every packet by the RTCP sender reports it
    receives (its A/V sync): from one SR to the next, the SFU's consumer SRs
    must describe the same media clock, or the recording's timestamps jump
    ahead or back (ffmpeg -f null then logs "non monotonically increasing
    dts"). The same
    two ffmpeg commands straight to each other record increasing ones: the
    sender's SRs map wall time linearly from its first packet."""
    result = await publish_and_record(router, tmp_path, rtcp_mux=False)
    check_recording(result)
    assert result["irregular_dts"] == {"video": [], "audio": []}, (result["irregular_dts"], result["decode"][1][:2000])
