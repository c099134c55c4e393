"""Settings for the error-reference server tests: tests.settings plus the test-only fault injection.

``DJANGO_SETTINGS_MODULE=tests.support.fault_settings``. Secrets for the leak tests come from the environment.
"""

import os

from tests.settings import *  # noqa: F403
from tests.settings import MIDDLEWARE
from tests.support.faults import SESSION_ENGINE, with_fault_injection  # noqa: F401 - a setting

MIDDLEWARE = with_fault_injection(MIDDLEWARE)

# Planted secrets, under names Django's own filter does not hide.
SENTRY_DSN = os.environ.get("SENTRY_DSN", "")
DATABASE_URL = os.environ.get("DATABASE_URL", "")
SLACK_WEBHOOK = os.environ.get("SLACK_WEBHOOK", "")
