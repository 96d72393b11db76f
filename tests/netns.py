"""Named network namespaces linked by a veth pair, for tests that need
clients on a non-loopback address (Firefox gathers no ICE candidates on
loopback).

Everything this module creates lives only inside namespaces it creates and
removes itself; no namespace gets a route out of the machine::

    with linked_namespaces("ff") as (server, client):
        # server.ip == "10.203.0.1" (in namespace server.name)
        # client.ip == "10.203.0.2", default route via 10.203.0.1
        subprocess.run(server.exec_argv(["python", "app.py"]))

Within a process, :func:`enter_in_thread` moves the calling thread (only)
into a namespace, so sockets that thread opens afterwards live there (used
to speak to a program that listens on the loopback of another namespace).

Needs root and iproute2's ``ip``. :func:`missing` says why not, or None.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import itertools
import os
import shutil
import signal
import subprocess
from dataclasses import dataclass
from typing import Iterator, Sequence

NETNS_DIR = "/run/netns"
CLONE_NEWNET = 0x40000000
_counter = itertools.count()


def missing() -> str | None:
    """Why namespaces cannot be made here (None when they can)."""
    if os.geteuid() != 0:
        return "needs root to create network namespaces"
    if shutil.which("ip") is None:
        return "needs iproute2's `ip` to create network namespaces"
    return None


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    run = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=30)
    if check and run.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)}: {run.stderr.strip() or run.returncode}")
    return run


@dataclass(frozen=True)
class Namespace:
    name: str
    ip: str | None = None  # its end of the veth pair (None for a bare namespace)
    device: str | None = None

    @property
    def path(self) -> str:
        return f"{NETNS_DIR}/{self.name}"

    def exec_argv(self, argv: Sequence[str]) -> list[str]:
        """argv that runs ``argv`` inside this namespace."""
        return ["ip", "netns", "exec", self.name, *argv]

    def pids(self) -> list[int]:
        """Processes inside this namespace."""
        run = _ip("netns", "pids", self.name, check=False)
        return [int(x) for x in run.stdout.split()]

    def run(self, *argv: str, check: bool = True) -> subprocess.CompletedProcess:
        """Runs a short command (e.g. `ip route`) inside the namespace."""
        run = subprocess.run(self.exec_argv(argv), capture_output=True, text=True, timeout=30)
        if check and run.returncode != 0:
            raise RuntimeError(f"{' '.join(argv)} in {self.name}: {run.stderr.strip() or run.returncode}")
        return run


def unique_name(prefix: str) -> str:
    """A namespace name of this process that no other run uses."""
    return f"{prefix}-{os.getpid()}-{next(_counter)}"


def _end(pids: list[int]) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


@contextlib.contextmanager
def namespace(name: str) -> Iterator[Namespace]:
    """A fresh namespace with `lo` up, removed on exit (even on failure).
    Processes left inside it then (which only the caller can have started:
    the namespace is new) are killed, so none lingers in a removed one."""
    _ip("netns", "add", name)
    ns = Namespace(name)
    try:
        ns.run("ip", "link", "set", "lo", "up")
        yield ns
    finally:
        try:
            _end(ns.pids())
        finally:
            _ip("netns", "delete", name, check=False)


@contextlib.contextmanager
def linked_namespaces(
    prefix: str,
    server_ip: str = "10.203.0.1",
    client_ip: str = "10.203.0.2",
    prefix_len: int = 30,
    client_default_route: bool = True,
) -> Iterator[tuple[Namespace, Namespace]]:
    """Two new namespaces (server, client), each with `lo` up, joined by a
    veth pair with ``server_ip``/``client_ip``. With
    ``client_default_route`` the client's default route goes via the
    server's address (programs that pick "the default-route interface",
    like Firefox without media permission, then use the veth). The server
    side has no default route and does not forward, so nothing reaches
    beyond the two namespaces. Both are removed on exit, even on failure.
    """
    base = unique_name(prefix)
    tag = f"{os.getpid() % 100000}{next(_counter)}"[-8:]
    dev_s, dev_c = f"vs{tag}", f"vc{tag}"  # interface names are at most 15 characters
    with namespace(base + "-s") as s, namespace(base + "-c") as c:
        _ip("link", "add", dev_s, "type", "veth", "peer", "name", dev_c)
        try:
            _ip("link", "set", dev_s, "netns", s.name)
            _ip("link", "set", dev_c, "netns", c.name)
        except Exception:
            _ip("link", "delete", dev_s, check=False)
            raise
        # deleting a namespace deletes the veth end inside it (and so its peer)
        s.run("ip", "addr", "add", f"{server_ip}/{prefix_len}", "dev", dev_s)
        c.run("ip", "addr", "add", f"{client_ip}/{prefix_len}", "dev", dev_c)
        s.run("ip", "link", "set", dev_s, "up")
        c.run("ip", "link", "set", dev_c, "up")
        if client_default_route:
            c.run("ip", "route", "add", "default", "via", server_ip)
        yield Namespace(s.name, server_ip, dev_s), Namespace(c.name, client_ip, dev_c)


def enter_in_thread(name_or_path: str) -> None:
    """Moves the calling thread into a network namespace (by name or path).
    Other threads of the process stay where they are; sockets this thread
    creates from now on belong to that namespace. Needs CAP_SYS_ADMIN."""
    path = name_or_path if "/" in name_or_path else f"{NETNS_DIR}/{name_or_path}"
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        if libc.setns(fd, CLONE_NEWNET) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"setns({path}): {os.strerror(err)}")
    finally:
        os.close(fd)
