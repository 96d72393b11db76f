"""DTLS-SRTP endpoint: two endpoints in memory, and interop with aiortc's
RTCDtlsTransport (an independent DTLS-SRTP stack, on the same OpenSSL)."""

from __future__ import annotations

import asyncio
import struct
import time

import pylibsrtp
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sfu.dtls import (
    FINGERPRINT_ALGORITHMS,
    Certificate,
    DtlsApplicationData,
    DtlsConnected,
    DtlsEndpoint,
    DtlsStateChange,
)
from sfu.errors import InvalidParametersError, InvalidStateError, UnsupportedError
from sfu.srtp import CRYPTO_SUITES

CERT_A = Certificate.generate()
CERT_B = Certificate.generate()
CERT_C = Certificate.generate()


class Link:
    """Two endpoints joined by an in-memory 'network' with virtual time.

    ``drop(side, n)`` loses the next n datagrams sent by that side.
    """

    def __init__(self, client: DtlsEndpoint, server: DtlsEndpoint) -> None:
        self.ep = {"client": client, "server": server}
        self.events: dict[str, list] = {"client": [], "server": []}
        self.sent: dict[str, list[bytes]] = {"client": [], "server": []}
        self.queue: list[tuple[str, bytes]] = []
        self.drops = {"client": 0, "server": 0}
        self.now = 0.0

    def absorb(self, side: str, out) -> None:
        self.events[side] += out.events
        other = "server" if side == "client" else "client"
        for d in out.datagrams:
            self.sent[side].append(d)
            if self.drops[side]:
                self.drops[side] -= 1
            else:
                self.queue.append((other, d))

    def connect(self, server_role="client", client_role="server") -> None:
        c, s = self.ep["client"], self.ep["server"]
        self.absorb("server", s.connect(c.certificate.fingerprints, server_role, self.now))
        self.absorb("client", c.connect(s.certificate.fingerprints, client_role, self.now))

    def deliver(self) -> None:
        while self.queue:
            to, d = self.queue.pop(0)
            self.absorb(to, self.ep[to].handle_datagram(d, self.now))

    def run(self, real_deadline: float = 8.0) -> None:
        """Delivers, then advances virtual time to the next timer, until both
        ends settle.

        OpenSSL's retransmission timer runs on the real clock: a poll at a
        virtual deadline reached before OpenSSL's real one sends nothing and
        re-arms with the real time left. Sleeping that much real time keeps
        the two clocks in step (and virtual time far from handshake_timeout).
        """
        stop = time.monotonic() + real_deadline
        while True:
            self.deliver()
            timeouts = [t for t in (e.next_timeout() for e in self.ep.values()) if t is not None]
            if not timeouts or time.monotonic() > stop:
                return
            self.now = max(self.now, min(timeouts))
            before = sum(len(v) for v in self.sent.values())
            for side, e in self.ep.items():
                self.absorb(side, e.poll(self.now))
            if sum(len(v) for v in self.sent.values()) == before and not self.queue:
                timeouts = [t for t in (e.next_timeout() for e in self.ep.values()) if t is not None]
                if timeouts:
                    time.sleep(min(max(min(timeouts) - self.now, 0.0), 0.5))

    def connected(self, side: str) -> DtlsConnected:
        [ev] = [e for e in self.events[side] if isinstance(e, DtlsConnected)]
        return ev

    def states(self, side: str) -> list[DtlsStateChange]:
        return [e for e in self.events[side] if isinstance(e, DtlsStateChange)]


def pair(client_kw=None, server_kw=None, certs=(CERT_A, CERT_B)) -> Link:
    return Link(
        DtlsEndpoint(certs[0], role="auto", **(client_kw or {})),
        DtlsEndpoint(certs[1], role="auto", **(server_kw or {})),
    )


def rtp(seq: int, payload: bytes = b"payload") -> bytes:
    return struct.pack("!BBHII", 0x80, 96, seq, seq * 960, 0x11223344) + payload


def srtp_session(suite: str, master: bytes, outbound: bool) -> pylibsrtp.Session:
    policy = pylibsrtp.Policy(
        key=master,
        ssrc_type=pylibsrtp.Policy.SSRC_ANY_OUTBOUND if outbound else pylibsrtp.Policy.SSRC_ANY_INBOUND,
        srtp_profile=CRYPTO_SUITES[suite].profile,
    )
    return pylibsrtp.Session(policy)


