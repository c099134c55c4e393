"""URLs of the DBA panel and of the view page's Explain, mounted at the root of the ``instrumented`` namespace."""

from django.urls import URLPattern, path

from . import explain_views, views

urlpatterns: list[URLPattern] = [
    path("dba/", views.dba_panel, name="dba"),
    path("explain/", explain_views.explain_view, name="explain"),
]
