from django.db import models


class InstallCount(models.Model):
    database = models.CharField(max_length=100)
