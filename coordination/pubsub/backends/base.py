"""The contract every pub/sub backend implements.

A backend moves opaque envelope text (JSON made by the manager) between the
instances of one app. It knows nothing of handlers, debouncing or sequence
numbers: :class:`coordination.pubsub.PubSubManager` does that once, for every
backend.
"""

from collections.abc import Callable
from typing import Any


class BasePubSubBackend:
    """Deliver envelope text published on a channel to every subscriber.

    ``on_message(text)`` is called for each envelope that arrives on a channel
    this backend has joined, from whatever thread the backend receives on; it
    must return quickly (the manager only queues the envelope). Envelopes this
    instance published come back too; the manager drops them.

    Subclasses list their options in ``required_options`` and
    ``allowed_options`` and may add ``validate_options(options)`` (a
    staticmethod returning a list of error strings); see
    :func:`coordination.backends.check_options`.
    """

    required_options: tuple = ()
    allowed_options: set | None = set()

    def __init__(
        self, app_name: str, options: dict[str, Any],
        on_message: Callable[[str], None],
    ) -> None:
        self.app_name = app_name
        self.options = options
        self.on_message = on_message

    def publish(self, channel: str, text: str) -> None:
        """Send ``text`` to every instance that joined ``channel``.

        Sending must not depend on this instance's listener being up.
        """
        raise NotImplementedError

    def join(self, channel: str) -> None:
        """Start receiving ``channel`` (starting the listener if needed).

        Returns once the membership is in place when the server can be
        reached, so a message published by anyone afterwards arrives.
        """
        raise NotImplementedError

    def leave(self, channel: str) -> None:
        """Stop receiving ``channel``; a no-op when not joined."""
        raise NotImplementedError

    def start(self) -> None:
        """Resume receiving the joined channels (idempotent)."""

    def stop(self) -> None:
        """Stop receiving; joined channels are remembered for start()."""

    def stats(self) -> dict[str, Any]:
        """Counters an operator may want (reconnects, failures...)."""
        return {}
