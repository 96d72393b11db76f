"""JWT authentication for the call service (PyJWT).

Every REST call under ``/api/`` and every Socket.IO connection carries a JSON
Web Token; the identity (``sub``, optional ``name``) comes from the token and
nothing else. Tokens are verified with either

* an HS256 shared secret (``SFU_JWT_SECRET`` / ``--jwt-secret``), or
* an RS256/ES256 public key in PEM (``--jwt-public-key FILE``), for tokens
  minted by an identity provider that keeps the private key.

A development mode generates a random HS256 secret when none is given and can
mint tokens for the demo page; it is never implied, it has to be asked for.

Room grants. A token may carry a ``video`` claim (named after LiveKit's video
grant) saying which rooms it may join and whether it may publish and
subscribe there::

    "video": {"rooms": ["A", "B"], "canPublish": true, "canSubscribe": false}

``rooms`` is a list of room ids or ``"*"`` (every room); LiveKit's single
``room`` is accepted too (and combined with ``rooms``). ``roomJoin: false``
grants no room. ``canPublish``/``canSubscribe`` default to true (as in
LiveKit); ``false`` withholds that right. ``roomRecord: true`` (default
false, as in LiveKit) allows the room's recordings (signaling/recording.py). :class:`RoomGrant` is the parsed
claim (on :attr:`Identity.grant`); :func:`check_room_grant` raises
``AuthError(403, "token grants no access to room B")``, ``"token may not
publish"`` or ``"token may not subscribe"``. A token without the claim is
accepted with every right unless :attr:`AuthConfig.require_grants` is set
(``--require-grants``): that default is deprecated and will flip.

Failures raise :class:`AuthError` (status 401, or 403 for a caller acting
outside what its identity allows), whose message says what was wrong with the
token. :func:`auth_middleware` turns them into ``401 {"error": ...}`` JSON
responses with a ``WWW-Authenticate: Bearer`` header.
"""

from __future__ import annotations

import logging
import secrets
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Awaitable, Callable, Iterable, Optional, Union

import jwt
from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa

from .rooms import ApiError

logger = logging.getLogger("sfu.signaling.auth")

HMAC_ALGORITHMS = ("HS256", "HS384", "HS512")
RSA_ALGORITHMS = ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512")
EC_ALGORITHMS = ("ES256", "ES384", "ES512")
EDDSA_ALGORITHMS = ("EdDSA",)
_EC_CURVES = {"ES256": "secp256r1", "ES384": "secp384r1", "ES512": "secp521r1"}

#: The configuration options named in error messages (see ``signaling/cli.py``).
KEY_OPTIONS = "SFU_JWT_SECRET / --jwt-secret (HS256) or --jwt-public-key FILE (RS256/ES256)"

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
PublicKey = Union[rsa.RSAPublicKey, ec.EllipticCurvePublicKey, ed25519.Ed25519PublicKey, ed448.Ed448PublicKey]


class AuthError(ApiError):
    """Authentication (401) or authorisation (403) failure.

    ``AuthError(401, "token expired ...")``; ``.status`` and ``.message`` as
    for :class:`~signaling.rooms.ApiError` (so the server's error middleware
    maps it to JSON as it is), and ``.reason``, a short machine-readable
    cause: ``missing``, ``expired``, ``signature``, ``algorithm``,
    ``malformed``, ``claims``, ``forbidden``.
    """

    def __init__(self, status: Union[int, str], message: Union[str, int, None] = None,
                 reason: Optional[str] = None) -> None:
        if isinstance(status, str):  # tolerate AuthError("msg") and AuthError("msg", 403)
            status, message = (message if isinstance(message, int) else 401), status
        if status not in (401, 403):
            raise ValueError(f"AuthError status must be 401 or 403, got {status!r}")
        super().__init__(int(status), str(message))
        self.reason = reason or ("forbidden" if status == 403 else "invalid")


#: The claim holding a token's room grant (LiveKit's name for its video grant).
GRANT_CLAIM = "video"


