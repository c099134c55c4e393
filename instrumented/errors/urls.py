"""URLs of the error reference pages, mounted at ``<mount>/errors/`` in the ``instrumented`` namespace."""

from django.urls import URLPattern, path

from . import views

urlpatterns: list[URLPattern] = [
    path("", views.error_list, name="error_list"),
    path("<str:ref>/", views.error_detail, name="error_detail"),
    path("<str:ref>/traceback.txt", views.error_text, name="error_text"),
]
