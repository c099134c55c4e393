"""Streaming with bounded memory, 16 MB packets, concurrency, disconnects, backend down, shutdown."""

from __future__ import annotations

import json
import signal
import socket
import struct
import threading
import time

import pytest

from tests.support.mysql import ADDRESS
from tests.support.ports import free_port
from tests.support.proxy import connect, control, start_proxy

from .rawclient import MySQLError, RawClient

pymysql = pytest.importorskip("pymysql")


@pytest.fixture
def max_allowed_packet(mariadb):
    """Raise the server's max_allowed_packet (for new connections) to 64 MB for the test, then restore it."""
    conn = pymysql.connect(**mariadb, autocommit=True)
    with conn.cursor() as cur:
        cur.execute("SELECT @@GLOBAL.max_allowed_packet")
        old = cur.fetchone()[0]
        cur.execute("SET GLOBAL max_allowed_packet = %s", (max(old, 64 * 1024 * 1024),))
    yield
    with conn.cursor() as cur:
        cur.execute("SET GLOBAL max_allowed_packet = %s", (old,))
    conn.close()


def test_packets_over_16mb_both_ways(qlog, max_allowed_packet):
    control(qlog.port, "PROXY LOG ON 20")
    size = 17 * 1024 * 1024 + 123
    conn = connect(qlog.port, max_allowed_packet=64 * 1024 * 1024)
    with conn.cursor() as cur:
        cur.execute("SELECT LENGTH(%s), 'after'", ("q" * size,))  # a query of > 16 MB: several packets
        assert cur.fetchall() == ((size, "after"),)
        cur.execute(f"SELECT REPEAT('r', {size}) AS big, 'tail'")  # a row of > 16 MB
        big, tail = cur.fetchone()
        assert len(big) == size and set(big) == {"r"} and tail == "tail"
        cur.execute("SELECT 1")
        assert cur.fetchall() == ((1,),)
    conn.close()
    control(qlog.port, "PROXY LOG STATUS")  # flushes the buffered log lines
    lines = [json.loads(line) for line in qlog.log_file.read_text().splitlines()]
    long_query = [line for line in lines if line["query"].startswith("SELECT LENGTH('qqq")][-1]
    assert long_query["status"] == "ok" and long_query["query"].endswith("...")  # capped by PROXY_LOG_MAX_QUERY_LEN
    assert [line for line in lines if line["query"].startswith("SELECT REPEAT('r'")][-1]["rows"] == 1


def raw_query(port: int, sql: bytes) -> RawClient:
    """Log in with the raw client (small receive buffer), send a query, don't read the result yet."""
    client = RawClient(port)
    client.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
    client.write_packet(b"\x03" + sql)
    return client


def test_large_result_is_streamed_with_bounded_memory(mariadb, proxy_tmp):
    proxy = start_proxy(proxy_tmp)
    try:
        control(proxy.port, "PROXY LOG ON 20")  # injection path: resultset_is_needed = false must stream
        baseline = proxy.rss_kb("VmRSS")
        rows, width = 150_000, 1000  # ~150 MB of rows
        client = raw_query(proxy.port, f"SELECT REPEAT('x', {width}) FROM seq_1_to_{rows}".encode())
        time.sleep(1.5)  # a slow client: the proxy must stop reading MariaDB instead of buffering
        paused_peak = proxy.rss_kb("VmHWM")
        assert client.count_rows() == rows
        assert client.query(b"SELECT 'next'") == [[b"\x04next"]]
        client.close()
        peak = proxy.rss_kb("VmHWM")
        assert paused_peak - baseline < 32 * 1024, (baseline, paused_peak)
        assert peak - baseline < 48 * 1024, (baseline, peak)
        tail = control(proxy.port, "PROXY LOG TAIL 5")
        assert any(row["rows"] == rows for row in tail), tail
    finally:
        assert proxy.stop() == 0


