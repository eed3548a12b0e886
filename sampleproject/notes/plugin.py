"""The demo plugin: a notes board that shows each start-up hook.

Found through this module (no ``plugin`` attribute on the AppConfig).
"""

from nocoplugins import Plugin


class NotesPlugin(Plugin):
    def load(self):
        # Start-up hooks must not touch the database: only log here.
        self.logger.info("notes plugin loaded on instance=%s", self.app.instance_id)

    def install(self):
        from .models import Note

        Note.objects.create(text="Welcome! This note was written by install().")

    def after_enable(self):
        self.logger.info("notes plugin enabled")

    def after_disable(self):
        self.logger.info("notes plugin disabled")
