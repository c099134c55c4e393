"""``--workers N``: N processes serving one listening socket, and the query log's control statements across them.

The parent binds the socket, forks the workers and supervises them (a worker that dies is started again; SIGTERM
and SIGINT are passed on). Each worker is a whole proxy with its own event loop and Lua state, so script globals
and ``proxy.global`` are per worker. What the query log shares is reached through the control statements: a
script that wants a control statement carried out by every worker marks its answer (``proxy.response.relay``,
see ``query_log.lua``); the worker that got it runs it in the others (``worker_control`` in their Lua, over a
Unix socket in a private directory) and answers with all of their answers merged (``merge.py``, the merge the
Django side uses for several proxies). So ``PROXY LOG ON`` on any connection switches every worker before its
answer comes back, and ``STATUS``, ``TAIL`` and ``DIGEST`` answer for all of them. ``EXPLAIN`` names a row of the
merged digest, whose sample one worker keeps (each numbers its rows apart: ``lib/digest.lua``): that worker hands it
over (``worker_sample``) and the asking connection explains it (``explain_sample``, on its own database connection).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import re
import shutil
import signal
import socket
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from . import merge
from .lua.api import MYSQLD_PACKET_ERR, MYSQLD_PACKET_OK, LuaCall, ProxyResponse, to_bytes
from .lua.host import LuaHost

log = logging.getLogger("instrumented.proxy")

#: How long a worker waits for the others' answers to a control statement.
ANSWER_TIMEOUT = 5.0
#: A relayed DIGEST asks each worker for all of its rows (capped by PROXY_LOG_MAX_DIGESTS), then keeps the top n.
ALL_ROWS = 1_000_000
#: A worker that dies is started again after this pause (a crash loop costs little).
RESTART_PAUSE = 1.0

_CONTROL = re.compile(rb"^\s*proxy\s+log\s+(\w+)(?:\s+(\d+))?(?:.*\border\s+by\s+(\w+))?", re.I | re.S)
#: ``PROXY LOG DIGEST [n]``: the row count a relayed DIGEST replaces (what follows, ORDER BY and HOST, is kept).
_DIGEST_ROWS = re.compile(rb"^\s*proxy\s+log\s+digest(?:\s+\d+)?", re.I)


def worker_count(value: str) -> int:
    """``--workers``: a count >= 1, or ``auto`` (the CPUs this process may use)."""
    if value == "auto":
        try:
            return max(1, len(os.sched_getaffinity(0)))
        except AttributeError:  # not Linux
            return max(1, os.cpu_count() or 1)
    count = int(value) if value.isdigit() else 0
    if count < 1:
        raise ValueError("--workers takes a count >= 1 or 'auto'")
    return count


@dataclass(frozen=True)
class WorkerInfo:
    """Which worker this process is (1-based), how many there are, where their control sockets are."""

    index: int
    count: int
    directory: str

    def path(self, index: int) -> str:
        """The control socket of worker ``index``."""
        return os.path.join(self.directory, f"worker-{index}.sock")


def _answer_json(response: ProxyResponse, errors: str = "replace") -> dict[str, Any]:
    """A response as JSON for another worker (cells are text: the script makes them valid UTF-8; a sample is as it
    ran, so ``errors="surrogateescape"`` carries its bytes as they are, and ``_raw`` gives them back)."""
    if response.type != MYSQLD_PACKET_OK or not response.fields:
        return {"error": (response.errmsg or b"no result").decode("utf-8", "replace"), "code": response.errcode}
    return {
        "fields": [[name.decode("utf-8", "replace"), type_] for name, type_ in response.fields],
        "rows": [[None if v is None else v.decode("utf-8", errors) for v in row] for row in response.rows],
    }


def _raw(value: Any) -> bytes | None:
    """A cell of an ``errors="surrogateescape"`` answer as the bytes it was."""
    return None if value is None else str(value).encode("utf-8", "surrogateescape")


def _error(message: str) -> ProxyResponse:
    """An ERR answer of the host's own (``1105``, as the script's)."""
    return ProxyResponse(MYSQLD_PACKET_ERR, errmsg=message.encode(), errcode=1105, sqlstate=b"HY000")


def _rows(answer: dict[str, Any]) -> list[dict[str, Any]]:
    """An answer's rows as dicts of column name to text."""
    names = [name for name, _ in answer["fields"]]
    return [dict(zip(names, row, strict=False)) for row in answer["rows"]]


