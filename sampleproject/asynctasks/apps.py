from django.apps import AppConfig


class AsyncTasksConfig(AppConfig):
    name = "sampleproject.asynctasks"
    label = "asynctasks"
    verbose_name = "Async tasks (demo plugin)"