def assert_keys_agree(link: Link) -> DtlsConnected:
    c, s = link.connected("client"), link.connected("server")
    assert c.role == "client" and s.role == "server"
    assert c.suite == s.suite
    n = CRYPTO_SUITES[c.suite].master_length
    assert len(c.local_master) == len(c.remote_master) == n
    assert c.local_master == s.remote_master
    assert c.remote_master == s.local_master
    assert c.local_master != c.remote_master
    # The keys really work with libsrtp, in both directions.
    packet = rtp(1)
    protected = srtp_session(c.suite, c.local_master, True).protect(packet)
    assert srtp_session(s.suite, s.remote_master, False).unprotect(protected) == packet
    protected = srtp_session(s.suite, s.local_master, True).protect(packet)
    assert srtp_session(c.suite, c.remote_master, False).unprotect(protected) == packet
    return c


# -- handshake and keys ----------------------------------------------------------


def test_handshake_in_memory_and_keys():
    link = pair()
    link.connect()
    assert link.ep["client"].role == "client" and link.ep["server"].role == "server"
    link.deliver()
    for side in ("client", "server"):
        assert [e.state for e in link.states(side)] == ["connecting", "connected"]
        assert link.ep[side].state == "connected"
        assert link.ep[side].next_timeout() is None
    c = assert_keys_agree(link)
    assert c.suite == "AEAD_AES_256_GCM"  # first of the default preference order
    assert link.ep["client"].remote_certificate == CERT_B.x509
    assert link.ep["server"].remote_certificate == CERT_A.x509
    assert "master" not in repr(c)  # keys stay out of logs


@pytest.mark.parametrize("suite", list(CRYPTO_SUITES))
def test_each_suite(suite):
    link = pair({"srtp_profiles": [suite]}, {"srtp_profiles": [suite]})
    link.connect()
    link.deliver()
    assert assert_keys_agree(link).suite == suite


@pytest.mark.parametrize(
    "client_pref, server_pref, expected",
    [
        (["AES_CM_128_HMAC_SHA1_80", "AEAD_AES_128_GCM"], ["AEAD_AES_128_GCM", "AES_CM_128_HMAC_SHA1_80"], "AEAD_AES_128_GCM"),
        (["AEAD_AES_256_GCM", "AES_CM_128_HMAC_SHA1_80"], ["AES_CM_128_HMAC_SHA1_80", "AEAD_AES_256_GCM"], "AES_CM_128_HMAC_SHA1_80"),
        (["AES_CM_128_HMAC_SHA1_32", "AEAD_AES_256_GCM"], ["AEAD_AES_128_GCM", "AEAD_AES_256_GCM"], "AEAD_AES_256_GCM"),
    ],
)
def test_server_preference_order_wins(client_pref, server_pref, expected):
    link = pair({"srtp_profiles": client_pref}, {"srtp_profiles": server_pref})
    link.connect()
    link.deliver()
    assert assert_keys_agree(link).suite == expected


def test_no_common_srtp_profile_fails():
    link = pair({"srtp_profiles": ["AES_CM_128_HMAC_SHA1_80"]}, {"srtp_profiles": ["AEAD_AES_256_GCM"]})
    link.connect()
    link.deliver()
    for side in ("client", "server"):
        assert link.ep[side].state == "failed"
        assert "SRTP" in link.ep[side].failure_reason


def test_small_mtu_fragments_within_limit():
    link = pair({"mtu": 300}, {"mtu": 300})
    link.connect()
    link.deliver()
    assert_keys_agree(link)
    assert max(len(d) for v in link.sent.values() for d in v) <= 300
    assert len(link.sent["server"]) > 2  # the certificate flight had to be split


# -- roles ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "local, remote, expected",
    [
        ("auto", "client", "server"),
        ("auto", "server", "client"),
        ("auto", "auto", "client"),  # mediasoup: ICE controlled -> DTLS client
        ("auto", None, "server"),  # mediasoup runs 'server' when connect() set no role
        ("client", None, "client"),
        ("server", "client", "server"),
        ("client", "auto", "client"),
        ("server", "auto", "server"),
    ],
)
def test_role_resolution(local, remote, expected):
    ep = DtlsEndpoint(CERT_A, role=local)
    out = ep.connect(CERT_B.fingerprints, remote, 0.0)
    assert ep.role == expected
    assert ep.local_parameters["role"] == expected
    assert out.events[0] == DtlsStateChange("connecting")
    # Only a client speaks first.
    assert bool(out.datagrams) == (expected == "client")


