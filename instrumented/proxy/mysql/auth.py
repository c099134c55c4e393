"""The connection-phase packets: the server greeting, the client's handshake response, COM_CHANGE_USER.

Read to learn the user, database and capabilities, and to strip from the greeting what the proxy cannot
relay (TLS, compression, MariaDB's framing extensions).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

from .constants import (
    CLIENT_CONNECT_WITH_DB,
    CLIENT_MYSQL,
    CLIENT_PLUGIN_AUTH,
    CLIENT_PLUGIN_AUTH_LENENC_CLIENT_DATA,
    CLIENT_PROTOCOL_41,
    CLIENT_SECURE_CONNECTION,
    CLIENT_SSL,
    STRIPPED_CAPS,
    STRIPPED_MARIADB_CAPS,
)
from .packets import read_lenenc_str


@dataclass
class Greeting:
    """The server's initial handshake (protocol v10), with the offsets needed to patch capabilities."""

    protocol: int
    server_version: bytes
    thread_id: int
    scramble: bytes
    capabilities: int
    charset: int
    status: int
    auth_plugin: bytes
    mariadb_caps: int
    mysqld_version: int = 0
    _caps_low_pos: int = field(default=0, repr=False)
    _caps_high_pos: int = field(default=0, repr=False)
    _ext_pos: int = field(default=-1, repr=False)


def parse_greeting(payload: bytes) -> Greeting:
    """Parse a v10 handshake; raises ValueError on anything else (an ERR greeting is handled by the caller)."""
    if not payload or payload[0] != 10:
        raise ValueError("not a protocol 10 handshake")
    end = payload.index(b"\x00", 1)
    version = payload[1:end]
    pos = end + 1
    thread_id = struct.unpack_from("<I", payload, pos)[0]
    pos += 4
    scramble = payload[pos : pos + 8]
    pos += 9
    caps_low_pos = pos
    caps = struct.unpack_from("<H", payload, pos)[0]
    pos += 2
    charset = status = 0
    caps_high_pos = -1
    auth_plugin = b""
    mariadb_caps = 0
    ext_pos = -1
    if pos < len(payload):
        charset = payload[pos]
        status = struct.unpack_from("<H", payload, pos + 1)[0]
        caps_high_pos = pos + 3
        caps |= struct.unpack_from("<H", payload, caps_high_pos)[0] << 16
        auth_len = payload[pos + 5]
        pos += 6 + 6  # charset, status, caps high, auth data len, 6 filler bytes
        if not caps & CLIENT_MYSQL:
            ext_pos = pos
            mariadb_caps = struct.unpack_from("<I", payload, pos)[0]
        pos += 4
        if caps & CLIENT_SECURE_CONNECTION:
            part2 = max(13, auth_len - 8)
            scramble += payload[pos : pos + part2].rstrip(b"\x00")
            pos += part2
        if caps & CLIENT_PLUGIN_AUTH:
            auth_plugin = payload[pos:].split(b"\x00", 1)[0]
    digits = version.split(b"-", 1)[0].split(b".")
    mysqld_version = 0
    try:
        major, minor, patch = (int(d) for d in digits[:3])
        mysqld_version = major * 10000 + minor * 100 + patch
    except ValueError:
        pass
    return Greeting(
        10, version, thread_id, scramble, caps, charset, status, auth_plugin, mariadb_caps, mysqld_version,
        caps_low_pos, caps_high_pos, ext_pos,
    )  # fmt: skip


def strip_greeting(payload: bytes, greeting: Greeting) -> bytes:
    """The greeting with SSL/compression (and the MariaDB framing extensions) removed from its capabilities."""
    data = bytearray(payload)
    caps = greeting.capabilities & ~STRIPPED_CAPS
    struct.pack_into("<H", data, greeting._caps_low_pos, caps & 0xFFFF)
    if greeting._caps_high_pos >= 0:
        struct.pack_into("<H", data, greeting._caps_high_pos, caps >> 16)
    if greeting._ext_pos >= 0:
        struct.pack_into("<I", data, greeting._ext_pos, greeting.mariadb_caps & ~STRIPPED_MARIADB_CAPS)
    return bytes(data)


@dataclass
class AuthResponse:
    """What the client's handshake response says (protocol 4.1)."""

    capabilities: int
    username: bytes
    auth_response: bytes
    database: bytes
    auth_plugin: bytes
    is_ssl_request: bool = False


def parse_auth_response(payload: bytes) -> AuthResponse:
    """Parse a HandshakeResponse41; an SSL request (32 bytes, CLIENT_SSL) is flagged, not parsed."""
    caps = struct.unpack_from("<I", payload, 0)[0]
    if not caps & CLIENT_PROTOCOL_41:
        raise ValueError("pre-4.1 clients are not supported")
    if len(payload) <= 32:
        return AuthResponse(caps, b"", b"", b"", b"", is_ssl_request=bool(caps & CLIENT_SSL))
    pos = 32
    end = payload.index(b"\x00", pos)
    username = payload[pos:end]
    pos = end + 1
    if caps & CLIENT_PLUGIN_AUTH_LENENC_CLIENT_DATA:
        auth, pos = read_lenenc_str(payload, pos)
        auth = auth or b""
    elif caps & CLIENT_SECURE_CONNECTION:
        length = payload[pos]
        auth = payload[pos + 1 : pos + 1 + length]
        pos += 1 + length
    else:
        end = payload.index(b"\x00", pos)
        auth = payload[pos:end]
        pos = end + 1
    database = b""
    if caps & CLIENT_CONNECT_WITH_DB and pos < len(payload):
        end = payload.find(b"\x00", pos)
        end = len(payload) if end < 0 else end
        database = payload[pos:end]
        pos = end + 1
    plugin = b""
    if caps & CLIENT_PLUGIN_AUTH and pos < len(payload):
        end = payload.find(b"\x00", pos)
        plugin = payload[pos : len(payload) if end < 0 else end]
    return AuthResponse(caps, username, auth, database, plugin)


def parse_change_user(payload: bytes, capabilities: int) -> tuple[bytes, bytes]:
    """(username, database) of a COM_CHANGE_USER packet."""
    end = payload.index(b"\x00", 1)
    username = payload[1:end]
    pos = end + 1
    if capabilities & CLIENT_SECURE_CONNECTION:
        pos += 1 + payload[pos]
    else:
        pos = payload.index(b"\x00", pos) + 1
    end = payload.find(b"\x00", pos)
    database = payload[pos : len(payload) if end < 0 else end]
    return username, database
