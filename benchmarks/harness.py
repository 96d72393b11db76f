"""One point of `sfu-bench`: N participants in one room, everyone publishing
audio + video and subscribing to all the others.

With `layers` > 1 every publisher's video is simulcast: that many
encodings (their own SSRCs, `layer_split` shares of `video_bps`, lowest
first) in one producer; each viewer's consumer forwards one of them (the
top one, or the `viewer_layers` mix set with set_preferred_layers).

The SFU is either a real `sfu-server` started as a subprocess and driven
through its REST API (the default), or a worker embedded in this process
and driven through the library API. The participants are played by the
compiled load generator (`benchmarks.loadgen`, a process of its own): over
WebRTC transports (ICE + DTLS + SRTP, the default) or plain RTP (embedded
only: the server's REST API only makes WebRTC transports).

Server CPU is utime+stime from /proc of every server process (the control
process and its workers) over the send window, in % of one core; RAM is the
largest sum of their VmRSS seen during the run.
"""

from __future__ import annotations

import asyncio
import os
import random
import socket
import shutil
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from typing import Any, Optional

import aiohttp

from .loadgen import LoadGenerator

AUDIO_PT, VIDEO_PT = 111, 96
LATE_MS = 100.0
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@dataclass
class PointConfig:
    """What one point of the benchmark runs."""

    participants: int
    duration: float = 10.0
    drain: float = 1.0
    video_bps: float = 1e6
    transport: str = "webrtc"          # "webrtc" | "plain"
    srtp_profile: str = "AEAD_AES_128_GCM"
    target: str = "server"             # "server" (sfu-server subprocess) | "embedded"
    workers: int = 1
    decrypt_every: int = 8
    pin: bool = True
    seed: int = 1
    tick_us: float = 1000.0
    feedback: bool = True
    start_spread: float = 1.0          # participants start within this many seconds
    wait_idle: bool = True             # wait for a quiet machine before the point
    layers: int = 1                    # video encodings per publisher (simulcast when > 1)
    layer_split: tuple[float, ...] = (0.15, 0.30, 0.55)  # shares of video_bps, lowest layer first
    viewer_layers: tuple[int, ...] = ()  # preferred spatial layer of the video consumers, in turn ((): top)
    vp8_picture_id: bool = False       # VP8 descriptor with picture id / TL0PICIDX / TID (libwebrtc's)
    keyframe_on_request: bool = True   # publishers answer the SFU's PLI / FIR with a keyframe
    # Viewers advertise transport-cc / REMB. The generator never sends that
    # feedback, so with it the SFU's estimate of each viewer's link stays at
    # its start value and a simulcast consumer stays on a low layer: None
    # means on with one layer (as before), off with simulcast.
    viewer_bwe: Optional[bool] = None
    # Recordings (issue 14): this many participants (the first ones) each
    # recorded (audio + video, one file) by the server from the start of
    # the send window; server target only, files in a temporary directory
    recordings: int = 0
    # with pin: the CPU of the server's control process (REST, and the
    # recording sessions' threads), None: the worker's (CPU 0)
    control_cpu: Optional[int] = None
    # server target: this many sfu-server nodes sharing a redis-server
    # (--edge-rooms), participant i on node i % nodes (issue 15); a stream
    # between participants on different nodes crosses the nodes' pipe
    nodes: int = 1

    def bwe(self) -> bool:
        return self.layers == 1 if self.viewer_bwe is None else self.viewer_bwe

    def split(self) -> tuple[float, ...]:
        """The layers' shares of video_bps (1 layer: all of it)."""
        if self.layers == 1:
            return (1.0,)
        return tuple(self.layer_split[:self.layers])

    def check(self) -> None:
        if self.participants < 2:
            raise ValueError("participants: at least 2 (everyone subscribes to the others)")
        if self.transport not in ("webrtc", "plain"):
            raise ValueError("transport: 'webrtc' or 'plain'")
        if self.target not in ("server", "embedded"):
            raise ValueError("target: 'server' or 'embedded'")
        if self.transport == "plain" and self.target == "server":
            raise ValueError("plain RTP needs --target embedded (the server's REST API makes WebRTC transports)")
        if self.duration <= 0 or self.video_bps <= 0 or self.decrypt_every < 1 or self.workers < 1:
            raise ValueError("duration, bitrate, decrypt_every and workers must be positive")
        if not 1 <= self.layers <= 3:
            raise ValueError("layers: 1 to 3 video encodings per publisher")
        if self.layers > 1 and (len(self.layer_split) < self.layers or any(x <= 0 for x in self.split())):
            raise ValueError(f"layer split: {self.layers} positive shares, lowest layer first")
        if any(not 0 <= v < self.layers for v in self.viewer_layers):
            raise ValueError(f"viewer layers: each from 0 to {self.layers - 1}")
        if self.recordings < 0:
            raise ValueError("recordings: 0 or more")
        if self.recordings and self.target != "server":
            raise ValueError("recordings need --target server (the server's REST API starts them)")
        if self.control_cpu is not None and not 0 <= self.control_cpu < (os.cpu_count() or 1):
            raise ValueError(f"control CPU: from 0 to {(os.cpu_count() or 1) - 1}")
        if self.nodes < 1 or (self.nodes > 1 and self.target != "server"):
            raise ValueError("nodes: 1, or more with --target server (sfu-server nodes sharing a redis-server)")
        if self.nodes > 1 and not shutil.which("redis-server"):
            raise ValueError("nodes > 1 needs redis-server (Debian's redis-server package)")
        if self.recordings > self.participants:
            raise ValueError(f"recordings: at most one per participant ({self.participants})")


