"""URLs of the demo shop."""

from django.urls import path

from . import finding_views, sample_views, views

app_name = "shop"

urlpatterns = [
    path("", views.home, name="home"),
    path("fast/", views.fast, name="fast"),
    path("catalogue/", views.catalogue, name="catalogue"),
    path("n-plus-one/", views.n_plus_one, name="n_plus_one"),
    path("authors/", finding_views.authors, name="authors"),
    path("duplicates/", finding_views.duplicates, name="duplicates"),
    path("slow-query/", finding_views.slow_query, name="slow_query"),
    path("cached/", finding_views.cached, name="cached"),
    path("outgoing/", finding_views.outgoing, name="outgoing"),
    path("shelves/", finding_views.shelves, name="shelves"),
    path("page-views/", finding_views.page_views, name="page_views"),
    path("commented/", finding_views.commented, name="commented"),
    path("books/<int:book_id>/", views.book, name="book"),
    path("slow/", views.slow, name="slow"),
    path("fail/", views.fail, name="fail"),
    path("stream/", views.stream, name="stream"),
    path("async/", views.async_view, name="async"),
    path("burn/", views.burn, name="burn"),
    path("async-burn/", views.async_burn, name="async_burn"),
    path("planted/", sample_views.planted, name="planted"),
    path("many-statements/", sample_views.many_statements, name="many_statements"),
]
