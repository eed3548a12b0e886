from django.apps import AppConfig


class SampleProjectConfig(AppConfig):
    """Holds the sample project's templates (sampleproject/templates)."""

    name = "sampleproject"
    label = "sampleproject"
