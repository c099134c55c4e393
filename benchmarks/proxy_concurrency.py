"""The proxy at production concurrency: sysbench against MariaDB direct, socat, this project's proxy host and the
original mysql-proxy 0.8.5, with query_log.lua's logging off and on.

    python benchmarks/proxy_concurrency.py [--mysql-proxy PATH] [--runs 3] [--time 10] [--clients 1,8,32]
        [--workloads point_select,read_write] [--host-arg=--some-flag ...] [--json results.json]

The full run, on a quiet machine (8 targets x 2 workloads x 3 client counts x 3 runs of 10 s: about 30 minutes; a
check of the whole chain first: ``--runs 1 --time 2 --clients 1,8 --workloads point_select --tables 1
--table-size 1000 --workers 2``, about a minute):

    python benchmarks/proxy_concurrency.py --mysql-proxy /path/to/prefix/bin/mysql-proxy --runs 3 --time 10 \
        --clients 1,8,32 --workloads point_select,read_write --workers 2 --json proxy_concurrency.json

sysbench's ``oltp_point_select`` (QPS) and ``oltp_read_write`` (TPS) at 1, 8 and 32 client threads, each cell run
``--runs`` times with the targets interleaved (their order rotates from cell to cell), medians printed as tables
beside the budgets of issue 24, with each proxy's CPU per statement: user + system time of its process and every
process under it (``/proc/<pid>/stat``, reaped children included, so socat's per-connection processes count), over
the run, divided by the statements sysbench sent. Statements go as text (``--db-ps-mode=disable``), as Django's
MySQL drivers send them; the log lines written while logging is on are counted and checked against them.
Budgets (issue 24): logging on ahead of 0.8.5 in every cell, logging off ahead or level (here: >= 0.97 x); at 32
clients of point selects, CPU per logged statement <= 45 µs, logging's increment <= 12 µs, logging on >= 0.8 x
socat. ``--host-arg`` passes flags to the host; ``--workers 2`` (a comma-separated list of counts) adds the host
with ``--workers N`` as targets of their own (``host wN off`` / ``on``), beside the single-process one.

Needs sysbench (Debian: ``apt-get install sysbench``), socat, mysqlclient, lupa, and MariaDB on 127.0.0.1:3306 or
``$MARIADB_PORT`` (root, no password, database ``test``; ``bin/with-mariadb`` starts a private one); sysbench's
tables (``sbtest1``...) are created in ``test`` and dropped at the end.

The original mysql-proxy 0.8.5 comes from ``--mysql-proxy PATH`` or ``$MYSQL_PROXY``; without it those rows are
left out. It is not packaged anywhere any more, so build it from its source, outside this repository: the
``rel-0.8.5`` tag of the ``mysql/mysql-proxy`` repository. On Debian 12 it needs ``libglib2.0-dev``,
``libevent-dev``, ``liblua5.1-0-dev``, ``libmariadb-dev`` (``mysql_config``), ``autoconf``, ``automake``,
``libtool``, ``flex``, ``bison`` and ``pkg-config``; run its ``autogen.sh``, then its ``configure`` with
``--prefix`` set to a directory of your choice, ``--with-lua=lua5.1`` and, because libevent 2.1 and MariaDB's
headers renamed three names it uses, ``CFLAGS="-g -O2 -fcommon -D_EVENT_VERSION=EVENT__VERSION
-DSERVER_MORE_RESULTS_EXISTS=SERVER_MORE_RESULTS_EXIST -DCLIENT_LONG_PASSWORD=1"``, then ``make install``; the
program is ``bin/mysql-proxy`` under the prefix (``mysql-proxy --version`` says 0.8.5). It runs here as the
project's README for DBAs says (``--lua-path`` to the scripts' directory), with its default single event thread.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from proxy import DB_PORT, ROOT, SCRIPT, free_port, set_logging, start_host, start_relay, stop, wait_port

WORKLOADS = {"point_select": "oltp_point_select", "read_write": "oltp_read_write"}
#: What each workload's table reports: sysbench's queries a second for point selects, transactions for OLTP.
RATE = {"point_select": "qps", "read_write": "tps"}
TICK = os.sysconf("SC_CLK_TCK")


@dataclass
class Target:
    """One way to reach MariaDB: its port, the process behind it (none for direct) and query_log.lua's logging."""

    name: str
    port: int
    proc: subprocess.Popen | None = None
    logging: bool | None = None  # None: no query_log.lua
    log_file: Path | None = None
    runs: dict[str, list[dict[str, float]]] = field(default_factory=dict)


