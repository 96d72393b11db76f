"""ICE-lite agent (RFC 8445 section 2.5 lite implementation), sans-IO.

The server side of a WebRTC transport, as in mediasoup's ``IceServer``: it
never sends checks, it answers the Binding requests of a controlling full
agent (RFC 5389 short-term credentials), learns the remote transport
addresses ("tuples") they come from, follows the peer's nomination
(USE-CANDIDATE) and tracks consent freshness (RFC 7675) from the checks the
peer keeps sending.

Sans-IO: no socket, no clock. Callers pass each datagram with its source
address and the current monotonic time ``now`` (seconds), and send what
comes back in :class:`IceOutput`. :meth:`IceLiteAgent.poll` must be called
when :meth:`IceLiteAgent.next_timeout` is due, so that consent can expire.

STUN encoding and decoding use :mod:`aioice.stun`.

Decisions where the RFCs leave a choice (or where mediasoup differs):

* FINGERPRINT is mandatory (RFC 8445 section 7: ICE agents use it on every
  check) and must be the last attribute (RFC 5389 section 15.5). A message
  without it, or with a wrong one, is silently discarded (RFC 5389 section
  7.3). mediasoup answers 400 to a missing FINGERPRINT; we do not answer
  something we cannot even tell is STUN meant for us.
* Only Binding *requests* are processed. Indications and responses are
  dropped (a lite agent sends no requests, so no response can be ours), and
  so are requests of another method (mediasoup answers 400; we don't, so a
  shared port never reflects TURN/other traffic).
* A Binding request without USERNAME or MESSAGE-INTEGRITY gets 400 Bad
  Request; one whose USERNAME is not ``"<our ufrag>:<anything>"``, or whose
  MESSAGE-INTEGRITY does not verify with our password, gets 401
  Unauthorized (RFC 5389 section 10.1.2, RFC 8445 section 7.3). Those error
  responses carry FINGERPRINT but no MESSAGE-INTEGRITY, since the request
  could not be authenticated. A demultiplexer in front of several agents
  (see :func:`username_ufrag`) should instead drop a request whose ufrag
  matches no agent: there is no password to sign anything with, and
  answering unknown ufrags only helps port scanners.
* A missing PRIORITY (required by RFC 8445 section 7.1.1) gets 400, as in
  mediasoup; that request was authenticated, so this 400 is signed.
* ICE-CONTROLLED in an authenticated request gets 487 Role Conflict, signed
  with our password: a lite agent is always controlled and cannot switch
  role (RFC 8445 section 6.1.1 and 7.3.1.1).
* Unknown comprehension-required attributes are ignored rather than answered
  with 420 (aioice drops them while parsing; mediasoup ignores them too).
* Like mediasoup, the first valid check moves 'new' to 'connected' and
  selects its tuple, so that DTLS can start before nomination; USE-CANDIDATE
  moves to 'completed' and the newest nominated tuple becomes the selected
  one.
* Consent is per tuple: each authenticated check refreshes the tuple it came
  from. :meth:`IceLiteAgent.poll` removes tuples unchecked for
  ``consent_timeout`` seconds; if the selected one goes, the most recently
  nominated (else most recently checked) live tuple replaces it; with none
  left the state becomes 'disconnected' and the selected tuple ``None``
  (mediasoup also clears its tuples then). A valid check afterwards brings
  the state back to 'connected' (or 'completed' with USE-CANDIDATE).
* At most :data:`MAX_TUPLES` tuples are kept (as mediasoup); a new one evicts
  the least recently checked non-selected tuple.
* :meth:`IceLiteAgent.restart` rejects the old credentials at once (mediasoup
  keeps accepting them until the first check with the new ones): a browser
  treats the resulting 401s as lost consent checks and has 30 s of consent
  left, far longer than the signalling round trip.
"""

from __future__ import annotations

import binascii
import secrets
import string
import struct
from dataclasses import dataclass, field
from typing import Any, Optional

from aioice import stun

from .errors import InvalidParametersError, InvalidStateError

__all__ = [
    "IceLiteAgent",
    "IceOutput",
    "IceStateChange",
    "IceSelectedTupleChange",
    "IceTupleAdded",
    "IceTupleRemoved",
    "MAX_TUPLES",
    "is_stun",
    "username_ufrag",
]

Address = Any  # (host, port) or the 4-tuple asyncio gives for IPv6

MAX_TUPLES = 8
ICE_CHARS = string.ascii_letters + string.digits + "+/"
_ICE_CHAR_SET = frozenset(ICE_CHARS)

_COOKIE = struct.pack("!I", stun.COOKIE)
_ATTR_USERNAME = 0x0006
_ATTR_FINGERPRINT = 0x8028


