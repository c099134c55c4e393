"""URLs of the dashboard and JSON API (filled in by the dashboard feature)."""

from django.urls import URLPattern

urlpatterns: list[URLPattern] = []
