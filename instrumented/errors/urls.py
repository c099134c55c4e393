"""URLs of the error reference pages, mounted at ``<mount>/errors/`` in the ``instrumented`` namespace.

The list itself (``<mount>/errors/``) is a dashboard page: see :mod:`instrumented.dashboard.urls`.
"""

from django.urls import URLPattern, path

from . import views

urlpatterns: list[URLPattern] = [
    path("<str:ref>/", views.error_detail, name="error_detail"),
    path("<str:ref>/traceback.txt", views.error_text, name="error_text"),
]