def audio_parameters(ssrc: int, feedback: bool) -> dict[str, Any]:
    return {
        "codecs": [{"mimeType": "audio/opus", "payloadType": AUDIO_PT, "clockRate": 48000, "channels": 2,
                    "parameters": {"useinbandfec": 1}, "rtcpFeedback": []}],
        "encodings": [{"ssrc": ssrc}],
        "headerExtensions": [],
        "rtcp": {"cname": f"bench-{ssrc:x}", "reducedSize": True},
    }


def video_parameters(ssrcs: int | list[int], feedback: bool) -> dict[str, Any]:
    """One encoding per SSRC given (several: simulcast, lowest first)."""
    ssrcs = [ssrcs] if isinstance(ssrcs, int) else list(ssrcs)
    fb = [{"type": "nack"}, {"type": "nack", "parameter": "pli"}, {"type": "ccm", "parameter": "fir"}] if feedback else []
    return {
        "codecs": [{"mimeType": "video/VP8", "payloadType": VIDEO_PT, "clockRate": 90000, "rtcpFeedback": fb}],
        "encodings": [{"ssrc": s} for s in ssrcs],
        "headerExtensions": [],
        "rtcp": {"cname": f"bench-{ssrcs[0]:x}", "reducedSize": True},
    }


def client_capabilities(router_caps: dict[str, Any], feedback: bool, bwe: bool = True) -> dict[str, Any]:
    """The router's capabilities as a client that supports what it offers
    (without NACK when feedback is off; without transport-cc and REMB, and
    the transport-wide sequence number extension, when bwe is off)."""
    caps = {"codecs": [dict(c) for c in router_caps["codecs"]],
            "headerExtensions": list(router_caps.get("headerExtensions", []))}
    if not feedback:
        for c in caps["codecs"]:
            c["rtcpFeedback"] = [fb for fb in c.get("rtcpFeedback", []) if fb.get("type") != "nack"]
    if not bwe:
        for c in caps["codecs"]:
            c["rtcpFeedback"] = [fb for fb in c.get("rtcpFeedback", [])
                                 if fb.get("type") not in ("transport-cc", "goog-remb")]
        caps["headerExtensions"] = [h for h in caps["headerExtensions"]
                                    if "transport-wide-cc" not in h.get("uri", "")]
    return caps


def free_port(kind: int = socket.SOCK_DGRAM) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ---------------------------------------------------------------- /proc


def children_of(pid: int) -> list[int]:
    """Direct children of a process (from /proc/*/stat)."""
    out = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        fields = stat[stat.rfind(")") + 2:].split()
        if len(fields) > 1 and int(fields[1]) == pid:
            out.append(int(name))
    return out


def rss_bytes(pids: list[int]) -> int:
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1]) * 1024
                        break
        except OSError:
            pass
    return total


def pin_process(pid: int, cpus: set[int]) -> None:
    """Pins every thread of a process (sched_setaffinity acts on one thread)."""
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return
    for tid in tids:
        try:
            os.sched_setaffinity(int(tid), cpus)
        except OSError:
            pass


def cpu_busy_sample() -> tuple[int, int]:
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:9]]
    busy = v[0] + v[1] + v[2] + v[5] + v[6] + v[7]
    return busy, busy + v[3] + v[4]


async def wait_idle(max_busy_pct: float = 15.0, timeout: float = 60.0) -> float:
    """Waits (up to timeout) for a second in which the machine is less than
    max_busy_pct busy, so other work does not skew a point; returns the last
    busy share seen."""
    deadline = time.monotonic() + timeout
    pct = 100.0
    while time.monotonic() < deadline:
        b0, t0 = cpu_busy_sample()
        await asyncio.sleep(1.0)
        b1, t1 = cpu_busy_sample()
        pct = 100.0 * (b1 - b0) / max(1, t1 - t0)
        if pct < max_busy_pct:
            break
    return pct


# ---------------------------------------------------------------- targets


class Participant:
    """What the harness knows of one simulated participant's SFU side."""

    def __init__(self) -> None:
        self.remote: dict[str, Any] = {}       # iceParameters, candidate, dtlsParameters
        self.dest: tuple[str, int] = ("127.0.0.1", 0)
        self.producers: list[tuple[str, str]] = []  # (producer id, kind)
        self.consumers: list[tuple[int, int, int]] = []  # (ssrc, publisher, kind)
        self.video_consumers: list[tuple[Any, int, int]] = []  # (consumer id or object, publisher, layer asked)


def viewer_layer(cfg: PointConfig, k: int) -> int:
    """The spatial layer the k-th video consumer asks for (the top one by default)."""
    return cfg.viewer_layers[k % len(cfg.viewer_layers)] if cfg.viewer_layers else cfg.layers - 1


def layer_receivers(cfg: PointConfig, parts: list[Participant]) -> list[int]:
    """How many viewers get each publisher's layer: [publisher * layers + layer]."""
    out = [0] * (len(parts) * cfg.layers)
    for p in parts:
        for _cid, pub, layer in p.video_consumers:
            out[pub * cfg.layers + layer] += 1
    return out