@dataclass(frozen=True)
class RoomGrant:
    """What a token's ``video`` claim allows: ``rooms`` (a frozenset of room
    ids, or None for every room: ``"*"``), ``can_publish``,
    ``can_subscribe``."""

    rooms: Optional[frozenset[str]]
    can_publish: bool = True
    can_subscribe: bool = True
    #: LiveKit's ``roomRecord`` (default false): may start, list and download recordings
    can_record: bool = False

    def allows_room(self, room_id: str) -> bool:
        return self.rooms is None or room_id in self.rooms

    def describe(self) -> str:
        rooms = "every room (*)" if self.rooms is None else (", ".join(sorted(self.rooms)) or "no room")
        rights = [r for r, ok in (("publish", self.can_publish), ("subscribe", self.can_subscribe)) if ok]
        return f"rooms: {rooms}; may {' and '.join(rights) if rights else 'neither publish nor subscribe'}"


#: What a token without a ``video`` claim is granted while grants are not required.
FULL_GRANT = RoomGrant(rooms=None)


def parse_grant(claims: dict[str, Any]) -> Optional[RoomGrant]:
    """The :class:`RoomGrant` of verified claims (None without a ``video``
    claim); AuthError 401 (``claims``) naming what is malformed."""
    if GRANT_CLAIM not in claims:
        return None
    video = claims[GRANT_CLAIM]
    if not isinstance(video, dict):
        raise AuthError(401, f"token '{GRANT_CLAIM}' claim (the room grant) must be an object", "claims")
    rooms: set[str] = set()
    every = False
    room = video.get("room")
    if room is not None:
        if not isinstance(room, str) or not room:
            raise AuthError(401, f"token '{GRANT_CLAIM}.room' must be a non-empty string (a room id or \"*\")",
                            "claims")
        every, rooms = room == "*", ({room} if room != "*" else set())
    listed = video.get("rooms")
    if listed == "*":
        every = True
    elif listed is not None:
        if not isinstance(listed, list) or not all(isinstance(r, str) and r for r in listed):
            raise AuthError(401, f"token '{GRANT_CLAIM}.rooms' must be a list of room ids or \"*\"", "claims")
        every = every or "*" in listed
        rooms.update(r for r in listed if r != "*")
    flags = {}
    for key in ("roomJoin", "canPublish", "canSubscribe"):
        value = video.get(key, True)
        if not isinstance(value, bool):
            raise AuthError(401, f"token '{GRANT_CLAIM}.{key}' must be true or false", "claims")
        flags[key] = value
    if not flags["roomJoin"]:
        every, rooms = False, set()
    record = video.get("roomRecord", False)
    if not isinstance(record, bool):
        raise AuthError(401, f"token '{GRANT_CLAIM}.roomRecord' must be true or false", "claims")
    return RoomGrant(rooms=None if every else frozenset(rooms), can_publish=flags["canPublish"],
                     can_subscribe=flags["canSubscribe"], can_record=record)


@dataclass(frozen=True)
class Identity:
    """Who a verified token says the caller is; ``grant``: its room grant
    (None when the token has no ``video`` claim)."""

    user_id: str
    name: Optional[str]
    claims: dict[str, Any] = field(hash=False)
    grant: Optional[RoomGrant] = None


def check_room_grant(ident: Optional[Identity], room_id: str, *, publish: bool = False, subscribe: bool = False,
                     require: bool = False, call: bool = False) -> None:
    """Raises AuthError 403 unless ``ident``'s grant allows room ``room_id``
    (and publishing / subscribing when asked). ``ident`` None (no
    authenticator) is always allowed. A token without grant: allowed
    everything, unless ``require`` (``--require-grants``) and the room is not
    a ``call``'s (calls authorise by membership and roles)."""
    if ident is None:
        return
    grant = ident.grant
    if grant is None:
        if require and not call:
            raise AuthError(403, f"token grants no access to room {room_id}: it has no room grant "
                                 f"('{GRANT_CLAIM}' claim) and this server requires one (--require-grants)")
        return
    if not grant.allows_room(room_id):
        raise AuthError(403, f"token grants no access to room {room_id}")
    if publish and not grant.can_publish:
        raise AuthError(403, "token may not publish (its grant has canPublish: false)")
    if subscribe and not grant.can_subscribe:
        raise AuthError(403, "token may not subscribe (its grant has canSubscribe: false)")


def _algorithm_list(algorithms: Union[None, str, Iterable[str]]) -> Optional[list[str]]:
    if algorithms is None:
        return None
    if isinstance(algorithms, str):
        algorithms = algorithms.split(",")
    out = [a.strip() for a in algorithms if a and a.strip()]
    return out or None


