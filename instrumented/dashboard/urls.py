"""URLs of the dashboard, its JSON API and the bookmarklet page (root of ``instrumented:``)."""

from django.urls import URLPattern, path

from . import api, errors, metrics, views

urlpatterns: list[URLPattern] = [
    path("", views.dashboard, name="dashboard"),
    path("view/", views.view_detail, name="view_detail"),
    path("bookmarklet/", views.bookmarklet_page, name="bookmarklet"),
    path("api/views", api.api_views, name="api_views"),
    path("api/view", api.api_view, name="api_view"),
    path("api/samples", api.api_samples, name="api_samples"),
    path("errors/", errors.error_list, name="error_list"),
    path("metrics", metrics.metrics, name="metrics"),
]
