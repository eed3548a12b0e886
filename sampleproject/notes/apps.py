from django.apps import AppConfig


class NotesConfig(AppConfig):
    name = "sampleproject.notes"
    label = "notes"
    verbose_name = "Notes (demo plugin)"
