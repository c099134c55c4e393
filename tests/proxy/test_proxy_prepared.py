"""Prepared-statement texts through query_log.lua on the host: what the script may keep stays bounded.

The script keeps each statement's text (``inj.query`` of its COM_STMT_PREPARE) until COM_STMT_CLOSE; the
host caps what it hands over per statement and per connection (instrumented/proxy/prepared.py).
Memory is measured where the copies live: the host's Lua state, in-process, after a full collection.
"""

import asyncio
import json

import pytest

pytest.importorskip("lupa")

from tests.support.proxy import SCRIPT, ThreadedProxy

from .rawclient import RawClient

STATEMENTS = 40
TEXT = 256 * 1024  # 40 x 256 KB = 10 MB of statement text, ten times the per-connection allowance
ALLOWANCE = 1024 * 1024  # prepared.CONNECTION_BYTES
TEXT_LIMIT = 64 * 1024  # prepared.TEXT_LIMIT


def lua_kib(proxy: ThreadedProxy) -> float:
    """KiB in use by the host's Lua state, collected twice, measured on the proxy's own loop thread."""

    async def measure() -> float:
        run = proxy.server.lua.runtime.execute
        return run(b'collectgarbage("collect") collectgarbage("collect") return collectgarbage("count")')

    return asyncio.run_coroutine_threadsafe(measure(), proxy.loop).result(10)


def big_statement(i: int) -> bytes:
    return b"SELECT ? + %d /* " % i + b"x" * TEXT + b" */"


def last_logged_query(client: RawClient, log_file) -> str:
    client.query(b"PROXY LOG STATUS")  # flushes the log file
    return json.loads(log_file.read_text().splitlines()[-1])["query"]


@pytest.fixture
def proxy(mariadb, tmp_path, monkeypatch):
    log_file = tmp_path / "query_log.jsonl"
    monkeypatch.setenv("PROXY_LOG_FILE", str(log_file))
    monkeypatch.setenv("PROXY_LOG_MAX_QUERY_LEN", str(2 * TEXT))  # so the log shows what the script kept
    proxy = ThreadedProxy(SCRIPT, io_paths=[str(log_file)])
    proxy.log_file = log_file
    yield proxy
    proxy.stop()


def test_prepared_texts_the_script_keeps_are_bounded_per_connection(proxy):
    client = RawClient(proxy.port)
    try:
        before = lua_kib(proxy)
        ids = [client.prepare(big_statement(i))[0] for i in range(STATEMENTS)]
        assert client.execute(ids[-1], [2]) == [b"\x00\x00" + (2 + STATEMENTS - 1).to_bytes(8, "little")]
        assert (lua_kib(proxy) - before) * 1024 < 2 * ALLOWANCE
        client.write_packet(b"\x1f")  # COM_RESET_CONNECTION: the statements end, the script drops its copies
        assert client.read_packet()[0][:1] == b"\x00"
        for i in range(STATEMENTS):
            client.prepare(big_statement(i))
        assert (lua_kib(proxy) - before) * 1024 < 2 * ALLOWANCE
    finally:
        client.close()


@pytest.mark.parametrize("command", ["reset", "change_user"])
def test_reset_and_change_user_give_every_share_back(proxy, command):
    client = RawClient(proxy.port)
    try:
        client.query(b"PROXY LOG ON 60")
        ids = [client.prepare(big_statement(i))[0] for i in range(STATEMENTS)]  # the allowance is used up
        client.execute(ids[-1], [1])
        assert "text not kept by the proxy" in last_logged_query(client, proxy.log_file)
        if command == "reset":
            client.write_packet(b"\x1f")  # COM_RESET_CONNECTION
            assert client.read_packet()[0][:1] == b"\x00"
        else:
            client.change_user(b"root", b"", b"test")
        again = client.prepare(big_statement(7))[0]
        client.execute(again, [1])
        assert last_logged_query(client, proxy.log_file).startswith("SELECT ? + 7 /* xxx")  # kept: shares came back
    finally:
        client.close()


def test_closing_statements_gives_their_share_back(proxy):
    client = RawClient(proxy.port)
    try:
        client.query(b"PROXY LOG ON 60")
        ids = [client.prepare(big_statement(i))[0] for i in range(STATEMENTS)]
        client.execute(ids[0], [1])
        first = last_logged_query(client, proxy.log_file)
        assert first.startswith("SELECT ? + 0 /* xxx")
        assert first.endswith(f"... (truncated by the proxy: {len(big_statement(0))} bytes)")
        assert len(first) < TEXT_LIMIT + 100
        client.execute(ids[-1], [1])
        assert "text not kept by the proxy" in last_logged_query(client, proxy.log_file)
        for stmt_id in ids:
            client.close_stmt(stmt_id)
        again = client.prepare(big_statement(99))[0]
        client.execute(again, [1])
        assert last_logged_query(client, proxy.log_file).startswith("SELECT ? + 99 /* xxx")
    finally:
        client.close()
