from django.apps import AppConfig


class AlphaConfig(AppConfig):
    name = "tests.plugins.alpha"
    label = "alpha"