@pytest.mark.parametrize("local, remote", [("client", "client"), ("server", "server")])
def test_role_conflict_rejected(local, remote):
    with pytest.raises(InvalidParametersError):
        DtlsEndpoint(CERT_A, role=local).connect(CERT_B.fingerprints, remote, 0.0)


def test_parameter_validation():
    with pytest.raises(InvalidParametersError):
        DtlsEndpoint(CERT_A, role="active")
    with pytest.raises(UnsupportedError):
        DtlsEndpoint(CERT_A, srtp_profiles=["NULL_CIPHER"])
    with pytest.raises(InvalidParametersError):
        DtlsEndpoint(CERT_A, srtp_profiles=[])
    ep = DtlsEndpoint(CERT_A)
    assert ep.local_parameters == {"role": "auto", "fingerprints": CERT_A.fingerprints}
    with pytest.raises(InvalidParametersError):
        ep.connect([], "client", 0.0)
    with pytest.raises(InvalidParametersError):
        ep.connect([{"algorithm": "md5", "value": "AA:BB"}], "client", 0.0)
    with pytest.raises(InvalidParametersError):
        ep.connect(CERT_B.fingerprints, "passive", 0.0)
    ep.connect(CERT_B.fingerprints, "client", 0.0)
    with pytest.raises(InvalidStateError):
        ep.connect(CERT_B.fingerprints, "client", 0.0)
    with pytest.raises(InvalidStateError):
        ep.send(b"too early")


# -- certificates and fingerprints ----------------------------------------------------------


def test_certificate_fingerprints_shape():
    fps = CERT_A.fingerprints
    assert [f["algorithm"] for f in fps] == ["sha-1", "sha-224", "sha-256", "sha-384", "sha-512"]
    sizes = {"sha-1": 20, "sha-224": 28, "sha-256": 32, "sha-384": 48, "sha-512": 64}
    for f in fps:
        parts = f["value"].split(":")
        assert len(parts) == sizes[f["algorithm"]]
        assert all(len(p) == 2 and p == p.upper() for p in parts)
        int("".join(parts), 16)
    assert CERT_A.fingerprint("sha-256") == fps[2]["value"]
    assert CERT_A.x509.signature_hash_algorithm.name == "sha256"
    assert CERT_A.private_key.curve.name == "secp256r1"


def test_certificate_save_load_roundtrip(tmp_path):
    cert_path, key_path = str(tmp_path / "cert.pem"), str(tmp_path / "key.pem")
    CERT_A.save(cert_path, key_path)
    loaded = Certificate.load(cert_path, key_path)
    assert loaded.fingerprints == CERT_A.fingerprints
    # A loaded certificate works in a handshake.
    link = pair(certs=(loaded, CERT_B))
    link.connect()
    link.deliver()
    assert_keys_agree(link)


def test_certificate_load_errors(tmp_path):
    cert_path, key_path = str(tmp_path / "cert.pem"), str(tmp_path / "key.pem")
    CERT_A.save(cert_path, key_path)
    other_cert, other_key = str(tmp_path / "c2.pem"), str(tmp_path / "k2.pem")
    CERT_B.save(other_cert, other_key)
    with pytest.raises(InvalidParametersError, match="does not match"):
        Certificate.load(cert_path, other_key)
    with pytest.raises(InvalidParametersError, match="dtlsCertificateFile"):
        Certificate.load(str(tmp_path / "missing.pem"), key_path)
    (tmp_path / "junk.pem").write_bytes(b"not a key")
    with pytest.raises(InvalidParametersError, match="dtlsPrivateKeyFile"):
        Certificate.load(cert_path, str(tmp_path / "junk.pem"))