def load_public_key(pem: str) -> PublicKey:
    """Loads a PEM public key (or the key of a PEM certificate).

    Raises ValueError naming what the text is instead."""
    data = pem.encode() if isinstance(pem, str) else pem
    if b"PRIVATE KEY" in data:
        raise ValueError("--jwt-public-key: this is a private key; give the public key "
                         "(e.g. `openssl pkey -in key.pem -pubout -out pub.pem`)")
    try:
        if b"BEGIN CERTIFICATE" in data:
            key = x509.load_pem_x509_certificate(data).public_key()
        else:
            key = serialization.load_pem_public_key(data)
    except ValueError as exc:
        raise ValueError(f"--jwt-public-key: not a PEM public key or certificate ({exc})") from None
    if not isinstance(key, (rsa.RSAPublicKey, ec.EllipticCurvePublicKey,
                            ed25519.Ed25519PublicKey, ed448.Ed448PublicKey)):
        raise ValueError(f"--jwt-public-key: unsupported key type {type(key).__name__} (use RSA or EC)")
    return key


def _key_algorithms(key: PublicKey) -> tuple[tuple[str, ...], list[str]]:
    """(the algorithms this key can verify, the default list)."""
    if isinstance(key, rsa.RSAPublicKey):
        return RSA_ALGORITHMS, ["RS256"]
    if isinstance(key, ec.EllipticCurvePublicKey):
        usable = tuple(a for a, curve in _EC_CURVES.items() if curve == key.curve.name)
        if not usable:
            raise ValueError(f"--jwt-public-key: EC curve {key.curve.name} is not one of P-256/P-384/P-521")
        return usable, [usable[0]]
    return EDDSA_ALGORITHMS, ["EdDSA"]


@dataclass
class AuthConfig:
    """How tokens are verified. Validated on construction (ValueError naming
    the option to fix); prefer :meth:`from_options`."""

    secret: Optional[str] = None
    public_key: Optional[str] = None
    algorithms: list[str] = field(default_factory=list)
    audience: Optional[str] = None
    issuer: Optional[str] = None
    leeway_s: float = 5
    dev_mode: bool = False
    #: Refuse (403) tokens without a room grant (``video`` claim) in rooms.
    require_grants: bool = False

    def __post_init__(self) -> None:
        self.algorithms = _algorithm_list(self.algorithms) or []
        if self.secret == "":
            self.secret = None
        if self.public_key == "":
            self.public_key = None
        for alg in self.algorithms:
            if alg.lower() == "none":
                raise ValueError("JWT algorithm 'none' is refused: unsigned tokens would let anyone "
                                 "claim any identity")
        if self.secret is not None and self.public_key is not None:
            raise ValueError("give either a JWT secret (HS256) or a public key (RS256/ES256), not both")
        if self.dev_mode and self.public_key is not None:
            raise ValueError("development mode mints HS256 tokens with a secret; it cannot be combined "
                             "with --jwt-public-key")
        if self.secret is None and self.public_key is None:
            if not self.dev_mode:
                raise ValueError(f"no JWT key configured: set {KEY_OPTIONS}, or run in development mode "
                                 "(--dev-auth) for a generated secret")
            self.secret = secrets.token_urlsafe(32)
            logger.warning("development mode: tokens are signed with a random secret generated at start-up "
                           "(not for production)")
        if self.secret is not None:
            if not self.algorithms:
                self.algorithms = ["HS256"]
            wrong = [a for a in self.algorithms if a not in HMAC_ALGORITHMS]
            if wrong:
                raise ValueError(f"JWT algorithms {wrong} need a public key (--jwt-public-key); "
                                 f"a secret verifies only {list(HMAC_ALGORITHMS)}")
            if len(self.secret.encode()) < 32:
                logger.warning("the JWT secret is shorter than 32 bytes: HS256 secrets should have at "
                               "least 256 bits")
        else:
            usable, default = _key_algorithms(load_public_key(self.public_key))  # type: ignore[arg-type]
            if not self.algorithms:
                self.algorithms = default
            wrong = [a for a in self.algorithms if a not in usable]
            if wrong:
                raise ValueError(f"JWT algorithms {wrong} do not match the public key "
                                 f"(this key verifies {list(usable)})")
        if self.leeway_s < 0:
            raise ValueError("JWT leeway must be >= 0 seconds")

    @classmethod
    def from_options(
        cls,
        secret: Optional[str] = None,
        public_key_file: Optional[str] = None,
        algorithms: Union[None, str, Iterable[str]] = None,
        audience: Optional[str] = None,
        issuer: Optional[str] = None,
        dev: bool = False,
        leeway_s: float = 5,
        require_grants: bool = False,
    ) -> "AuthConfig":
        """Builds a config from command-line/environment values.

        ``algorithms`` may be a comma-separated string. Raises ValueError
        with the option to fix (no key, unreadable key file, algorithm
        ``none``, algorithm not matching the key)."""
        public_key = None
        if public_key_file:
            try:
                with open(public_key_file, encoding="utf-8") as f:
                    public_key = f.read()
            except OSError as exc:
                raise ValueError(f"--jwt-public-key: cannot read {public_key_file}: {exc.strerror}") from None
        return cls(secret=secret or None, public_key=public_key, algorithms=_algorithm_list(algorithms) or [],
                   audience=audience or None, issuer=issuer or None, leeway_s=leeway_s, dev_mode=dev,
                   require_grants=bool(require_grants))

    @property
    def can_mint(self) -> bool:
        """True when tokens can be minted here (a secret is configured)."""
        return self.secret is not None


