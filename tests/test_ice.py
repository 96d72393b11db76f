"""ICE-lite agent: checks built and read with aioice.stun, as a full
controlling agent would send them, plus a real aioice Connection over UDP."""

from __future__ import annotations

import asyncio
import struct

import pytest
from aioice import Candidate, Connection, stun
from aioice import ice as aioice_ice
from hypothesis import given, settings
from hypothesis import strategies as st

from sfu.errors import InvalidParametersError, InvalidStateError
from sfu.ice import (
    MAX_TUPLES,
    IceLiteAgent,
    IceSelectedTupleChange,
    IceStateChange,
    IceTupleAdded,
    IceTupleRemoved,
    is_stun,
    username_ufrag,
)

PEER = ("192.0.2.10", 50000)
PEER2 = ("192.0.2.11", 50001)
UFRAG = "srvU"
PWD = "serverpassword1234567890"


def make_agent(**kw) -> IceLiteAgent:
    return IceLiteAgent(ufrag=UFRAG, password=PWD, **kw)


def request(
    *,
    username: str | None = f"{UFRAG}:peer",
    password: str | None = PWD,
    use_candidate: bool = False,
    controlling: bool = True,
    priority: int | None = 1853824767,
    fingerprint: bool = True,
    method: stun.Method = stun.Method.BINDING,
    klass: stun.Class = stun.Class.REQUEST,
) -> tuple[bytes, stun.Message]:
    """A check as aioice's Connection.build_request would make it."""
    msg = stun.Message(message_method=method, message_class=klass)
    if username is not None:
        msg.attributes["USERNAME"] = username
    if priority is not None:
        msg.attributes["PRIORITY"] = priority
    if controlling:
        msg.attributes["ICE-CONTROLLING"] = 0x1122334455667788
    else:
        msg.attributes["ICE-CONTROLLED"] = 0x1122334455667788
    if use_candidate:
        msg.attributes["USE-CANDIDATE"] = None
    if password is not None:
        msg.add_message_integrity(password.encode())  # also adds FINGERPRINT
        if not fingerprint:
            msg.attributes.pop("FINGERPRINT")
    elif fingerprint:
        msg.add_fingerprint()
    return bytes(msg), msg


def states(out) -> list[str]:
    return [e.state for e in out.events if isinstance(e, IceStateChange)]


def selections(out) -> list:
    return [e.tuple for e in out.events if isinstance(e, IceSelectedTupleChange)]


def only_response(out, addr=PEER) -> stun.Message:
    assert len(out.responses) == 1
    data, to = out.responses[0]
    assert to == addr
    return stun.parse_message(data)  # also verifies FINGERPRINT if present


# -- parameters --------------------------------------------------------------


def test_local_parameters_random_and_well_formed():
    a, b = IceLiteAgent(), IceLiteAgent()
    pa = a.local_parameters
    assert set(pa) == {"usernameFragment", "password", "iceLite"}
    assert pa["iceLite"] is True
    assert len(pa["usernameFragment"]) >= 4 and len(pa["password"]) >= 22
    # aioice's own validators implement RFC 5245 section 15.4's ice-char grammar.
    aioice_ice.validate_username(pa["usernameFragment"])
    aioice_ice.validate_password(pa["password"])
    assert pa["usernameFragment"] != b.local_parameters["usernameFragment"]
    assert pa["password"] != b.local_parameters["password"]


@pytest.mark.parametrize(
    "kw",
    [{"ufrag": "abc"}, {"password": "short"}, {"ufrag": "ab:cd"}, {"password": "x" * 21 + "!"}, {"ufrag": 1234}],
)
def test_bad_credentials_rejected(kw):
    with pytest.raises(InvalidParametersError):
        IceLiteAgent(**kw)


# -- successful checks ----------------------------------------------------------