def start_mysql_proxy(binary: str, port: int, log_file: Path, extra_args: tuple[str, ...]) -> subprocess.Popen:
    """The original mysql-proxy with query_log.lua, started as mysql_proxy_lua/README.md tells a DBA to."""
    env = dict(os.environ, PROXY_LOG_FILE=str(log_file), PROXY_LOG_MAX_SECONDS="36000")
    return subprocess.Popen(
        [binary, f"--proxy-address=127.0.0.1:{port}", f"--proxy-backend-addresses=127.0.0.1:{DB_PORT}",
         f"--proxy-lua-script={SCRIPT}", f"--lua-path={ROOT / 'mysql_proxy_lua'}/?.lua;;", *extra_args],
        env=env, stdout=subprocess.DEVNULL,
    )  # fmt: skip


def tree_cpu_ticks(pid: int) -> tuple[int, int]:
    """User and system clock ticks of a process and every live process under it, with their reaped children's."""
    stats = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except (OSError, IndexError):
                continue  # gone meanwhile
            stats[int(entry.name)] = fields  # fields[1] is the parent's pid, [11:15] utime stime cutime cstime
    tree, user, system = {pid}, 0, 0
    while True:
        more = {p for p, fields in stats.items() if int(fields[1]) in tree} - tree
        if not more:
            break
        tree |= more
    for p in tree & stats.keys():
        utime, stime, cutime, cstime = (int(x) for x in stats[p][11:15])
        user, system = user + utime + cutime, system + stime + cstime
    return user, system


def sysbench(command: str, workload: str, port: int, args: argparse.Namespace, clients: int = 1) -> dict[str, float]:
    """Run sysbench (``prepare``, ``run`` or ``cleanup``) against ``port``; for ``run``, its rates and counts."""
    cmd = ["sysbench", WORKLOADS[workload], "--db-driver=mysql", "--mysql-host=127.0.0.1", f"--mysql-port={port}",
           "--mysql-user=root", "--mysql-password=", "--mysql-db=test", f"--tables={args.tables}",
           f"--table-size={args.table_size}", f"--threads={clients}", f"--time={args.time}",
           f"--db-ps-mode={args.ps_mode}", command]  # fmt: skip
    for attempt in range(3):
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=args.time + 120)
        if done.returncode == 0 or "failed to initialize within" not in done.stdout or attempt == 2:
            break
        # On a loaded machine 32 connections through socat (a fork each) can take sysbench's 30 s: again.
        print(f"  (sysbench's clients did not all connect within 30 s, load {os.getloadavg()[0]:.1f}: again)")
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{done.stdout}{done.stderr}")
    if command != "run":
        return {}
    out: dict[str, float] = {}
    for name in ("transactions", "queries", "ignored errors", "reconnects"):
        found = re.search(rf"^\s+{name}:\s+(\d+)\s+\((\d+(?:\.\d+)?) per sec\.\)", done.stdout, re.M)
        if found is None:
            raise RuntimeError(f"no '{name}' in sysbench's output:\n{done.stdout}")
        out[name.split()[0]], out[name.split()[0] + "_per_s"] = int(found[1]), float(found[2])
    return {"tps": out["transactions_per_s"], "qps": out["queries_per_s"], "statements": out["queries"],
            "errors": out["ignored"], "reconnects": out["reconnects"]}  # fmt: skip


def count_lines(path: Path) -> int:
    with path.open("rb") as f:
        return sum(chunk.count(b"\n") for chunk in iter(lambda: f.read(1 << 20), b""))


