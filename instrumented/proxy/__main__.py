"""``instrumented-proxy`` / ``python -m instrumented.proxy``: run MySQL Proxy 0.8 Lua scripts in front of MySQL."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import socket
import sys
from collections.abc import Coroutine
from typing import Any

from .lua.host import RUNTIMES, LupaMissingError, _load_lupa
from .server import ProxyServer, parse_address
from .workers import WorkerInfo, listening_socket, reuse_port_socket, supervise, worker_count

log = logging.getLogger("instrumented.proxy")


def build_parser() -> argparse.ArgumentParser:
    """The flags MySQL Proxy had, plus a few of the host's own."""
    parser = argparse.ArgumentParser(
        prog="instrumented-proxy",
        description="A MySQL protocol proxy that runs MySQL Proxy 0.8 Lua scripts "
        "(e.g. mysql_proxy_lua/query_log.lua).",
    )
    parser.add_argument(
        "--proxy-address",
        "-P",
        default="127.0.0.1:4040",
        help="listen on HOST:PORT (default 127.0.0.1:4040; ':4040' listens on every interface)",
    )
    parser.add_argument(
        "--proxy-backend-addresses", "-b", action="append", default=[],
        help="MySQL server HOST:PORT; repeat for several (default 127.0.0.1:3306)",
    )  # fmt: skip
    parser.add_argument(
        "--proxy-lua-script", "-s", default=None, help="Lua script to run (reloaded for new connections)"
    )
    parser.add_argument(
        "--lua-io-path", action="append", default=[],
        help="a file the script may open with io.open (default: $PROXY_LOG_FILE, else query_log.jsonl or"
             " query_log.slow.log as PROXY_LOG_FORMAT says)",
    )  # fmt: skip
    parser.add_argument(
        "--event-loop", choices=["auto", "uvloop", "asyncio"], default="auto",
        help="auto = uvloop when installed (halves the relay cost), else asyncio's own loop",
    )  # fmt: skip
    parser.add_argument(
        "--workers", default="1",
        help="processes serving the port, each with its own event loop (default 1; 'auto' = one per CPU); the query"
             " log's control statements reach all of them",
    )  # fmt: skip
    parser.add_argument(
        "--reuseport", action="store_true",
        help="with --workers: each worker accepts on a socket of its own (SO_REUSEPORT: the kernel hashes connections"
             " over them) instead of all on one (an idle worker takes the next connection; the default)",
    )  # fmt: skip
    parser.add_argument(
        "--lua-runtime", choices=list(RUNTIMES), default="auto",
        help="Lua 5.1 as LuaJIT 2.1's interpreter ('luajit') or PUC Lua 5.1 ('lua51', what mysql-proxy 0.8.5 links);"
             " auto = LuaJIT when lupa has it (about half the instructions for query_log.lua's logging)",
    )  # fmt: skip
    parser.add_argument("--connect-timeout", type=float, default=5.0, help="backend connect timeout in seconds")
    parser.add_argument(
        "--log-level", default=os.environ.get("PROXY_LOG_LEVEL", "info"),
        choices=["debug", "info", "warning", "error"], help="host log level (default info)",
    )  # fmt: skip
    return parser


def default_log_file() -> str:
    """query_log.lua's default file name for ``PROXY_LOG_FORMAT`` (json or slowlog)."""
    slowlog = os.environ.get("PROXY_LOG_FORMAT", "").lower() == "slowlog"
    return "query_log.slow.log" if slowlog else "query_log.jsonl"


async def serve(args: argparse.Namespace, sock: socket.socket | None = None, worker: WorkerInfo | None = None) -> int:
    """Run until SIGTERM/SIGINT, then shut down cleanly (one worker of several: on their shared ``sock``)."""
    listen = parse_address(args.proxy_address, "0.0.0.0", 4040)
    backends = [parse_address(b, "127.0.0.1", 3306) for b in (args.proxy_backend_addresses or ["127.0.0.1:3306"])]
    io_paths = args.lua_io_path or [os.environ.get("PROXY_LOG_FILE") or default_log_file()]
    server = ProxyServer(listen, backends, args.proxy_lua_script, io_paths=io_paths,
                         connect_timeout=args.connect_timeout, sock=sock, worker=worker,
                         runtime=args.lua_runtime)  # fmt: skip
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):  # before the other workers can reach this one (a stop then is clean)
        loop.add_signal_handler(sig, stop.set)
    await server.start()
    if worker is None or worker.index == 1:
        log.info(
            "instrumented-proxy listening on %s:%d, backends %s, script %s%s",
            listen[0], server.port, ", ".join(b.name for b in server.backends), args.proxy_lua_script or "(none)",
            f", {worker.count} workers" if worker else "",
        )  # fmt: skip
    await stop.wait()
    log.info("shutting down (%d connections)", len(server.connections))
    await server.close()
    return 0


def run(main_coro: Coroutine[Any, Any, int], event_loop: str) -> int:
    """Run on uvloop when asked/available (same Protocol API, a much cheaper loop), else on asyncio's."""
    if event_loop in ("auto", "uvloop"):
        try:
            import uvloop
        except ImportError:
            if event_loop == "uvloop":
                main_coro.close()
                raise ValueError("--event-loop uvloop: uvloop is not installed (pip install uvloop)") from None
        else:
            log.debug("using uvloop")
            return uvloop.run(main_coro)
    return asyncio.run(main_coro)


def main(argv: list[str] | None = None) -> int:
    """Console entry point."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=getattr(logging, args.log_level.upper()), format="%(asctime)s %(name)s %(levelname)s %(message)s"
    )
    try:
        if args.proxy_lua_script and not os.path.isfile(args.proxy_lua_script):
            print(f"instrumented-proxy: no such Lua script: {args.proxy_lua_script}", file=sys.stderr)
            return 2
        workers = worker_count(args.workers)
        if args.proxy_lua_script:
            _load_lupa(args.lua_runtime)  # missing lupa is said once, here, not by every worker
        if workers == 1:
            return run(serve(args), args.event_loop)
        listen = parse_address(args.proxy_address, "0.0.0.0", 4040)
        sock = listening_socket(*listen, reuse_port=args.reuseport)

        def worker(info: WorkerInfo) -> int:
            own = reuse_port_socket(sock) if args.reuseport else sock
            return run(serve(args, own, info), args.event_loop)

        return supervise(workers, worker)
    except LupaMissingError as exc:
        print(f"instrumented-proxy: {exc}", file=sys.stderr)
        return 2
    except ValueError as exc:
        print(f"instrumented-proxy: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"instrumented-proxy: cannot listen on {args.proxy_address}: {exc.strerror or exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
