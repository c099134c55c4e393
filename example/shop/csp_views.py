"""Demo-only URLs for the browser tests and screenshots.

- ``/csp/``: an ordinary page that sends a strict ``Content-Security-Policy: default-src 'self'`` itself,
  so the stats bookmarklet can be tried where inline scripts and styles are blocked. Its inline script
  is there on purpose: it must NOT run, which proves the policy is enforced.
- ``/static/...``: the demo runs with DEBUG=False under gunicorn, where nothing else serves static files
  (the admin's CSS, the dashboard's JS). A real site serves them with its web server or WhiteNoise.
"""

from django.contrib.staticfiles.views import serve
from django.http import HttpRequest, HttpResponse
from django.urls import path, re_path

STRICT_CSP = "default-src 'self'"

PAGE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>Orders (strict CSP)</title></head>
<body>
<h1>Your orders</h1>
<p>An ordinary page of the shop, served with <code>Content-Security-Policy: default-src 'self'</code>.</p>
<ul><li>Order 1001: 3 books</li><li>Order 1002: 1 book</li></ul>
<script>document.title = "inline script ran";</script>
</body></html>
"""


def strict_csp_page(request: HttpRequest) -> HttpResponse:
    """A page under ``default-src 'self'``: no inline script or style may run on it."""
    response = HttpResponse(PAGE)
    response["Content-Security-Policy"] = STRICT_CSP
    return response


def static_files(request: HttpRequest, path: str) -> HttpResponse:
    """Static files for the DEBUG=False demo (never do this in production)."""
    return serve(request, path, insecure=True)


app_name = "demo_extra"

urlpatterns = [
    path("csp/", strict_csp_page, name="strict_csp"),
    re_path(r"^static/(?P<path>.+)$", static_files, name="static"),
]
