"""How much prepared-statement text a connection's script may keep: capped per statement and per connection.

A script learns a statement's text from ``inj.query`` in ``read_query_result`` of its COM_STMT_PREPARE and
keeps it by statement id until COM_STMT_CLOSE (query_log.lua does, to log executes by text). Kept whole,
100 statements of 4 MB held 530 MB per connection. So the host hands the script at most ``TEXT_LIMIT``
bytes of one statement (cut texts end in a marker) and, past ``CONNECTION_BYTES`` or ``CONNECTION_COUNT``
statements still open, only a short placeholder. The host keeps sizes, never texts.

A COM_STMT_CLOSE gives the statement's share back: the script drops its copy there. COM_RESET_CONNECTION
and COM_CHANGE_USER end every statement on the server, and the script drops all its copies (the shipped
query_log.lua does), so they give every share back.
"""

from __future__ import annotations

from .lua.api import Injection
from .mysql.constants import COM_CHANGE_USER, COM_RESET_CONNECTION, COM_STMT_CLOSE, COM_STMT_PREPARE

#: Bytes of one statement's text the script is handed (enough to log and digest it).
TEXT_LIMIT = 64 * 1024
#: Statement text a connection's script may hold in all (its open statements).
CONNECTION_BYTES = 1024 * 1024
#: Statements a connection's script may hold the text of.
CONNECTION_COUNT = 1000

_PREFIX = bytes((COM_STMT_PREPARE,))


class PreparedTexts:
    """One connection's account of the prepared-statement text handed to its script."""

    __slots__ = ("open", "open_bytes")

    def __init__(self) -> None:
        self.open: dict[int, int] = {}  # statement id -> bytes of text handed to the script
        self.open_bytes = 0

    @property
    def held_bytes(self) -> int:
        """Statement text the script may be holding now."""
        return self.open_bytes

    def for_script(self, packet: bytes, stmt_id: int | None) -> bytes:
        """The COM_STMT_PREPARE packet as ``inj.query`` shows it; ``stmt_id`` when the server accepted it."""
        size = len(packet) - 1
        text = packet
        if size > TEXT_LIMIT:
            text = packet[: 1 + TEXT_LIMIT] + b"... (truncated by the proxy: %d bytes)" % size
        if stmt_id is None:
            return text  # a failed prepare: nothing is kept
        self.closed(stmt_id)  # an id the server hands out again replaces the script's copy
        count = len(self.open)
        if count >= CONNECTION_COUNT or self.held_bytes + len(text) > CONNECTION_BYTES:
            text = _PREFIX + b"(text not kept by the proxy: %d bytes; too many prepared statements held)" % size
        self.open[stmt_id] = len(text)
        self.open_bytes += len(text)
        return text

    def shown(self, inj: Injection, stmt_id: int | None) -> Injection:
        """The COM_STMT_PREPARE injection as ``read_query_result`` gets it (see ``for_script``)."""
        return Injection(inj.id, self.for_script(inj.packet, stmt_id), inj.resultset_is_needed, inj.queued_ns)

    def command_sent(self, command: int, payload: bytes) -> None:
        """A forwarded command that ends statements: COM_STMT_CLOSE one, a reset or a change-user all."""
        if command == COM_STMT_CLOSE:
            if len(payload) >= 5:
                self.closed(int.from_bytes(payload[1:5], "little"))
        elif command in (COM_RESET_CONNECTION, COM_CHANGE_USER):
            self.server_forgot_all()

    def closed(self, stmt_id: int) -> None:
        """COM_STMT_CLOSE: the script drops its copy, the share is free again."""
        self.open_bytes -= self.open.pop(stmt_id, 0)

    def server_forgot_all(self) -> None:
        """COM_RESET_CONNECTION / COM_CHANGE_USER: every id ends and the script drops every copy."""
        self.open.clear()
        self.open_bytes = 0
