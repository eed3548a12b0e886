"""In-process delivery: the embedded default.

Every ``LocalBackend`` of one app name in this process shares a hub, so a
default publish (``skip_self=True``) on a single process reaches nobody, which
is right: there is no other instance. Tests build several managers with
distinct instance ids on it to play a cluster in one process.
"""

import threading

from .base import BasePubSubBackend

_hub_lock = threading.Lock()
# app name -> channel -> list of backends that joined it
_hub: dict[str, dict[str, list["LocalBackend"]]] = {}


class LocalBackend(BasePubSubBackend):
    """Deliver to the managers of this process, synchronously."""

    def publish(self, channel, text):
        with _hub_lock:
            members = list(_hub.get(self.app_name, {}).get(channel, ()))
        for backend in members:
            backend.on_message(text)

    def join(self, channel):
        with _hub_lock:
            members = _hub.setdefault(self.app_name, {}).setdefault(channel, [])
            if self not in members:
                members.append(self)

    def leave(self, channel):
        with _hub_lock:
            channels = _hub.get(self.app_name, {})
            members = channels.get(channel, [])
            if self in members:
                members.remove(self)
            if not members:
                channels.pop(channel, None)
