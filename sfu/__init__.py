"""A Selective Forwarding Unit for WebRTC, for asyncio applications.

The model is mediasoup v3's: a :class:`Worker` (one subprocess per core)
runs routers; a :class:`Router` (one per call) connects transports; media
enters through producers and leaves through consumers, forwarded by the
compiled engine without decoding.

    worker = await sfu.create_worker()
    router = await worker.create_router(media_codecs)
    transport = await router.create_plain_transport(listen_ip="127.0.0.1")
"""

try:
    from ._fastpath import _engine as _engine  # noqa: F401
except ImportError as exc:  # pragma: no cover - exercised by packaging checks
    raise ImportError(
        "sfu's compiled engine (sfu._fastpath._engine) is not built. Install the package with "
        "`pip install .` (or, in a source checkout, `pip install -e .` / "
        "`python setup.py build_ext --inplace`); this needs gcc and the Python headers. "
        f"Original error: {exc}"
    ) from exc

from .consumer import Consumer
from .errors import (
    ChannelError,
    InvalidParametersError,
    InvalidStateError,
    SfuError,
    UnsupportedError,
    WorkerDiedError,
)
from .direct_transport import DirectTransport
from .pipe_transport import PipeConsumer, PipeToRouterResult, PipeTransport
from .plain_transport import PlainTransport
from .producer import Producer
from .router import Router
from .transport import Transport
from .webrtc_transport import WebRtcServer, WebRtcTransport
from .worker import Worker, create_worker

__version__ = "0.1.0"

__all__ = [
    "ChannelError",
    "Consumer",
    "InvalidParametersError",
    "InvalidStateError",
    "DirectTransport",
    "PipeConsumer",
    "PipeToRouterResult",
    "PipeTransport",
    "PlainTransport",
    "Producer",
    "Router",
    "SfuError",
    "Transport",
    "UnsupportedError",
    "Worker",
    "WebRtcServer",
    "WebRtcTransport",
    "WorkerDiedError",
    "create_worker",
]
