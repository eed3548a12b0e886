from django.apps import AppConfig


class AlphaAgainConfig(AppConfig):
    name = "tests.plugins.alpha_again"
    label = "alpha_again"
    plugin = "tests.plugins.alpha_again.apps.SameName"


from nocoplugins import Plugin  # noqa: E402


class SameName(Plugin):
    name = "alpha"