class ServerTarget:
    """A real `sfu-server` subprocess, driven over its REST API."""

    name = "server"

    def __init__(self, cfg: PointConfig) -> None:
        self.cfg = cfg
        self.proc: Optional[asyncio.subprocess.Process] = None
        self.http: Optional[aiohttp.ClientSession] = None
        self.base = ""
        self.room = "bench"
        self.tokens: list[str] = []
        self.pids: list[int] = []
        self.caps: dict[str, Any] = {}
        self.log: list[str] = []
        self.secret = os.urandom(32).hex()
        self.participant_ids: list[str] = []
        self.recordings_dir: Optional[str] = None
        #: with nodes > 1: every node's process and base URL, the redis-server
        self.procs: list[asyncio.subprocess.Process] = []
        self.bases: list[str] = []
        self.redis: Optional[asyncio.subprocess.Process] = None
        self.token_base: dict[str, str] = {}  # participant token -> its node's base URL

    async def start(self) -> None:
        extra: list[str] = []
        if self.cfg.recordings:
            self.recordings_dir = tempfile.mkdtemp(prefix="sfu-bench-rec-")
            extra = ["--recordings-dir", self.recordings_dir]
        if self.cfg.nodes > 1:
            redis_port = free_port(socket.SOCK_STREAM)
            self.redis = await asyncio.create_subprocess_exec(
                "redis-server", "--port", str(redis_port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL)
            await self._wait_port(redis_port, "redis-server")
        for i in range(self.cfg.nodes):
            node = [] if self.cfg.nodes == 1 else [
                "--redis-url", f"redis://127.0.0.1:{redis_port}/0", "--node-id", f"bench-{i}", "--edge-rooms"]
            proc, base = await self._start_node(extra + node)
            self.procs.append(proc)
            self.bases.append(base)
        self.proc, self.base = self.procs[0], self.bases[0]
        asyncio.get_running_loop().create_task(self._drain_output())
        self.http = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=16))
        # the control processes and their workers
        for proc in self.procs:
            for _ in range(50):
                if len(children_of(proc.pid)) >= self.cfg.workers:
                    break
                await asyncio.sleep(0.1)
        self.pids = [pid for proc in self.procs for pid in [proc.pid] + children_of(proc.pid)]

    @staticmethod
    async def _wait_port(port: int, what: str, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while True:
            try:
                _, w = await asyncio.open_connection("127.0.0.1", port)
                w.close()
                return
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{what} did not listen on port {port} within {timeout:.0f} s") from None
                await asyncio.sleep(0.05)

    async def _start_node(self, extra: list[str]) -> tuple[asyncio.subprocess.Process, str]:
        http_port, rtc_port = free_port(socket.SOCK_STREAM), free_port()
        env = dict(os.environ)
        env["PYTHONPATH"] = ROOT + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "signaling.cli", "--listen-ip", "127.0.0.1", "--http-port", str(http_port),
            "--rtc-port", str(rtc_port), "--workers", str(self.cfg.workers), "--log-level", "warning",
            *self.auth_args(), *extra, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT, cwd=ROOT, env=env)
        assert proc.stdout is not None
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            line = await asyncio.wait_for(proc.stdout.readline(), max(0.1, deadline - time.monotonic()))
            if not line:
                raise RuntimeError("sfu-server exited: " + " | ".join(self.log[-10:]))
            text = line.decode(errors="replace").rstrip()
            self.log.append(text)
            if "listening on" in text:
                break
        else:
            raise RuntimeError("sfu-server did not start within 30 s")
        return proc, f"http://127.0.0.1:{http_port}"

    def auth_args(self) -> list[str]:
        # The server's JWT secret (HS256): the harness mints one token per
        # participant (its own user). Its own REST set-up makes thousands of
        # requests in seconds, so the rate limits are off for the benchmark.
        return ["--jwt-secret", self.secret, "--rate-limit-user", "off", "--rate-limit-ip", "off", "--db", ":memory:",
                # one room of up to --participants: admission limits off for the load
                "--max-participants-per-room", "0", "--max-transports-per-room", "0",
                "--max-consumers-per-transport", "0"]

    def mint(self, user: str) -> str:
        import jwt

        now = int(time.time())
        return jwt.encode({"sub": user, "iat": now, "exp": now + 24 * 3600}, self.secret, algorithm="HS256")

    async def _drain_output(self) -> None:
        async def drain(proc: asyncio.subprocess.Process) -> None:
            assert proc.stdout is not None
            while True:
                line = await proc.stdout.readline()
                if not line:
                    return
                self.log.append(line.decode(errors="replace").rstrip())
                del self.log[:-200]

        await asyncio.gather(*(drain(p) for p in self.procs))

    async def _call(self, method: str, path: str, token: Optional[str] = None, body: Any = None) -> dict[str, Any]:
        assert self.http is not None
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        base = self.token_base.get(token or "", self.base)  # the participant's node
        async with self.http.request(method, base + path, json=body, headers=headers) as resp:
            data = await resp.json(content_type=None)
            if resp.status >= 400:
                raise RuntimeError(f"{method} {path}: {resp.status} {data}")
            return data

    async def setup(self, n: int, audio_ssrcs: list[int], video_ssrcs: list[list[int]], gen: LoadGenerator,
                    transport: str) -> list[Participant]:
        r = f"/api/rooms/{self.room}"
        self.tokens = [self.mint(f"bench-{i}") for i in range(n)]
        self.token_base = {tok: self.bases[i % len(self.bases)] for i, tok in enumerate(self.tokens)}
        self.caps = (await self._call("POST", f"{r}/create", self.tokens[0]))["rtpCapabilities"]
        caps = client_capabilities(self.caps, self.cfg.feedback, self.cfg.bwe())
        parts = [Participant() for _ in range(n)]
        transports: list[str] = []
        for p, tok in zip(parts, self.tokens):
            self.participant_ids.append((await self._call("POST", f"{r}/participants", tok))["participantId"])
            t = await self._call("POST", f"{r}/transports", tok, {"direction": "send"})
            transports.append(t["id"])
            cand = t["iceCandidates"][0]
            p.remote = {"iceParameters": t["iceParameters"], "candidate": [cand["ip"], cand["port"]],
                        "dtlsParameters": t["dtlsParameters"]}
            p.dest = (cand["ip"], int(cand["port"]))
        dtls = await gen.webrtc([self.cfg.srtp_profile])
        for tok, tid in zip(self.tokens, transports):
            await self._call("POST", f"{r}/transports/{tid}/connect", tok, {"dtlsParameters": dtls})
        await gen.handshake([p.remote for p in parts])
        for i, (p, tok, tid) in enumerate(zip(parts, self.tokens, transports)):
            for kind, params in (("audio", audio_parameters(audio_ssrcs[i], self.cfg.feedback)),
                                 ("video", video_parameters(video_ssrcs[i], self.cfg.feedback))):
                prod = await self._call("POST", f"{r}/transports/{tid}/produce", tok,
                                        {"kind": kind, "rtpParameters": params})
                p.producers.append((prod["id"], kind))

        async def subscribe(j: int) -> None:
            tok, tid = self.tokens[j], transports[j]
            for i, pub in enumerate(parts):
                if i == j:
                    continue
                for pid, kind in pub.producers:
                    c = await self._call("POST", f"{r}/consume", tok,
                                         {"transportId": tid, "producerId": pid, "rtpCapabilities": caps})
                    if kind == "video" and self.cfg.layers > 1:
                        layer = viewer_layer(self.cfg, j * (n - 1) + len(parts[j].video_consumers))
                        if layer != self.cfg.layers - 1:
                            await self._call("POST", f"{r}/consumers/{c['id']}/preferred-layers", tok,
                                             {"spatialLayer": layer})
                        parts[j].video_consumers.append((c["id"], i, layer))
                    await self._call("POST", f"{r}/consumers/{c['id']}/resume", tok)
                    parts[j].consumers.append((c["rtpParameters"]["encodings"][0]["ssrc"], i,
                                               0 if kind == "audio" else 1))

        await asyncio.gather(*(subscribe(j) for j in range(n)))
        self.parts = parts
        return parts

    async def layer_stats(self) -> list[dict[str, Any]]:
        """The SFU's view of every simulcast video consumer: the layer it
        forwards, how often it switched, packets sent."""
        out = []
        r = f"/api/rooms/{self.room}"
        for j, p in enumerate(getattr(self, "parts", [])):
            for cid, pub, layer in p.video_consumers:
                st = (await self._call("GET", f"{r}/consumers/{cid}/stats", self.tokens[j]))["consumer"]
                out.append({"viewer": j, "publisher": pub, "asked": layer, "layer": st.get("spatialLayer"),
                            "layer_changes": st.get("layerChanges"), "packets": st.get("packetCount")})
        return out

    async def producer_stats(self) -> list[list[dict[str, Any]]]:
        return []  # the REST API has no producer statistics

    async def start_recordings(self, k: int) -> list[str]:
        """Records the first ``k`` participants (one file each, audio +
        video) over the REST API; returns the recording ids."""
        r = f"/api/rooms/{self.room}/recordings"
        got = await asyncio.gather(*(self._call("POST", r, self.tokens[i], {"participantId": self.participant_ids[i]})
                                     for i in range(k)))
        return [g["recordings"][0]["recordingId"] for g in got]

    async def recordings(self) -> list[dict[str, Any]]:
        """The room's recordings as the server reports them."""
        return (await self._call("GET", f"/api/rooms/{self.room}/recordings", self.tokens[0]))["recordings"]

    async def stop_recordings(self, ids: list[str]) -> list[dict[str, Any]]:
        """Stops them (each returns once its file is complete); their final counters."""
        r = f"/api/rooms/{self.room}/recordings"
        got = await asyncio.gather(*(self._call("POST", f"{r}/{rid}/stop", self.tokens[0]) for rid in ids))
        return [g["recording"] for g in got]

    async def counters(self) -> dict[str, int]:
        return {}

    async def close(self) -> None:
        if self.http is not None:
            await self.http.close()
            self.http = None
        for proc in self.procs + ([self.redis] if self.redis is not None else []):
            if proc.returncode is None:
                proc.terminate()
                try:
                    await asyncio.wait_for(proc.wait(), 10)
                except asyncio.TimeoutError:
                    proc.kill()
                    await proc.wait()
        self.procs, self.redis, self.proc = [], None, None
        if self.recordings_dir is not None:
            shutil.rmtree(self.recordings_dir, ignore_errors=True)
            self.recordings_dir = None


