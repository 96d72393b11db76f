"""DTLS-SRTP endpoint (RFC 6347, RFC 5764), sans-IO, on pyOpenSSL memory BIOs.

The WebRTC transport's DTLS layer as in mediasoup's ``DtlsTransport``: a
handshake authenticated by certificate fingerprints exchanged in signalling
(RFC 8122), the use_srtp extension to agree on an SRTP protection profile,
and the SRTP master keys exported from the session (RFC 5764 section 4.2).

Sans-IO: datagrams in (:meth:`DtlsEndpoint.handle_datagram`), datagrams out
(:class:`DtlsOutput`, for the ICE selected tuple), and a timer the caller
drives with :meth:`DtlsEndpoint.next_timeout` / :meth:`DtlsEndpoint.poll`.

Notes on what OpenSSL (through pyOpenSSL) does and does not allow:

* Version: the OpenSSL in the ``cryptography`` wheel has no DTLS 1.3
  (``set_max_proto_version(DTLS1_3)`` fails), so DTLS 1.2 is the maximum
  anyway. We pin min = max = DTLS 1.2: WebRTC requires 1.2 (RFC 8827), and a
  later OpenSSL with DTLS 1.3 would change the key export and the
  retransmission rules under us.
* Memory BIOs are byte streams: OpenSSL's output loses datagram boundaries.
  We split what it wrote into DTLS records and pack whole records into
  datagrams of at most ``mtu`` bytes (OpenSSL is told the same MTU, with
  OP_NO_QUERY_MTU, so it fragments handshake messages to fit).
* Retransmission timer: OpenSSL keeps its DTLS timer on the real clock and
  pyOpenSSL cannot install ``DTLS_set_timer_cb``. ``next_timeout()`` is
  ``now`` (of the last call) plus what ``DTLSv1_get_timeout()`` reports; when
  ``poll(now)`` reaches it, ``DTLSv1_handle_timeout()`` runs. If the caller's
  clock ran ahead of the real one (virtual time in tests), OpenSSL has not
  expired its timer yet and nothing is resent; the deadline is then re-armed
  with the real time left. With ``now = loop.time()`` both clocks agree. The
  first retransmission therefore takes at least OpenSSL's 1 s initial timeout
  of real time, whatever ``now`` says.
* Handshake failure by timeout does not rely on OpenSSL's own limit (12
  timeouts, minutes with its 60 s backoff cap): ``handshake_timeout`` seconds
  of caller time after the handshake started (``connect()`` for a client, the
  first datagram for a server) the endpoint fails, naming how many
  retransmissions were sent.
* The peer certificate is checked during the handshake, in the verify
  callback, against the remote fingerprints, so a mismatch aborts the
  handshake with a bad_certificate alert to the peer; it is checked again
  once the handshake is done. Session tickets, the session cache and
  renegotiation are off, so every handshake presents a certificate.

Role: as mediasoup's ``WebRtcTransport.connect()``, remote 'client' makes us
server and remote 'server' makes us client; remote 'auto' makes us client
(mediasoup: "we are ICE controlled", the ORTC rule). With no remote role
(``None``) we keep our own role, 'auto' resolving to server, as mediasoup's
``MayRunDtlsTransport`` does when connect() set no role.
"""

from __future__ import annotations

import datetime
import hmac
import os
import weakref
from dataclasses import dataclass, field
from typing import Any, Optional, Sequence

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from OpenSSL import SSL

from .errors import InvalidParametersError, InvalidStateError, UnsupportedError
from .srtp import CRYPTO_SUITES, crypto_suite

__all__ = [
    "Certificate",
    "DtlsApplicationData",
    "DtlsConnected",
    "DtlsEndpoint",
    "DtlsOutput",
    "DtlsStateChange",
    "FINGERPRINT_ALGORITHMS",
    "is_dtls",
]

DTLS1_2_VERSION = 0xFEFD

#: The fingerprint hash functions we compute and accept (RFC 8122 names).
FINGERPRINT_ALGORITHMS: dict[str, type[hashes.HashAlgorithm]] = {
    "sha-1": hashes.SHA1,
    "sha-224": hashes.SHA224,
    "sha-256": hashes.SHA256,
    "sha-384": hashes.SHA384,
    "sha-512": hashes.SHA512,
}