def test_valid_check_answered_and_connects():
    agent = make_agent()
    data, req = request()
    out = agent.handle_stun(data, PEER, now=0.0)
    resp = only_response(out)
    assert resp.message_class == stun.Class.RESPONSE
    assert resp.message_method == stun.Method.BINDING
    assert resp.transaction_id == req.transaction_id
    assert resp.attributes["XOR-MAPPED-ADDRESS"] == PEER
    assert "FINGERPRINT" in resp.attributes
    assert resp.check_message_integrity(PWD.encode())
    assert not resp.check_message_integrity(b"some other password 123")
    assert states(out) == ["connected"]
    assert selections(out) == [PEER]
    assert IceTupleAdded(PEER) in out.events
    assert agent.state == "connected" and agent.selected_tuple == PEER
    assert agent.stats["checks"] == 1


def test_ipv6_source_address():
    agent = make_agent()
    addr = ("2001:db8::1", 40000, 0, 0)  # asyncio's IPv6 4-tuple
    out = agent.handle_stun(request(use_candidate=True)[0], addr, now=0.0)
    resp = only_response(out, addr)
    assert resp.attributes["XOR-MAPPED-ADDRESS"] == ("2001:db8::1", 40000)
    assert agent.selected_tuple == addr


def test_use_candidate_completes_and_newest_nomination_wins():
    agent = make_agent()
    out = agent.handle_stun(request()[0], PEER, 0.0)
    assert states(out) == ["connected"]
    # A non-nominating check from another tuple does not move the selection.
    out = agent.handle_stun(request()[0], PEER2, 0.1)
    assert states(out) == [] and selections(out) == []
    assert agent.selected_tuple == PEER
    # Nominating PEER2 completes and selects it.
    out = agent.handle_stun(request(use_candidate=True)[0], PEER2, 0.2)
    assert states(out) == ["completed"] and selections(out) == [PEER2]
    # Re-nominating the selected tuple changes nothing.
    out = agent.handle_stun(request(use_candidate=True)[0], PEER2, 0.3)
    assert out.events == []
    # A later nomination of PEER moves the selection back.
    out = agent.handle_stun(request(use_candidate=True)[0], PEER, 0.4)
    assert states(out) == [] and selections(out) == [PEER]
    assert agent.state == "completed" and agent.selected_tuple == PEER
    assert agent.stats["nominations"] == 3


def test_nomination_from_new_goes_straight_to_completed():
    agent = make_agent()
    out = agent.handle_stun(request(use_candidate=True)[0], PEER, 0.0)
    assert states(out) == ["completed"]
    assert agent.selected_tuple == PEER


# -- rejected checks ---------------------------------------------------------------


def test_wrong_password_gets_401_unsigned():
    agent = make_agent()
    data, req = request(password="wrongpassword1234567890")
    resp = only_response(agent.handle_stun(data, PEER, 0.0))
    assert resp.message_class == stun.Class.ERROR
    assert resp.error_code == 401
    assert resp.transaction_id == req.transaction_id
    assert "MESSAGE-INTEGRITY" not in resp.attributes and "FINGERPRINT" in resp.attributes
    assert agent.stats["bad_integrity"] == 1
    assert agent.state == "new" and agent.selected_tuple is None


@pytest.mark.parametrize("username", ["otherufrag:peer", "srvUX:peer", "srvU", "peer:srvU"])
def test_unknown_ufrag_rejected(username):
    agent = make_agent()
    resp = only_response(agent.handle_stun(request(username=username)[0], PEER, 0.0))
    assert resp.error_code == 401
    assert agent.stats["bad_username"] == 1
    assert agent.state == "new"


def test_missing_credentials_get_400():
    agent = make_agent()
    resp = only_response(agent.handle_stun(request(username=None)[0], PEER, 0.0))
    assert resp.error_code == 400
    resp = only_response(agent.handle_stun(request(password=None)[0], PEER, 0.0))
    assert resp.error_code == 400
    assert agent.stats["bad_request"] == 2
    assert agent.state == "new"


