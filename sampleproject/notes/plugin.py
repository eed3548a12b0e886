"""The demo plugin: a notes board that shows each start-up hook.

Found through this module (no ``plugin`` attribute on the AppConfig).
"""

from nocoplugins import Plugin


class NotesPlugin(Plugin):
    def load(self):
        # Start-up hooks must not touch the database. Creating a cache does
        # not touch its store either, so the plugin's cache is made here.
        self.cache = self.app.cache_manager.create_cache("notes", ttl=30)
        self.logger.debug("notes plugin loaded on instance=%s", self.app.instance_id)

    def latest_notes(self):
        """The newest notes' texts, read from the database at most every 30 s.

        Every instance shares the cached list (on Redis when REDIS_URL is
        set), and a cold key is read from the database by one of them.
        """
        from .models import Note

        return self.cache.wrap(
            "latest", lambda: list(Note.objects.values_list("text", flat=True)[:20])
        )

    def install(self):
        from .models import Note

        Note.objects.create(text="Welcome! This note was written by install().")
        self.cache.delete("latest")

    def after_enable(self):
        self.logger.info("notes plugin enabled")

    def after_disable(self):
        self.logger.info("notes plugin disabled")