class Workers:
    """This worker's side of the others: answers their relayed control statements, relays its own to them."""

    def __init__(self, info: WorkerInfo, lua: LuaHost | None, report: Callable[..., None]) -> None:
        self.info = info
        self.lua = lua
        self.report = report
        self._server: asyncio.AbstractServer | None = None

    async def start(self) -> None:
        """Listen for the other workers' statements."""
        path = self.info.path(self.info.index)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)  # a previous run of this worker's
        self._server = await asyncio.start_unix_server(self._serve, path)

    async def close(self) -> None:
        """Stop listening."""
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    def run_here(self, statement: bytes) -> dict[str, Any]:
        """Carry out a relayed control statement in this worker's Lua (``worker_control``, as a verified admin's:
        the worker that relays it checked the account), its answer as JSON."""
        return self._call_here("worker_control", statement)

    def sample_here(self, row_id: int) -> dict[str, Any]:
        """This worker's digest line holding row ``row_id`` with its sample (``worker_sample``), as JSON."""
        return self._call_here("worker_sample", row_id, errors="surrogateescape")

    def _call_here(self, function: str, arg: Any, errors: str = "replace") -> dict[str, Any]:
        """A script function's answer (``proxy.response``) as JSON."""
        if self.lua is None:
            return {"error": "no script"}
        conn = self.lua.new_connection()
        if conn is None:
            return {"error": "no script"}
        res = conn.call(function, arg)
        if not res.ok:
            return {"error": f"{function} failed: {res.error}"}
        return _answer_json(conn.response(), errors)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """One relayed statement: a JSON line in, the answer as a JSON line out."""
        try:
            request = json.loads(await asyncio.wait_for(reader.readline(), ANSWER_TIMEOUT))
            try:
                if "sample" in request:
                    answer = self.sample_here(int(request["sample"]))
                else:
                    answer = self.run_here(request["statement"].encode())
            except Exception as exc:  # noqa: BLE001 - the asking worker gets the reason, this one goes on
                answer = {"error": f"{type(exc).__name__}: {exc}"}
            writer.write(json.dumps(answer).encode() + b"\n")
            await writer.drain()
        except (OSError, ValueError, KeyError, TimeoutError) as exc:
            self.report("worker control", "a relayed control statement failed: %s", exc)
        finally:
            writer.close()

    async def _ask(self, index: int, statement: bytes) -> dict[str, Any]:
        """Another worker's answer to ``statement``."""
        return await self._request(index, {"statement": statement.decode("utf-8", "replace")})

    async def _request(self, index: int, request: dict[str, Any]) -> dict[str, Any]:
        """Another worker's answer to a request (``statement`` or ``sample``)."""
        reader, writer = await asyncio.wait_for(asyncio.open_unix_connection(self.info.path(index)), ANSWER_TIMEOUT)
        try:
            writer.write(json.dumps(request).encode() + b"\n")
            await writer.drain()
            answer: dict[str, Any] = json.loads(await asyncio.wait_for(reader.readline(), ANSWER_TIMEOUT))
            return answer
        finally:
            writer.close()

    async def gather(self, local: ProxyResponse) -> ProxyResponse | LuaCall:
        """The answer to a control statement for every worker: this one's (``local``) and the others', merged; for
        EXPLAIN, the call that explains the row asked for on the asking connection (or why it cannot)."""
        statement = local.relay or b""
        found = _CONTROL.match(statement)
        verb = found[1].lower().decode() if found else "status"
        limit = int(found[2]) if found and found[2] else 20
        order = found[3].lower().decode() if found and found[3] else "sum"
        here = _answer_json(local)
        if verb == "explain":
            return await self._explain(here)
        asked = statement
        if verb == "digest":  # every worker's whole digest (its HOST kept), so that the top n of the union is right
            asked = _DIGEST_ROWS.sub(f"PROXY LOG DIGEST {ALL_ROWS}".encode(), statement, count=1)
            here = self.run_here(asked)
        answers, missing = await self._ask_others(asked, here, verb)
        if "error" in here:
            return ProxyResponse(MYSQLD_PACKET_ERR, errmsg=f"(proxy) {here['error']}".encode(), errcode=1105)
        fields = here["fields"]
        if verb == "tail":
            rows = merge.merge_tail(_rows(a) for a in answers)[-limit:]
        elif verb == "digest":
            rows = merge.top_digests(merge.merge_digests(_rows(a) for a in answers), order, limit)
        else:
            firsts = [row for a in answers for row in _rows(a)[:1]]
            # A column the merge does not know keeps this worker's value.
            status = {**(firsts[0] if firsts else {}), **merge.merge_status(firsts)}
            if missing:
                status["log_file"] += f"; worker{'s' if len(missing) > 1 else ''} {', '.join(map(str, missing))}" \
                                      " did not answer"  # fmt: skip
            rows = [status]
        names = [name for name, _ in fields]
        return ProxyResponse(
            MYSQLD_PACKET_OK,
            fields=[(name.encode(), int(type_)) for name, type_ in fields],
            rows=[[to_bytes(row.get(name)) for name in names] for row in rows],
        )

    async def _ask_others(self, asked: bytes, here: dict[str, Any], verb: str) -> tuple[list[Any], list[int]]:
        """``here`` and the other workers' answers to ``asked``, and the workers that did not answer."""
        others = [i for i in range(1, self.info.count + 1) if i != self.info.index]
        replies = await asyncio.gather(*(self._ask(i, asked) for i in others), return_exceptions=True)
        answers, missing = [here], []
        for index, reply in zip(others, replies, strict=True):
            if isinstance(reply, BaseException) or "error" in reply:
                reason = reply if isinstance(reply, BaseException) else reply["error"]
                self.report(f"worker {index} answer", "worker %d did not carry out %s: %s", index, verb, reason)
                missing.append(index)
            else:
                answers.append(reply)
        return answers, missing

    async def _sample(self, row_id: int) -> dict[str, Any]:
        """The digest line holding row ``row_id`` and its sample, from the worker that numbered it (JSON)."""
        owner = (row_id - 1) % self.info.count + 1  # worker k of N numbers its rows k, k + N, ... (lib/digest.lua)
        if owner == self.info.index:
            return self.sample_here(row_id)
        try:
            return await self._request(owner, {"sample": row_id})
        except (OSError, ValueError, TimeoutError) as exc:
            return {"error": f"worker {owner}, which keeps that row, did not answer ({exc})"}

    async def _explain(self, here: dict[str, Any]) -> ProxyResponse | LuaCall:
        """PROXY LOG EXPLAIN [n | ID id] for every worker: the row of the merged digest (rank n by total time, as
        DIGEST ranks it, or the one holding row ``id``), its sample from the worker that keeps it, then
        ``explain_sample`` on the asking connection (which checks the sample as a single proxy does)."""
        if "error" in here:
            return _error(f"PROXY LOG EXPLAIN: {here['error']}")
        asked = _rows(here)[0]
        rank, row_id = int(asked.get("rank") or 0), int(asked.get("id") or 0)
        statement = f"PROXY LOG DIGEST {ALL_ROWS}".encode()
        answers, missing = await self._ask_others(statement, self.run_here(statement), "digest")
        if "error" in answers[0]:
            return _error(f"PROXY LOG EXPLAIN: {answers[0]['error']}")
        rows = merge.top_digests(merge.merge_digests(_rows(a) for a in answers), "sum")
        unanswered = f" (worker{'s' if len(missing) > 1 else ''} {', '.join(map(str, missing))} did not answer)"
        if row_id:
            found = await self._sample(row_id)
            if "error" in found:
                return _error(f"PROXY LOG EXPLAIN: no digest row has the id {row_id} (any more: RESET or eviction);"
                              f" see the id column of PROXY LOG DIGEST{unanswered if missing else ''}")  # fmt: skip
            line = _rows(found)[0]
            key = (line["digest"], line["db"], line["user"])
            rank = next((i for i, r in enumerate(rows, 1) if (r.get("digest"), r.get("db"), r.get("user")) == key), 0)
        elif rank > len(rows):
            return _error(f"PROXY LOG EXPLAIN: the digest has no row {rank} (it has {len(rows)})"
                          f"{unanswered if missing else ''}")  # fmt: skip
        if rank:  # the merged row: its sample is the slowest worker's (merge_digests keeps that row's id)
            row_id = int(rows[rank - 1].get("id") or row_id)
            found = await self._sample(row_id)
            if "error" in found:
                return _error(f"PROXY LOG EXPLAIN: {found['error']}")
            line = _rows(found)[0]
        return LuaCall("explain_sample", {
            b"rank": rank or None, b"id": int(line["id"]), b"digest": _raw(line["digest"]), b"db": _raw(line["db"]),
            b"sample_us": int(line["sample_us"]), b"sample": _raw(line["sample"]),
        })  # fmt: skip