def test_missing_priority_gets_signed_400():
    agent = make_agent()
    resp = only_response(agent.handle_stun(request(priority=None)[0], PEER, 0.0))
    assert resp.error_code == 400
    assert resp.check_message_integrity(PWD.encode())
    assert agent.state == "new"


def test_missing_fingerprint_dropped():
    agent = make_agent()
    out = agent.handle_stun(request(fingerprint=False)[0], PEER, 0.0)
    assert out.responses == [] and out.events == []
    assert agent.stats["bad_fingerprint"] == 1


def test_bad_fingerprint_dropped():
    agent = make_agent()
    data = bytearray(request()[0])
    data[-1] ^= 0xFF
    out = agent.handle_stun(bytes(data), PEER, 0.0)
    assert out.responses == [] and out.events == []
    assert agent.stats["bad_fingerprint"] == 1


def test_fingerprint_not_last_dropped():
    agent = make_agent()
    _, msg = request()
    data = bytes(msg)
    # Append a SOFTWARE attribute after FINGERPRINT (and fix the length).
    extra = struct.pack("!HH", 0x8022, 4) + b"test"
    data = data[:2] + struct.pack("!H", len(data) - 20 + len(extra)) + data[4:] + extra
    out = agent.handle_stun(data, PEER, 0.0)
    assert out.responses == []
    assert agent.stats["bad_fingerprint"] == 1


def test_ice_controlled_gets_487_signed():
    agent = make_agent()
    data, req = request(controlling=False)
    resp = only_response(agent.handle_stun(data, PEER, 0.0))
    assert resp.error_code == 487
    assert resp.transaction_id == req.transaction_id
    assert resp.check_message_integrity(PWD.encode())
    assert agent.stats["role_conflict"] == 1
    assert agent.state == "new"


def test_indications_responses_and_other_methods_dropped():
    agent = make_agent()
    for klass in (stun.Class.INDICATION, stun.Class.RESPONSE, stun.Class.ERROR):
        out = agent.handle_stun(request(klass=klass)[0], PEER, 0.0)
        assert out.responses == [] and out.events == []
    assert agent.stats["not_request"] == 3
    out = agent.handle_stun(request(method=stun.Method.ALLOCATE)[0], PEER, 0.0)
    assert out.responses == []
    assert agent.stats["bad_method"] == 1


@pytest.mark.parametrize("data", [b"", b"\x00" * 19, b"\x16\xfe\xfd" + b"\x00" * 40, b"\x80" * 30])
def test_garbage_dropped(data):
    agent = make_agent()
    out = agent.handle_stun(data, PEER, 0.0)
    assert out.responses == [] and out.events == []
    assert agent.stats["malformed"] == 1


def test_truncated_with_valid_looking_fingerprint_does_not_raise():
    agent = make_agent()
    data = request()[0]
    for cut in range(20, len(data), 3):
        agent.handle_stun(data[:cut], PEER, 0.0)
    assert agent.state == "new"


def with_fingerprint(attributes: bytes, message_type: int = 0x0001) -> bytes:
    """A STUN message with arbitrary raw attributes and a valid FINGERPRINT."""
    data = struct.pack("!HHI12s", message_type, len(attributes) + 8, stun.COOKIE, b"t" * 12) + attributes
    return data + struct.pack("!HHI", 0x8028, 4, stun.message_fingerprint(data))


