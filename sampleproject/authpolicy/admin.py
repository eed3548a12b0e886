from django.contrib import admin

from .models import TokenPolicy


@admin.register(TokenPolicy)
class TokenPolicyAdmin(admin.ModelAdmin):
    list_display = ["__str__", "renew_on_use", "max_tokens_per_user", "updated_at"]