# ---------------------------------------------------------------- the parent


def listening_socket(host: str, port: int, reuse_port: bool = False) -> socket.socket:
    """The socket every worker accepts on (bound and listening before they are forked); with ``reuse_port``, a
    socket that only holds the port (bound, not listening: it gets no connections) for the workers' own
    ``SO_REUSEPORT`` sockets, over which the kernel spreads connections by a hash of their addresses."""
    infos = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    family, type_, proto, _, address = infos[0]
    sock = socket.socket(family, type_, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if reuse_port:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind(address)
    if not reuse_port:
        sock.listen(128)
    sock.setblocking(False)
    return sock


def reuse_port_socket(held: socket.socket) -> socket.socket:
    """A worker's own listening socket on the port ``held`` holds (``--reuseport``)."""
    sock = socket.socket(held.family, held.type, held.proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind(held.getsockname())
    sock.listen(128)
    sock.setblocking(False)
    return sock


def supervise(count: int, serve: Callable[[WorkerInfo], int]) -> int:
    """Fork ``count`` workers running ``serve(info)``, start again one that dies, stop them all on SIGTERM/SIGINT.

    Returns 0 when every worker stopped cleanly after a signal.
    """
    directory = tempfile.mkdtemp(prefix="instrumented-proxy-")  # 0700: only this user can reach the workers
    children: dict[int, int] = {}  # pid -> worker index
    stopping = False

    def start(index: int) -> None:
        signals = {signal.SIGTERM, signal.SIGINT}
        signal.pthread_sigmask(signal.SIG_BLOCK, signals)  # the parent's handler must never run in a child
        pid = os.fork()
        if pid == 0:  # the worker
            code = 1
            try:
                signal.signal(signal.SIGTERM, signal.SIG_DFL)
                signal.signal(signal.SIGINT, signal.SIG_DFL)
                signal.pthread_sigmask(signal.SIG_UNBLOCK, signals)
                code = serve(WorkerInfo(index, count, directory))
            except BaseException:  # noqa: BLE001 - whatever happens, the child must not return into the parent
                traceback.print_exc()
            finally:
                sys.stdout.flush()
                sys.stderr.flush()
                os._exit(code)
        children[pid] = index
        signal.pthread_sigmask(signal.SIG_UNBLOCK, signals)

    def stop(signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True
        for pid in list(children):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    for index in range(1, count + 1):
        start(index)
    failed = False
    try:
        while children:
            pid, status = os.wait()
            index = children.pop(pid, 0)
            code = os.waitstatus_to_exitcode(status)
            if stopping:  # a worker still starting when the signal came dies of it: stopped too
                failed = failed or code not in (0, -signal.SIGTERM, -signal.SIGINT)
                continue
            log.error("worker %d (pid %d) exited with %d: starting it again", index, pid, code)
            time.sleep(RESTART_PAUSE)
            if not stopping:
                start(index)
    finally:
        shutil.rmtree(directory, ignore_errors=True)
    return 1 if failed else 0
