"""Test settings: the demo site's, pointed at the memcached that the test run starts."""

import os
import uuid

from demo.settings import *  # noqa: F403

from tests.support.ports import free_port

# Subprocess servers (gunicorn, uvicorn) import these settings too: the env vars keep them on the same memcached.
MEMCACHED_PORT = int(os.environ.setdefault("INSTRUMENTED_TEST_MEMCACHED_PORT", str(free_port())))
KEY_PREFIX = os.environ.setdefault("INSTRUMENTED_KEY_PREFIX", "t" + uuid.uuid4().hex[:8])

DATABASES = {
    "default": {"ENGINE": "django.db.backends.sqlite3", "NAME": DATA_DIR / "test-default.sqlite3"},  # noqa: F405
    "analytics": {"ENGINE": "django.db.backends.sqlite3", "NAME": DATA_DIR / "test-analytics.sqlite3"},  # noqa: F405
}

# Several memcached servers (the scale-out tests): a comma-separated "host:port" list.
SERVERS = os.environ.get("INSTRUMENTED_TEST_MEMCACHED_SERVERS", f"127.0.0.1:{MEMCACHED_PORT}").split(",")
# A URLconf of many views for the scale test's servers.
ROOT_URLCONF = os.environ.get("INSTRUMENTED_TEST_URLCONF", ROOT_URLCONF)  # noqa: F405
# The cached view's shared cache: the run's memcached, under the per-test prefix (subprocess servers get it by env).
CACHES["shared"]["LOCATION"] = f"127.0.0.1:{MEMCACHED_PORT}"  # noqa: F405

INSTRUMENTED = {
    "SERVERS": SERVERS,
    "KEY_PREFIX": KEY_PREFIX,
    "FLUSH_INTERVAL": float(os.environ.get("INSTRUMENTED_TEST_FLUSH_INTERVAL", "0.2")),
    "BREAKER_COOLDOWN": 0.5,
    "BREAKER_MAX_COOLDOWN": 2.0,
    # The profile tests run servers with each sampler (pyinstrument is installed by the test extra).
    "PROFILE_ENGINE": os.environ.get("INSTRUMENTED_TEST_PROFILE_ENGINE", "builtin"),
}

PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