def measure(target: Target, workload: str, clients: int, args: argparse.Namespace) -> dict[str, float]:
    """One sysbench run through ``target``: rates, load average, and the proxy's CPU per statement (µs)."""
    if target.logging is not None:
        set_logging(target.port, target.logging)
    load = os.getloadavg()[0]
    before = tree_cpu_ticks(target.proc.pid) if target.proc else (0, 0)
    result = sysbench("run", workload, target.port, args, clients)
    result["load"] = load
    if target.proc:
        time.sleep(0.3)  # the relay's per-connection processes exit and are reaped: their time moves to socat's
        user, system = (after - first for after, first in zip(tree_cpu_ticks(target.proc.pid), before, strict=True))
        per_statement = 1e6 / TICK / result["statements"]
        result["cpu_us"], result["user_us"] = (user + system) * per_statement, user * per_statement
    if target.logging and target.log_file is not None:
        set_logging(target.port, False)  # closes the file: every line is on disk
        result["logged"] = count_lines(target.log_file) if target.log_file.exists() else 0
        target.log_file.unlink(missing_ok=True)  # the next ON opens a new one
    return result


def median(target: Target, cell: str, key: str) -> float:
    values = [run[key] for run in target.runs.get(cell, []) if key in run]
    return statistics.median(values) if values else float("nan")


def report(targets: dict[str, Target], cells: list[tuple[str, int]], args: argparse.Namespace) -> None:
    """The issue's tables (medians), the CPU per statement, and the budgets of issue 24."""
    clients = sorted({c for _, c in cells})
    head = " | ".join(f"{c} client{'s' if c > 1 else ''}" for c in clients)
    pairs = [("direct / socat", "direct", "socat"), ("this proxy, logging off / on", "host off", "host on")]
    pairs += [(f"this proxy --workers {n}, logging off / on", f"host w{n} off", f"host w{n} on") for n in args.workers]
    pairs += [("mysql-proxy 0.8.5, logging off / on", "0.8.5 off", "0.8.5 on")]
    for workload in dict.fromkeys(w for w, _ in cells):
        rate = RATE[workload]
        print(f"\n| {workload.replace('_', ' ')} {rate.upper()} (median of {args.runs}) | {head} |")
        print("|---" * (len(clients) + 1) + "|")
        for label, a, b in pairs:
            if a in targets and b in targets:
                row = [f"{median(targets[x], f'{workload}/{c}', rate):,.0f}".replace(",", " ") for c in clients
                       for x in (a, b)]  # fmt: skip
                row = [f"{row[i]} / {row[i + 1]}" for i in range(0, len(row), 2)]
                print(f"| {label} | {' | '.join(row)} |")
    print(f"\nproxy CPU per statement, µs, user + system (user), median of {args.runs}:")
    names = [n for n in targets if n != "direct"]
    print(f"{'':<12}" + "".join(f"{w[:5] + ' ' + str(c):>16}" for w, c in cells))
    for name in names:
        row = [f"{median(targets[name], f'{w}/{c}', 'cpu_us'):.1f} ({median(targets[name], f'{w}/{c}', 'user_us'):.1f})"
               for w, c in cells]  # fmt: skip
        print(f"{name:<12}" + "".join(f"{x:>16}" for x in row))
    for proxy in ("host", *(f"host w{n}" for n in args.workers), "0.8.5"):
        if f"{proxy} on" in targets:
            added = [median(targets[f"{proxy} on"], f"{w}/{c}", "cpu_us") - median(targets[f"{proxy} off"],
                     f"{w}/{c}", "cpu_us") for w, c in cells]  # fmt: skip
            print(f"{proxy + ' +log':<12}" + "".join(f"{x:>16.1f}" for x in added))
    loads = [run["load"] for t in targets.values() for runs in t.runs.values() for run in runs]
    print(f"load average (1 min) at the start of the runs: {min(loads):.1f} to {max(loads):.1f}, median "
          f"{statistics.median(loads):.1f}, on {os.cpu_count()} CPUs")  # fmt: skip
    verdicts(targets, cells, args.workers)


