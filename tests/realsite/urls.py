from django.contrib import admin
from django.urls import include, path
from wagtail import urls as wagtail_urls
from wagtail.admin import urls as wagtailadmin_urls
from wagtail.api.v2.router import WagtailAPIRouter
from wagtail.api.v2.views import PagesAPIViewSet

from instrumented import urls as instrumented_urls

from .blog import views

# Wagtail's own API: its pages endpoint with the image field runs an IN-list query per page (varying lengths).
api_router = WagtailAPIRouter("wagtailapi")
api_router.register_endpoint("pages", PagesAPIViewSet)

urlpatterns = [
    path("api/v2/", api_router.urls),
    path("django-admin/", admin.site.urls),
    path("admin/", include(wagtailadmin_urls)),
    path("instrumented/", include(instrumented_urls)),
    path("view-loop/", views.view_loop, name="view-loop"),
    path("books/", views.books_template, name="books"),
    path("books/response/", views.books_response, name="books-response"),
    path("books/jinja/", views.books_jinja, name="books-jinja"),
    path("reviews/", views.reviews, name="reviews"),
    path("places/", views.places, name="places"),
    path("shelves/", views.shelves, name="shelves"),
    path("reviews/lists/", views.review_lists, name="review-lists"),
    path("pages/specific/", views.pages_specific, name="pages-specific"),
    path("pages/child/", views.pages_child, name="pages-child"),
    path("api/books/", views.BookList.as_view(), name="api-books"),
    path("api/books-function/", views.book_list_function, name="api-books-function"),
    path("", include(wagtail_urls)),
]
