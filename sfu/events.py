"""A minimal synchronous event emitter, the shape of mediasoup's.

Listeners are plain callables run in registration order; an exception in one
is logged and does not stop the others or the emitter.
"""

from __future__ import annotations

import logging
from typing import Any, Callable

logger = logging.getLogger("sfu.events")

Listener = Callable[..., Any]


class EventEmitter:
    """`on`/`once`/`off`/`emit`, plus `listener_count` for tests."""

    def __init__(self) -> None:
        self._listeners: dict[str, list[tuple[Listener, bool]]] = {}

    def on(self, event: str, listener: Listener) -> Listener:
        """Calls `listener(*args)` each time `event` is emitted. Returns it
        (so it works as a decorator)."""
        self._listeners.setdefault(event, []).append((listener, False))
        return listener

    def once(self, event: str, listener: Listener) -> Listener:
        """Like :meth:`on` but only for the next emission."""
        self._listeners.setdefault(event, []).append((listener, True))
        return listener

    def off(self, event: str, listener: Listener) -> None:
        """Removes a listener added with :meth:`on` or :meth:`once`."""
        entries = self._listeners.get(event, [])
        self._listeners[event] = [e for e in entries if e[0] is not listener]

    def remove_all_listeners(self, event: str | None = None) -> None:
        if event is None:
            self._listeners.clear()
        else:
            self._listeners.pop(event, None)

    def listener_count(self, event: str) -> int:
        return len(self._listeners.get(event, []))

    def emit(self, event: str, *args: Any) -> bool:
        """Runs the listeners of `event`; True if there were any."""
        entries = self._listeners.get(event)
        if not entries:
            return False
        self._listeners[event] = [e for e in entries if not e[1]]
        for listener, _ in entries:
            try:
                listener(*args)
            except Exception:  # a listener's bug must not break the emitter
                logger.exception("listener for %r raised", event)
        return True
