"""Raw SQL literals, per database vendor, never reach memcached or the view page (issue 8, finding 5).

SQLite and MariaDB run each statement for real through the installed SQL hook; PostgreSQL has no driver
in the test environment, so its statements go through the same hook on a stand-in connection whose
``vendor`` is ``postgresql``. Every literal carries a marker that must not appear in what the flusher
wrote to memcached nor in the HTML of the view's page.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import pytest
from django.conf import settings
from django.db import connections
from django.db.utils import load_backend
from django.urls import reverse

from instrumented.codec import unpack
from instrumented.conf import get_config
from instrumented.memcached import get_store
from instrumented.stats.aggregate import Aggregator
from instrumented.stats.flusher import Flusher
from instrumented.stats.probe import Probe, current_probe, install_on, sql_wrapper
from instrumented.stats.rollup import decode_rollup
from tests.support.mysql import MARIADB

pytestmark = pytest.mark.django_db

VIEW = "lit:view"

# (statement, markers that must not survive); each statement is valid on its database.
SQLITE = [
    ("SELECT 'a\\', 'SQLITEBACKSLASHSECRET'", ["SQLITEBACKSLASHSECRET"]),
    ('SELECT "SQLITE DOUBLE QUOTED SECRET"', ["DOUBLE QUOTED SECRET"]),
    ("SELECT X'5345435245540A', 0x5EC2E7, 31415926535, 2.718281828e3",
     ["5345435245540A", "5EC2E7", "31415926535", "718281828"]),
    ("SELECT 1 /* it's */, 'SQLITECOMMENTSECRET'", ["SQLITECOMMENTSECRET"]),
]  # fmt: skip
MYSQL = [
    ("SELECT 'it\\'s MYSQLBACKSLASHSECRET'", ["MYSQLBACKSLASHSECRET"]),
    ('SELECT "MYSQLDOUBLEQUOTEDSECRET", "a\\"b MYSQLESCAPEDDQSECRET"',
     ["MYSQLDOUBLEQUOTEDSECRET", "MYSQLESCAPEDDQSECRET"]),
    ("SELECT 0xC0FFEE15, X'4D5953514C', B'1011011101', 0b1110001, 27182818284",
     ["C0FFEE15", "4D5953514C", "1011011101", "1110001", "27182818284"]),
    ("SELECT _utf8mb4'MYSQLINTRODUCERSECRET', N'MYSQLNATIONALSECRET'",
     ["MYSQLINTRODUCERSECRET", "MYSQLNATIONALSECRET"]),
    ("SELECT 1 # it's\n, 'MYSQLHASHCOMMENTSECRET'", ["MYSQLHASHCOMMENTSECRET"]),
]  # fmt: skip
POSTGRESQL = [
    ("SELECT 'a\\', 'PGBACKSLASHSECRET'", ["PGBACKSLASHSECRET"]),
    ("SELECT E'it\\'s PGESCAPESECRET'", ["PGESCAPESECRET"]),
    ("SELECT $$PG DOLLAR 'SECRET$$, $fn$ PGTAGSECRET $$ still $fn$", ["DOLLAR", "PGTAGSECRET", "still"]),
    ("SELECT X'5EC2E7AB', B'1011011101', 0x7E57AB1E, 1_234_567", ["5EC2E7AB", "1011011101", "7E57AB1E", "234"]),
]  # fmt: skip
# Identifiers are not literals: they must survive as written.
KEPT = {
    "sqlite": 'SELECT "t"."app_label" FROM "django_content_type" AS "t" WHERE "t"."id" = 7',
    "mysql": "SELECT `x`.`y` FROM (SELECT 1 AS `y`) AS `x` WHERE `x`.`y` = 7",
    "postgresql": 'SELECT "Shop Item"."name" FROM "Shop Item" WHERE "Shop Item"."id" = $1',
}


@pytest.fixture
def mysql_connection() -> Iterator[Any]:
    """A real MariaDB connection (127.0.0.1:3306) of its own alias, with the hook installed on creation."""
    pytest.importorskip("MySQLdb")
    entry = {"ENGINE": "django.db.backends.mysql", "HOST": MARIADB["host"], "PORT": MARIADB["port"],
             "USER": MARIADB["user"], "PASSWORD": MARIADB["password"], "NAME": MARIADB["database"]}  # fmt: skip
    configured = connections.configure_settings({**settings.DATABASES, "lit_mysql": entry})["lit_mysql"]
    connection = load_backend(entry["ENGINE"]).DatabaseWrapper(configured, "lit_mysql")
    try:
        connection.ensure_connection()
    except Exception as exc:  # noqa: BLE001
        pytest.skip(f"MariaDB is not reachable on 127.0.0.1:3306 as root: {exc}")
    yield connection
    connection.close()


def run_sql(statements: list[tuple[Any, str]]) -> str:
    """Run each (connection, SQL) inside one recorded request, flush it; the SQL texts stored in memcached."""
    config = get_config()
    aggregator = Aggregator(config)
    flusher = Flusher(aggregator, config)
    probe = Probe(0)
    token = current_probe.set(probe)
    try:
        for connection, sql in statements:
            if isinstance(connection, SimpleNamespace):  # the PostgreSQL stand-in: the hook, no server
                sql_wrapper(lambda *args: None, sql, None, False, {"connection": connection})
            else:
                with connection.cursor() as cursor:
                    cursor.execute(sql)
    finally:
        current_probe.reset(token)
    now = time.time()
    aggregator.record(VIEW, "lit/", "GET", 200, 1_000_000, probe, now=now)
    flusher.flush()
    store = get_store()
    bucket = int(now // config.bucket_seconds)
    keys = [store.config.keys.bucket(bucket, flusher.process_id), store.config.keys.rollup(flusher.process_id)]
    stored = store.get_many(keys) or {}
    assert set(stored) == set(keys), "the flusher wrote the bucket and the roll-up"
    bucket_value = unpack(stored[keys[0]])
    rollup = decode_rollup(stored[keys[1]])
    assert rollup is not None
    rollup_value = rollup.doc
    values = [bucket_value, rollup_value, rollup.parse_layout()]
    texts = [q[0] for view in bucket_value["views"].values() for q in view.get("q", ())]
    texts += rollup.parse_layout()["sql"]  # the roll-up is columnar: each template once
    assert len(texts) >= len(statements) // 2
    return "\n".join(texts) + json.dumps(values, ensure_ascii=False)


def page(client: Any) -> str:
    response = client.get(reverse("instrumented:view_detail"), {"name": VIEW})
    assert response.status_code == 200
    return response.content.decode()


def assert_gone(markers: list[str], *texts: str) -> None:
    for text in texts:
        survivors = [marker for marker in markers if marker in text]
        assert not survivors, f"literals survived: {survivors}"


def postgresql_connection() -> SimpleNamespace:
    connection = SimpleNamespace(alias="lit_pg", vendor="postgresql", execute_wrappers=[])
    install_on(connection)  # what connection_created does for a real one: notes the vendor
    return connection


def test_sqlite_literals_are_stripped_before_memcached_and_the_page(staff_client):
    connection = connections["default"]
    stored = run_sql([(connection, sql) for sql, _ in SQLITE] + [(connection, KEPT["sqlite"])])
    html = page(staff_client)
    assert_gone([m for _, markers in SQLITE for m in markers], stored, html)
    assert KEPT["sqlite"].replace("= 7", "= %s") in stored


def test_mysql_literals_are_stripped_before_memcached_and_the_page(staff_client, mysql_connection):
    stored = run_sql([(mysql_connection, sql) for sql, _ in MYSQL] + [(mysql_connection, KEPT["mysql"])])
    html = page(staff_client)
    assert_gone([m for _, markers in MYSQL for m in markers], stored, html)
    assert KEPT["mysql"].replace("(SELECT 1 ", "(SELECT %s ").replace("= 7", "= %s") in stored


def test_postgresql_literals_are_stripped_before_memcached_and_the_page(staff_client):
    connection = postgresql_connection()
    stored = run_sql([(connection, sql) for sql, _ in POSTGRESQL] + [(connection, KEPT["postgresql"])])
    html = page(staff_client)
    assert_gone([m for _, markers in POSTGRESQL for m in markers], stored, html)
    assert KEPT["postgresql"] in stored


@pytest.mark.parametrize("vendor", ["sqlite", "mysql", "postgresql"])
def test_a_literal_crossing_max_sql_length_is_stripped(settings, staff_client, vendor, request):
    settings.INSTRUMENTED = {**settings.INSTRUMENTED, "MAX_SQL_LENGTH": 60}
    sql = "SELECT 'short', 'CROSSINGSECRET" + "X" * 200 + "' AS long_value, 'AFTERSECRET'"
    if vendor == "sqlite":
        connection: Any = connections["default"]
    elif vendor == "mysql":
        connection = request.getfixturevalue("mysql_connection")
    else:
        connection = postgresql_connection()
    stored = run_sql([(connection, sql)])
    html = page(staff_client)
    assert_gone(["CROSSING", "XXXX", "AFTERSECRET"], stored, html)
    assert "SELECT %s, %s" in stored
