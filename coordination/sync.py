"""``app.sync_message_manager``: "reload your state" messages after commit.

A sync message tells the other instances that something they keep in memory
changed in the database. It is sent once the transaction that made the change
commits, so a receiver reading the database sees the change, and never when
it rolls back. It rides on pub/sub, on channels of its own (a sync channel
``X`` never meets a pub/sub channel ``X``), always with ``skip_self``.
"""

import logging
from collections.abc import Callable
from typing import Any

from django.db import DEFAULT_DB_ALIAS, connections, transaction

from .names import validate_name

logger = logging.getLogger(__name__)

# Sync channel X travels on pub/sub channel PREFIX + X.
PREFIX = "sync:"


class SyncMessageManager:
    """Publish and receive sync messages; sync channel ``X`` is plugin X's."""

    def __init__(self, services):
        self.services = services

    @property
    def _pubsub(self):
        return self.services.get("pubsub_manager")

    def subscribe(self, channel: str, handler: Callable[[Any], Any]) -> None:
        """Call ``handler(message)`` for every sync message on ``channel``
        sent by another instance."""
        validate_name(channel, "sync channel")
        self._pubsub._subscribe(PREFIX + channel, handler)

    def unsubscribe(self, channel: str, handler: Callable[[Any], Any]) -> bool:
        validate_name(channel, "sync channel")
        return self._pubsub._unsubscribe(PREFIX + channel, handler)

    def publish(self, channel: str, message: Any, *, using: str | None = None) -> None:
        """Send ``message`` to the other instances after the transaction on
        database ``using`` commits (at once outside a transaction).

        The message is checked and encoded now: PayloadError is raised here,
        and changing the object afterwards does not change what is sent.
        """
        validate_name(channel, "sync channel")
        pubsub = self._pubsub
        text = pubsub._encode(message)
        using = using or DEFAULT_DB_ALIAS
        if not connections[using].in_atomic_block:
            pubsub._send(PREFIX + channel, text)
            return
        logger.debug(
            "Sync message waits for commit channel=%s database=%s instance=%s",
            channel, using, self.services.instance_id,
            extra={"action": "sync_deferred", "channel": channel},
        )
        # robust: the data is committed already; a failed send is logged
        # (by Django, with traceback) rather than raised into the caller.
        transaction.on_commit(
            lambda: self._send_after_commit(channel, text), using=using,
            robust=True,
        )

    def _send_after_commit(self, channel, text):
        try:
            self._pubsub._send(PREFIX + channel, text)
        except Exception:
            logger.error(
                "Sync message lost after commit channel=%s instance=%s",
                channel, self.services.instance_id, exc_info=True,
                extra={"action": "sync_send_failed", "channel": channel},
            )
