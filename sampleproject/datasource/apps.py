from django.apps import AppConfig


class DataSourceConfig(AppConfig):
    name = "sampleproject.datasource"
    label = "datasource"
    verbose_name = "Data source (demo plugin)"