class EmbeddedTarget:
    """A worker of this process's own, driven through the library API.

    With ``workers`` > 1, the room is spread: that many workers, one router
    each, participant i on router i % workers, and every producer piped
    (``Router.pipe_to_router``) to the other routers, so that a viewer and a
    publisher on different workers are joined by a pipe hop."""

    name = "embedded"
    MEDIA_CODECS = [
        {"kind": "audio", "mimeType": "audio/opus", "clockRate": 48000, "channels": 2},
        {"kind": "video", "mimeType": "video/VP8", "clockRate": 90000},
    ]

    def __init__(self, cfg: PointConfig) -> None:
        self.cfg = cfg
        self.worker: Any = None
        self.workers: list[Any] = []
        self.pids: list[int] = []
        self.producers: list[Any] = []

    async def start(self) -> None:
        import sfu

        self.workers = [await sfu.create_worker(log_level="warning") for _ in range(max(1, self.cfg.workers))]
        self.worker = self.workers[0]
        self.pids = [w.pid for w in self.workers] + [os.getpid()]

    async def setup(self, n: int, audio_ssrcs: list[int], video_ssrcs: list[list[int]], gen: LoadGenerator,
                    transport: str) -> list[Participant]:
        routers = [await w.create_router(self.MEDIA_CODECS) for w in self.workers]
        router = routers[0]
        caps = client_capabilities(router.rtp_capabilities, self.cfg.feedback, self.cfg.bwe())
        parts = [Participant() for _ in range(n)]
        transports = []
        if transport == "webrtc":
            for i, p in enumerate(parts):
                t = await routers[i % len(routers)].create_webrtc_transport(listen_ip="127.0.0.1")
                cand = t.ice_candidates[0]
                p.remote = {"iceParameters": t.ice_parameters, "candidate": [cand["ip"], cand["port"]],
                            "dtlsParameters": t.dtls_parameters}
                p.dest = (cand["ip"], int(cand["port"]))
                transports.append(t)
            dtls = await gen.webrtc([self.cfg.srtp_profile])
            for t in transports:
                await t.connect(dtls)
            await gen.handshake([p.remote for p in parts])
        else:
            for i, (p, port) in enumerate(zip(parts, gen.ports)):
                t = await routers[i % len(routers)].create_plain_transport(listen_ip="127.0.0.1", rtcp_mux=True,
                                                                           comedia=False)
                await t.connect(ip="127.0.0.1", port=port)
                p.dest = ("127.0.0.1", t.tuple["localPort"])
                transports.append(t)
        for i, (p, t) in enumerate(zip(parts, transports)):
            a = await t.produce("audio", audio_parameters(audio_ssrcs[i], self.cfg.feedback))
            v = await t.produce("video", video_parameters(video_ssrcs[i], self.cfg.feedback))
            p.producers = [(a.id, "audio"), (v.id, "video")]
            self.producers.append(v)
            for other in routers:  # a spread room: every producer consumable on every router
                if other is not t.router:
                    for prod in (a, v):
                        await t.router.pipe_to_router(prod.id, other)
        for j, t in enumerate(transports):
            for i, pub in enumerate(parts):
                if i == j:
                    continue
                for pid, kind in pub.producers:
                    c = await t.consume(pid, caps)
                    if kind == "video" and self.cfg.layers > 1:
                        layer = viewer_layer(self.cfg, j * (n - 1) + len(parts[j].video_consumers))
                        if layer != self.cfg.layers - 1:
                            await c.set_preferred_layers(layer)
                        parts[j].video_consumers.append((c, i, layer))
                    parts[j].consumers.append((c.rtp_parameters["encodings"][0]["ssrc"], i,
                                               0 if kind == "audio" else 1))
        self.parts = parts
        return parts

    async def layer_stats(self) -> list[dict[str, Any]]:
        out = []
        for j, p in enumerate(getattr(self, "parts", [])):
            for c, pub, layer in p.video_consumers:
                st = (await c.get_stats())[0]
                out.append({"viewer": j, "publisher": pub, "asked": layer, "layer": st.get("spatialLayer"),
                            "layer_changes": st.get("layerChanges"), "packets": st.get("packetCount")})
        return out

    async def producer_stats(self) -> list[list[dict[str, Any]]]:
        """Per video producer, its streams' statistics (one per encoding)."""
        return [await v.get_stats() for v in self.producers]

    async def counters(self) -> dict[str, int]:
        total: dict[str, int] = {}
        for w in self.workers:
            for k, v in (await w.get_counters()).items():
                if isinstance(v, int):
                    total[k] = total.get(k, 0) + v
        return total

    async def close(self) -> None:
        for w in self.workers:
            w.close()
            await asyncio.wait_for(w.wait_closed(), 10)
        self.workers = []
        self.worker = None