def _utc(ts: Any) -> str:
    try:
        return datetime.fromtimestamp(float(ts), timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")
    except (TypeError, ValueError, OverflowError):
        return str(ts)


class Authenticator:
    """Verifies (and, with a secret, mints) tokens according to an
    :class:`AuthConfig`."""

    def __init__(self, config: AuthConfig) -> None:
        self.config = config
        self._warned: set[str] = set()  # users whose grant-less token was logged (once each)
        self._key: Any = config.secret if config.secret is not None else load_public_key(config.public_key or "")

    def verify(self, token: Optional[str]) -> Identity:
        """The identity of a valid token; raises AuthError(401) saying whether
        the token is missing, expired, badly signed, malformed or lacks a
        claim."""
        if not token:
            raise AuthError(401, "missing token: send 'Authorization: Bearer <JWT>' (or ?token=<JWT> where "
                                 "headers cannot be set)", "missing")
        cfg = self.config
        try:
            claims = jwt.decode(
                token, self._key, algorithms=cfg.algorithms, audience=cfg.audience, issuer=cfg.issuer,
                leeway=cfg.leeway_s, options={"require": ["exp", "sub"]},
            )
        except jwt.ExpiredSignatureError:
            exp = jwt.decode(token, options={"verify_signature": False}).get("exp")
            raise AuthError(401, f"token expired at {_utc(exp)}: get a new one", "expired") from None
        except jwt.InvalidSignatureError:
            raise AuthError(401, "token signature is invalid (signed with another key, or altered)",
                            "signature") from None
        except jwt.InvalidAlgorithmError:
            alg = _header_alg(token)
            raise AuthError(401, f"token algorithm {alg!r} is not accepted (accepted: {', '.join(cfg.algorithms)})",
                            "algorithm") from None
        except jwt.MissingRequiredClaimError as exc:
            raise AuthError(401, f"token lacks the required {exc.claim!r} claim", "claims") from None
        except jwt.InvalidAudienceError:
            want = f"{cfg.audience!r}" if cfg.audience else "none (no audience is configured)"
            raise AuthError(401, f"token audience (aud) does not match: expected {want}", "claims") from None
        except jwt.InvalidIssuerError:
            raise AuthError(401, f"token issuer (iss) does not match: expected {cfg.issuer!r}", "claims") from None
        except jwt.ImmatureSignatureError:
            raise AuthError(401, "token is not valid yet (nbf/iat in the future: check clocks)", "claims") from None
        except jwt.DecodeError as exc:
            raise AuthError(401, f"malformed token: {exc}", "malformed") from None
        except jwt.InvalidTokenError as exc:
            raise AuthError(401, f"invalid token: {exc}", "claims") from None
        sub = claims.get("sub")
        if not isinstance(sub, str) or not sub:
            raise AuthError(401, "token 'sub' claim must be a non-empty string (the user id)", "claims")
        name = claims.get("name")
        grant = parse_grant(claims)
        if grant is None and not cfg.require_grants and len(self._warned) < 1000 and sub not in self._warned:
            self._warned.add(sub)
            logger.warning("token of %s has no room grant ('%s' claim): it may join, publish and subscribe in "
                           "every room; this is deprecated (sfu-server --require-grants refuses such tokens)",
                           sub, GRANT_CLAIM)
        return Identity(user_id=sub, name=name if isinstance(name, str) else None, claims=claims, grant=grant)

    def mint(self, user_id: str, name: Optional[str] = None, ttl_s: float = 3600, *,
             rooms: Union[None, str, Iterable[str]] = None, can_publish: bool = True, can_subscribe: bool = True,
             **claims: Any) -> str:
        """A signed token for ``user_id`` valid ``ttl_s`` seconds (HS256 / dev
        mode only: RuntimeError when only a public key is configured).
        ``rooms`` (a room id, a list of them, or ``"*"``) adds a room grant
        (``video`` claim) with ``can_publish``/``can_subscribe``; None adds
        none (unless ``video=`` is given as a claim)."""
        cfg = self.config
        if cfg.secret is None:
            raise RuntimeError("cannot mint tokens: only a public key is configured; tokens come from the "
                               "identity provider holding the private key (or configure --jwt-secret)")
        if not user_id:
            raise ValueError("user_id: required, a non-empty string")
        now = int(time.time())
        payload: dict[str, Any] = {"sub": user_id, "iat": now, "exp": now + int(ttl_s)}
        if name is not None:
            payload["name"] = name
        if cfg.audience:
            payload["aud"] = cfg.audience
        if cfg.issuer:
            payload["iss"] = cfg.issuer
        if rooms is not None:
            listed = "*" if rooms == "*" else [rooms] if isinstance(rooms, str) else list(rooms)
            payload[GRANT_CLAIM] = {"rooms": listed, "roomJoin": True, "canPublish": bool(can_publish),
                                    "canSubscribe": bool(can_subscribe)}
        payload.update(claims)
        return jwt.encode(payload, cfg.secret, algorithm=cfg.algorithms[0])

    @staticmethod
    def token_from_request(request: web.BaseRequest) -> Optional[str]:
        """The bearer token of a request: ``Authorization: Bearer`` header,
        else the ``token`` query parameter (browsers' WebSocket/EventSource
        cannot set headers). None when there is none."""
        auth = request.headers.get("Authorization", "")
        scheme, _, value = auth.strip().partition(" ")
        if scheme.lower() == "bearer" and value.strip():
            return value.strip()
        token = request.query.get("token", "").strip()
        return token or None


def _header_alg(token: str) -> Any:
    try:
        return jwt.get_unverified_header(token).get("alg")
    except jwt.InvalidTokenError:
        return None


def default_exempt(path: str) -> bool:
    """True for paths that need no token: everything but ``/api/`` and
    ``/socket.io`` (pages, static assets, ``/healthz``, ``/readyz``,
    ``/metrics``)."""
    return not path.startswith(("/api/", "/socket.io"))


def request_identity(request: web.Request) -> Identity:
    """The identity :func:`auth_middleware` stored on the request (AuthError
    401 when there is none, e.g. on an exempt path)."""
    identity = request.get("identity")
    if identity is None:
        raise AuthError(401, "this request is not authenticated (no token was verified)", "missing")
    return identity


def www_authenticate(exc: AuthError) -> str:
    """The RFC 6750 ``WWW-Authenticate`` value for a failure."""
    if exc.status == 403:
        return 'Bearer realm="sfu", error="insufficient_scope"'
    if exc.reason == "missing":
        return 'Bearer realm="sfu"'
    desc = exc.message.replace("\\", "").replace('"', "'")
    return f'Bearer realm="sfu", error="invalid_token", error_description="{desc}"'


def auth_middleware(
    authenticator: Authenticator,
    exempt: Callable[[str], bool] = default_exempt,
    on_failure: Optional[Callable[[AuthError, web.Request], None]] = None,
) -> Any:
    """aiohttp middleware: on every non-exempt path, verifies the request's
    token and stores the :class:`Identity` in ``request["identity"]``;
    failures get ``401 {"error": ...}`` with ``WWW-Authenticate: Bearer``.
    ``on_failure`` (e.g. a metrics counter) is called for each failure."""

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        if exempt(request.path):
            return await handler(request)
        try:
            request["identity"] = authenticator.verify(authenticator.token_from_request(request))
        except AuthError as exc:
            logger.debug("%s %s from %s: %s", request.method, request.path, request.remote, exc.message)
            if on_failure is not None:
                on_failure(exc, request)
            return web.json_response({"error": exc.message}, status=exc.status,
                                     headers={"WWW-Authenticate": www_authenticate(exc)})
        return await handler(request)

    return middleware