#: mediasoup / SDES crypto-suite name -> OpenSSL use_srtp profile name.
SRTP_PROFILE_NAMES: dict[str, bytes] = {
    "AEAD_AES_256_GCM": b"SRTP_AEAD_AES_256_GCM",
    "AEAD_AES_128_GCM": b"SRTP_AEAD_AES_128_GCM",
    "AES_CM_128_HMAC_SHA1_80": b"SRTP_AES128_CM_SHA1_80",
    "AES_CM_128_HMAC_SHA1_32": b"SRTP_AES128_CM_SHA1_32",
}
_SUITE_BY_PROFILE = {v: k for k, v in SRTP_PROFILE_NAMES.items()}

DEFAULT_SRTP_PROFILES = ("AEAD_AES_256_GCM", "AEAD_AES_128_GCM", "AES_CM_128_HMAC_SHA1_80", "AES_CM_128_HMAC_SHA1_32")

# Forward-secret AEAD first, CBC kept for old peers. ECDSA suites for our own
# certificate as server, RSA ones in case a peer's server certificate is RSA.
_CIPHERS = b"ECDHE+AESGCM:ECDHE+CHACHA20:ECDHE+AES:!aNULL:!eNULL:!PSK:!SRP"

_RECORD_HEADER = 13
_CONTENT_TYPES = frozenset((20, 21, 22, 23))  # change_cipher_spec, alert, handshake, application_data
_MAX_EARLY_DATAGRAMS = 16


def is_dtls(data: bytes) -> bool:
    """Whether a datagram is DTLS by its first byte (RFC 7983: 20..63)."""
    return len(data) > 0 and 19 < data[0] < 64


def _split_records(data: bytes) -> Optional[list[bytes]]:
    """DTLS 1.0/1.2 records of a datagram, or ``None`` if it is not made of
    whole, well-formed ones."""
    records = []
    pos, n = 0, len(data)
    while pos < n:
        if n - pos < _RECORD_HEADER:
            return None
        if data[pos] not in _CONTENT_TYPES or data[pos + 1] != 0xFE or data[pos + 2] not in (0xFD, 0xFF):
            return None
        end = pos + _RECORD_HEADER + ((data[pos + 11] << 8) | data[pos + 12])
        if end > n:
            return None
        records.append(data[pos:end])
        pos = end
    return records or None


def _plausible(records: list[bytes]) -> bool:
    """Rejects epoch-0 (plaintext) records that no peer sends: application
    data, and handshake records whose fragment headers do not add up.
    OpenSSL treats those as fatal during the handshake, so an unrelated or
    corrupted datagram would otherwise fail the association. Encrypted
    records with a bad MAC are dropped by OpenSSL itself (RFC 6347 section
    4.1.2.7)."""
    for record in records:
        if record[3] or record[4]:  # epoch != 0
            continue
        content_type = record[0]
        if content_type == 23:
            return False
        if content_type == 22:
            pos, n = _RECORD_HEADER, len(record)
            if pos == n:
                return False
            while pos < n:  # several handshake fragments may share a record
                if n - pos < 12:
                    return False
                length = int.from_bytes(record[pos + 1 : pos + 4], "big")
                offset = int.from_bytes(record[pos + 6 : pos + 9], "big")
                frag_len = int.from_bytes(record[pos + 9 : pos + 12], "big")
                if offset + frag_len > length:
                    return False
                pos += 12 + frag_len
            if pos != n:
                return False
    return True


def _format_fingerprint(digest: bytes) -> str:
    return ":".join(f"{b:02X}" for b in digest)


# --------------------------------------------------------------------------
# Certificate