def test_many_clients_at_once(qlog):
    control(qlog.port, "PROXY LOG ON 30")
    clients, per_client = 40, 25
    errors: list[BaseException] = []
    start = threading.Barrier(clients)

    def work(n: int) -> None:
        try:
            conn = connect(qlog.port)
            start.wait(10)
            with conn.cursor() as cur:
                for i in range(per_client):
                    cur.execute(f"SELECT {n} AS client, {i} AS i, CONNECTION_ID()")
                    client, index, _ = cur.fetchone()
                    assert (client, index) == (n, i)
            conn.close()
        except BaseException as exc:  # noqa: BLE001 - collected and re-raised in the test thread
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, errors[:3]
    control(qlog.port, "PROXY LOG STATUS")  # flushes the buffered log lines
    lines = [json.loads(line) for line in qlog.log_file.read_text().splitlines()]
    ours = [line for line in lines if line["query"].endswith("AS i, CONNECTION_ID()")]
    assert len(ours) == clients * per_client
    assert len({line["thread_id"] for line in ours}) == clients
    digest = {row["digest"]: row for row in control(qlog.port, f"PROXY LOG DIGEST {clients * per_client}")}
    assert digest["select ? as client, ? as i, connection_id()"]["count"] == clients * per_client


def test_client_disconnect_mid_result(qlog, mariadb):
    client = raw_query(qlog.port, b"SELECT REPEAT('y', 1000), 'midresult' FROM seq_1_to_200000")
    client.sock.recv(65536)
    client.sock.close()
    assert control(qlog.port, "SELECT 'still serving' AS s") == [{"s": "still serving"}]
    direct = pymysql.connect(**mariadb)
    deadline = time.monotonic() + 10
    while True:  # the backend connection of the vanished client goes away too
        with direct.cursor() as cur:
            cur.execute("SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE INFO LIKE '%''midresult''%'"
                        " AND INFO NOT LIKE '%PROCESSLIST%'")  # fmt: skip
            if cur.fetchone()[0] == 0:
                break
        assert time.monotonic() < deadline, "backend connection still running the query"
        time.sleep(0.1)
    direct.close()


def test_server_kills_the_connection_mid_result(qlog, mariadb):
    control(qlog.port, "PROXY LOG ON 20")
    client = raw_query(qlog.port, b"SELECT seq, REPEAT('z', 1000) FROM seq_1_to_1000000")
    client.read_packet()  # the result has started
    direct = pymysql.connect(**mariadb)
    with direct.cursor() as cur:
        cur.execute(f"KILL {client.thread_id}")  # the greeting's thread id is the server's
    direct.close()

    def read_until_cut() -> None:
        while True:
            client.read_packet()

    with pytest.raises((MySQLError, ConnectionError)):
        read_until_cut()
    client.sock.close()
    assert control(qlog.port, "SELECT 'alive' AS s") == [{"s": "alive"}]


def test_backend_down_gives_a_clean_mysql_error(mariadb, proxy_tmp):
    dead = free_port()
    proxy = start_proxy(proxy_tmp, backends=[f"127.0.0.1:{dead}"])
    try:
        for _ in range(2):
            with pytest.raises(pymysql.err.OperationalError) as info:
                connect(proxy.port)
            assert info.value.args[0] == 2003 and "all backends are down" in info.value.args[1]
        assert proxy.proc.poll() is None
        lines = [line for line in proxy.stderr().splitlines() if "all backends are down" in line]
        # One line per failed connection (the port probe of the fixture is one too).
        ports = {line.split("connection from ")[1].split(":")[1] for line in lines}
        assert len(lines) >= 2 and len(ports) == len(lines)
    finally:
        assert proxy.stop() == 0


def test_second_backend_used_when_the_first_is_down(mariadb, proxy_tmp):
    proxy = start_proxy(proxy_tmp, backends=[f"127.0.0.1:{free_port()}", ADDRESS])
    try:
        assert control(proxy.port, "SELECT 'failover' AS s") == [{"s": "failover"}]
    finally:
        assert proxy.stop() == 0


