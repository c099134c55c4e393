"""The real site's models: Wagtail pages with an image and a snippet author, books for a DRF API and for
templates (a publisher, filtered reviews), multi-table inheritance, and a shelf with twelve labels."""

from django.db import models
from wagtail.api import APIField
from wagtail.fields import RichTextField
from wagtail.images.api.fields import ImageRenditionField
from wagtail.models import Page
from wagtail.snippets.models import register_snippet


@register_snippet
class Author(models.Model):
    """A snippet: edited in Wagtail's admin, chosen on blog pages."""

    name = models.CharField(max_length=100)

    def __str__(self) -> str:
        return self.name


class BlogIndexPage(Page):
    """Lists its blog pages (a queryset of BlogPage, built in get_context)."""

    intro = RichTextField(blank=True)

    def get_context(self, request, *args, **kwargs):
        from .tweaks import tweak

        context = super().get_context(request, *args, **kwargs)
        context["posts"] = tweak("index-posts", BlogPage.objects.live().child_of(self).order_by("path"))
        return context


class NewsIndexPage(Page):
    """Lists its children the Wagtail way: ``self.get_children().live().specific()``, rows of any page type."""

    def get_context(self, request, *args, **kwargs):
        from .tweaks import tweak

        context = super().get_context(request, *args, **kwargs)
        context["children"] = tweak("news-children", self.get_children().live().specific().order_by("path"))
        return context


class BlogPage(Page):
    image = models.ForeignKey("wagtailimages.Image", null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    author = models.ForeignKey(Author, null=True, blank=True, on_delete=models.SET_NULL, related_name="posts")
    body = RichTextField(blank=True)

    # Wagtail's API (tests/realsite/urls.py): the image, and a rendition of it, per page.
    api_fields = [
        APIField("image"),
        APIField("thumbnail", serializer=ImageRenditionField("fill-80x80", source="image")),
    ]


class Publisher(models.Model):
    name = models.CharField(max_length=100)

    def __str__(self) -> str:
        return self.name


class Book(models.Model):
    title = models.CharField(max_length=100)
    author = models.ForeignKey(Author, on_delete=models.CASCADE, related_name="books")
    publisher = models.ForeignKey(Publisher, on_delete=models.CASCADE, related_name="books")

    def __str__(self) -> str:
        return self.title

    @property
    def approved_reviews(self):
        """The approved reviews: prefetched into an attribute when the view did, else a query per book."""
        prefetched = getattr(self, "approved_reviews_list", None)
        if prefetched is not None:
            return prefetched
        return self.reviews.filter(approved=True)  # filtered manager


class Review(models.Model):
    book = models.ForeignKey(Book, on_delete=models.CASCADE, related_name="reviews")
    approved = models.BooleanField(default=False)
    text = models.CharField(max_length=200)

    def __str__(self) -> str:
        return self.text


class Place(models.Model):
    name = models.CharField(max_length=100)

    def __str__(self) -> str:
        return self.name


class Restaurant(Place):
    serves_pizza = models.BooleanField(default=False)


def _label(number: int) -> type:
    return type(
        f"Label{number:02d}", (models.Model,), {"__module__": __name__, "name": models.CharField(max_length=50)}
    )


LABELS = [_label(number) for number in range(1, 13)]
for _model in LABELS:
    globals()[_model.__name__] = _model


class Shelf(models.Model):
    """Twelve labels, each its own table: twelve N+1 templates in one view."""

    name = models.CharField(max_length=50)
    label01 = models.ForeignKey("Label01", on_delete=models.CASCADE, related_name="+")
    label02 = models.ForeignKey("Label02", on_delete=models.CASCADE, related_name="+")
    label03 = models.ForeignKey("Label03", on_delete=models.CASCADE, related_name="+")
    label04 = models.ForeignKey("Label04", on_delete=models.CASCADE, related_name="+")
    label05 = models.ForeignKey("Label05", on_delete=models.CASCADE, related_name="+")
    label06 = models.ForeignKey("Label06", on_delete=models.CASCADE, related_name="+")
    label07 = models.ForeignKey("Label07", on_delete=models.CASCADE, related_name="+")
    label08 = models.ForeignKey("Label08", on_delete=models.CASCADE, related_name="+")
    label09 = models.ForeignKey("Label09", on_delete=models.CASCADE, related_name="+")
    label10 = models.ForeignKey("Label10", on_delete=models.CASCADE, related_name="+")
    label11 = models.ForeignKey("Label11", on_delete=models.CASCADE, related_name="+")
    label12 = models.ForeignKey("Label12", on_delete=models.CASCADE, related_name="+")

    def __str__(self) -> str:
        return self.name