@pytest.mark.parametrize(
    "attributes",
    [
        struct.pack("!HH", 0x0024, 2) + b"ab\x00\x00",  # short PRIORITY: struct.error in aioice
        struct.pack("!HH", 0x0020, 2) + b"ab\x00\x00",  # short XOR-MAPPED-ADDRESS
        struct.pack("!HH", 0x0006, 2) + b"\xff\xfe\x00\x00",  # USERNAME not UTF-8
        struct.pack("!HH", 0x0024, 40),  # length past the end
    ],
)
def test_malformed_attributes_dropped(attributes):
    agent = make_agent()
    out = agent.handle_stun(with_fingerprint(attributes), PEER, 0.0)
    assert out.responses == [] and out.events == []
    assert agent.stats["malformed"] == 1


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from([0x0006, 0x0008, 0x0009, 0x0020, 0x0024, 0x0025, 0x8029, 0x802A, 0xC001, 0x1234]),
            st.binary(max_size=40),
        ),
        max_size=6,
    ),
    st.sampled_from([0x0001, 0x0011, 0x0101, 0x0111, 0x0003]),
)
def test_fuzzed_messages_never_raise(attrs, message_type):
    body = b"".join(struct.pack("!HH", t, len(v)) + v + b"\x00" * (-len(v) % 4) for t, v in attrs)
    agent = make_agent()
    out = agent.handle_stun(with_fingerprint(body, message_type), PEER, 0.0)
    for data, _ in out.responses:
        stun.parse_message(data)  # whatever we answer is well-formed
    assert agent.state == "new"  # nothing random can authenticate
    username_ufrag(with_fingerprint(body, message_type))


# -- consent --------------------------------------------------------------------------


def test_consent_expiry_and_recovery():
    agent = make_agent()
    agent.handle_stun(request(use_candidate=True)[0], PEER, 0.0)
    assert agent.next_timeout() == pytest.approx(30.0)
    # Consent checks every 5 s keep it alive well past 30 s.
    for t in range(5, 61, 5):
        assert agent.poll(float(t)).events == []
        agent.handle_stun(request()[0], PEER, float(t))
    assert agent.state == "completed"
    assert agent.next_timeout() == pytest.approx(90.0)
    assert agent.poll(89.9).events == []
    out = agent.poll(90.0)
    assert states(out) == ["disconnected"]
    assert selections(out) == [None]
    assert IceTupleRemoved(PEER) in out.events
    assert agent.selected_tuple is None and agent.next_timeout() is None
    # Checks resume: connected again, completed once nominated.
    out = agent.handle_stun(request()[0], PEER, 100.0)
    assert states(out) == ["connected"] and agent.selected_tuple == PEER
    out = agent.handle_stun(request(use_candidate=True)[0], PEER, 101.0)
    assert states(out) == ["completed"]


def test_consent_is_per_tuple_and_selection_falls_back():
    agent = make_agent()
    agent.handle_stun(request(use_candidate=True)[0], PEER, 0.0)
    agent.handle_stun(request()[0], PEER2, 20.0)
    assert agent.tuples == [PEER2, PEER]
    out = agent.poll(30.0)  # PEER's consent ran out, PEER2's did not
    assert IceTupleRemoved(PEER) in out.events
    assert selections(out) == [PEER2]
    assert states(out) == []
    assert agent.state == "completed" and agent.selected_tuple == PEER2
    assert not agent.is_valid_tuple(PEER) and agent.is_valid_tuple(PEER2)
    assert states(agent.poll(50.0)) == ["disconnected"]


def test_rejected_checks_do_not_refresh_consent():
    agent = make_agent()
    agent.handle_stun(request(use_candidate=True)[0], PEER, 0.0)
    agent.handle_stun(request(password="wrongpassword1234567890")[0], PEER, 20.0)
    agent.handle_stun(request(controlling=False)[0], PEER, 25.0)
    assert states(agent.poll(30.0)) == ["disconnected"]


def test_consent_disabled():
    agent = make_agent(consent_timeout=None)
    agent.handle_stun(request(use_candidate=True)[0], PEER, 0.0)
    assert agent.next_timeout() is None
    assert agent.poll(1e6).events == []
    assert agent.state == "completed"


def test_tuple_limit_evicts_oldest_non_selected():
    agent = make_agent()
    agent.handle_stun(request(use_candidate=True)[0], PEER, 0.0)
    addrs = [("192.0.2.50", 1000 + i) for i in range(MAX_TUPLES)]
    removed = []
    for i, a in enumerate(addrs):
        out = agent.handle_stun(request()[0], a, 1.0 + i)
        removed += [e.tuple for e in out.events if isinstance(e, IceTupleRemoved)]
    assert removed == [addrs[0]]  # the selected PEER is never evicted
    assert len(agent.tuples) == MAX_TUPLES
    assert agent.selected_tuple == PEER