@pytest.mark.parametrize("algorithm", list(FINGERPRINT_ALGORITHMS))
def test_any_supported_algorithm_authenticates(algorithm):
    link = pair()
    c, s = link.ep["client"], link.ep["server"]
    only = lambda cert: [f for f in cert.fingerprints if f["algorithm"] == algorithm]  # noqa: E731
    link.absorb("server", s.connect(only(CERT_A), "client", 0.0))
    # Unknown algorithms are skipped; lowercase hex is accepted.
    fps = [{"algorithm": "md5", "value": "00:11"}] + [
        {"algorithm": f["algorithm"].upper(), "value": f["value"].lower()} for f in only(CERT_B)
    ]
    link.absorb("client", c.connect(fps, "server", 0.0))
    link.deliver()
    assert_keys_agree(link)


def test_fingerprint_mismatch_detected_by_server():
    link = pair()
    c, s = link.ep["client"], link.ep["server"]
    wrong = [f for f in CERT_C.fingerprints if f["algorithm"] == "sha-384"]
    link.absorb("server", s.connect(wrong, "client", 0.0))
    link.absorb("client", c.connect(CERT_B.fingerprints, "server", 0.0))
    link.deliver()
    assert s.state == "failed"
    assert link.states("server")[-1].reason == s.failure_reason
    assert "fingerprint mismatch" in s.failure_reason and "sha-384" in s.failure_reason
    # Our alert reached the client, which fails too. (OpenSSL picks the alert
    # from the X.509 verify error of a self-signed leaf: unknown_ca.)
    assert c.state == "failed"
    assert "alert" in c.failure_reason
    assert not any(isinstance(e, DtlsConnected) for side in link.events.values() for e in side)


def test_fingerprint_mismatch_detected_by_client():
    link = pair()
    c, s = link.ep["client"], link.ep["server"]
    link.absorb("server", s.connect(CERT_A.fingerprints, "client", 0.0))
    wrong = [f for f in CERT_C.fingerprints if f["algorithm"] in ("sha-256", "sha-512")]
    link.absorb("client", c.connect(wrong, "server", 0.0))
    link.deliver()
    assert c.state == "failed"
    assert "sha-256" in c.failure_reason and "sha-512" in c.failure_reason
    assert s.state == "failed"


# -- loss and timers ----------------------------------------------------------------------


def test_lost_client_hello_recovered_by_retransmission():
    link = pair()
    link.drops["client"] = 1  # the ClientHello
    link.connect()
    link.deliver()
    assert link.ep["client"].state == "connecting"
    deadline = link.ep["client"].next_timeout()
    assert deadline is not None and 0.0 < deadline <= 1.0  # OpenSSL's initial 1 s
    link.run()
    assert_keys_agree(link)
    assert link.ep["client"].stats["retransmissions"] >= 1
    assert link.now < 5.0  # virtual time stayed in step with OpenSSL's real timer


def test_lost_server_finished_recovered():
    """The server's last flight is lost: the client's retransmission makes the
    (already connected) server resend it."""
    link = pair()
    link.connect()
    # ClientHello -> server flight -> client flight -> server's CCS+Finished.
    to, hello = link.queue.pop(0)
    link.absorb("server", link.ep["server"].handle_datagram(hello, 0.0))
    to, flight2 = link.queue.pop(0)
    link.absorb("client", link.ep["client"].handle_datagram(flight2, 0.0))
    link.drops["server"] = 10
    link.deliver()
    assert link.ep["server"].state == "connected"
    assert link.ep["client"].state == "connecting"
    link.drops["server"] = 0
    link.run()
    assert_keys_agree(link)
    assert link.ep["client"].stats["retransmissions"] >= 1


def test_handshake_timeout_fails_with_reason():
    ep = DtlsEndpoint(CERT_A, handshake_timeout=10.0)
    ep.connect(CERT_B.fingerprints, "server", 100.0)  # client: starts now
    assert ep.next_timeout() <= 101.0
    ep.poll(109.9)
    assert ep.state == "connecting"
    out = ep.poll(110.0)
    assert ep.state == "failed"
    assert out.events == [DtlsStateChange("failed", ep.failure_reason)]
    assert "timed out" in ep.failure_reason
    assert ep.next_timeout() is None


def test_server_handshake_timer_starts_with_first_datagram():
    ep = DtlsEndpoint(CERT_B, handshake_timeout=10.0)
    ep.connect(CERT_A.fingerprints, "client", 0.0)
    assert ep.next_timeout() is None  # waiting for a ClientHello costs nothing
    assert ep.poll(1000.0).events == []
    client = DtlsEndpoint(CERT_A)
    [hello] = client.connect(CERT_B.fingerprints, "server", 0.0).datagrams
    ep.handle_datagram(hello, 1000.0)
    assert ep.next_timeout() is not None
    ep.poll(1010.0)
    assert ep.state == "failed" and "timed out" in ep.failure_reason


