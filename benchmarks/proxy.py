"""Proxy overhead: direct MariaDB vs a plain TCP relay (socat, nodelay) vs instrumented-proxy, logging off/on.

Measures per-query latency (SELECT 1, a primary-key lookup, a 1000-row select) in interleaved batches,
and 8-client throughput (processes, point lookups). Prints medians and the budgets: the host's CPU per
statement (in-process) <= 12 µs with logging on and <= 6 µs off, 8-client throughput with logging off
>= 0.9 x the relay's (issue 12), added latency with logging on <= 1.5 x the relay's (ARCHITECTURE §7),
and the Lua script's own share of the CPU (``--only cpu`` prints just the CPU part; no MariaDB needed).

Also: the Lua normaliser's CPU time on multi-row INSERTs of 8 KB, 64 KB and 1 MB (it must grow linearly),
and a second client's SELECT 1 latency while a non-admin floods 12 MB ``PROXY LOG`` statements.

    python benchmarks/proxy.py [--rounds 15] [--batch 300] [--seconds 3] [--only normalize|flood|cpu|instructions]
        [--tree PATH ...]

``--only instructions`` counts the host's CPU instructions per statement with callgrind (exact on a loaded
machine), for this checkout or each ``--tree`` (compare a change with a worktree of the commit before it).

Needs MariaDB on 127.0.0.1:3306 or ``$MARIADB_PORT`` (root, no password, database ``test``; ``bin/with-mariadb``
starts a private one), socat, mysqlclient, lupa. benchmarks/proxy_concurrency.py measures the proxy under sysbench
at 1, 8 and 32 clients beside the original mysql-proxy 0.8.5.
"""

from __future__ import annotations

import argparse
import gc
import itertools
import multiprocessing as mp
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import MySQLdb

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "mysql_proxy_lua" / "query_log.lua"
DB = {"host": "127.0.0.1", "user": "root", "passwd": "", "db": "test"}
#: The MariaDB port, read as bin/with-mariadb and the tests read it.
DB_PORT = int(os.environ.get("MARIADB_PORT", "3306"))
TABLE = "instrumented_bench_proxy"

