"""The real site's WSGI application, wrapped as sites often do (a header added around Django's handler):
the wrapper is never a call site."""

import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.realsite.settings")


class PoweredBy:
    """A WSGI middleware of the site's own: adds a header to every response."""

    def __init__(self, app):
        self.app = app

    def __call__(self, environ, start_response):
        def start(status, headers, exc_info=None):
            return start_response(status, [*headers, ("X-Powered-By", "realsite")], exc_info)

        return self.app(environ, start)


application = PoweredBy(get_wsgi_application())