class Certificate:
    """A certificate and its private key (ECDSA P-256 self-signed by default)."""

    def __init__(self, certificate: x509.Certificate, private_key: Any) -> None:
        if certificate.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        ) != private_key.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        ):
            raise InvalidParametersError("certificate: the private key does not match the certificate")
        self._cert = certificate
        self._key = private_key
        self._fingerprints = [
            {"algorithm": name, "value": _format_fingerprint(certificate.fingerprint(algo()))}
            for name, algo in FINGERPRINT_ALGORITHMS.items()
        ]

    @classmethod
    def generate(cls, common_name: Optional[str] = None, days: int = 365) -> "Certificate":
        """A fresh ECDSA P-256 key and a self-signed certificate for it.

        Peers authenticate it by fingerprint, not by validity dates; the long
        default validity only keeps picky stacks quiet on long-lived workers.
        """
        key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name or os.urandom(8).hex())])
        now = datetime.datetime.now(datetime.timezone.utc)
        cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=days))
            .sign(key, hashes.SHA256())
        )
        return cls(cert, key)

    @classmethod
    def load(cls, cert_path: str, key_path: str, password: Optional[bytes] = None) -> "Certificate":
        """Loads a PEM certificate and PEM private key (e.g. mediasoup's
        ``dtlsCertificateFile`` / ``dtlsPrivateKeyFile``)."""
        try:
            with open(cert_path, "rb") as f:
                cert = x509.load_pem_x509_certificate(f.read())
        except (OSError, ValueError) as exc:
            raise InvalidParametersError(f"dtlsCertificateFile: cannot load {cert_path!r}: {exc}") from None
        try:
            with open(key_path, "rb") as f:
                key = serialization.load_pem_private_key(f.read(), password=password)
        except (OSError, ValueError, TypeError) as exc:
            raise InvalidParametersError(f"dtlsPrivateKeyFile: cannot load {key_path!r}: {exc}") from None
        return cls(cert, key)

    def save(self, cert_path: str, key_path: str) -> None:
        """Writes the certificate and (unencrypted) key as PEM files."""
        with open(cert_path, "wb") as f:
            f.write(self._cert.public_bytes(serialization.Encoding.PEM))
        fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(
                self._key.private_bytes(
                    serialization.Encoding.PEM,
                    serialization.PrivateFormat.PKCS8,
                    serialization.NoEncryption(),
                )
            )

    @property
    def x509(self) -> x509.Certificate:
        return self._cert

    @property
    def private_key(self) -> Any:
        return self._key

    @property
    def fingerprints(self) -> list[dict]:
        """mediasoup-shaped fingerprints, one per supported algorithm."""
        return [dict(f) for f in self._fingerprints]

    def fingerprint(self, algorithm: str = "sha-256") -> str:
        for f in self._fingerprints:
            if f["algorithm"] == algorithm:
                return f["value"]
        raise UnsupportedError(f"unsupported fingerprint algorithm {algorithm!r}")


def _check_fingerprints(cert: x509.Certificate, remote: Sequence[dict]) -> Optional[str]:
    """``None`` if ``cert`` matches one of the remote fingerprints whose
    algorithm we support (several fingerprints may describe several
    certificates, RFC 8122 section 5), else the failure reason."""
    tried = []
    for f in remote:
        algorithm = f["algorithm"]
        if algorithm not in FINGERPRINT_ALGORITHMS:
            continue
        tried.append(algorithm)
        digest = _format_fingerprint(cert.fingerprint(FINGERPRINT_ALGORITHMS[algorithm]()))
        if hmac.compare_digest(digest, f["value"]):
            return None
    return f"remote certificate fingerprint mismatch ({', '.join(tried)})"


def _normalize_fingerprints(remote: object) -> list[dict]:
    if not isinstance(remote, (list, tuple)) or not remote:
        raise InvalidParametersError("dtlsParameters.fingerprints: must be a non-empty array")
    result = []
    for i, f in enumerate(remote):
        if not isinstance(f, dict):
            raise InvalidParametersError(f"dtlsParameters.fingerprints[{i}]: must be an object")
        algorithm, value = f.get("algorithm"), f.get("value")
        if not isinstance(algorithm, str):
            raise InvalidParametersError(f"dtlsParameters.fingerprints[{i}].algorithm: missing or not a string")
        if not isinstance(value, str):
            raise InvalidParametersError(f"dtlsParameters.fingerprints[{i}].value: missing or not a string")
        result.append({"algorithm": algorithm.lower(), "value": value.upper()})
    if not any(f["algorithm"] in FINGERPRINT_ALGORITHMS for f in result):
        raise InvalidParametersError(
            "dtlsParameters.fingerprints: no supported algorithm "
            f"(supported: {', '.join(FINGERPRINT_ALGORITHMS)})"
        )
    return result


