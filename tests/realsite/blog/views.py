"""The real site's own views: loops in the view, in Django and Jinja2 templates, through DRF serializers."""

from django.http import HttpResponse
from django.shortcuts import render
from django.template.response import TemplateResponse
from rest_framework import generics
from rest_framework.decorators import api_view
from rest_framework.response import Response
from wagtail.models import Page

from .models import BlogPage, Book, Place, Restaurant, Review, Shelf
from .serializers import BookSerializer
from .tweaks import tweak


def view_loop(request):
    names = []
    for book in tweak("view-loop", Book.objects.order_by("id")):
        names.append(book.author.name)  # N+1 in the view
    return HttpResponse(", ".join(names))


def books_template(request):
    books = tweak("books-template", Book.objects.order_by("id"))
    return render(request, "blog/books.html", {"books": books})  # renders books.html


def books_response(request):
    """A TemplateResponse: rendered by Django's handler after the view returned."""
    return TemplateResponse(
        request, "blog/books_response.html", {"books": tweak("books-response", Book.objects.order_by("id"))}
    )


def books_jinja(request):
    books = tweak("books-jinja", Book.objects.order_by("id"))
    return render(request, "blog/books.jinja", {"books": books})  # renders books.jinja


def reviews(request):
    books = tweak("reviews", Book.objects.order_by("id"))
    return render(request, "blog/reviews.html", {"books": books})  # renders reviews.html


def places(request):
    kinds = []
    for place in tweak("places", Place.objects.order_by("id")):
        try:
            kinds.append("pizza" if place.restaurant.serves_pizza else "restaurant")  # N+1 through the child table
        except Restaurant.DoesNotExist:
            kinds.append("place")
    return HttpResponse(", ".join(kinds))


def shelves(request):
    return render(request, "blog/shelves.html", {"shelves": tweak("shelves", Shelf.objects.order_by("id"))})  # shelves


def pages_specific(request):
    """A base Page queryset, each row's specific page read in the template: no hint can express that."""
    pages = tweak("pages-specific", Page.objects.type(BlogPage).order_by("path"))
    return render(request, "blog/pages_specific.html", {"pages": pages})  # renders pages_specific.html


def pages_child(request):
    """A base Page queryset, each row's BlogPage row followed by name: ``blogpage__author`` from the Page queryset."""
    pages = tweak("pages-child", Page.objects.type(BlogPage).order_by("path"))
    return render(request, "blog/pages_child.html", {"pages": pages})  # renders pages_child.html


def review_lists(request):
    """An N+1 whose statement differs only in its IN list's length: per book, some of its reviews by id (1, 2, 3)."""
    ids = list(Review.objects.order_by("id").values_list("book_id", "id"))
    lines = []
    for number, book in enumerate(tweak("review-lists", Book.objects.order_by("id"))):
        wanted = [pk for book_id, pk in ids if book_id == book.pk][: number % 3 + 1]
        lines.append(f"{book.title}: {len(Review.objects.filter(id__in=wanted))}")  # IN list of any length
    return HttpResponse(", ".join(lines))


class BookList(generics.ListAPIView):
    """DRF's generic list view: no frame of the site's own code is on the stack while it serializes."""

    serializer_class = BookSerializer

    def get_queryset(self):
        return tweak("api-books", Book.objects.order_by("id"))


@api_view(["GET"])
def book_list_function(request):
    books = tweak("api-books-function", Book.objects.order_by("id"))
    return Response(BookSerializer(books, many=True).data)  # serialized here
