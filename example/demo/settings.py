"""Settings of the demo site: DEBUG off, as in production, with django-instrumented installed."""

import os
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent.parent
DATA_DIR = Path(os.environ.get("DEMO_DATA_DIR", BASE_DIR))

SECRET_KEY = os.environ.get("DEMO_SECRET_KEY", "demo-only-not-secret-change-me")
DEBUG = False
ALLOWED_HOSTS = ["127.0.0.1", "localhost", "[::1]", "testserver"]

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "instrumented",
    "shop",
]

MIDDLEWARE = [
    "instrumented.middleware.InstrumentedMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "demo.urls"
WSGI_APPLICATION = "demo.wsgi.application"
ASGI_APPLICATION = "demo.asgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
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

# Two databases, so the per-alias SQL numbers have something to show.
DATABASES = {
    "default": {"ENGINE": "django.db.backends.sqlite3", "NAME": DATA_DIR / "demo.sqlite3"},
    "analytics": {"ENGINE": "django.db.backends.sqlite3", "NAME": DATA_DIR / "analytics.sqlite3"},
}
DATABASE_ROUTERS = ["shop.routers.AnalyticsRouter"]

# The DBA panel (/instrumented/dba/): bin/demo starts instrumented-proxy in front of a local MariaDB and
# sets DEMO_QUERYLOG_PORT. The alias only carries PROXY LOG statements; the router keeps models off it.
if os.environ.get("DEMO_QUERYLOG_PORT"):
    try:
        import MySQLdb  # noqa: F401 - mysqlclient, when installed
    except ImportError:
        import pymysql  # the demo extra's pure-Python driver, standing in for mysqlclient

        pymysql.install_as_MySQLdb()
    DATABASES["querylog"] = {
        "ENGINE": "django.db.backends.mysql",
        "HOST": "127.0.0.1",
        "PORT": int(os.environ["DEMO_QUERYLOG_PORT"]),
        "USER": "root",
        "PASSWORD": "",
        "NAME": "test",
        "OPTIONS": {"connect_timeout": 3},
    }

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
STATIC_URL = "static/"
STATIC_ROOT = DATA_DIR / "static"
USE_TZ = True

INSTRUMENTED = {
    "SERVERS": os.environ.get("INSTRUMENTED_SERVERS", "127.0.0.1:11211").split(","),
    "KEY_PREFIX": os.environ.get("INSTRUMENTED_KEY_PREFIX", "demo"),
    # Every statement names its view for the DBA panel's digest (through the proxy).
    "SQL_COMMENT": True,
}

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "loggers": {"instrumented": {"handlers": ["console"], "level": "WARNING"}},
}