def test_datagrams_before_connect_are_replayed():
    client, server = DtlsEndpoint(CERT_A), DtlsEndpoint(CERT_B)
    link = Link(client, server)
    link.absorb("client", client.connect(CERT_B.fingerprints, "auto", 0.0))  # -> client
    link.deliver()  # the ClientHello reaches a server not yet connected
    assert server.state == "new" and server.stats["early"] == 1
    link.absorb("server", server.connect(CERT_A.fingerprints, "client", 0.0))
    link.deliver()
    assert_keys_agree(link)


# -- bad input, application data, close ----------------------------------------------------

GARBAGE = [
    b"",
    b"\x17",
    bytes(range(64)),
    b"\x16\xfe\xfd" + b"\x00" * 8 + b"\x00\x30" + b"\x01" * 10,  # truncated record
    b"\x17\xfe\xfd" + b"\x00" * 8 + b"\x00\x04" + b"abcd",  # plaintext application data
    b"\x16\xfe\xfd" + b"\x00" * 8 + b"\x00\x0c" + b"\x01\x00\x00\x10\x00\x00\x00\x00\x00\x00\x00\x40",
    b"\x17\xfe\xfd\x00\x01" + b"\x00" * 6 + b"\x00\x20" + b"\x55" * 32,  # epoch 1, bad MAC
    b"\x80\x60" + b"\x00" * 30,  # RTP
]


@pytest.mark.parametrize("phase", ["new", "connecting", "connected", "failed", "closed"])
def test_garbage_never_raises(phase):
    link = pair()
    s = link.ep["server"]
    if phase != "new":
        link.connect()
    if phase in ("connected", "closed"):
        link.deliver()
    if phase == "failed":
        link.absorb("server", s.handle_datagram(b"\x15\xfe\xfd" + b"\x00" * 8 + b"\x00\x02\x02\x28", 0.0))
        assert s.state == "failed"
    if phase == "closed":
        link.absorb("server", s.close())
    before = dict(s.stats)
    for g in GARBAGE:
        out = s.handle_datagram(g, 0.0)
        assert out.events == []
    assert s.state == phase
    counted = sum(s.stats[k] - before[k] for k in ("invalid", "ignored", "early"))
    assert counted >= 6
    if phase == "connected":  # still works
        for d in link.ep["client"].send(b"still alive").datagrams:
            assert s.handle_datagram(d, 0.0).events == [DtlsApplicationData(b"still alive")]


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.binary(max_size=200), max_size=5), st.sampled_from([0, 1]))
def test_fuzz_never_raises(datagrams, prefix_valid_header):
    link = pair()
    link.connect()
    s = link.ep["server"]
    for d in datagrams:
        if prefix_valid_header:
            d = b"\x16\xfe\xfd\x00\x00" + d
        s.handle_datagram(d, 0.0)
        s.poll(0.0)
    assert s.state in ("connecting", "failed", "closed")


def test_application_data_both_ways():
    link = pair()
    link.connect()
    link.deliver()
    c, s = link.ep["client"], link.ep["server"]
    for d in c.send(b"ping").datagrams:
        assert s.handle_datagram(d, 1.0).events == [DtlsApplicationData(b"ping")]
    for d in s.send(b"pong" * 100).datagrams:
        assert c.handle_datagram(d, 1.0).events == [DtlsApplicationData(b"pong" * 100)]


def test_close_notify_closes_peer():
    link = pair()
    link.connect()
    link.deliver()
    out = link.ep["client"].close()
    assert out.events == [DtlsStateChange("closed")]
    assert len(out.datagrams) == 1
    got = link.ep["server"].handle_datagram(out.datagrams[0], 1.0)
    assert got.events == [DtlsStateChange("closed")]
    assert link.ep["server"].state == "closed"
    assert link.ep["client"].close().events == []
    with pytest.raises(InvalidStateError):
        link.ep["client"].send(b"x")


