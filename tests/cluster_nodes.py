"""A real redis-server and real sfu-server nodes with --redis-url, for the
cluster tests (tests/test_cluster.py, tests/browser/call_pages.py cluster)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import AsyncIterator

import pytest

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def server_command() -> list[str]:
    script = Path(sys.executable).parent / "sfu-server"
    return [str(script)] if script.exists() else [sys.executable, "-m", "signaling.cli"]


def start_redis(tmp: Path) -> tuple[subprocess.Popen, str]:
    """redis-server on a free loopback port (no persistence): (process, URL)."""
    port = free_port()
    proc = subprocess.Popen(["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                             "--appendonly", "no", "--dir", str(tmp)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 20
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
                s.sendall(b"PING\r\n")
                if s.recv(16).startswith(b"+PONG"):
                    break
        except OSError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise RuntimeError("redis-server did not start")
        time.sleep(0.05)
    return proc, f"redis://127.0.0.1:{port}/0"


class Node:
    """One sfu-server of the cluster, in a subprocess (its output in
    ``tmp/<name>.log``)."""

    def __init__(self, tmp: Path, name: str, redis_url: str, secret: str, *extra: str) -> None:
        self.name = name
        self.port = free_port()
        self.out = tmp / f"{name}.log"
        env = dict(os.environ, SFU_JWT_SECRET=secret)
        self.proc = subprocess.Popen(
            [*server_command(), "--listen-ip", "127.0.0.1", "--http-port", str(self.port), "--workers", "1",
             "--db", ":memory:", "--log-level", "info", "--redis-url", redis_url, "--node-id", name, *extra],
            stdout=self.out.open("w"), stderr=subprocess.STDOUT, env=env, cwd=ROOT)
        self.base = f"http://127.0.0.1:{self.port}"

    async def ready(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while "sfu-server: cluster node" not in self.out.read_text():  # printed once it listens
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited:\n{self.out.read_text()[-3000:]}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"{self.name} not up in {timeout} s:\n{self.out.read_text()[-3000:]}")
            await asyncio.sleep(0.05)

    def kill(self) -> None:
        """SIGKILL of the server and of its media workers (a crash)."""
        workers = []
        for task in Path(f"/proc/{self.proc.pid}/task").iterdir():
            workers += [int(p) for p in (task / "children").read_text().split()]
        self.proc.kill()
        for pid in workers:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.proc.wait(30)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.kill()


#: the cluster tests need Debian's redis-server (.ci/run installs it)
needs_redis = pytest.mark.skipif(shutil.which("redis-server") is None,
                                 reason="redis-server not installed (Debian's redis-server; .ci/run installs it)")


@contextlib.asynccontextmanager
async def running(*nodes: Node) -> AsyncIterator[list[Node]]:
    """The nodes, once each is up; stopped (SIGTERM) at the end."""
    try:
        for n in nodes:
            await n.ready()
        yield list(nodes)
    finally:
        for n in nodes:
            n.stop()