def test_sigterm_shuts_down_cleanly_with_clients_connected(mariadb, proxy_tmp):
    proxy = start_proxy(proxy_tmp)
    conn = connect(proxy.port)
    with conn.cursor() as cur:
        cur.execute("SELECT 1")
    proxy.proc.send_signal(signal.SIGTERM)
    assert proxy.proc.wait(10) == 0
    assert "shutting down" in proxy.stderr() and "Traceback" not in proxy.stderr()
    with pytest.raises(pymysql.err.OperationalError), conn.cursor() as cur:
        cur.execute("SELECT 1")


def test_ssl_request_is_refused_cleanly(qlog):
    sock = socket.create_connection(("127.0.0.1", qlog.port), 5)
    greeting = sock.recv(65536)
    pos = greeting.index(b"\x00", 5) + 1
    caps = struct.unpack_from("<H", greeting, pos + 13)[0]
    assert not caps & 0x800 and not caps & 0x20  # SSL and compression stripped from the greeting
    ssl_request = struct.pack("<IIB", 0x200 | 0x8000 | 0x800, 1 << 24, 33) + b"\x00" * 23
    sock.sendall(len(ssl_request).to_bytes(3, "little") + b"\x01" + ssl_request)
    reply = sock.recv(65536)
    assert reply[4] == 0xFF and b"SSL is not supported" in reply
    sock.close()


@pytest.mark.parametrize("logging", [False, True])
def test_pipelined_commands_are_answered_in_order(qlog, logging):
    if logging:
        control(qlog.port, "PROXY LOG ON 20")
    client = RawClient(qlog.port)
    batch = b""
    for i in range(50):  # sent in one write, before reading any answer
        payload = b"\x03" + f"SELECT {i}, REPEAT('p', {i * 100})".encode()
        batch += len(payload).to_bytes(3, "little") + b"\x00" + payload
    client.sock.sendall(batch)
    for i in range(50):
        first, _ = client.read_packet()
        assert first[0] == 2
        client.read_packet(), client.read_packet(), client.read_packet()  # two column definitions, EOF
        row, _ = client.read_packet()
        assert row[1 : 1 + len(str(i))] == str(i).encode()
        assert client.read_packet()[0][0] == 0xFE
    client.close()


@pytest.mark.parametrize("deprecate_eof", [False, True])
def test_field_list_and_init_db(qlog, mariadb, deprecate_eof):
    direct = pymysql.connect(**mariadb, autocommit=True)
    with direct.cursor() as cur:
        cur.execute("CREATE TABLE IF NOT EXISTS instr_proxy_fields (a INT, b TEXT, c DATE)")
    control(qlog.port, "PROXY LOG ON 20")
    client = RawClient(qlog.port, deprecate_eof=deprecate_eof)
    assert client.field_list(b"instr_proxy_fields") == 3
    with pytest.raises(MySQLError):
        client.field_list(b"instr_proxy_no_such_table")
    client.write_packet(b"\x02mysql")  # COM_INIT_DB
    assert client.read_packet()[0][0] == 0
    assert client.query(b"SELECT DATABASE()") == [[b"\x05mysql"]]
    client.close()
    with direct.cursor() as cur:
        cur.execute("DROP TABLE instr_proxy_fields")
    direct.close()
    tail = control(qlog.port, "PROXY LOG TAIL 5")
    assert any(row["query"] == "SELECT DATABASE()" and row["db"] == "mysql" for row in tail), tail


def test_garbage_from_a_client_gets_an_error_not_a_crash(qlog):
    sock = socket.create_connection(("127.0.0.1", qlog.port), 5)
    sock.recv(65536)  # greeting
    junk = b"\x00\x00\x00\x00" + b"not a handshake"  # capabilities without PROTOCOL_41
    sock.sendall(len(junk).to_bytes(3, "little") + b"\x01" + junk)
    reply = sock.recv(65536)
    assert reply[4] == 0xFF and b"malformed handshake" in reply
    sock.close()
    sock = socket.create_connection(("127.0.0.1", qlog.port), 5)
    sock.close()  # gone before the handshake
    assert control(qlog.port, "SELECT 'ok' AS s") == [{"s": "ok"}]
    assert "Traceback" not in qlog.stderr()