def test_force_selected_tuple():
    agent = make_agent()
    agent.handle_stun(request(use_candidate=True)[0], PEER, 0.0)
    agent.handle_stun(request()[0], PEER2, 1.0)
    assert agent.maybe_force_selected_tuple(("203.0.113.1", 1)).events == []
    assert selections(agent.maybe_force_selected_tuple(PEER2)) == [PEER2]


# -- restart and close ------------------------------------------------------------------


def test_restart_rejects_old_credentials_and_accepts_new():
    agent = make_agent()
    agent.handle_stun(request(use_candidate=True)[0], PEER, 0.0)
    params = agent.restart(ufrag="newU", password="newpassword12345678901234", now=10.0)
    assert params == {"usernameFragment": "newU", "password": "newpassword12345678901234", "iceLite": True}
    # State and selection survive the restart itself.
    assert agent.state == "completed" and agent.selected_tuple == PEER
    assert agent.next_timeout() == pytest.approx(40.0)
    # Old credentials: 401.
    resp = only_response(agent.handle_stun(request()[0], PEER, 11.0))
    assert resp.error_code == 401
    # New ones: accepted; nominating a new tuple moves the selection.
    data, _ = request(username="newU:peer2", password="newpassword12345678901234", use_candidate=True)
    out = agent.handle_stun(data, PEER2, 12.0)
    resp = only_response(out, PEER2)
    assert resp.message_class == stun.Class.RESPONSE
    assert resp.check_message_integrity(b"newpassword12345678901234")
    assert selections(out) == [PEER2]


def test_restart_random_credentials():
    agent = make_agent()
    params = agent.restart()
    assert params["usernameFragment"] != UFRAG and params["password"] != PWD
    assert agent.ufrag == params["usernameFragment"]


def test_close():
    agent = make_agent()
    agent.handle_stun(request(use_candidate=True)[0], PEER, 0.0)
    out = agent.close()
    assert states(out) == ["closed"] and selections(out) == [None]
    assert agent.handle_stun(request()[0], PEER, 1.0).responses == []
    assert agent.stats["after_close"] == 1
    assert agent.next_timeout() is None
    assert agent.close().events == []
    with pytest.raises(InvalidStateError):
        agent.restart()


# -- demultiplexing helpers -------------------------------------------------------------


def test_username_ufrag():
    assert username_ufrag(request()[0]) == UFRAG
    assert username_ufrag(request(username="abcd:efgh:ij")[0]) == "abcd"
    assert username_ufrag(request(username=None)[0]) is None
    assert username_ufrag(request(username="nocolon")[0]) is None
    assert username_ufrag(request(username=":x")[0]) is None
    assert username_ufrag(request(klass=stun.Class.INDICATION)[0]) is None
    assert username_ufrag(b"\x16\xfe\xfd" + b"\x00" * 30) is None
    data = request()[0]
    for cut in range(0, len(data)):
        username_ufrag(data[:cut])  # never raises
    assert is_stun(data) and not is_stun(b"\x80" * 40)


# -- a real full agent over UDP ------------------------------------------------------------


class LiteShell(asyncio.DatagramProtocol):
    """A minimal asyncio shell around IceLiteAgent: one UDP socket, consent
    polling driven by loop.time()."""

    def __init__(self, agent: IceLiteAgent) -> None:
        self.agent = agent
        self.events: list = []
        self.completed = asyncio.Event()
        self.transport: asyncio.DatagramTransport | None = None
        self.received_data: list[bytes] = []
        self._timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport) -> None:
        self.transport = transport

    def datagram_received(self, data: bytes, addr) -> None:
        loop = asyncio.get_running_loop()
        if is_stun(data):
            self._apply(self.agent.handle_stun(data, addr, loop.time()))
        elif self.agent.is_valid_tuple(addr):
            self.received_data.append(data)

    def _apply(self, out) -> None:
        for data, addr in out.responses:
            self.transport.sendto(data, addr)
        self.events.extend(out.events)
        if self.agent.state == "completed":
            self.completed.set()
        self._arm()

    def _arm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        deadline = self.agent.next_timeout()
        if deadline is not None:
            loop = asyncio.get_running_loop()
            self._timer = loop.call_at(deadline, lambda: self._apply(self.agent.poll(loop.time())))

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self.transport.close()