def test_close_during_handshake_and_before_connect():
    ep = DtlsEndpoint(CERT_A)
    assert ep.close().events == [DtlsStateChange("closed")]
    ep = DtlsEndpoint(CERT_A)
    ep.connect(CERT_B.fingerprints, "server", 0.0)
    out = ep.close()
    assert out.events == [DtlsStateChange("closed")] and out.datagrams == []
    assert ep.next_timeout() is None


def test_fatal_alert_fails_with_reason():
    ep = DtlsEndpoint(CERT_B)
    ep.connect(CERT_A.fingerprints, "client", 0.0)
    # Fatal handshake_failure alert (40), epoch 0.
    out = ep.handle_datagram(b"\x15\xfe\xfd" + b"\x00" * 8 + b"\x00\x02\x02\x28", 0.0)
    assert ep.state == "failed"
    assert out.events == [DtlsStateChange("failed", ep.failure_reason)]
    assert "handshake failure" in ep.failure_reason


# -- interop with aiortc --------------------------------------------------------------------

try:  # a test-only dependency: pip install aiortc
    from aiortc import rtcdtlstransport as aiortc_dtls
except ImportError:  # pragma: no cover
    aiortc_dtls = None

needs_aiortc = pytest.mark.skipif(aiortc_dtls is None, reason="aiortc is not installed")


class FakeIceTransport:
    """What RTCDtlsTransport needs from an RTCIceTransport."""

    def __init__(self, role: str, peer_inbox: "asyncio.Queue[bytes]") -> None:
        self.role = role
        self.inbox: asyncio.Queue[bytes | None] = asyncio.Queue()
        self.peer_inbox = peer_inbox

    async def _recv(self) -> bytes:
        data = await self.inbox.get()
        if data is None:
            raise ConnectionError("closed")
        return data

    async def _send(self, data: bytes) -> None:
        self.peer_inbox.put_nowait(data)


class EndpointShell:
    """Drives a DtlsEndpoint from an asyncio queue, with loop.time() as now."""

    def __init__(self, endpoint: DtlsEndpoint, peer: FakeIceTransport) -> None:
        self.ep = endpoint
        self.peer = peer
        self.inbox: asyncio.Queue[bytes] = asyncio.Queue()
        self.events: list = []
        self.received_srtp: list[bytes] = []
        self.loop = asyncio.get_running_loop()
        self.timer: asyncio.TimerHandle | None = None
        self.task = asyncio.create_task(self._run())

    def apply(self, out) -> None:
        for d in out.datagrams:
            self.peer.inbox.put_nowait(d)
        self.events += out.events
        if self.timer:
            self.timer.cancel()
        t = self.ep.next_timeout()
        if t is not None:
            self.timer = self.loop.call_at(t, lambda: self.apply(self.ep.poll(self.loop.time())))

    async def _run(self) -> None:
        while True:
            data = await self.inbox.get()
            if 19 < data[0] < 64:
                self.apply(self.ep.handle_datagram(data, self.loop.time()))
            else:
                self.received_srtp.append(data)

    async def wait_for(self, predicate, timeout: float = 5.0) -> None:
        deadline = self.loop.time() + timeout
        while not predicate() and self.loop.time() < deadline:
            await asyncio.sleep(0.01)
        assert predicate()

    def stop(self) -> None:
        if self.timer:
            self.timer.cancel()
        self.task.cancel()