# --------------------------------------------------------------------------
# Output and events


@dataclass(frozen=True)
class IceStateChange:
    """The agent's state changed: 'new', 'connected', 'completed',
    'disconnected' or 'closed'."""

    state: str


@dataclass(frozen=True)
class IceSelectedTupleChange:
    """The tuple media must be sent to changed (``None`` when none is left)."""

    tuple: Optional[Address]


@dataclass(frozen=True)
class IceTupleAdded:
    """An authenticated check came from a new remote address."""

    tuple: Address


@dataclass(frozen=True)
class IceTupleRemoved:
    """A tuple lost consent (or was evicted, or the agent closed)."""

    tuple: Address


@dataclass
class IceOutput:
    """What one call produced: datagrams to send and events, in order."""

    responses: list[tuple[bytes, Address]] = field(default_factory=list)
    events: list[object] = field(default_factory=list)

    def extend(self, other: "IceOutput") -> None:
        self.responses.extend(other.responses)
        self.events.extend(other.events)


# --------------------------------------------------------------------------
# Cheap helpers for a shared port


def is_stun(data: bytes) -> bool:
    """Whether a datagram is STUN by its first byte (RFC 7983: 0..3) and the
    magic cookie."""
    return len(data) >= 20 and data[0] < 4 and data[4:8] == _COOKIE


def username_ufrag(data: bytes) -> Optional[str]:
    """The local ufrag (the part of USERNAME before ':') of a STUN Binding
    request, or ``None`` if ``data`` is not one or carries no such USERNAME.

    Walks the attribute headers only: no parsing of other attributes, no
    FINGERPRINT or integrity check (the agent that owns the ufrag does those).
    """
    n = len(data)
    if n < 20 or data[0] != 0x00 or data[1] != 0x01 or data[4:8] != _COOKIE:
        return None
    if 20 + ((data[2] << 8) | data[3]) != n:
        return None
    pos = 20
    while pos + 4 <= n:
        attr_type = (data[pos] << 8) | data[pos + 1]
        attr_len = (data[pos + 2] << 8) | data[pos + 3]
        if attr_type == _ATTR_USERNAME:
            end = pos + 4 + attr_len
            if end > n:
                return None
            colon = data.find(b":", pos + 4, end)
            if colon <= pos + 4:
                return None
            try:
                return data[pos + 4 : colon].decode("ascii")
            except UnicodeDecodeError:
                return None
        pos += 4 + attr_len + (-attr_len % 4)
    return None


def _fingerprint_ok(data: bytes) -> bool:
    """FINGERPRINT is present, last, and matches (RFC 5389 section 15.5)."""
    n = len(data)
    if n < 28:
        return False
    if struct.unpack_from("!HH", data, n - 8) != (_ATTR_FINGERPRINT, 4):
        return False
    (value,) = struct.unpack_from("!I", data, n - 4)
    check = data[:2] + struct.pack("!H", n - 20) + data[4 : n - 8]
    return (binascii.crc32(check) ^ stun.FINGERPRINT_XOR) == value


def _random_ice_string(length: int) -> str:
    return "".join(secrets.choice(ICE_CHARS) for _ in range(length))


def _validate_credential(value: object, field_name: str, minimum: int) -> str:
    if not isinstance(value, str):
        raise InvalidParametersError(f"{field_name}: must be a string")
    if not minimum <= len(value) <= 256:
        raise InvalidParametersError(
            f"{field_name}: must be {minimum} to 256 ice-chars, got {len(value)}"
        )
    if not set(value) <= _ICE_CHAR_SET:
        raise InvalidParametersError(f"{field_name}: only ALPHA / DIGIT / '+' / '/' are allowed")
    return value


# --------------------------------------------------------------------------
# The agent


@dataclass
class _Tuple:
    addr: Address
    last_check: float
    nominated_seq: int = 0  # order of the latest USE-CANDIDATE (0: never)
    check_seq: int = 0  # order of the latest valid check


STATS_KEYS = (
    "checks",  # authenticated checks answered with success
    "nominations",  # of which carried USE-CANDIDATE
    "malformed",  # not parseable as STUN
    "bad_fingerprint",  # FINGERPRINT missing, misplaced or wrong: dropped
    "not_request",  # indications and responses: dropped
    "bad_method",  # requests other than Binding: dropped
    "bad_request",  # USERNAME, MESSAGE-INTEGRITY or PRIORITY missing: 400
    "bad_username",  # USERNAME is not "<our ufrag>:...": 401
    "bad_integrity",  # MESSAGE-INTEGRITY does not verify: 401
    "role_conflict",  # ICE-CONTROLLED: 487
    "after_close",  # anything received once closed: dropped
)


