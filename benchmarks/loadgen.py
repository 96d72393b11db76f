"""The plain-RTP load generator in a process of its own.

`python -m benchmarks.loadgen` speaks JSON lines on stdin/stdout:

    -> {"cmd": "bind", "participants": N, "ip": "127.0.0.1", "buffer": 4194304}
    <- {"ports": [p0, p1, ...]}             (one bound UDP socket per participant)
    -> {"cmd": "webrtc", "srtp_profiles": ["AEAD_AES_128_GCM"]}       (WebRTC only)
    <- {"dtlsParameters": {...}}             (for the SFU transports' connect())
    -> {"cmd": "handshake", "remotes": [{iceParameters, candidate, dtlsParameters}, ...]}
    <- {"suites": [...]}                     (ICE + DTLS done on every socket)
    -> {"cmd": "run", "dests": [[ip, port], ...], "audio_ssrcs": [...],
        "video_ssrcs": [...], "nsubscribers": [...], "options": {...}}
    <- {"result": {...}}                      (see benchmarks._loadgen.run; after a
                                               handshake, SRTP options are added)

and exits. Running it apart keeps the generator's C loop (which releases
the GIL anyway) off the cores and the GIL of the asyncio process that drives
the SFU. `LoadGenerator` is the asyncio side of the protocol.

    gen = LoadGenerator()
    ports = await gen.bind(3)
    ... connect one PlainTransport per port, produce, consume ...
    result = await gen.run(dests, audio_ssrcs, video_ssrcs, nsubscribers, duration=5)
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import sys
from typing import Any, Optional

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

DEFAULT_BUFFER = 4 * 1024 * 1024


# ----------------------------------------------------------------- child


def _bind(n: int, ip: str, buffer: int) -> list[socket.socket]:
    socks = []
    for _ in range(n):
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, buffer)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, buffer)
        s.bind((ip, 0))
        s.setblocking(False)
        socks.append(s)
    return socks


def _reply(obj: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


def child_main() -> int:
    from benchmarks import _loadgen

    socks: list[socket.socket] = []
    peers = None
    try:
        for line in sys.stdin:
            msg = json.loads(line)
            cmd = msg.get("cmd")
            if cmd == "bind":
                if msg.get("cpus"):
                    os.sched_setaffinity(0, set(msg["cpus"]))
                socks = _bind(int(msg["participants"]), msg.get("ip", "127.0.0.1"),
                              int(msg.get("buffer", DEFAULT_BUFFER)))
                _reply({"ports": [s.getsockname()[1] for s in socks]})
            elif cmd == "webrtc":
                from benchmarks.webrtc_peer import WebRtcPeers

                peers = WebRtcPeers(socks, list(msg["srtp_profiles"]))
                _reply({"dtlsParameters": peers.dtls_parameters})
            elif cmd == "handshake":
                try:
                    assert peers is not None, "send 'webrtc' first"
                    peers.handshake(msg["remotes"], float(msg.get("timeout", 30.0)))
                    _reply({"suites": peers.suites})
                except Exception as exc:
                    _reply({"error": f"{type(exc).__name__}: {exc}"})
                    return 1
            elif cmd == "run":
                options = dict(msg.get("options", {}))
                if peers is not None:
                    options.update(peers.run_options())
                try:
                    result = _loadgen.run(
                        [s.fileno() for s in socks],
                        [tuple(d) for d in msg["dests"]],
                        list(msg["audio_ssrcs"]),
                        list(msg["video_ssrcs"]),
                        list(msg["nsubscribers"]),
                        **options,
                    )
                    _reply({"result": result})
                except Exception as exc:  # reported to the parent
                    _reply({"error": f"{type(exc).__name__}: {exc}"})
                return 0
            else:
                _reply({"error": f"unknown command {cmd!r}"})
                return 2
    finally:
        for s in socks:
            s.close()
    return 0


# ----------------------------------------------------------------- parent


class LoadGeneratorError(RuntimeError):
    pass


class LoadGenerator:
    """Drives one `python -m benchmarks.loadgen` child over its pipes."""

    def __init__(self) -> None:
        self.proc: Optional[asyncio.subprocess.Process] = None
        self.ports: list[int] = []

    async def _send(self, obj: dict[str, Any]) -> None:
        assert self.proc is not None and self.proc.stdin is not None
        self.proc.stdin.write((json.dumps(obj) + "\n").encode())
        await self.proc.stdin.drain()

    async def _recv(self, timeout: float) -> dict[str, Any]:
        assert self.proc is not None and self.proc.stdout is not None
        line = await asyncio.wait_for(self.proc.stdout.readline(), timeout)
        if not line:
            raise LoadGeneratorError("load generator exited without a reply")
        msg = json.loads(line)
        if "error" in msg:
            raise LoadGeneratorError(msg["error"])
        return msg

    async def bind(self, participants: int, ip: str = "127.0.0.1", buffer: int = DEFAULT_BUFFER,
                   cpus: Optional[list[int]] = None) -> list[int]:
        """Starts the child and binds one socket per participant; returns the
        ports. cpus: pin the generator to these CPUs."""
        env = dict(os.environ)
        env["PYTHONPATH"] = ROOT + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
        # A 64 KiB line limit is too small for the per-stream results of large runs.
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "benchmarks.loadgen",
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, cwd=ROOT, env=env,
            limit=64 * 1024 * 1024,
        )
        await self._send({"cmd": "bind", "participants": participants, "ip": ip, "buffer": buffer,
                          "cpus": cpus})
        self.ports = (await self._recv(30))["ports"]
        return self.ports

    @property
    def pid(self) -> Optional[int]:
        return self.proc.pid if self.proc else None

    async def webrtc(self, srtp_profiles: list[str]) -> dict[str, Any]:
        """Makes the participants WebRTC clients; returns their dtlsParameters."""
        await self._send({"cmd": "webrtc", "srtp_profiles": srtp_profiles})
        return (await self._recv(30))["dtlsParameters"]

    async def handshake(self, remotes: list[dict[str, Any]], timeout: float = 30.0) -> list[str]:
        """ICE + DTLS with every participant's SFU transport; returns the SRTP suites."""
        await self._send({"cmd": "handshake", "remotes": remotes, "timeout": timeout})
        return (await self._recv(timeout + 10))["suites"]

    async def run(self, dests: list[tuple[str, int]], audio_ssrcs: list[int], video_ssrcs: list[int],
                  nsubscribers: list[int], **options: Any) -> dict[str, Any]:
        """Runs the load (options: see benchmarks._loadgen.run) and returns the results."""
        await self._send({
            "cmd": "run", "dests": [list(d) for d in dests], "audio_ssrcs": audio_ssrcs,
            "video_ssrcs": video_ssrcs, "nsubscribers": nsubscribers, "options": options,
        })
        budget = float(options.get("duration", 5.0)) + float(options.get("drain", 1.0)) + 30.0
        result = (await self._recv(budget))["result"]
        await self.close()
        return fix_json(result)

    async def close(self) -> None:
        if self.proc is None:
            return
        if self.proc.stdin is not None and not self.proc.stdin.is_closing():
            self.proc.stdin.close()
        try:
            await asyncio.wait_for(self.proc.wait(), 5)
        except asyncio.TimeoutError:
            self.proc.kill()
            await self.proc.wait()
        self.proc = None


def fix_json(result: dict[str, Any]) -> dict[str, Any]:
    """JSON turned the histograms' integer keys into strings: turn them back."""
    hists = result.get("latency_hist_us", {})
    for kind, h in list(hists.items()):
        hists[kind] = {int(k): v for k, v in h.items()}
    return result


if __name__ == "__main__":
    raise SystemExit(child_main())
