"""Settings of benchmarks/http_read.py's site: 300 named views (http_urls.py), sessions and auth (a staff
user reads the dashboard).

Configured by the environment the benchmark sets: HTTP_BENCH_DIR (its SQLite database), INSTRUMENTED_SERVERS,
INSTRUMENTED_KEY_PREFIX, INSTRUMENTED_WINDOW_SECONDS and INSTRUMENTED_BUCKET_SECONDS. Served by gunicorn as
``django.core.wsgi:get_wsgi_application()``.
"""

import os
from pathlib import Path

#: Views of the site (benchmarks/http_urls.py).
VIEWS = 300

SECRET_KEY = "benchmark-only"
DEBUG = False
ALLOWED_HOSTS = ["*"]
ROOT_URLCONF = "http_urls"
INSTALLED_APPS = [
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "instrumented",
]
MIDDLEWARE = [
    "instrumented.middleware.InstrumentedMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
]
TEMPLATES = [{"BACKEND": "django.template.backends.django.DjangoTemplates", "APP_DIRS": True}]
DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": Path(os.environ.get("HTTP_BENCH_DIR", ".")) / "http-bench.sqlite3",
    }
}
DEFAULT_AUTO_FIELD = "django.db.models.AutoField"
USE_TZ = True
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
INSTRUMENTED = {
    "SERVERS": os.environ.get("INSTRUMENTED_SERVERS", "127.0.0.1:11211").split(","),
    "KEY_PREFIX": os.environ.get("INSTRUMENTED_KEY_PREFIX", "httpbench"),
    "WINDOW_SECONDS": int(os.environ.get("INSTRUMENTED_WINDOW_SECONDS", "300")),
    "BUCKET_SECONDS": int(os.environ.get("INSTRUMENTED_BUCKET_SECONDS", "10")),
}
