from django.contrib import admin

from .models import Collection, Field


class FieldInline(admin.TabularInline):
    model = Field
    extra = 1


@admin.register(Collection)
class CollectionAdmin(admin.ModelAdmin):
    inlines = [FieldInline]
    list_display = ["name"]
