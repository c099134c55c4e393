"""URLs of the error pages, mounted at ``<mount>/errors/`` in the ``instrumented`` namespace: the grouped list
and the reference lookups."""

from django.urls import URLPattern, path

from . import grouped, views

urlpatterns: list[URLPattern] = [
    path("", grouped.error_list, name="error_list"),
    path("<str:ref>/", views.error_detail, name="error_detail"),
    path("<str:ref>/traceback.txt", views.error_text, name="error_text"),
]
