"""What a handler receives besides its payload."""

import threading
from dataclasses import dataclass, field

from ..exceptions import EventAborted

TIMEOUT = "timeout"
CANCELLED = "cancelled"


class Signal:
    """Tells a running handler to stop: its timeout passed or it was cancelled.

    Handlers that run long should look at it between steps (``aborted``,
    ``raise_if_aborted()``) or sleep with ``wait(seconds)``, which returns
    True as soon as the event is aborted.
    """

    def __init__(self):
        self._event = threading.Event()
        self.reason: str | None = None

    @property
    def aborted(self) -> bool:
        return self._event.is_set()

    def wait(self, seconds: float | None = None) -> bool:
        """Sleep up to ``seconds``; True once the event is aborted."""
        return self._event.wait(seconds)

    def raise_if_aborted(self) -> None:
        """Raise EventAborted (with the reason) if the event was aborted."""
        if self._event.is_set():
            raise EventAborted(self.reason or CANCELLED)

    def abort(self, reason: str) -> None:
        # The first reason wins: a cancel after a timeout stays a timeout.
        if not self._event.is_set():
            self.reason = reason
            self._event.set()

    def __repr__(self):
        return f"<Signal aborted={self.aborted} reason={self.reason!r}>"


@dataclass
class Context:
    """The second argument of ``process(payload, context)``."""

    event_id: int
    attempt: int
    channel: str
    signal: Signal = field(default_factory=Signal)