QUERIES = {
    "select_1": ("SELECT 1", 1),
    "point_lookup": (f"SELECT id, v FROM {TABLE} WHERE id = 417", 1),
    "rows_1000": (f"SELECT id, v FROM {TABLE}", 1000),
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listening on {port}")


def connect(port: int) -> MySQLdb.Connection:
    return MySQLdb.connect(port=port, **DB)


def setup_table() -> None:
    conn = connect(DB_PORT)
    cur = conn.cursor()
    cur.execute(f"CREATE TABLE IF NOT EXISTS {TABLE} (id INT PRIMARY KEY, v VARCHAR(100))")
    cur.execute(f"SELECT COUNT(*) FROM {TABLE}")
    if cur.fetchone()[0] != 1000:
        cur.execute(f"DELETE FROM {TABLE}")
        cur.executemany(
            f"INSERT INTO {TABLE} VALUES (%s, %s)", [(i, f"value {i:06d} " + "x" * 40) for i in range(1000)]
        )
    conn.commit()
    conn.close()


def batch_latency_us(conn: MySQLdb.Connection, sql: str, expected: int, n: int) -> list[float]:
    """Per-query round-trip times (µs) of n executions; the median over all samples shrugs off noisy neighbours."""
    cur = conn.cursor()
    clock = time.perf_counter_ns
    samples = []
    for _ in range(n):
        start = clock()
        cur.execute(sql)
        rows = cur.fetchall()
        samples.append((clock() - start) / 1000)
    assert len(rows) == expected, (sql, len(rows))
    return samples


def _throughput_worker(port: int, seconds: float, start_at: float, out: mp.Queue) -> None:
    conn = connect(port)
    cur = conn.cursor()
    sql = QUERIES["point_lookup"][0]
    while time.time() < start_at:
        time.sleep(0.001)
    deadline = start_at + seconds
    count = 0
    while time.time() < deadline:
        cur.execute(sql)
        cur.fetchall()
        count += 1
    conn.close()
    out.put(count)


def throughput(port: int, clients: int, seconds: float) -> float:
    out: mp.Queue = mp.Queue()
    start_at = time.time() + 0.5
    procs = [mp.Process(target=_throughput_worker, args=(port, seconds, start_at, out)) for _ in range(clients)]
    for proc in procs:
        proc.start()
    total = sum(out.get(timeout=seconds + 30) for _ in procs)
    for proc in procs:
        proc.join()
    return total / seconds


def start_relay(port: int) -> subprocess.Popen:
    """socat as a plain TCP relay to MariaDB (a process per connection, nodelay on both legs; a listen backlog of
    128 like mysql-proxy's (asyncio's is 100), not socat's 5, which drops the SYNs of 32 clients connecting at once)."""
    listen = f"TCP-LISTEN:{port},bind=127.0.0.1,reuseaddr,fork,nodelay,backlog=128"
    return subprocess.Popen(["socat", listen, f"TCP:127.0.0.1:{DB_PORT},nodelay"])


def start_host(port: int, log_file: Path, extra_args: tuple[str, ...] = ()) -> subprocess.Popen:
    """This project's proxy host (``python -m instrumented.proxy``) with query_log.lua, logging to ``log_file``."""
    env = dict(os.environ, PROXY_LOG_FILE=str(log_file), PROXY_LOG_MAX_SECONDS="36000")
    return subprocess.Popen(
        [sys.executable, "-m", "instrumented.proxy", "--proxy-address", f"127.0.0.1:{port}",
         "--proxy-backend-addresses", f"127.0.0.1:{DB_PORT}", "--proxy-lua-script", str(SCRIPT),
         "--log-level", "warning", *extra_args],
        cwd=ROOT, env=env,
    )  # fmt: skip


def stop(*procs: subprocess.Popen) -> None:
    """SIGTERM, then SIGKILL what has not exited within 10 s."""
    for proc in procs:
        proc.send_signal(signal.SIGTERM)
    for proc in procs:
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()


def set_logging(port: int, on: bool) -> None:
    conn = connect(port)
    cur = conn.cursor()
    cur.execute("PROXY LOG ON 3600" if on else "PROXY LOG OFF")
    cur.fetchall()
    conn.close()


class _NullTransport:
    """Stands in for both sockets: measures the host's own code, without the kernel and the other processes."""

    def write(self, data):
        pass

    def is_closing(self):
        return False

    def pause_reading(self):
        pass

    def resume_reading(self):
        pass


def _answer_questions(session) -> None:
    """Answer the script's own questions to the server (``SELECT CURRENT_USER()[, DATABASE()]``) as MariaDB would."""
    from instrumented.proxy.mysql import packets as p

    while session.inj is not None and session.inj.packet.startswith(b"\x03SELECT CURRENT_USER()"):
        columns = [(b"CURRENT_USER()", 253), (b"DATABASE()", 253)]
        if b"DATABASE()" not in session.inj.packet:
            columns = columns[:1]
        row = [b"root@localhost", b"test"][: len(columns)]
        session.server_data(p.frame_all(p.text_resultset(columns, [row], False), 1)[0])


#: The Lua entry points of the host (``bootstrap.lua``'s), each call one crossing from Python into Lua.
ENTRY_POINTS = (
    "call",
    "read_query",
    "pop",
    "read_query_result",
    "streamed_result",
    "set",
    "set_address",
    "get_connection",
    "response",
)


def _count_crossings(lua) -> dict[str, int]:
    """Wrap the host's Lua entry points (before any connection looks them up) with call counters."""
    counts = dict.fromkeys(ENTRY_POINTS, 0)

    def counted(name, fn):
        def wrapper(*args):
            counts[name] += 1
            return fn(*args)

        return wrapper

    for name in ENTRY_POINTS:
        if hasattr(lua, name):
            setattr(lua, name, counted(name, getattr(lua, name)))
    return counts


def host_code_us(script: Path | None, logging_on: bool, n: int = 30000, sql: str = "SELECT 1",
                 count_crossings: bool = False, around=None) -> tuple[float, float, float]:  # fmt: skip
    """CPU time of the host's Python + Lua code per statement (parse, hooks, tracking), in-process, the
    Python->Lua crossings per statement and the Python bytecodes run per statement (both counted, exact; 0 unless
    ``count_crossings``: counting costs time).
    ``sql`` may hold ``%d``: then every statement has a literal of its own (the digest's normaliser cannot
    reuse an earlier answer, as under sysbench). The log goes to the file PROXY_LOG_FILE names. ``around(when)`` is
    called with "start" right before the statements and "end" right after them (``instructions`` counts them)."""
    from instrumented.proxy.connection import ProxyConnection
    from instrumented.proxy.mysql import packets as p
    from instrumented.proxy.phases import IDLE
    from instrumented.proxy.server import ProxyServer

    server = ProxyServer(("127.0.0.1", 0), [("127.0.0.1", DB_PORT)], str(script) if script else None,
                         io_paths=[os.environ["PROXY_LOG_FILE"]])  # fmt: skip
    counts = _count_crossings(server.lua) if count_crossings and server.lua is not None else {}
    conn = ProxyConnection(server)  # the client-side glue; its session is the Sans-IO state machine
    session = conn.session
    conn.client = conn.backend = _NullTransport()
    session.to_client = session.to_server = conn.client.write
    session.phase = IDLE
    if around is not None:  # counted: clocks that do not depend on callgrind's pace (see instructions_report)
        import random

        from instrumented.proxy import session as session_module

        steps = random.Random(1)  # the host's timings: 20-400 µs apart, the same sequence in every run, as cheap to
        ticks = itertools.accumulate(steps.randrange(20_000, 400_000, 1000) for _ in range(4 * n + 10_000))
        session_module._now = iter(list(ticks)).__next__  # read as perf_counter_ns is
    if server.lua is not None:
        if around is not None:  # the script's clock stands still (the log file is opened again each second)
            env = server.lua.new_connection()._conn[b"env"]  # the sandbox's os table, shared by every connection
            env[b"os"][b"time"] = server.lua.runtime.eval("function() return 1765000000 end")
        session.lua = server.lua.new_connection()
        session.hooks = session.lua.hooks
        session.lua.set("client", "username", b"root")
    if logging_on:
        conn.data_received(p.frame(b"\x03PROXY LOG ON 3600", 0)[0])
        _answer_questions(session)  # who asks: the script asks the server for CURRENT_USER()
    varying = "%d" in sql
    texts = [sql % (i + 1) for i in range(n)] if varying else [sql]
    queries = [p.frame(b"\x03" + text.encode(), 0)[0] for text in texts]
    result = p.frame_all(p.text_resultset([(b"1", 8)], [[b"1"]], False), 1)[0]
    conn.data_received(p.frame(b"\x03" + (sql % 0 if varying else sql).encode(), 0)[0])  # the first one logged:
    _answer_questions(session)  # the script may ask who and where first
    session.server_data(result)
    for name in counts:
        counts[name] = 0
    opcodes = [0]

    def trace(frame, event, arg):
        frame.f_trace_opcodes = True
        return count_opcode

    def count_opcode(frame, event, arg):
        if event == "opcode":
            opcodes[0] += 1
        return count_opcode

    if count_crossings:
        sys.settrace(trace)
    if around is not None:  # counted: from the steady state on (the ring of recent entries full, PROXY_LOG_RING)
        for i in range(1100):
            conn.data_received(p.frame(b"\x03" + (sql % (n + 1 + i) if varying else sql).encode(), 0)[0])
            session.server_data(result)
        gc.collect()
        around("start")
    start = time.process_time()
    if varying:
        for query in queries:
            conn.data_received(query)
            session.server_data(result)  # what BackendProtocol.data_received does
    else:
        query = queries[0]
        for _ in range(n):
            conn.data_received(query)
            session.server_data(result)
    elapsed = time.process_time() - start
    if around is not None:
        around("end")
    sys.settrace(None)
    wrappers = 4 * sum(counts.values())  # the counting wrapper's own bytecodes per crossing
    return elapsed / n * 1e6, sum(counts.values()) / n, (opcodes[0] - wrappers) / n


#: A statement as Django's ORM sends it, with the view comment of SQL_COMMENT.
DJANGO_SQL = (
    "SELECT `shop_book`.`id`, `shop_book`.`title`, `shop_book`.`author_id` FROM `shop_book` WHERE `shop_book`.`id` = 42"
    " LIMIT 21 /*view='shop%3Abook',route='books%2F%3Cint%3Abook_id%3E%2F'*/"
)


def script_us(sql: str, n: int = 50000) -> tuple[float, float, float, float]:
    """The Lua side alone: query_log.lua's read_query + read_query_result per statement with logging on, and
    read_query with logging off (plain lupa, a minimal ``proxy`` table, the log to /dev/null), CPU µs; then
    the Lua VM instructions of each (a count hook: exact, whatever the machine's load, for side-by-side runs).
    ``sql`` may hold ``%d``: every statement then has a literal of its own (no normaliser cache hit)."""
    import lupa.lua51

    lua = lupa.lua51.LuaRuntime(encoding=None)
    run = lua.eval(
        """function(root, n, query, varying)
      package.path = root .. "/mysql_proxy_lua/?.lua;" .. package.path
      local getenv = os.getenv
      os.getenv = function(name) if name == "PROXY_LOG_FILE" then return "/dev/null" end return getenv(name) end
      local queue = {}
      proxy = {global = {}, PROXY_SEND_QUERY = 1, PROXY_SEND_RESULT = 2, PROXY_IGNORE_RESULT = 4,
               MYSQLD_PACKET_OK = 0, MYSQLD_PACKET_ERR = 255, COM_QUERY = 3, COM_STMT_PREPARE = 22,
               COM_STMT_EXECUTE = 23, COM_STMT_CLOSE = 25, MYSQL_TYPE_STRING = 254, MYSQL_TYPE_LONGLONG = 8,
               connection = {client = {username = "root", default_db = "test", src = {name = "10.1.1.1:1"}},
                             server = {thread_id = 77}},
               queries = {append = function(self, id, packet, opts) queue.id, queue.packet = id, packet end}}
      dofile(root .. "/mysql_proxy_lua/query_log.lua")
      local state = proxy.global.query_log
      local head, tail = query, nil -- with %d: the text around the id (a new id for each statement)
      if varying then head, tail = string.match(query, "^(.-)%%d(.*)$") end
      head = string.char(3) .. head
      local packet = head .. (tail and "0" .. tail or "")
      local res = {row_count = 1, query_status = 0, warning_count = 0}
      local inj = {id = 1, query = packet, query_time = 5, response_time = 9, resultset = res}
      local clock = os.clock
      state.on, state.deadline = true, os.time() + 3600
      read_query(packet)
      if queue.id == 4 then -- the script asks the server who and where first: answer as MariaDB would
        local answered = false
        read_query_result({id = 4, query = queue.packet, query_time = 1, response_time = 2, resultset = {
          query_status = 0, row_count = 1,
          rows = function() if answered then return nil end answered = true return {"root@localhost", "test"} end}})
      end
      -- Each statement is read_query + read_query_result; with %d the packet and inj are made afresh (as the
      -- host makes them), 5 instructions of the loop's own counted with the script's.
      local function logged(from, to)
        if tail then
          for i = from, to do
            local q = head .. i .. tail
            read_query(q)
            read_query_result({id = 1, query = q, query_time = 5, response_time = 9, resultset = res})
          end
        else
          for _ = from, to do
            read_query(packet)
            read_query_result(inj)
          end
        end
      end
      local t0 = clock()
      logged(1, n)
      local on = (clock() - t0) / n * 1e6
      local count, counted = 0, 1000
      local function tick() count = count + 1 end
      debug.sethook(tick, "", 1)
      logged(n + 1, n + counted)
      debug.sethook()
      local on_instructions = count / counted
      state.on = false
      t0 = clock()
      for _ = 1, n do read_query(packet) end
      local off = (clock() - t0) / n * 1e6
      count = 0
      debug.sethook(tick, "", 1)
      for _ = 1, counted do read_query(packet) end
      debug.sethook()
      return on, off, on_instructions, count / counted
    end"""
    )
    on, off, on_instructions, off_instructions = run(str(ROOT).encode(), n, sql.encode(), "%d" in sql)
    return on, off, on_instructions, off_instructions


def sql_comment_ns(n: int = 200_000) -> tuple[float, float]:
    """The SQL_COMMENT wrapper's cost per statement (ns), with a view comment set and without one."""
    from instrumented.querylog.sqlcomment import comment_for, comment_wrapper, current_comment

    def execute(sql: str, params: object, many: bool, context: object) -> None:
        return None

    sql, context = DJANGO_SQL.split(" /*")[0], {}
    out = []
    for comment in (comment_for("shop:book", "books/<int:book_id>/"), None):
        current_comment.set(comment)
        start = time.perf_counter_ns()
        for _ in range(n):
            comment_wrapper(execute, sql, (42,), False, context)
        wrapped = time.perf_counter_ns() - start
        start = time.perf_counter_ns()
        for _ in range(n):
            execute(sql, (42,), False, context)
        out.append((wrapped - (time.perf_counter_ns() - start)) / n)
    current_comment.set(None)
    return out[0], out[1]


def normalize_ms(sizes: tuple[int, ...] = (8 << 10, 64 << 10, 1 << 20)) -> dict[int, float]:
    """CPU ms of lib/normalize.lua on a multi-row INSERT of each size (fresh text each run: no cache hit)."""
    import lupa.lua51

    lua = lupa.lua51.LuaRuntime()
    lua.execute(f'package.path = "{ROOT}/mysql_proxy_lua/?.lua;" .. package.path')
    normalize = lua.eval('require("lib.normalize")').normalize
    out = {}
    for size in sizes:
        row = "({}, 'value {}', {}.5), "
        text = "INSERT INTO t (a, b, c) VALUES " + "".join(row.format(i, i, i) for i in range(size // len(row) + 1))
        text = text[:size].rsplit("),", 1)[0] + ")"
        runs = max(1, (256 << 10) // size)
        start = time.process_time()
        for i in range(runs):
            result = normalize(f"{text} -- {i}")
        out[size] = (time.process_time() - start) / runs * 1000
        assert result == "insert into t (a, b, c) values (?+)", result[:80]
    return out


def _flood(port: int, user: str, password: str, stop: float) -> int:
    """A non-admin sends 12 MB PROXY LOG statements until ``stop`` (time.monotonic); returns how many."""
    conn = MySQLdb.connect(host="127.0.0.1", port=port, user=user, passwd=password)
    statement = "PROXY LOG " + "x " * 6_000_000
    sent = 0
    while time.monotonic() < stop:
        try:
            conn.query(statement)
        except MySQLdb.MySQLError:
            sent += 1
    conn.close()
    return sent


def flood_latency_ms(port: int, seconds: float = 5.0) -> tuple[float, list[float], int]:
    """SELECT 1 on another connection: quiet median ms, then the ms samples while a non-admin floods."""
    import threading

    user, password = "instrumented_bench_flood", "bench-flood-pw"
    root = connect(DB_PORT)
    cur = root.cursor()
    cur.execute(f"CREATE USER IF NOT EXISTS '{user}'@'%' IDENTIFIED BY '{password}'")
    other = connect(port)
    try:
        quiet = statistics.median(batch_latency_us(other, "SELECT 1", 1, 500)) / 1000
        result: list[int] = []
        stop = time.monotonic() + seconds
        flooder = threading.Thread(target=lambda: result.append(_flood(port, user, password, stop)))
        flooder.start()
        time.sleep(0.2)
        samples = []
        while flooder.is_alive():
            samples.extend(batch_latency_us(other, "SELECT 1", 1, 10))
        flooder.join()
        return quiet, [s / 1000 for s in samples], result[0]
    finally:
        other.close()
        cur.execute(f"DROP USER IF EXISTS '{user}'@'%'")
        root.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--batch", type=int, default=100, help="queries per target per round (1000-row: a tenth)")
    parser.add_argument("--seconds", type=float, default=3.0, help="duration of each throughput run")
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--only", choices=["normalize", "flood", "cpu", "instructions"], help="run just this part")
    parser.add_argument("--tree", action="append", type=Path,
                        help="--only instructions: a tree holding instrumented/ and mysql_proxy_lua/ (default: this"
                             " checkout; repeat to compare, e.g. with a worktree of the commit before)")  # fmt: skip
    parser.add_argument("--inner-instructions", nargs=2, metavar=("CASE", "N"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.inner_instructions:
        _inner_instructions(args.tree[0], args.inner_instructions[0], int(args.inner_instructions[1]))
        return 0
    if args.only == "instructions":
        return instructions_report(args.tree or [ROOT])
    if args.only == "cpu":
        return cpu_report([])
    if args.only != "flood":
        print("normaliser CPU per multi-row INSERT: "
              + "   ".join(f"{size >> 10} KB {ms:.2f} ms" for size, ms in normalize_ms().items()))  # fmt: skip
        if args.only:
            return 0
    if not shutil.which("socat"):
        print("socat is required (apt-get install socat)", file=sys.stderr)
        return 2
    setup_table()
    tmp = Path(tempfile.mkdtemp(prefix="proxy-bench-"))
    log_file = tmp / "query_log.jsonl"
    relay_port, host_port = free_port(), free_port()
    relay = start_relay(relay_port)
    host = start_host(host_port, log_file)
    try:
        wait_port(relay_port)
        wait_port(host_port)
        quiet, flooded, sent = flood_latency_ms(host_port)
        p99 = statistics.quantiles(flooded, n=100)[98]
        print(f"SELECT 1 through the host: {quiet:.2f} ms median alone; while a non-admin sent {sent} PROXY LOG"
              f" statements of 12 MB: median {statistics.median(flooded):.2f}, p99 {p99:.2f}, max {max(flooded):.1f}"
              f" ms, {len(flooded)} answers")  # fmt: skip
        if args.only:
            return 0
        targets = {"direct": DB_PORT, "relay": relay_port, "host_off": host_port, "host_on": host_port}
        conns = {name: connect(port) for name, port in targets.items()}
        results: dict[str, dict[str, list[float]]] = {q: {t: [] for t in targets} for q in QUERIES}
        for sql, expected in QUERIES.values():  # warm-up
            for conn in conns.values():
                batch_latency_us(conn, sql, expected, 20)
        order = list(conns)
        for round_no in range(args.rounds):
            for name, (sql, expected) in QUERIES.items():
                n = args.batch if expected == 1 else max(10, args.batch // 10)
                rotated = order[round_no % len(order) :] + order[: round_no % len(order)]
                for target in rotated:
                    if target.startswith("host"):
                        set_logging(host_port, target == "host_on")
                    results[name][target].extend(batch_latency_us(conns[target], sql, expected, n))
        set_logging(host_port, False)
        qps: dict[str, list[float]] = {t: [] for t in targets}
        for _ in range(3):
            for target, port in targets.items():
                if target.startswith("host"):
                    set_logging(host_port, target == "host_on")
                qps[target].append(throughput(port, args.clients, args.seconds))
        set_logging(host_port, False)
        for conn in conns.values():
            conn.close()
    finally:
        stop(host, relay)
    logged = sum(1 for _ in log_file.open()) if log_file.exists() else 0
    shutil.rmtree(tmp, ignore_errors=True)

    print(f"\nlatency per query, µs (median of all queries from {args.rounds} interleaved rounds; mysqlclient)")
    print(f"{'query':<14}{'direct':>9}{'relay':>9}{'host off':>10}{'host on':>9}"
          f"{'+relay':>9}{'+off':>8}{'+on':>8}{'on/relay':>10}{'off/relay':>11}")  # fmt: skip
    verdicts = []
    for name in QUERIES:
        med = {t: statistics.median(v) for t, v in results[name].items()}
        added = {t: med[t] - med["direct"] for t in ("relay", "host_off", "host_on")}
        ratio_on = added["host_on"] / added["relay"] if added["relay"] > 0 else float("inf")
        ratio_off = added["host_off"] / added["relay"] if added["relay"] > 0 else float("inf")
        print(f"{name:<14}{med['direct']:>9.1f}{med['relay']:>9.1f}{med['host_off']:>10.1f}{med['host_on']:>9.1f}"
              f"{added['relay']:>9.1f}{added['host_off']:>8.1f}{added['host_on']:>8.1f}"
              f"{ratio_on:>10.2f}{ratio_off:>11.2f}")  # fmt: skip
        if name == "select_1":
            verdicts.append(("SELECT 1 added latency, logging on <= 1.5 x relay", ratio_on, ratio_on <= 1.5))
    print(f"\n{args.clients}-client throughput, point lookups/s (median of 3 runs of {args.seconds:.0f} s)")
    med_qps = {t: statistics.median(v) for t, v in qps.items()}
    for target, value in med_qps.items():
        print(
            f"  {target:<10}{value:>10.0f}   {value / med_qps['relay']:.2f} x relay"
            f"   {value / med_qps['direct']:.2f} x direct"
        )
    tp_off = med_qps["host_off"] / med_qps["relay"]
    verdicts.append(("8-client throughput, logging off >= 0.9 x relay", tp_off, tp_off >= 0.9))
    tp_on = med_qps["host_on"] / med_qps["relay"]
    print(f"  (logging on: {tp_on:.2f} x relay, no budget)")
    print(f"\nlog lines written while on: {logged}")
    return cpu_report(verdicts)


#: A statement as sysbench's oltp_point_select sends it, a new id each time (the ``%d``).
SYSBENCH_SQL = "SELECT c FROM sbtest1 WHERE id=%d"


#: What ``--only instructions`` counts: (script, logging on, statement), as cpu_report's cases.
INSTRUCTION_CASES = {"off": (False, "SELECT 1"), "on": (True, "SELECT 1"), "off varying": (False, SYSBENCH_SQL),
                     "on varying": (True, SYSBENCH_SQL)}  # fmt: skip


def _inner_instructions(tree: Path, case: str, n: int) -> None:
    """In a process under callgrind: the host of ``tree`` runs ``n`` statements of ``case``; the parent switches the
    instrumentation on and off around them (READY / DONE on stdout, a line on stdin to go on)."""
    sys.path.insert(0, str(tree))
    on, sql = INSTRUCTION_CASES[case]

    def around(when: str) -> None:
        print("READY" if when == "start" else "DONE", flush=True)
        sys.stdin.readline()

    with tempfile.TemporaryDirectory() as tmp:
        os.environ["PROXY_LOG_FILE"] = str(Path(tmp) / "query_log.jsonl")
        host_code_us(tree / "mysql_proxy_lua" / "query_log.lua", on, n, sql, around=around)


def _callgrind(tree: Path, case: str, n: int) -> int:
    """CPU instructions (callgrind's total) of ``n`` statements of ``case`` through the host of ``tree``."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "callgrind.out"
        cmd = ["valgrind", "--tool=callgrind", "--instr-atstart=no", f"--callgrind-out-file={out}", sys.executable,
               __file__, "--inner-instructions", case, str(n), "--tree", str(tree)]  # fmt: skip
        env = {**os.environ, "PYTHONHASHSEED": "0"}
        child = subprocess.Popen(cmd, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                 stderr=subprocess.DEVNULL, text=True)  # fmt: skip
        assert child.stdin is not None and child.stdout is not None
        for switch in ("--instr=on", "--instr=off"):
            for line in child.stdout:
                if line.strip() in ("READY", "DONE"):
                    break
            subprocess.run(["callgrind_control", switch, str(child.pid)], check=True, stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL)  # fmt: skip
            child.stdin.write("go\n")
            child.stdin.flush()
        child.stdin.close()
        assert child.wait() == 0
        found = re.search(r"^totals: (\d+)", out.read_text(), re.MULTILINE)
    assert found, "no total in callgrind's output"
    return int(found.group(1))


def instructions_report(trees: list[Path], a: int = 200, b: int = 1200) -> int:
    """CPU instructions per statement of the host (Python, lupa and Lua alike, exact whatever the load): callgrind
    counts ``a`` then ``b`` statements in-process, (count(b) - count(a)) / (b - a), for each tree (this checkout and,
    e.g., a worktree of the commit before a change). Steady state: after enough statements to fill the ring of
    recent entries. Callgrind runs a program some fifty times slower, so the clocks would say what callgrind does:
    the script's clock stands still (a second of callgrind is a few hundred statements, and the log file is opened
    again each second) and the host's timings follow one pseudo-random sequence of 20-400 µs steps."""
    if not shutil.which("valgrind"):
        print("valgrind is required (apt-get install valgrind)", file=sys.stderr)
        return 2
    print(f"host CPU instructions per statement, in-process (callgrind; (count({b}) - count({a})) / {b - a}):")
    print(f"{'tree':<40}" + "".join(f"{case:>14}" for case in INSTRUCTION_CASES) + f"{'+logging':>10}{'+varying':>10}")
    for tree in trees:
        per = {case: (_callgrind(tree, case, b) - _callgrind(tree, case, a)) / (b - a) for case in INSTRUCTION_CASES}
        print(f"{str(tree)[-40:]:<40}" + "".join(f"{per[case]:>14.0f}" for case in INSTRUCTION_CASES)
              + f"{per['on'] - per['off']:>10.0f}{per['on varying'] - per['off varying']:>10.0f}")  # fmt: skip
    return 0


def cpu_report(verdicts: list[tuple[str, float, bool]], runs: int = 5) -> int:
    """The host's CPU per statement (in-process, medians of interleaved runs), its Python->Lua crossings per
    statement, the script's share and its Lua instructions, the verdicts."""
    old_log_file = os.environ.get("PROXY_LOG_FILE")
    tmp = Path(tempfile.mkdtemp(prefix="proxy-cpu-"))
    os.environ["PROXY_LOG_FILE"] = str(tmp / "query_log.jsonl")
    cases = {"none": (None, False, "SELECT 1"), "off": (SCRIPT, False, "SELECT 1"), "on": (SCRIPT, True, "SELECT 1"),
             "off varying": (SCRIPT, False, SYSBENCH_SQL), "on varying": (SCRIPT, True, SYSBENCH_SQL)}  # fmt: skip
    cpu: dict[str, list[float]] = {k: [] for k in cases}
    for _ in range(runs):
        for name, (script, on, sql) in cases.items():
            cpu[name].append(host_code_us(script, on, 20000, sql)[0])
            (tmp / "query_log.jsonl").unlink(missing_ok=True)
    counted = {name: host_code_us(script, on, 2000, sql, count_crossings=True)[1:]
               for name, (script, on, sql) in cases.items()}  # fmt: skip
    crossings = {name: c[0] for name, c in counted.items()}
    calls = {name: c[1] for name, c in counted.items()}
    shutil.rmtree(tmp)
    if old_log_file is None:
        del os.environ["PROXY_LOG_FILE"]
    else:
        os.environ["PROXY_LOG_FILE"] = old_log_file
    med = {k: statistics.median(v) for k, v in cpu.items()}
    print(f"\nhost code per statement, CPU µs (in-process, sockets replaced by no-ops; median of {runs} runs),"
          " and Python->Lua crossings per statement (counted: exact):")  # fmt: skip
    print(
        f"  SELECT 1: no script {med['none']:.1f}   query_log.lua off {med['off']:.1f}   on {med['on']:.1f}"
        f"   (crossings {crossings['none']:g} / {crossings['off']:g} / {crossings['on']:g})"
    )
    print(
        f"  sysbench's point select, a new id each time: off {med['off varying']:.1f}   on {med['on varying']:.1f}"
        f"   (crossings {crossings['off varying']:g} / {crossings['on varying']:g})"
    )
    print(
        f"  logging's increment: SELECT 1 {med['on'] - med['off']:.1f}, point select"
        f" {med['on varying'] - med['off varying']:.1f}"
    )
    print(
        "  the host's Python bytecodes per statement (counted: exact; the crossings' counting wrappers left out):"
        f" SELECT 1 {calls['none']:.1f} / {calls['off']:.1f} / {calls['on']:.1f},"
        f" point select {calls['off varying']:.1f} / {calls['on varying']:.1f}"
    )
    for label, sql in (("SELECT 1", "SELECT 1"), ("a Django statement with its view comment", DJANGO_SQL),
                       ("sysbench's point select, a new id each time", SYSBENCH_SQL)):  # fmt: skip
        on, off, on_instructions, off_instructions = script_us(sql)
        print(f"  of which query_log.lua alone, {label}: on {on:.2f}, off {off:.2f} (plain Lua 5.1;"
              f" {on_instructions:.1f} and {off_instructions:.1f} Lua instructions)")  # fmt: skip
    with_view, without = sql_comment_ns()
    print(f"SQL_COMMENT wrapper per statement (Django side): {with_view:.0f} ns with a view, {without:.0f} ns without")
    verdicts.append(("SQL_COMMENT wrapper per statement <= 1 µs", with_view / 1000, with_view <= 1000))
    verdicts.append(("host CPU per statement, logging on <= 12 µs", med["on"], med["on"] <= 12))
    verdicts.append(("host CPU per statement, logging off <= 6 µs", med["off"], med["off"] <= 6))
    print(f"machine load average: {' '.join(f'{x:.1f}' for x in os.getloadavg())} on {os.cpu_count()} CPUs")
    print("\nbudget (issue 12, ARCHITECTURE §7):")
    for label, value, ok in verdicts:
        print(f"  {label}: {value:.2f} -> {'OK' if ok else 'OVER BUDGET'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
