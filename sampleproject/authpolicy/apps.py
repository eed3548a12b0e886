from django.apps import AppConfig


class AuthPolicyConfig(AppConfig):
    name = "sampleproject.authpolicy"
    label = "authpolicy"
    verbose_name = "Auth policy (demo plugin)"