def make_target(cfg: PointConfig) -> Any:
    return ServerTarget(cfg) if cfg.target == "server" else EmbeddedTarget(cfg)


# ---------------------------------------------------------------- one point


async def _watch_rss(pids: list[int], stop: asyncio.Event, interval: float = 0.5) -> int:
    peak = rss_bytes(pids)
    while not stop.is_set():
        try:
            await asyncio.wait_for(stop.wait(), interval)
        except asyncio.TimeoutError:
            pass
        peak = max(peak, rss_bytes(pids))
    return peak


def thread_ticks(pid: int, tids: list[int]) -> dict[int, int]:
    """utime+stime (clock ticks) of some threads of a process (a thread
    that has ended is left out)."""
    out = {}
    for tid in tids:
        try:
            with open(f"/proc/{pid}/task/{tid}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        fields = stat[stat.rfind(")") + 2:].split()
        out[tid] = int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15)
    return out


async def _record(target: Any, cfg: PointConfig, window_start: float, window_end: float) -> dict[str, Any]:
    """Starts cfg.recordings recordings at the start of the send window and
    measures their threads' CPU (in the server's control process) until its
    end. Returns the ids, the thread ids and the CPU figures."""
    await asyncio.sleep(max(0.0, window_start - time.monotonic()))
    t0 = time.monotonic()
    ids = await target.start_recordings(cfg.recordings)
    start_s = time.monotonic() - t0
    views: list[dict[str, Any]] = []
    for _ in range(100):  # each session's thread writes its id when it runs
        views = [v for v in await target.recordings() if v["recordingId"] in ids]
        if len(views) == len(ids) and all(v.get("threadId") for v in views):
            break
        await asyncio.sleep(0.02)
    tids = [v["threadId"] for v in views if v.get("threadId")]
    pid = target.pids[0]
    t1, ticks1 = time.monotonic(), thread_ticks(pid, tids)
    pk1 = sum(v.get("packetsReceived") or 0 for v in views)
    await asyncio.sleep(max(0.0, window_end - time.monotonic()))
    t2, ticks2 = time.monotonic(), thread_ticks(pid, tids)
    views = [v for v in await target.recordings() if v["recordingId"] in ids]
    pk2 = sum(v.get("packetsReceived") or 0 for v in views)
    clk = os.sysconf("SC_CLK_TCK")
    cpu_s = sum(ticks2[t] - ticks1[t] for t in ticks2 if t in ticks1) / clk
    packets = pk2 - pk1
    return {"ids": ids, "thread_ids": tids, "start_request_s": start_s, "measured_s": t2 - t1,
            "threads_cpu_s": cpu_s, "threads_cpu_pct": 100.0 * cpu_s / (t2 - t1) if t2 > t1 else None,
            "packets_measured": packets, "us_per_packet": cpu_s * 1e6 / packets if packets else None}


