"""URLs of the dashboard, its JSON API, the bookmarklet page and the DBA panel (root of ``instrumented:``)."""

from django.urls import URLPattern, path

from . import dba, views

urlpatterns: list[URLPattern] = [
    path("", views.dashboard, name="dashboard"),
    path("view/", views.view_detail, name="view_detail"),
    path("bookmarklet/", views.bookmarklet_page, name="bookmarklet"),
    path("dba/", dba.dba_panel, name="dba"),
    path("api/views", views.api_views, name="api_views"),
    path("api/view", views.api_view, name="api_view"),
]