def verdicts(targets: dict[str, Target], cells: list[tuple[str, int]], workers: Sequence[int] = ()) -> None:
    """Issue 24's budgets for the proxy, from the medians."""
    print("\nbudgets (issue 24):")

    def ratio(a: str, b: str, cell: str) -> float:
        return median(targets[a], cell, RATE[cell.split("/")[0]]) / median(targets[b], cell, RATE[cell.split("/")[0]])

    keys = [f"{w}/{c}" for w, c in cells]
    if "0.8.5 on" in targets:
        on = {k: ratio("host on", "0.8.5 on", k) for k in keys}
        off = {k: ratio("host off", "0.8.5 off", k) for k in keys}
        print(f"  logging on ahead of 0.8.5 in every cell: {sum(r > 1 for r in on.values())}/{len(on)} cells "
              f"({', '.join(f'{k} {r:.2f}x' for k, r in on.items())})")  # fmt: skip
        print(f"  logging off ahead or level (>= 0.97x) in every cell: {sum(r >= 0.97 for r in off.values())}/"
              f"{len(off)} ({', '.join(f'{k} {r:.2f}x' for k, r in off.items())})")  # fmt: skip
    busiest = f"point_select/{max(c for w, c in cells if w == 'point_select')}" if "point_select" in dict(cells) else ""
    if busiest:
        on_cpu = median(targets["host on"], busiest, "cpu_us")
        increment = on_cpu - median(targets["host off"], busiest, "cpu_us")
        print(f"  CPU per logged statement ({busiest}) <= 45 µs: {on_cpu:.1f} -> {'OK' if on_cpu <= 45 else 'OVER'}")
        print(f"  logging increment ({busiest}) <= 12 µs: {increment:.1f} -> {'OK' if increment <= 12 else 'OVER'}")
        vs_socat = ratio("host on", "socat", busiest)
        print(f"  logging on >= 0.8 x socat ({busiest}): {vs_socat:.2f} -> {'OK' if vs_socat >= 0.8 else 'UNDER'}")
        for n in workers:
            for state in ("off", "on"):
                gain = ratio(f"host w{n} {state}", f"host {state}", busiest)
                print(f"  --workers {n}, logging {state}, vs one worker ({busiest}): {gain:.2f}x"
                      f" (budget >= 1.7x with cores to spare; this machine has {os.cpu_count()} CPUs)")  # fmt: skip
            if "0.8.5 on" in targets:
                on = {k: ratio(f"host w{n} on", "0.8.5 on", k) for k in (f"{w}/{c}" for w, c in cells)}
                print(f"  --workers {n}, logging on ahead of 0.8.5: {sum(r > 1 for r in on.values())}/{len(on)} cells "
                      f"({', '.join(f'{k} {r:.2f}x' for k, r in on.items())})")  # fmt: skip


def start_targets(args: argparse.Namespace, tmp: Path) -> tuple[dict[str, Target], list[subprocess.Popen]]:
    """socat, the host and (given its path) mysql-proxy 0.8.5 on free ports; each proxy is two targets (off, on)."""
    relay_port, host_port, mp_port = free_port(), free_port(), free_port()
    procs = [start_relay(relay_port), start_host(host_port, tmp / "host.jsonl", tuple(args.host_arg))]
    targets = {"direct": Target("direct", DB_PORT), "socat": Target("socat", relay_port, procs[0])}
    for on in (False, True):
        name = f"host {'on' if on else 'off'}"
        targets[name] = Target(name, host_port, procs[1], on, tmp / "host.jsonl")
    for n in args.workers:
        port, log_file = free_port(), tmp / f"host-{n}.jsonl"
        procs.append(start_host(port, log_file, ("--workers", str(n), *args.host_arg)))
        for on in (False, True):
            name = f"host w{n} {'on' if on else 'off'}"
            targets[name] = Target(name, port, procs[-1], on, log_file)
    if args.mysql_proxy:
        procs.append(start_mysql_proxy(args.mysql_proxy, mp_port, tmp / "0.8.5.jsonl", tuple(args.mysql_proxy_arg)))
        for on in (False, True):
            name = f"0.8.5 {'on' if on else 'off'}"
            targets[name] = Target(name, mp_port, procs[-1], on, tmp / "0.8.5.jsonl")
    return targets, procs


