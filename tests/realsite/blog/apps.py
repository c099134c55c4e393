from django.apps import AppConfig


class BlogConfig(AppConfig):
    name = "tests.realsite.blog"
    label = "blog"
    default_auto_field = "django.db.models.AutoField"