# --------------------------------------------------------------------------
# Output and events


@dataclass(frozen=True)
class DtlsStateChange:
    """'connecting', 'connected', 'failed' (with a reason) or 'closed'."""

    state: str
    reason: Optional[str] = None


@dataclass(frozen=True)
class DtlsConnected:
    """The handshake completed and the SRTP keys are known.

    ``local_master`` (key + salt) protects what we send, ``remote_master``
    unprotects what we receive; ``suite`` is a :data:`sfu.srtp.CRYPTO_SUITES`
    name.
    """

    role: str
    suite: str
    local_master: bytes
    remote_master: bytes

    def __repr__(self) -> str:  # keep keys out of logs
        return f"DtlsConnected(role={self.role!r}, suite={self.suite!r})"


@dataclass(frozen=True)
class DtlsApplicationData:
    """Application data (SCTP for data channels) received over DTLS."""

    data: bytes


@dataclass
class DtlsOutput:
    """Datagrams to send to the selected tuple, and events, in order."""

    datagrams: list[bytes] = field(default_factory=list)
    events: list[object] = field(default_factory=list)

    def extend(self, other: "DtlsOutput") -> None:
        self.datagrams.extend(other.datagrams)
        self.events.extend(other.events)


# --------------------------------------------------------------------------
# Endpoint

STATS_KEYS = (
    "datagrams_received",
    "datagrams_sent",
    "invalid",  # not made of well-formed DTLS records: never given to OpenSSL
    "ignored",  # received once failed or closed
    "early",  # received before connect(), kept and replayed (up to 16)
    "early_dropped",  # received before connect() beyond that
    "retransmissions",  # flights resent on timeout
)