@pytest.mark.timeout(15)
async def test_real_aioice_full_agent_connects(monkeypatch):
    # aioice never gathers 127.0.0.1; make it gather only loopback.
    monkeypatch.setattr(aioice_ice, "get_host_addresses", lambda use_ipv4, use_ipv6: ["127.0.0.1"])
    loop = asyncio.get_running_loop()
    agent = IceLiteAgent()
    transport, shell = await loop.create_datagram_endpoint(lambda: LiteShell(agent), local_addr=("127.0.0.1", 0))
    lite_port = transport.get_extra_info("sockname")[1]

    conn = Connection(ice_controlling=True, components=1, use_ipv6=False)
    try:
        await conn.gather_candidates()
        [local] = conn.local_candidates
        assert local.host == "127.0.0.1"
        params = agent.local_parameters
        conn.remote_username = params["usernameFragment"]
        conn.remote_password = params["password"]
        conn.remote_is_lite = params["iceLite"]  # regular nomination, as browsers do
        await conn.add_remote_candidate(
            Candidate(
                foundation="lite",
                component=1,
                transport="udp",
                priority=2130706431,
                host="127.0.0.1",
                port=lite_port,
                type="host",
            )
        )
        await conn.add_remote_candidate(None)
        await asyncio.wait_for(conn.connect(), 10)
        await asyncio.wait_for(shell.completed.wait(), 5)

        assert agent.state == "completed"
        assert agent.selected_tuple == ("127.0.0.1", local.port)
        assert [e.state for e in shell.events if isinstance(e, IceStateChange)] == ["connected", "completed"]
        assert agent.stats["nominations"] >= 1
        assert agent.stats["bad_integrity"] == agent.stats["bad_username"] == 0

        # Media then flows on the selected tuple.
        await conn.send(b"\x80hello")
        for _ in range(50):
            if shell.received_data:
                break
            await asyncio.sleep(0.02)
        assert shell.received_data == [b"\x80hello"]
    finally:
        await conn.close()
        shell.close()


@pytest.mark.timeout(15)
async def test_real_aioice_with_wrong_password_fails(monkeypatch):
    monkeypatch.setattr(aioice_ice, "get_host_addresses", lambda use_ipv4, use_ipv6: ["127.0.0.1"])
    monkeypatch.setattr(stun, "RETRY_MAX", 1)  # fail fast
    loop = asyncio.get_running_loop()
    agent = IceLiteAgent()
    transport, shell = await loop.create_datagram_endpoint(lambda: LiteShell(agent), local_addr=("127.0.0.1", 0))
    lite_port = transport.get_extra_info("sockname")[1]
    conn = Connection(ice_controlling=True, components=1, use_ipv6=False)
    try:
        await conn.gather_candidates()
        conn.remote_username = agent.local_parameters["usernameFragment"]
        conn.remote_password = "x" * 22
        conn.remote_is_lite = True
        await conn.add_remote_candidate(
            Candidate(foundation="lite", component=1, transport="udp", priority=1,
                      host="127.0.0.1", port=lite_port, type="host")
        )
        await conn.add_remote_candidate(None)
        with pytest.raises(ConnectionError):
            await asyncio.wait_for(conn.connect(), 10)
        assert agent.state == "new"
        assert agent.stats["bad_integrity"] >= 1
    finally:
        await conn.close()
        shell.close()
