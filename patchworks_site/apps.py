from django.apps import AppConfig


class PatchworksSiteConfig(AppConfig):
    name = "patchworks_site"
    verbose_name = "Companies & users"