async def run_point(cfg: PointConfig, progress: Any = None) -> dict[str, Any]:
    """Runs one point and returns its measurements (see `summarize`)."""
    cfg.check()
    n = cfg.participants
    rnd = random.Random(cfg.seed * 1000 + n)
    target = make_target(cfg)
    gen = LoadGenerator()
    say = progress or (lambda *_: None)
    try:
        if cfg.wait_idle:
            say("waiting for the machine to be idle")
            busy = await wait_idle()
            if busy >= 15.0:
                say(f"the machine stayed {busy:.0f}% busy: measuring anyway")
        t0 = time.monotonic()
        say("starting the SFU")
        await target.start()
        ncpu = os.cpu_count() or 1
        pinned = cfg.pin and ncpu >= 2
        gen_cpus = [1] if pinned else None
        await gen.bind(n, cpus=gen_cpus)
        nl = cfg.layers
        ssrcs = rnd.sample(range(1, 2**32), n + n * nl)
        audio_ssrcs = ssrcs[:n]
        video_ssrcs = [ssrcs[n + i * nl:n + (i + 1) * nl] for i in range(n)]  # per publisher, lowest layer first
        say(f"setting up {n} participants ({cfg.transport})")
        parts = await target.setup(n, audio_ssrcs, video_ssrcs, gen, cfg.transport)
        pids = list(target.pids)
        if pinned:
            for k, pid in enumerate(pids):
                control = k == 0 and cfg.target == "server" and cfg.control_cpu is not None
                pin_process(pid, {cfg.control_cpu if control else 0})
        setup_s = time.monotonic() - t0
        c0 = await target.counters()
        options: dict[str, Any] = dict(
            audio_pt=AUDIO_PT, video_pt=VIDEO_PT, video_bps=cfg.video_bps, duration=cfg.duration,
            drain=cfg.drain, seed=cfg.seed + n, worker_pid=pids[0], extra_pids=pids[1:], late_ms=LATE_MS,
            tick_us=cfg.tick_us, start_delay=0.2, start_spread=cfg.start_spread,
            video_layers=nl, layer_share=cfg.split(), vp8_picture_id=cfg.vp8_picture_id,
            keyframe_on_request=cfg.keyframe_on_request,
        )
        if nl > 1:
            options["layer_subs"] = layer_receivers(cfg, parts)
        if cfg.transport == "webrtc":
            options.update(decrypt_every=cfg.decrypt_every, stun_interval=5.0,
                           ssrc_map=[[j, ssrc, pub, kind] for j, p in enumerate(parts)
                                     for ssrc, pub, kind in p.consumers])
        stop = asyncio.Event()
        rss_task = asyncio.get_running_loop().create_task(_watch_rss(pids, stop))
        say(f"sending for {cfg.duration:g} s")
        run_task = asyncio.get_running_loop().create_task(
            gen.run([p.dest for p in parts], audio_ssrcs, [s for v in video_ssrcs for s in v], [n - 1] * n,
                    **options))
        started = time.monotonic()
        rec_task = None
        if cfg.recordings:
            start_delay = float(options["start_delay"])
            rec_task = asyncio.get_running_loop().create_task(
                _record(target, cfg, started + start_delay, started + start_delay + cfg.duration))
        while not run_task.done():
            await asyncio.wait([run_task], timeout=1.0)
            elapsed = time.monotonic() - started
            if not run_task.done():
                say(f"sending {min(elapsed, cfg.duration):.0f}/{cfg.duration:g} s")
        res = run_task.result()
        recording: Optional[dict[str, Any]] = None
        if rec_task is not None:
            recording = await rec_task
            say(f"stopping {cfg.recordings} recordings")
            recording["final"] = await target.stop_recordings(recording["ids"])
        stop.set()
        rss = await rss_task
        c1 = await target.counters()
        layers: dict[str, Any] = {}
        if nl > 1:
            layers = {"consumers": await target.layer_stats(), "producers": await target.producer_stats()}
    finally:
        await gen.close()
        await target.close()
    return summarize(cfg, res, rss, setup_s, pinned, {k: c1[k] - c0.get(k, 0) for k in c1 if isinstance(c1[k], int)},
                     layers, recording)