@needs_aiortc
@pytest.mark.timeout(20)
@pytest.mark.parametrize("our_role", ["server", "client"])
@pytest.mark.parametrize("our_profiles", [None, ["AES_CM_128_HMAC_SHA1_80", "AEAD_AES_128_GCM"]])
async def test_interop_with_aiortc(our_role, our_profiles):
    kwargs = {"srtp_profiles": our_profiles} if our_profiles else {}
    ours = DtlsEndpoint(Certificate.generate(), **kwargs)
    their_cert = aiortc_dtls.RTCCertificate.generateCertificate()

    shell_inbox: asyncio.Queue[bytes] = asyncio.Queue()
    fake_ice = FakeIceTransport("controlled", shell_inbox)
    theirs = aiortc_dtls.RTCDtlsTransport(fake_ice, [their_cert])
    their_role = "client" if our_role == "server" else "server"
    theirs._set_role(their_role)
    shell = EndpointShell(ours, fake_ice)
    shell.inbox = shell_inbox
    try:
        their_fps = [{"algorithm": f.algorithm, "value": f.value} for f in theirs.getLocalParameters().fingerprints]
        shell.apply(ours.connect(their_fps, their_role, asyncio.get_running_loop().time()))
        assert ours.role == our_role
        our_fps = [
            aiortc_dtls.RTCDtlsFingerprint(algorithm=f["algorithm"], value=f["value"])
            for f in ours.local_parameters["fingerprints"]
        ]
        await asyncio.wait_for(theirs.start(aiortc_dtls.RTCDtlsParameters(fingerprints=our_fps, role=our_role)), 10)
        assert theirs.state == "connected"
        await shell.wait_for(lambda: ours.state == "connected")

        [connected] = [e for e in shell.events if isinstance(e, DtlsConnected)]
        negotiated = theirs._ssl.get_selected_srtp_profile().decode()
        expected = {
            None: "AEAD_AES_256_GCM",
            # aiortc offers GCM first; as server our order wins, as client theirs.
            "server": "AES_CM_128_HMAC_SHA1_80",
            "client": "AEAD_AES_128_GCM",  # aiortc's first pick among what we offer
        }[our_role if our_profiles else None]
        assert connected.suite == expected
        assert negotiated == {"AEAD_AES_256_GCM": "SRTP_AEAD_AES_256_GCM",
                              "AEAD_AES_128_GCM": "SRTP_AEAD_AES_128_GCM",
                              "AES_CM_128_HMAC_SHA1_80": "SRTP_AES128_CM_SHA1_80"}[expected]

        # aiortc -> us: their SRTP session protects, our remote_master unprotects.
        packet = rtp(7, b"from aiortc")
        await theirs._send_rtp(packet)
        await shell.wait_for(lambda: shell.received_srtp)
        rx = srtp_session(connected.suite, connected.remote_master, outbound=False)
        assert rx.unprotect(shell.received_srtp[0]) == packet
        # us -> aiortc: our local_master protects, their session unprotects.
        packet = rtp(8, b"from the sfu")
        tx = srtp_session(connected.suite, connected.local_master, outbound=True)
        assert theirs._rx_srtp.unprotect(tx.protect(packet)) == packet

        # Application data (what SCTP rides on), both ways.
        got: list[bytes] = []

        class Receiver:
            async def _handle_data(self, data: bytes) -> None:
                got.append(data)

        theirs._register_data_receiver(Receiver())
        await theirs._send_data(b"sctp from aiortc")
        await shell.wait_for(lambda: any(isinstance(e, DtlsApplicationData) for e in shell.events))
        assert DtlsApplicationData(b"sctp from aiortc") in shell.events
        shell.apply(ours.send(b"sctp from the sfu"))
        await shell.wait_for(lambda: got)
        assert got == [b"sctp from the sfu"]

        # aiortc's stop() sends close_notify.
        await theirs.stop()
        await shell.wait_for(lambda: ours.state == "closed")
    finally:
        shell.stop()
        fake_ice.inbox.put_nowait(None)
        await asyncio.sleep(0)


@needs_aiortc
@pytest.mark.timeout(20)
async def test_interop_aiortc_rejects_wrong_fingerprint():
    ours = DtlsEndpoint(Certificate.generate())
    their_cert = aiortc_dtls.RTCCertificate.generateCertificate()
    shell_inbox: asyncio.Queue[bytes] = asyncio.Queue()
    fake_ice = FakeIceTransport("controlled", shell_inbox)
    theirs = aiortc_dtls.RTCDtlsTransport(fake_ice, [their_cert])
    theirs._set_role("client")
    shell = EndpointShell(ours, fake_ice)
    shell.inbox = shell_inbox
    try:
        wrong = [{"algorithm": "sha-256", "value": CERT_C.fingerprint("sha-256")}]
        shell.apply(ours.connect(wrong, "client", asyncio.get_running_loop().time()))
        our_fps = [aiortc_dtls.RTCDtlsFingerprint(**f) for f in ours.local_parameters["fingerprints"]]
        await asyncio.wait_for(theirs.start(aiortc_dtls.RTCDtlsParameters(fingerprints=our_fps, role="server")), 10)
        await shell.wait_for(lambda: ours.state == "failed")
        assert "sha-256" in ours.failure_reason
        assert theirs.state == "failed"  # our alert ended their handshake
    finally:
        shell.stop()
        fake_ice.inbox.put_nowait(None)
        await asyncio.sleep(0)
