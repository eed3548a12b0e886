"""Pub/sub: broadcast JSON messages to every instance of the app."""

from .manager import PubSubManager

__all__ = ["PubSubManager"]
