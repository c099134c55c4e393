"""URLs of the profile pages, mounted at ``<mount>/profiles/`` in the ``instrumented`` namespace."""

from django.urls import URLPattern, path

from . import views

urlpatterns: list[URLPattern] = [
    path("arm/", views.arm, name="profile_arm"),
    path("<str:ref>/", views.profile_page, name="profile"),
    path("<str:ref>.json", views.profile_json, name="profile_json"),
]
