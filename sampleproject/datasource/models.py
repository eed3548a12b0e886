from django.db import models


class Collection(models.Model):
    name = models.SlugField(max_length=100, unique=True)

    class Meta:
        ordering = ["name"]

    def __str__(self):
        return self.name


class Field(models.Model):
    TYPES = [(t, t) for t in ("string", "integer", "boolean", "date", "json")]

    collection = models.ForeignKey(
        Collection, related_name="fields", on_delete=models.CASCADE
    )
    name = models.SlugField(max_length=100)
    type = models.CharField(max_length=20, choices=TYPES, default="string")

    class Meta:
        ordering = ["collection__name", "name"]
        constraints = [
            models.UniqueConstraint(
                fields=["collection", "name"], name="datasource_field_unique"
            )
        ]

    def __str__(self):
        return f"{self.collection.name}.{self.name}"
