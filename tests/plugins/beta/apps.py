from django.apps import AppConfig


class BetaConfig(AppConfig):
    """Names its plugin class through the ``plugin`` attribute."""

    name = "tests.plugins.beta"
    label = "beta"
    plugin = "tests.plugins.beta.plugins.BetaPlugin"
