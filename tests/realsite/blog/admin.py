from django.contrib import admin

from .models import Book


@admin.register(Book)
class BookAdmin(admin.ModelAdmin):
    list_display = ("title", "publisher_name")

    @admin.display(description="publisher")
    def publisher_name(self, obj):
        return obj.publisher.name  # admin column