class IceLiteAgent:
    """A sans-IO ICE-lite agent (always controlled, answers checks only)."""

    def __init__(
        self,
        ufrag: Optional[str] = None,
        password: Optional[str] = None,
        consent_timeout: Optional[float] = 30.0,
    ) -> None:
        self._ufrag = (
            _random_ice_string(16) if ufrag is None else _validate_credential(ufrag, "usernameFragment", 4)
        )
        self._password = (
            _random_ice_string(32) if password is None else _validate_credential(password, "password", 22)
        )
        self._key = self._password.encode("ascii")
        if consent_timeout is not None and not consent_timeout >= 0:
            raise InvalidParametersError("consent_timeout: must be >= 0 (0 or None disables it)")
        self.consent_timeout: Optional[float] = consent_timeout or None
        self._state = "new"
        self._tuples: dict[Address, _Tuple] = {}
        self._selected: Optional[_Tuple] = None
        self._seq = 0
        self.stats: dict[str, int] = dict.fromkeys(STATS_KEYS, 0)

    # -- parameters and state ------------------------------------------------

    @property
    def local_parameters(self) -> dict:
        """mediasoup's ``iceParameters``."""
        return {"usernameFragment": self._ufrag, "password": self._password, "iceLite": True}

    @property
    def ufrag(self) -> str:
        return self._ufrag

    @property
    def state(self) -> str:
        return self._state

    @property
    def selected_tuple(self) -> Optional[Address]:
        return self._selected.addr if self._selected is not None else None

    @property
    def tuples(self) -> list[Address]:
        """Remote addresses with consent, most recently checked first."""
        return [t.addr for t in sorted(self._tuples.values(), key=lambda t: -t.check_seq)]

    def is_valid_tuple(self, addr: Address) -> bool:
        """Whether ``addr`` has consent (DTLS/RTP from elsewhere is to be
        ignored)."""
        return addr in self._tuples

    # -- inputs ----------------------------------------------------------------

    def handle_stun(self, data: bytes, addr: Address, now: float) -> IceOutput:
        """Processes one STUN datagram received from ``addr``."""
        out = IceOutput()
        if self._state == "closed":
            self.stats["after_close"] += 1
            return out
        if not is_stun(data):
            self.stats["malformed"] += 1
            return out
        if not _fingerprint_ok(data):
            self.stats["bad_fingerprint"] += 1
            return out
        try:
            request = stun.parse_message(data)
        except (ValueError, struct.error):  # aioice lets struct.error out of short attributes
            self.stats["malformed"] += 1
            return out
        if request.message_class != stun.Class.REQUEST:
            self.stats["not_request"] += 1
            return out
        if request.message_method != stun.Method.BINDING:
            self.stats["bad_method"] += 1
            return out

        attrs = request.attributes
        username = attrs.get("USERNAME")
        if username is None or "MESSAGE-INTEGRITY" not in attrs:
            self.stats["bad_request"] += 1
            out.responses.append((self._error(request, 400, "Bad Request", signed=False), addr))
            return out
        local, colon, _remote = username.partition(":")
        if not colon or local != self._ufrag:
            self.stats["bad_username"] += 1
            out.responses.append((self._error(request, 401, "Unauthorized", signed=False), addr))
            return out
        if not request.check_message_integrity(self._key):
            self.stats["bad_integrity"] += 1
            out.responses.append((self._error(request, 401, "Unauthorized", signed=False), addr))
            return out
        if "PRIORITY" not in attrs:
            # Authenticated, so the error is signed (RFC 5389 section 10.1.2).
            self.stats["bad_request"] += 1
            out.responses.append((self._error(request, 400, "Bad Request", signed=True), addr))
            return out
        if "ICE-CONTROLLED" in attrs:
            self.stats["role_conflict"] += 1
            out.responses.append((self._error(request, 487, "Role Conflict", signed=True), addr))
            return out

        response = stun.Message(
            message_method=stun.Method.BINDING,
            message_class=stun.Class.RESPONSE,
            transaction_id=request.transaction_id,
        )
        response.attributes["XOR-MAPPED-ADDRESS"] = (addr[0], addr[1])
        response.add_message_integrity(self._key)
        out.responses.append((bytes(response), addr))

        nominated = "USE-CANDIDATE" in attrs
        self.stats["checks"] += 1
        if nominated:
            self.stats["nominations"] += 1
        self._on_valid_check(addr, nominated, now, out)
        return out

    def poll(self, now: float) -> IceOutput:
        """Expires the tuples whose consent ran out."""
        out = IceOutput()
        if self.consent_timeout is None or self._state == "closed":
            return out
        expired = [t for t in self._tuples.values() if now - t.last_check >= self.consent_timeout]
        if not expired:
            return out
        for t in expired:
            del self._tuples[t.addr]
            out.events.append(IceTupleRemoved(t.addr))
        if self._selected is not None and self._selected.addr not in self._tuples:
            if self._tuples:
                self._select(self._best_remaining(), out)
            else:
                self._select(None, out)
                self._set_state("disconnected", out)
        return out

    def next_timeout(self) -> Optional[float]:
        """When :meth:`poll` must next be called (``None``: no deadline)."""
        if self.consent_timeout is None or not self._tuples or self._state == "closed":
            return None
        return min(t.last_check for t in self._tuples.values()) + self.consent_timeout

    def maybe_force_selected_tuple(self, addr: Address) -> IceOutput:
        """Selects ``addr`` if it is a valid tuple and the agent is connected.

        mediasoup does this when DTLS or RTP arrives on a valid tuple other
        than the selected one, for clients that switch paths without a new
        USE-CANDIDATE.
        """
        out = IceOutput()
        if self._state in ("connected", "completed"):
            t = self._tuples.get(addr)
            if t is not None:
                self._select(t, out)
        return out

    def restart(
        self, ufrag: Optional[str] = None, password: Optional[str] = None, now: Optional[float] = None
    ) -> dict:
        """New local credentials (ICE restart); returns the new parameters.

        Checks with the old credentials are rejected from now on. The state,
        tuples and selected tuple stay as they are until checks with the new
        ones arrive (or consent expires). With ``now``, consent of the
        current tuples restarts from ``now`` to give the peer time to restart.
        """
        if self._state == "closed":
            raise InvalidStateError("ICE agent is closed")
        new_ufrag = _random_ice_string(16) if ufrag is None else _validate_credential(ufrag, "usernameFragment", 4)
        new_password = (
            _random_ice_string(32) if password is None else _validate_credential(password, "password", 22)
        )
        self._ufrag, self._password = new_ufrag, new_password
        self._key = new_password.encode("ascii")
        if now is not None:
            for t in self._tuples.values():
                t.last_check = max(t.last_check, now)
        return self.local_parameters

    def close(self) -> IceOutput:
        out = IceOutput()
        if self._state == "closed":
            return out
        for addr in list(self._tuples):
            out.events.append(IceTupleRemoved(addr))
        self._tuples.clear()
        if self._selected is not None:
            self._select(None, out)
        self._set_state("closed", out)
        return out

    # -- internals -------------------------------------------------------------

    def _error(self, request: stun.Message, code: int, reason: str, signed: bool) -> bytes:
        response = stun.Message(
            message_method=request.message_method,
            message_class=stun.Class.ERROR,
            transaction_id=request.transaction_id,
        )
        response.attributes["ERROR-CODE"] = (code, reason)
        if signed:
            response.add_message_integrity(self._key)
        else:
            response.add_fingerprint()
        return bytes(response)

    def _next_seq(self) -> int:
        self._seq += 1
        return self._seq

    def _on_valid_check(self, addr: Address, nominated: bool, now: float, out: IceOutput) -> None:
        t = self._tuples.get(addr)
        if t is None:
            t = _Tuple(addr, now)
            self._tuples[addr] = t
            out.events.append(IceTupleAdded(addr))
            if len(self._tuples) > MAX_TUPLES:
                victims = [v for v in self._tuples.values() if v is not t and v is not self._selected]
                victim = min(victims, key=lambda v: v.check_seq)
                del self._tuples[victim.addr]
                out.events.append(IceTupleRemoved(victim.addr))
        t.last_check = max(t.last_check, now)
        t.check_seq = self._next_seq()
        if nominated:
            t.nominated_seq = t.check_seq

        if self._state in ("new", "disconnected"):
            self._select(t, out)
            self._set_state("completed" if nominated else "connected", out)
        elif self._state == "connected":
            if nominated:
                self._select(t, out)
                self._set_state("completed", out)
        elif self._state == "completed":
            if nominated:
                self._select(t, out)

    def _best_remaining(self) -> _Tuple:
        return max(self._tuples.values(), key=lambda t: (t.nominated_seq, t.check_seq))

    def _select(self, t: Optional[_Tuple], out: IceOutput) -> None:
        if t is self._selected:
            return
        self._selected = t
        out.events.append(IceSelectedTupleChange(t.addr if t is not None else None))

    def _set_state(self, state: str, out: IceOutput) -> None:
        if state != self._state:
            self._state = state
            out.events.append(IceStateChange(state))

    def __repr__(self) -> str:
        return f"IceLiteAgent(ufrag={self._ufrag!r}, state={self._state!r}, selected={self.selected_tuple!r})"
