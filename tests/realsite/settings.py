"""A real site for the call-site tests: Wagtail pages with images and a snippet, a DRF API, Jinja2 templates.

Served by gunicorn from the virtualenv's ``bin/`` (tests/stats/test_real_site.py), on SQLite, PostgreSQL or
MariaDB (``REALSITE_DB``: ``sqlite``, ``postgresql``, ``mysql``; ``REALSITE_DB_NAME``), with DEBUG off.
"""

import os
from pathlib import Path

HERE = Path(__file__).resolve().parent
DATA_DIR = Path(os.environ.get("REALSITE_DATA_DIR", "/tmp/realsite"))

SECRET_KEY = "realsite-test-only"
DEBUG = False
ALLOWED_HOSTS = ["127.0.0.1", "localhost", "testserver"]

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "wagtail.sites",
    "wagtail.users",
    "wagtail.snippets",
    "wagtail.documents",
    "wagtail.images",
    "wagtail.search",
    "wagtail.admin",
    "wagtail",
    "modelcluster",
    "taggit",
    "rest_framework",
    "wagtail.api.v2",
    "instrumented",
    "tests.realsite.blog",
]

MIDDLEWARE = [
    "instrumented.middleware.InstrumentedMiddleware",
    # Ground truth: every request's statements, from Django's own CaptureQueriesContext (blog/capture.py).
    "tests.realsite.blog.capture.CaptureMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",  # the dashboard's own CSS and JS, from the apps' static folders
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
]

ROOT_URLCONF = "tests.realsite.urls"
WSGI_APPLICATION = "tests.realsite.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.jinja2.Jinja2",
        "DIRS": [],
        "APP_DIRS": True,
        "OPTIONS": {"environment": "tests.realsite.blog.jinja.environment"},
    },
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

_ENGINE = os.environ.get("REALSITE_DB", "sqlite")
_NAME = os.environ.get("REALSITE_DB_NAME", "realsite")
if _ENGINE == "postgresql":
    DATABASES = {
        "default": {"ENGINE": "django.db.backends.postgresql", "NAME": _NAME, "USER": "postgres", "HOST": "127.0.0.1"}
    }
elif _ENGINE == "mysql":
    DATABASES = {
        "default": {
            "ENGINE": "django.db.backends.mysql",
            "NAME": _NAME,
            "USER": "root",
            "PASSWORD": "",
            "HOST": "127.0.0.1",
            "PORT": int(os.environ.get("MARIADB_PORT", "3306")),
            "OPTIONS": {"charset": "utf8mb4"},
        }
    }
else:
    DATABASES = {"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": DATA_DIR / f"{_NAME}.sqlite3"}}

# A site without a cache: Wagtail's renditions come from the database on every request (their N+1 shows).
CACHES = {"default": {"BACKEND": "django.core.cache.backends.dummy.DummyCache"}}

USE_TZ = True
STATIC_URL = "/static/"
STATIC_ROOT = DATA_DIR / "static"
WHITENOISE_USE_FINDERS = True
MEDIA_ROOT = DATA_DIR / "media"
MEDIA_URL = "/media/"
DEFAULT_AUTO_FIELD = "django.db.models.AutoField"
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]

WAGTAIL_SITE_NAME = "Real site"
WAGTAILADMIN_BASE_URL = "http://127.0.0.1"
WAGTAILSEARCH_BACKENDS = {"default": {"BACKEND": "wagtail.search.backends.database"}}

REST_FRAMEWORK = {"DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"]}

INSTRUMENTED = {
    "SERVERS": [f"127.0.0.1:{os.environ.get('INSTRUMENTED_TEST_MEMCACHED_PORT', '11211')}"],
    "KEY_PREFIX": os.environ.get("INSTRUMENTED_KEY_PREFIX", "realsite"),
    "FLUSH_INTERVAL": 0.2,
    # The shelves page has twelve N+1 templates: all are kept, each with its call site.
    "MAX_QUERIES_PER_VIEW": 16,
}
# WhiteNoise serves the apps' static folders directly (WHITENOISE_USE_FINDERS): nothing is collected.
SILENCED_SYSTEM_CHECKS = ["instrumented.W004"]
