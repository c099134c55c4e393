"""A self-contained Django process for the proxy tests: ORM and the querylog API through the proxy.

Run as ``python tests/proxy/django_project.py PROXY_PORT DEAD_PORT``; prints one JSON object with what it
observed. It configures its own settings, so it depends on nothing in tests/settings.py.
"""

from __future__ import annotations

import io
import json
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

import django  # noqa: E402
from django.conf import settings  # noqa: E402

PROXY_PORT, DEAD_PORT = int(sys.argv[1]), int(sys.argv[2])


def mysql(port: int, name: str = "test") -> dict:
    return {"ENGINE": "django.db.backends.mysql", "HOST": "127.0.0.1", "PORT": port, "USER": "root",
            "PASSWORD": "", "NAME": name, "OPTIONS": {"charset": "utf8mb4"}, "TEST": {"NAME": name}}  # fmt: skip


settings.configure(
    DEBUG=False,
    INSTALLED_APPS=["django.contrib.contenttypes"],
    DATABASES={
        "default": {"ENGINE": "django.db.backends.sqlite3", "NAME": ":memory:"},
        "viaproxy": mysql(PROXY_PORT, "instr_proxy_test"),
        "querylog": mysql(PROXY_PORT),
        "deadproxy": mysql(DEAD_PORT),
        "direct": mysql(int(os.environ.get("MARIADB_PORT", "3306"))),
        "sqlite": {"ENGINE": "django.db.backends.sqlite3", "NAME": ":memory:"},
    },
    USE_TZ=True,
)
django.setup()

from django.contrib.contenttypes.models import ContentType  # noqa: E402
from django.core.management import call_command  # noqa: E402
from django.core.management.base import CommandError  # noqa: E402
from django.db import connections  # noqa: E402

from instrumented import querylog  # noqa: E402
from instrumented.management.commands.instrumented_querylog import Command  # noqa: E402


def command(*args: str) -> str:
    out = io.StringIO()
    call_command(Command(), *args, stdout=out)
    return out.getvalue()


def error_of(fn, *args, **kwargs) -> str | None:
    try:
        fn(*args, **kwargs)
    except (querylog.QueryLogError, CommandError) as exc:
        return str(exc)
    return None


result: dict = {}
querylog.log_off()
querylog.reset()

# ORM with logging off: works, nothing logged.
with connections["viaproxy"].cursor() as cur:
    cur.execute("DROP TABLE IF EXISTS django_content_type")
with connections["viaproxy"].schema_editor() as editor:
    editor.create_model(ContentType)
ContentType.objects.using("viaproxy").create(app_label="off", model="m0")
result["off_count"] = ContentType.objects.using("viaproxy").filter(app_label="off").count()
result["off_status"] = querylog.status()

# Logging on: ORM statements appear in tail and digest.
result["on_status"] = querylog.log_on(seconds=20)
ContentType.objects.using("viaproxy").bulk_create([ContentType(app_label="on", model=f"m{i}") for i in range(1, 51)])
on_rows = ContentType.objects.using("viaproxy").filter(app_label="on")
result["on_models"] = sorted(on_rows.values_list("model", flat=True))
result["on_first"] = ContentType.objects.using("viaproxy").filter(app_label="on", model="m7").first().model
ContentType.objects.using("viaproxy").filter(app_label="on").delete()
result["tail"] = querylog.tail(50)
result["digest"] = querylog.digest(10)
result["status_after"] = querylog.status()

# The management command.
result["cmd_status"] = command("status")
result["cmd_tail"] = command("tail", "-n", "3")
result["cmd_digest"] = command("digest", "-n", "3")
result["cmd_off"] = command("off")
result["cmd_on"] = command("on", "--seconds", "5")
command("off")

# Failures are clear errors, never tracebacks.
result["err_missing_alias"] = error_of(querylog.status, using="nosuchalias")
result["err_dead_proxy"] = error_of(querylog.status, using="deadproxy")
result["err_sqlite"] = error_of(querylog.status, using="sqlite")
result["err_bad_n"] = error_of(querylog.tail, 0)
result["err_cmd_dead"] = error_of(command, "--database", "deadproxy", "status")
result["err_not_proxy"] = error_of(querylog.status, using="direct")
connections["viaproxy"].close()
with connections["viaproxy"].cursor() as cur:
    cur.execute("DROP TABLE IF EXISTS django_content_type")
print(json.dumps(result, default=str))
