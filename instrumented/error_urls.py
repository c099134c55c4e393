"""URLs of the error reference pages (filled in by the errors feature)."""

from django.urls import URLPattern

urlpatterns: list[URLPattern] = []
