from nocoplugins import Plugin

from . import record


class RecordingPlugin(Plugin):
    """A plugin that records every hook it receives."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.sync_messages = []

    def after_add(self):
        record(self, "after_add")

    def before_load(self):
        record(self, "before_load")

    def load(self):
        record(self, "load")

    def install(self):
        record(self, "install")

    def before_enable(self):
        record(self, "before_enable")

    def after_enable(self):
        record(self, "after_enable")

    def before_disable(self):
        record(self, "before_disable")

    def after_disable(self):
        record(self, "after_disable")

    def handle_sync_message(self, message):
        record(self, "handle_sync_message")
        self.sync_messages.append(message)
