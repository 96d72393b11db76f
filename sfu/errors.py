"""Exceptions raised by the public API.

Every error names the object or field at fault so that the caller can act on
it without reading the source.
"""

from __future__ import annotations


class SfuError(Exception):
    """Base class of every error raised by :mod:`sfu`."""


class UnsupportedError(SfuError):
    """A codec, extension or feature that this router cannot handle."""


class InvalidParametersError(SfuError, ValueError):
    """RTP capabilities/parameters or transport parameters are malformed.

    The message names the offending field (e.g. ``codecs[1].clockRate``).
    """


class InvalidStateError(SfuError):
    """The object is closed or not in a state that allows the call."""


class WorkerDiedError(InvalidStateError):
    """The worker subprocess has exited; every pending and later call fails."""


class ChannelError(SfuError):
    """The worker rejected a request (carries the worker's reason)."""