def run_interleaved(targets: dict[str, Target], cells: list[tuple[str, int]], args: argparse.Namespace) -> None:
    """A warm-up through every target, then ``args.runs`` rounds of every cell, the targets' order rotating."""
    warm = argparse.Namespace(**{**vars(args), "time": 2})
    for target in targets.values():  # buffer pool, connections, each path once
        sysbench("run", "point_select", target.port, warm, 8)
    order = list(targets)
    for run in range(args.runs):
        for i, (workload, clients) in enumerate(cells):
            shift = (run * len(cells) + i) % len(order)
            for name in order[shift:] + order[:shift]:
                try:
                    result = measure(targets[name], workload, clients, args)
                except RuntimeError as error:  # one lost run costs its cell a sample, not the whole benchmark
                    print(f"run {run + 1}/{args.runs} {workload} {clients:>2} clients {name:<10} failed: "
                          f"{str(error).strip().splitlines()[-1]}", flush=True)  # fmt: skip
                    continue
                targets[name].runs.setdefault(f"{workload}/{clients}", []).append(result)
                rate = RATE[workload]
                extra = f", {result['cpu_us']:.1f} µs CPU/statement" if "cpu_us" in result else ""
                if "logged" in result:
                    extra += f", {result['logged']} of {result['statements']} statements logged"
                print(f"run {run + 1}/{args.runs} {workload} {clients:>2} clients {name:<10} "
                      f"{result[rate]:>9.0f} {rate}{extra}; load {result['load']:.1f}", flush=True)  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mysql-proxy", default=os.environ.get("MYSQL_PROXY"), help="mysql-proxy 0.8.5's binary")
    parser.add_argument("--runs", type=int, default=3, help="interleaved runs of each cell")
    parser.add_argument("--time", type=int, default=10, help="seconds of each sysbench run")
    parser.add_argument("--clients", default="1,8,32", help="sysbench threads, comma-separated")
    parser.add_argument("--workloads", default="point_select,read_write", help=",".join(WORKLOADS))
    parser.add_argument("--tables", type=int, default=4)
    parser.add_argument("--table-size", type=int, default=10000)
    parser.add_argument("--ps-mode", default="disable", choices=["disable", "auto"], help="sysbench --db-ps-mode")
    parser.add_argument("--host-arg", action="append", default=[], help="an extra argument for the host (repeat)")
    parser.add_argument("--workers", default="", help="also the host with --workers N for each N of this list (e.g. 2)")
    parser.add_argument("--mysql-proxy-arg", action="append", default=[], help="an extra argument for mysql-proxy")
    parser.add_argument("--json", type=Path, help="also write every run's figures to this file")
    args = parser.parse_args()
    for tool in ("sysbench", "socat"):
        if not shutil.which(tool):
            print(f"{tool} is required (apt-get install {tool})", file=sys.stderr)
            return 2
    args.workers = [int(n) for n in args.workers.split(",") if n.strip()]
    cells = [(w, int(c)) for w in args.workloads.split(",") for c in args.clients.split(",")]
    if any(w not in WORKLOADS for w, _ in cells):
        parser.error(f"workloads are {', '.join(WORKLOADS)}")
    if not args.mysql_proxy:
        print("no --mysql-proxy / $MYSQL_PROXY: the mysql-proxy 0.8.5 rows are left out", file=sys.stderr)

    tmp = Path(tempfile.mkdtemp(prefix="proxy-concurrency-"))
    targets, procs = start_targets(args, tmp)
    try:
        for target in targets.values():
            wait_port(target.port)
        sysbench("cleanup", "read_write", DB_PORT, args)
        sysbench("prepare", "read_write", DB_PORT, args)
        run_interleaved(targets, cells, args)
        sysbench("cleanup", "read_write", DB_PORT, args)
    finally:
        stop(*procs)
        shutil.rmtree(tmp, ignore_errors=True)
    if args.json:
        args.json.write_text(json.dumps({name: t.runs for name, t in targets.items()}, indent=1))
    report(targets, cells, args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
