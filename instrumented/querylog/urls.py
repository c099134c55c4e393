"""URL of the DBA panel, mounted at the root of the ``instrumented`` namespace."""

from django.urls import URLPattern, path

from . import views

urlpatterns: list[URLPattern] = [
    path("dba/", views.dba_panel, name="dba"),
]