def summarize(cfg: PointConfig, res: dict[str, Any], rss: int, setup_s: float, pinned: bool,
              counters: dict[str, int], layers: Optional[dict[str, Any]] = None,
              recording: Optional[dict[str, Any]] = None) -> dict[str, Any]:
    n = cfg.participants
    window = res["duration_s"]
    received = res["recv_packets"] - res["recv_foreign"]
    expected = res["expected_total"]
    # bandwidth per user: the sum of the rates of the streams it receives,
    # each over the time it was received (participants join over start_spread)
    stream_bps = [s["bytes"] * 8 / s["active_s"] for s in res["streams"] if s.get("active_s", 0) > 0.5]
    down_bps = sum(stream_bps) / n if stream_bps else None
    server_cpu = res["worker_cpu_pct"]
    delivered = res["recv_during_window"]
    timed = res.get("recv_timed") or 0
    # loss from the gaps in each received stream's (rewritten) sequence
    # numbers: with simulcast a viewer may spend its first moments on
    # another layer than the one it asked for, which the sent-based count
    # cannot tell
    seq_expected = sum(max(0, s["expected_seq"]) for s in res["streams"])
    seq_lost = sum(max(0, s["expected_seq"] - s["packets"]) for s in res["streams"])
    out = {
        "config": asdict(cfg),
        "participants": n,
        "duration_s": window,
        "setup_s": setup_s,
        "pinned": pinned,
        "server_cpu_pct": server_cpu,
        "server_rss_mb": rss / 2**20,
        "gen_cpu_pct": res["gen_cpu_pct"],
        "machine_busy_pct": res["machine_busy_pct"],
        # CPU (% of one core) used by anything but the server and the
        # generator during the window: other jobs on the machine taint a point
        "other_cpu_pct": (max(0.0, res["machine_busy_pct"] * (os.cpu_count() or 1) - (server_cpu or 0.0)
                              - res["gen_cpu_pct"]) if res["machine_busy_pct"] is not None else None),
        "down_mbps_per_user": down_bps / 1e6 if down_bps is not None else None,
        "up_mbps_per_user": res["sent_bytes"] * 8 / window / 1e6 / n if window else None,
        "latency_us": res["latency_us"]["all"],
        "latency_audio_us": res["latency_us"]["audio"],
        "latency_video_us": res["latency_us"]["video"],
        "latency_max_us": res["latency_max_us"],
        "latency_samples": timed,
        # against what was sent x its viewers (one layer: the seed's
        # definition); with simulcast, from the sequence-number gaps
        "loss_pct": (100.0 * (expected - received) / expected if expected else None) if cfg.layers == 1
        else (100.0 * seq_lost / seq_expected if seq_expected else None),
        "loss_vs_sent_pct": 100.0 * (expected - received) / expected if expected else None,
        "late_pct": 100.0 * res["recv_late"] / timed if timed else None,
        "in_pps": res["sent_packets"] / window,
        "offered_out_pps": expected / window,
        "out_pps": delivered / window,
        "expected_out": expected,
        "received_out": received,
        "cpu_us_per_packet": (server_cpu / 100.0 * 1e6 / (delivered / window)
                              if server_cpu is not None and delivered else None),
        "streams": len(res["streams"]),
        "streams_expected": 2 * n * (n - 1),
        "decrypt_errors": res.get("decrypt_errors"),
        "protect_errors": res.get("protect_errors"),
        "send_errors": res["send_errors"],
        "max_send_lag_us": res["max_send_lag_us"],
        "sfu_counters": counters,
        "seq_loss_pct": 100.0 * seq_lost / seq_expected if seq_expected else None,
        "key_requests": res.get("key_requests"),
        "layers": cfg.layers,
    }
    # the worker process(es) alone (forwarding) and the control process
    # (REST, and the recording sessions' threads) apart, over the same window
    per_pid = res.get("pid_cpu_pct")
    if per_pid:
        worker = sum(per_pid[1:]) if cfg.target == "server" else per_pid[0]
        out["worker_cpu_pct"] = worker
        out["control_cpu_pct"] = per_pid[0] if cfg.target == "server" else None
        out["worker_us_per_packet"] = worker / 100.0 * 1e6 / (delivered / window) if delivered else None
    if cfg.layers > 1:
        out["simulcast"] = simulcast_summary(cfg, res, layers or {})
    out["recordings"] = cfg.recordings
    if recording is not None:
        out["recording"] = recording_summary(recording, out)
    return out