class DtlsEndpoint:
    """One side of a DTLS-SRTP association."""

    def __init__(
        self,
        certificate: Certificate,
        role: str = "auto",
        srtp_profiles: Sequence[str] = DEFAULT_SRTP_PROFILES,
        *,
        mtu: int = 1200,
        handshake_timeout: float = 30.0,
    ) -> None:
        if role not in ("auto", "client", "server"):
            raise InvalidParametersError(f"dtlsParameters.role: must be 'auto', 'client' or 'server', got {role!r}")
        profiles = list(srtp_profiles)
        if not profiles:
            raise InvalidParametersError("srtp_profiles: at least one SRTP crypto suite is needed")
        for name in profiles:
            crypto_suite(name)  # UnsupportedError for unknown names
            if name not in SRTP_PROFILE_NAMES:
                raise UnsupportedError(f"SRTP crypto suite {name!r} has no DTLS-SRTP profile")
        if len(set(profiles)) != len(profiles):
            raise InvalidParametersError("srtp_profiles: duplicate crypto suite")
        if not 228 <= mtu <= 65507:
            raise InvalidParametersError("mtu: must be between 228 and 65507")
        self.certificate = certificate
        self._configured_role = role
        self._srtp_profiles = profiles
        self._mtu = mtu
        self.handshake_timeout = handshake_timeout

        self._state = "new"
        self._role: Optional[str] = None
        self._remote_fingerprints: list[dict] = []
        self._ssl: Optional[SSL.Connection] = None
        self._verify_failure: Optional[str] = None
        self._early: list[bytes] = []
        self._retransmit_at: Optional[float] = None
        self._handshake_deadline: Optional[float] = None
        self._handshake_done = False
        self.failure_reason: Optional[str] = None
        self.srtp_suite: Optional[str] = None
        self.remote_certificate: Optional[x509.Certificate] = None
        self.stats: dict[str, int] = dict.fromkeys(STATS_KEYS, 0)

    # -- parameters and state ------------------------------------------------

    @property
    def local_parameters(self) -> dict:
        """mediasoup's ``dtlsParameters`` (role is the resolved one once
        connect() decided it)."""
        return {"role": self._role or self._configured_role, "fingerprints": self.certificate.fingerprints}

    @property
    def state(self) -> str:
        return self._state

    @property
    def role(self) -> Optional[str]:
        """'client' or 'server' once connect() resolved it."""
        return self._role

    # -- inputs ----------------------------------------------------------------

    def connect(self, remote_fingerprints: list[dict], remote_role: Optional[str], now: float) -> DtlsOutput:
        """Starts the association with the peer's ``dtlsParameters``."""
        if self._state != "new":
            raise InvalidStateError(f"DTLS endpoint is {self._state}, connect() needs 'new'")
        fingerprints = _normalize_fingerprints(remote_fingerprints)
        self._role = self._resolve_role(remote_role)
        self._remote_fingerprints = fingerprints
        self._ssl = self._make_connection()
        out = DtlsOutput()
        self._set_state("connecting", None, out)
        if self._role == "client":
            self._ssl.set_connect_state()
            self._handshake_deadline = now + self.handshake_timeout
            self._drive_handshake(now, out)
        else:
            self._ssl.set_accept_state()
        early, self._early = self._early, []
        for data in early:
            if self._state != "connecting":
                break
            out.extend(self._handle(data, now))
        return out

    def handle_datagram(self, data: bytes, now: float) -> DtlsOutput:
        """Processes one received DTLS datagram. Never raises for bad input."""
        self.stats["datagrams_received"] += 1
        if self._state in ("failed", "closed"):
            self.stats["ignored"] += 1
            return DtlsOutput()
        records = _split_records(data)
        if records is None or not _plausible(records):
            self.stats["invalid"] += 1
            return DtlsOutput()
        if self._state == "new":
            # Before connect() only a ClientHello (handshake, epoch 0) makes sense.
            if any(r[0] != 22 or r[3] or r[4] for r in records):
                self.stats["invalid"] += 1
            elif len(self._early) < _MAX_EARLY_DATAGRAMS:
                self._early.append(bytes(data))
                self.stats["early"] += 1
            else:
                self.stats["early_dropped"] += 1
            return DtlsOutput()
        return self._handle(data, now)

    def poll(self, now: float) -> DtlsOutput:
        """Runs the retransmission and handshake timers."""
        out = DtlsOutput()
        if self._state != "connecting" or self._ssl is None:
            return out
        if self._handshake_deadline is not None and now >= self._handshake_deadline:
            self._fail(
                f"DTLS handshake timed out after {self.handshake_timeout:g} s "
                f"({self.stats['retransmissions']} retransmissions)",
                out,
            )
            return out
        if self._retransmit_at is not None and now >= self._retransmit_at:
            try:
                fired = self._ssl.DTLSv1_handle_timeout()
            except SSL.Error as exc:
                self._flush(out)
                self._fail(f"DTLS handshake failed on retransmission: {_describe(exc)}", out)
                return out
            sent = len(out.datagrams)
            self._flush(out)
            if fired and len(out.datagrams) > sent:
                self.stats["retransmissions"] += 1
            remaining = self._ssl.DTLSv1_get_timeout()
            if remaining is None:
                self._retransmit_at = None
            else:
                # OpenSSL's timer is on the real clock: if it has not expired yet
                # (the caller's clock ran ahead), wait for what it has left.
                self._retransmit_at = now + (remaining if fired else max(remaining, 0.001))
        return out

    def next_timeout(self) -> Optional[float]:
        """When :meth:`poll` must next be called (``None``: no deadline)."""
        if self._state != "connecting":
            return None
        deadlines = [d for d in (self._retransmit_at, self._handshake_deadline) if d is not None]
        return min(deadlines) if deadlines else None

    def send(self, data: bytes) -> DtlsOutput:
        """Encrypts application data (SCTP) once connected."""
        if self._state != "connected" or self._ssl is None:
            raise InvalidStateError(f"DTLS endpoint is {self._state}, cannot send application data")
        out = DtlsOutput()
        try:
            self._ssl.send(data)
        except SSL.Error as exc:
            raise InvalidStateError(f"DTLS send failed: {_describe(exc)}") from None
        self._flush(out)
        return out

    def close(self) -> DtlsOutput:
        """Sends close_notify (if the handshake got that far) and closes."""
        out = DtlsOutput()
        if self._state in ("closed", "failed"):
            if self._state == "failed":
                self._set_state("closed", None, out)
            return out
        if self._ssl is not None and self._handshake_done:
            try:
                self._ssl.shutdown()
            except SSL.Error:
                pass
            self._flush(out)
        self._release()
        self._set_state("closed", None, out)
        return out

    # -- internals -------------------------------------------------------------

    def _resolve_role(self, remote_role: Optional[str]) -> str:
        if remote_role not in (None, "auto", "client", "server"):
            raise InvalidParametersError(
                f"dtlsParameters.role: must be 'auto', 'client' or 'server', got {remote_role!r}"
            )
        if remote_role == "client":
            wanted = "server"
        elif remote_role == "server":
            wanted = "client"
        elif remote_role == "auto":
            wanted = "client" if self._configured_role == "auto" else self._configured_role
        else:
            wanted = "server" if self._configured_role == "auto" else self._configured_role
        if self._configured_role != "auto" and wanted != self._configured_role:
            raise InvalidParametersError(
                f"dtlsParameters.role: remote {remote_role!r} conflicts with local role {self._configured_role!r}"
            )
        return wanted

    def _make_connection(self) -> SSL.Connection:
        ctx = SSL.Context(SSL.DTLS_METHOD)
        ctx.set_min_proto_version(DTLS1_2_VERSION)
        ctx.set_max_proto_version(DTLS1_2_VERSION)
        ctx.set_options(SSL.OP_NO_QUERY_MTU | SSL.OP_NO_TICKET | SSL.OP_NO_RENEGOTIATION)
        ctx.set_session_cache_mode(SSL.SESS_CACHE_OFF)
        ctx.use_certificate(self.certificate.x509)
        ctx.use_privatekey(self.certificate.private_key)
        ctx.check_privatekey()
        ctx.set_cipher_list(_CIPHERS)
        ctx.set_tlsext_use_srtp(b":".join(SRTP_PROFILE_NAMES[p] for p in self._srtp_profiles))
        me = weakref.ref(self)

        def verify(conn: SSL.Connection, cert: Any, errno: int, depth: int, ok: int) -> bool:
            endpoint = me()
            if endpoint is None:
                return False
            if depth != 0:
                return True  # only the leaf is pinned, by fingerprint
            reason = _check_fingerprints(cert.to_cryptography(), endpoint._remote_fingerprints)
            if reason is not None:
                endpoint._verify_failure = reason
                return False
            return True

        ctx.set_verify(SSL.VERIFY_PEER | SSL.VERIFY_FAIL_IF_NO_PEER_CERT | SSL.VERIFY_CLIENT_ONCE, verify)
        conn = SSL.Connection(ctx, None)
        conn.set_ciphertext_mtu(self._mtu)
        return conn

    def _handle(self, data: bytes, now: float) -> DtlsOutput:
        out = DtlsOutput()
        assert self._ssl is not None
        if self._handshake_deadline is None:
            self._handshake_deadline = now + self.handshake_timeout
        try:
            self._ssl.bio_write(data)
        except SSL.Error:  # pragma: no cover - memory BIO writes do not fail
            self.stats["invalid"] += 1
            return out
        if not self._handshake_done:
            self._drive_handshake(now, out)
            if self._state != "connected":
                return out
        self._read_records(out)
        return out

    def _drive_handshake(self, now: float, out: DtlsOutput) -> None:
        assert self._ssl is not None
        try:
            self._ssl.do_handshake()
        except SSL.WantReadError:
            self._flush(out)
            remaining = self._ssl.DTLSv1_get_timeout()
            self._retransmit_at = None if remaining is None else now + remaining
            return
        except SSL.ZeroReturnError:
            self._release()
            self._set_state("closed", None, out)  # close_notify during the handshake
            return
        except SSL.Error as exc:
            self._flush(out)  # the alert OpenSSL queued, if any
            self._fail(self._verify_failure or f"DTLS handshake failed: {_describe(exc)}", out)
            return
        self._flush(out)
        self._handshake_done = True
        self._retransmit_at = None
        self._handshake_deadline = None
        self._on_handshake_done(out)

    def _on_handshake_done(self, out: DtlsOutput) -> None:
        assert self._ssl is not None and self._role is not None
        peer = self._ssl.get_peer_certificate(as_cryptography=True)
        reason = (
            "remote sent no certificate" if peer is None else _check_fingerprints(peer, self._remote_fingerprints)
        )
        profile = self._ssl.get_selected_srtp_profile()
        suite_name = _SUITE_BY_PROFILE.get(profile)
        if reason is None and suite_name is None:
            reason = "no SRTP protection profile negotiated (use_srtp)"
        if reason is not None:
            # The handshake is over for OpenSSL: tell the peer with close_notify
            # (as mediasoup's Reset() does), then fail.
            try:
                self._ssl.shutdown()
            except SSL.Error:
                pass
            self._flush(out)
            self._fail(reason, out)
            return
        assert peer is not None and suite_name is not None
        suite = CRYPTO_SUITES[suite_name]
        k, s = suite.key_length, suite.salt_length
        material = self._ssl.export_keying_material(b"EXTRACTOR-dtls_srtp", 2 * (k + s))
        # RFC 5764 section 4.2: client key | server key | client salt | server salt.
        client_master = material[0:k] + material[2 * k : 2 * k + s]
        server_master = material[k : 2 * k] + material[2 * k + s : 2 * k + 2 * s]
        if self._role == "client":
            local, remote = client_master, server_master
        else:
            local, remote = server_master, client_master
        self.remote_certificate = peer
        self.srtp_suite = suite_name
        self._set_state("connected", None, out)
        out.events.append(DtlsConnected(self._role, suite_name, local, remote))

    def _read_records(self, out: DtlsOutput) -> None:
        assert self._ssl is not None
        while True:
            try:
                data = self._ssl.recv(65536)
            except SSL.WantReadError:
                break
            except SSL.ZeroReturnError:
                # close_notify: answer with ours, as TLS asks, then close.
                try:
                    self._ssl.shutdown()
                except SSL.Error:
                    pass
                self._flush(out)
                self._release()
                self._set_state("closed", None, out)
                return
            except SSL.Error as exc:
                self._flush(out)
                self._fail(f"DTLS error: {_describe(exc)}", out)
                return
            if not data:
                break
            out.events.append(DtlsApplicationData(data))
        # A retransmitted Finished from the peer makes OpenSSL resend its
        # last flight: send whatever it wrote.
        self._flush(out)

    def _flush(self, out: DtlsOutput) -> None:
        """Moves what OpenSSL wrote to the memory BIO into datagrams."""
        if self._ssl is None:
            return
        chunks = []
        while True:
            try:
                chunk = self._ssl.bio_read(65536)
            except SSL.WantReadError:
                break
            except SSL.Error:  # pragma: no cover
                break
            if not chunk:
                break
            chunks.append(chunk)
        if not chunks:
            return
        data = b"".join(chunks)
        records = _split_records(data) or [data]
        datagram = b""
        for record in records:
            if datagram and len(datagram) + len(record) > self._mtu:
                out.datagrams.append(datagram)
                self.stats["datagrams_sent"] += 1
                datagram = b""
            datagram += record
        if datagram:
            out.datagrams.append(datagram)
            self.stats["datagrams_sent"] += 1

    def _fail(self, reason: str, out: DtlsOutput) -> None:
        self.failure_reason = reason
        self._release()
        self._set_state("failed", reason, out)

    def _release(self) -> None:
        self._ssl = None
        self._retransmit_at = None
        self._handshake_deadline = None
        self._early = []

    def _set_state(self, state: str, reason: Optional[str], out: DtlsOutput) -> None:
        if state != self._state:
            self._state = state
            out.events.append(DtlsStateChange(state, reason))

    def __repr__(self) -> str:
        return f"DtlsEndpoint(role={self._role or self._configured_role!r}, state={self._state!r})"


def _describe(exc: SSL.Error) -> str:
    """OpenSSL's reason strings from an SSL.Error, e.g.
    'sslv3 alert bad certificate'."""
    parts = []
    for item in exc.args[0] if exc.args and isinstance(exc.args[0], list) else []:
        if isinstance(item, tuple) and item:
            parts.append(str(item[-1]))
    return "; ".join(parts) or exc.__class__.__name__
