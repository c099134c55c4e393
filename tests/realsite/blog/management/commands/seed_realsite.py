"""Fill the real site: a blog index and a news index with eight blog pages (each an image and a snippet
author), books with publishers and reviews, places and restaurants, shelves with twelve labels, a superuser."""

import io

from django.contrib.auth import get_user_model
from django.core.files.images import ImageFile
from django.core.management.base import BaseCommand
from PIL import Image as PILImage
from wagtail.images import get_image_model
from wagtail.models import Page, Site

from tests.realsite.blog.models import (
    LABELS,
    Author,
    BlogIndexPage,
    BlogPage,
    Book,
    NewsIndexPage,
    Place,
    Publisher,
    Restaurant,
    Review,
    Shelf,
)

POSTS = 8


def _image(number: int):
    buffer = io.BytesIO()
    PILImage.new("RGB", (120, 90), (number * 30 % 255, 90, 160)).save(buffer, "PNG")
    return get_image_model().objects.create(title=f"image {number}", file=ImageFile(buffer, name=f"image{number}.png"))


class Command(BaseCommand):
    help = "Fill the real test site with pages, images, snippets, books and shelves."

    def handle(self, *args, **options):
        if BlogIndexPage.objects.exists():
            return
        root = Page.get_first_root_node()
        blog = root.add_child(instance=BlogIndexPage(title="Blog", slug="blog"))
        news = blog.add_child(instance=NewsIndexPage(title="News", slug="news"))
        site = Site.objects.get(is_default_site=True)
        site.root_page = blog
        site.save()
        authors = [Author.objects.create(name=f"author {n}") for n in range(4)]
        for number in range(POSTS):
            image = _image(number)
            image.get_rendition("fill-80x80")  # made once here: the pages then only read renditions
            page = BlogPage(title=f"Post {number}", slug=f"post-{number}", image=image, author=authors[number % 4])
            blog.add_child(instance=page)
        for number in range(6):
            news.add_child(instance=BlogPage(title=f"News {number}", slug=f"news-{number}", author=authors[number % 4]))
        publishers = [Publisher.objects.create(name=f"publisher {n}") for n in range(4)]
        for number in range(8):
            book = Book.objects.create(
                title=f"Book {number}", author=authors[number % 4], publisher=publishers[number % 4]
            )
            for review in range(3):
                Review.objects.create(book=book, approved=review != 1, text=f"review {review} of {number}")
        for number in range(6):
            if number % 2:
                Restaurant.objects.create(name=f"restaurant {number}", serves_pizza=number % 3 == 0)
            else:
                Place.objects.create(name=f"place {number}")
        labels = [[model.objects.create(name=f"{model.__name__} {n}") for n in range(6)] for model in LABELS]
        for number in range(6):
            Shelf.objects.create(name=f"shelf {number}", **{f"label{i + 1:02d}": labels[i][number] for i in range(12)})
        get_user_model().objects.create_superuser("admin", "admin@example.com", "pw")