def recording_summary(rec: dict[str, Any], point: dict[str, Any]) -> dict[str, Any]:
    """What the recordings of a point did: per recording frames written /
    dropped, bytes, packets; their threads' CPU; the worker's CPU per packet
    counting the packets it sent to the recordings too."""
    final = rec.get("final") or []
    per = [{"participant": v.get("participantId"), "frames_written": v.get("framesWritten") or 0,
            "frames_dropped": v.get("framesDropped") or 0, "bytes_written": v.get("bytesWritten") or 0,
            "packets_received": v.get("packetsReceived") or 0, "packets_dropped": v.get("packetsDropped") or 0,
            "keyframes_asked": v.get("keyframesAsked") or 0, "nacked": v.get("nacked") or 0,
            "tracks": [{"kind": t.get("kind"), "frames_written": t.get("frames_written")} for t in v.get("tracks") or []],
            "error": v.get("error")} for v in final]
    window = point["duration_s"]
    rec_pps = rec["packets_measured"] / rec["measured_s"] if rec.get("measured_s") else 0.0
    worker = point.get("worker_cpu_pct")
    out_pps = point["out_pps"]
    return {
        "count": len(per),
        "per_recording": per,
        "frames_written": sum(p["frames_written"] for p in per),
        "frames_dropped": sum(p["frames_dropped"] for p in per),
        "bytes_written": sum(p["bytes_written"] for p in per),
        "packets_dropped": sum(p["packets_dropped"] for p in per),
        "min_frames_written": min((p["frames_written"] for p in per), default=0),
        # every recording wrote video and audio frames
        "all_wrote_frames": bool(per) and all(p["frames_written"] > 0 and not p["error"] and
                                              all((t["frames_written"] or 0) > 0 for t in p["tracks"])
                                              and len(p["tracks"]) == 2 for p in per),
        "threads_cpu_pct": rec.get("threads_cpu_pct"),
        "threads_us_per_packet": rec.get("us_per_packet"),
        "threads_measured_s": rec.get("measured_s"),
        "packets_per_s": rec_pps,
        "start_request_s": rec.get("start_request_s"),
        # the worker's CPU over viewers' packets + the recordings' packets
        "worker_us_per_packet_incl_recordings": (worker / 100.0 * 1e6 / (out_pps + rec_pps)
                                                 if worker is not None and out_pps + rec_pps else None),
        "window_s": window,
    }


def simulcast_summary(cfg: PointConfig, res: dict[str, Any], layers: dict[str, Any]) -> dict[str, Any]:
    """What the simulcast run did: packets/s each layer was sent at, which
    layer the viewers got (by the SFU's consumer stats and by the layer in
    the trailers the generator read), how many encodings the SFU received."""
    window = res["duration_s"]
    nl = cfg.layers
    sent = [sum(p[layer] for p in res["sent_per_layer"]) / window for layer in range(nl)]
    received = [0] * nl
    streams_by_layer = [0] * nl    # viewer streams whose trailers showed only this layer at the end
    mixed = 0
    for s in res["streams"]:
        if s["kind"] != "video":
            continue
        lp = s.get("layer_packets") or []
        for layer, c in enumerate(lp):
            received[layer] += c
        seen = [layer for layer, c in enumerate(lp) if c]
        if len(seen) == 1:
            streams_by_layer[seen[0]] += 1
        elif seen:
            mixed += 1
    consumers = layers.get("consumers", [])
    at_layer = [sum(1 for c in consumers if c["layer"] == layer) for layer in range(nl)]
    producers = layers.get("producers", [])
    return {
        "layer_split": list(cfg.split()),
        "viewer_layers": list(cfg.viewer_layers),
        "sent_pps_per_layer": sent,
        "received_sampled_per_layer": received,
        "viewer_streams_single_layer": streams_by_layer,
        "viewer_streams_mixed": mixed,
        "consumers_at_layer": at_layer,
        "consumers_as_asked": sum(1 for c in consumers if c["layer"] == c["asked"]),
        "consumers": len(consumers),
        "layer_changes": sum(c.get("layer_changes") or 0 for c in consumers),
        # per video producer, how many of its encodings the SFU received packets of
        "producer_streams_receiving": [sum(1 for st in p if (st.get("packetCount") or 0) > 0) for p in producers],
        "consumer_stats": consumers,
        # per viewer and publisher: packets received of each layer (by the
        # trailers read: all of them on plain RTP, a sample under SRTP)
        "viewer_streams": [{"viewer": s["subscriber"], "publisher": s["publisher"],
                            "layer_packets": s.get("layer_packets")} for s in res["streams"] if s["kind"] == "video"],
    }
