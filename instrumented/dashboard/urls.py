"""URLs of the dashboard, its JSON API and the bookmarklet page (root of ``instrumented:``)."""

from django.urls import URLPattern, path

from . import views

urlpatterns: list[URLPattern] = [
    path("", views.dashboard, name="dashboard"),
    path("view/", views.view_detail, name="view_detail"),
    path("bookmarklet/", views.bookmarklet_page, name="bookmarklet"),
    path("api/views", views.api_views, name="api_views"),
    path("api/view", views.api_view, name="api_view"),
]
