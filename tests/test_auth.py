"""JWT authentication: configuration checks, verification failures named by
cause, and the aiohttp middleware over a real HTTP server."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time

import jwt
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from signaling.auth import (
    AuthConfig,
    AuthError,
    Authenticator,
    Identity,
    auth_middleware,
    default_exempt,
    request_identity,
)

SECRET = "s3cret-for-tests-only-0123456789abcdef"


def hs(**kw) -> Authenticator:
    return Authenticator(AuthConfig.from_options(secret=SECRET, **kw))


def encode(payload: dict, key=SECRET, alg: str = "HS256") -> str:
    return jwt.encode(payload, key, algorithm=alg)


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def pem_pair(kind: str):
    if kind == "rsa":
        private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    else:
        private = ec.generate_private_key(ec.SECP256R1())
    public = private.public_key().public_bytes(serialization.Encoding.PEM,
                                               serialization.PublicFormat.SubjectPublicKeyInfo).decode()
    return private, public


def reason_of(auth: Authenticator, token) -> AuthError:
    with pytest.raises(AuthError) as info:
        auth.verify(token)
    assert info.value.status == 401
    return info.value


# -- configuration


def test_no_key_and_not_dev_names_the_options():
    with pytest.raises(ValueError) as info:
        AuthConfig.from_options()
    msg = str(info.value)
    assert "SFU_JWT_SECRET" in msg and "--jwt-secret" in msg and "--jwt-public-key" in msg


def test_algorithm_none_is_refused():
    with pytest.raises(ValueError, match="'none' is refused"):
        AuthConfig.from_options(secret=SECRET, algorithms="HS256,none")


def test_algorithm_family_must_match_the_key(tmp_path):
    with pytest.raises(ValueError, match="need a public key"):
        AuthConfig.from_options(secret=SECRET, algorithms=["RS256"])
    _, rsa_pub = pem_pair("rsa")
    path = tmp_path / "rsa.pem"
    path.write_text(rsa_pub)
    with pytest.raises(ValueError, match="do not match the public key"):
        AuthConfig.from_options(public_key_file=str(path), algorithms="ES256")
    with pytest.raises(ValueError, match="do not match the public key"):
        AuthConfig.from_options(public_key_file=str(path), algorithms="HS256")
    assert AuthConfig.from_options(public_key_file=str(path)).algorithms == ["RS256"]
    _, ec_pub = pem_pair("ec")
    path.write_text(ec_pub)
    assert AuthConfig.from_options(public_key_file=str(path)).algorithms == ["ES256"]
    with pytest.raises(ValueError, match="do not match"):
        AuthConfig.from_options(public_key_file=str(path), algorithms="ES384")


def test_key_file_problems_are_named(tmp_path):
    with pytest.raises(ValueError, match="cannot read .*missing.pem"):
        AuthConfig.from_options(public_key_file=str(tmp_path / "missing.pem"))
    private, _ = pem_pair("ec")
    path = tmp_path / "private.pem"
    path.write_bytes(private.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    with pytest.raises(ValueError, match="private key.*-pubout"):
        AuthConfig.from_options(public_key_file=str(path))
    path.write_text("hello")
    with pytest.raises(ValueError, match="not a PEM public key"):
        AuthConfig.from_options(public_key_file=str(path))


def test_secret_and_public_key_together_are_refused(tmp_path):
    _, pub = pem_pair("ec")
    path = tmp_path / "k.pem"
    path.write_text(pub)
    with pytest.raises(ValueError, match="not both"):
        AuthConfig.from_options(secret=SECRET, public_key_file=str(path))
    with pytest.raises(ValueError, match="development mode"):
        AuthConfig.from_options(public_key_file=str(path), dev=True)


def test_dev_mode_generates_a_secret_and_mints():
    a = AuthConfig.from_options(dev=True)
    b = AuthConfig.from_options(dev=True)
    assert a.dev_mode and a.secret and a.algorithms == ["HS256"]
    assert a.secret != b.secret
    auth = Authenticator(a)
    ident = auth.verify(auth.mint("alice", name="Alice"))
    assert ident == Identity("alice", "Alice", ident.claims)
    # a token from another dev-mode server (another secret) does not pass
    assert reason_of(Authenticator(b), auth.mint("alice")).reason == "signature"


def test_algorithms_may_be_a_comma_separated_string():
    assert AuthConfig.from_options(secret=SECRET, algorithms=" HS256, HS512 ").algorithms == ["HS256", "HS512"]


# -- verification


def test_hs256_round_trip_carries_identity_and_extra_claims():
    auth = hs()
    token = auth.mint("u-1", name="Ann", ttl_s=60, role="proctor")
    ident = auth.verify(token)
    assert ident.user_id == "u-1" and ident.name == "Ann"
    assert ident.claims["role"] == "proctor"
    assert ident.claims["exp"] - ident.claims["iat"] == 60
    assert jwt.get_unverified_header(token)["alg"] == "HS256"


def test_token_without_name_gives_none():
    ident = hs().verify(encode({"sub": "bob", "exp": time.time() + 60}))
    assert ident.user_id == "bob" and ident.name is None


@pytest.mark.parametrize("kind,alg", [("rsa", "RS256"), ("ec", "ES256")])
def test_public_key_verification(tmp_path, kind, alg):
    private, public = pem_pair(kind)
    path = tmp_path / "pub.pem"
    path.write_text(public)
    auth = Authenticator(AuthConfig.from_options(public_key_file=str(path), audience="calls", issuer="idp"))
    token = encode({"sub": "carol", "name": "Carol", "exp": time.time() + 60, "aud": "calls", "iss": "idp"},
                   private, alg)
    ident = auth.verify(token)
    assert (ident.user_id, ident.name) == ("carol", "Carol")
    # signed by another key of the same kind
    other, _ = pem_pair(kind)
    bad = encode({"sub": "carol", "exp": time.time() + 60, "aud": "calls", "iss": "idp"}, other, alg)
    assert reason_of(auth, bad).reason == "signature"
    # an HS256 token using the public key text as the HMAC secret (algorithm confusion)
    header = b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    payload = b64(json.dumps({"sub": "mallory", "exp": int(time.time()) + 60, "aud": "calls",
                              "iss": "idp"}).encode())
    sig = hmac.new(public.encode(), f"{header}.{payload}".encode(), hashlib.sha256).digest()
    err = reason_of(auth, f"{header}.{payload}.{b64(sig)}")
    assert err.reason == "algorithm" and "'HS256' is not accepted" in err.message
    with pytest.raises(RuntimeError, match="only a public key"):
        auth.mint("x")


def test_missing_token():
    for token in (None, ""):
        err = reason_of(hs(), token)
        assert err.reason == "missing" and "Authorization: Bearer" in err.message


def test_expired_token_beyond_leeway_is_refused_within_leeway_accepted():
    auth = hs()  # leeway 5 s
    err = reason_of(auth, encode({"sub": "a", "exp": int(time.time()) - 30}))
    assert err.reason == "expired" and "expired at" in err.message
    assert auth.verify(encode({"sub": "a", "exp": int(time.time()) - 2})).user_id == "a"


def test_wrong_secret():
    err = reason_of(hs(), encode({"sub": "a", "exp": time.time() + 60}, key="another-secret-another-secret-0000"))
    assert err.reason == "signature" and "signature is invalid" in err.message


def test_tampered_payload():
    auth = hs()
    header, _, sig = auth.mint("alice").split(".")
    payload = b64(json.dumps({"sub": "admin", "exp": int(time.time()) + 60}).encode())
    assert reason_of(auth, f"{header}.{payload}.{sig}").reason == "signature"


def test_alg_none_token_is_rejected():
    header = b64(json.dumps({"alg": "none", "typ": "JWT"}).encode())
    payload = b64(json.dumps({"sub": "admin", "exp": int(time.time()) + 60}).encode())
    err = reason_of(hs(), f"{header}.{payload}.")
    assert err.reason == "algorithm" and "'none'" in err.message


@pytest.mark.parametrize("token", ["garbage", "a.b.c", "a.b", "ey.ey.ey"])
def test_malformed(token):
    err = reason_of(hs(), token)
    assert err.reason == "malformed" and err.message.startswith("malformed token")


def test_missing_sub_and_missing_exp():
    err = reason_of(hs(), encode({"exp": time.time() + 60}))
    assert err.reason == "claims" and "'sub'" in err.message
    err = reason_of(hs(), encode({"sub": "a"}))
    assert err.reason == "claims" and "'exp'" in err.message


def test_audience_and_issuer_mismatch():
    auth = hs(audience="calls", issuer="https://idp.example")
    good = {"sub": "a", "exp": time.time() + 60, "aud": "calls", "iss": "https://idp.example"}
    assert auth.verify(encode(good)).user_id == "a"
    err = reason_of(auth, encode({**good, "aud": "other"}))
    assert err.reason == "claims" and "audience" in err.message and "'calls'" in err.message
    err = reason_of(auth, encode({**good, "iss": "https://evil.example"}))
    assert err.reason == "claims" and "issuer" in err.message
    # mint() sets the configured audience and issuer
    assert auth.verify(auth.mint("b")).claims["aud"] == "calls"


def test_auth_error_shapes():
    assert AuthError(403, "not your transport").status == 403
    assert AuthError(403, "x").reason == "forbidden"
    swapped = AuthError("not yours", 403)
    assert (swapped.status, swapped.message) == (403, "not yours")
    assert AuthError("plain").status == 401
    with pytest.raises(ValueError):
        AuthError(500, "nope")


def test_default_exempt():
    for path in ("/", "/healthz", "/readyz", "/metrics", "/demo.js", "/call.js", "/call.html"):
        assert default_exempt(path)
    for path in ("/api/calls/c1/participants", "/socket.io/", "/api/"):
        assert not default_exempt(path)


# -- middleware over a real server


async def start(app: web.Application) -> TestClient:
    client = TestClient(TestServer(app, host="127.0.0.1"))
    await client.start_server()
    return client


async def whoami(request: web.Request) -> web.Response:
    ident = request_identity(request)
    return web.json_response({"user": ident.user_id, "name": ident.name})


async def open_page(request: web.Request) -> web.Response:
    return web.Response(text="ok")


async def test_middleware_on_a_real_app():
    auth = hs()
    failures = []
    app = web.Application(middlewares=[auth_middleware(auth, default_exempt,
                                                       on_failure=lambda e, r: failures.append(e.reason))])
    app.router.add_get("/api/whoami", whoami)
    app.router.add_get("/healthz", open_page)
    client = await start(app)
    try:
        resp = await client.get("/healthz")
        assert resp.status == 200 and await resp.text() == "ok"

        resp = await client.get("/api/whoami")
        assert resp.status == 401
        assert resp.headers["WWW-Authenticate"].startswith("Bearer")
        assert resp.content_type == "application/json"
        assert "missing token" in (await resp.json())["error"]

        expired = encode({"sub": "a", "exp": int(time.time()) - 60})
        resp = await client.get("/api/whoami", headers={"Authorization": f"Bearer {expired}"})
        assert resp.status == 401
        assert 'error="invalid_token"' in resp.headers["WWW-Authenticate"]
        assert "expired" in (await resp.json())["error"]

        token = auth.mint("alice", name="Alice")
        resp = await client.get("/api/whoami", headers={"Authorization": f"Bearer {token}"})
        assert resp.status == 200 and await resp.json() == {"user": "alice", "name": "Alice"}
        # lower-case scheme, and the query parameter for browsers' WebSocket/EventSource
        resp = await client.get("/api/whoami", headers={"Authorization": f"bearer {token}"})
        assert resp.status == 200
        resp = await client.get("/api/whoami", params={"token": token})
        assert resp.status == 200 and (await resp.json())["user"] == "alice"
        assert failures == ["missing", "expired"]
    finally:
        await client.close()


async def test_request_identity_on_an_exempt_path_is_401():
    app = web.Application(middlewares=[auth_middleware(hs(), lambda path: True)])

    async def handler(request: web.Request) -> web.Response:
        try:
            request_identity(request)
        except AuthError as exc:
            return web.json_response({"error": exc.message}, status=exc.status)
        return web.Response(text="unexpected")

    app.router.add_get("/api/x", handler)
    client = await start(app)
    try:
        resp = await client.get("/api/x")
        assert resp.status == 401
    finally:
        await client.close()


# -- room grants (the `video` claim; the server side is in tests/test_grants.py)


def test_grants_in_minted_tokens_and_the_require_grants_option():
    auth = hs()
    assert auth.config.require_grants is False  # backward compatible default
    assert hs(require_grants=True).config.require_grants is True
    claims = auth.verify(auth.mint("alice", rooms=["A"], can_publish=False)).claims
    assert claims["video"] == {"rooms": ["A"], "roomJoin": True, "canPublish": False, "canSubscribe": True}
    assert auth.verify(auth.mint("alice")).grant is None  # no rooms: no grant claim
    # a grant given as a raw claim is parsed the same way
    grant = auth.verify(auth.mint("alice", video={"room": "*"})).grant
    assert grant.rooms is None and grant.can_publish and grant.can_subscribe


def test_a_token_without_grant_is_logged_once_per_user(caplog):
    auth = hs()
    with caplog.at_level("WARNING", logger="sfu.signaling.auth"):
        for _ in range(3):
            auth.verify(auth.mint("legacy"))
        auth.verify(auth.mint("scoped", rooms=["A"]))
    lines = [r.getMessage() for r in caplog.records if "no room grant" in r.getMessage()]
    assert len(lines) == 1 and "legacy" in lines[0] and "--require-grants" in lines[0]
    caplog.clear()
    strict = hs(require_grants=True)
    with caplog.at_level("WARNING", logger="sfu.signaling.auth"):
        strict.verify(strict.mint("legacy"))  # refused where it is used (403), not logged as deprecated
    assert not [r for r in caplog.records if "no room grant" in r.getMessage()]


def test_a_malformed_grant_makes_the_token_invalid():
    auth = hs()
    err = reason_of(auth, auth.mint("alice", video={"rooms": "A"}))
    assert err.reason == "claims" and "video.rooms" in err.message
