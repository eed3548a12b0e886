"""Found through the app's plugin module (no AppConfig attribute)."""

from django.db import connection

from ..recording import RecordingPlugin


class AlphaPlugin(RecordingPlugin):
    def install(self):
        super().install()
        # install() may use the database: count installs per database.
        from .models import InstallCount

        InstallCount.objects.create(database=connection.alias)
