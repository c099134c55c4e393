"""MySQL protocol numbers: capability and status flags, command bytes, column types, charsets."""

from __future__ import annotations

MAX_PAYLOAD = 0xFFFFFF  # a payload of exactly this size is continued in the next packet

# Capability flags (protocol::CapabilityFlags).
CLIENT_MYSQL = 1  # MariaDB: server is MySQL-compatible; when unset, 4 bytes of extended caps follow
CLIENT_CONNECT_WITH_DB = 0x8
CLIENT_COMPRESS = 0x20
CLIENT_PROTOCOL_41 = 0x200
CLIENT_SSL = 0x800
CLIENT_SECURE_CONNECTION = 0x8000
CLIENT_PLUGIN_AUTH = 0x80000
CLIENT_PLUGIN_AUTH_LENENC_CLIENT_DATA = 0x200000
CLIENT_DEPRECATE_EOF = 0x1000000

# MariaDB extended capabilities (the 4 bytes at the end of the greeting filler).
MARIADB_CLIENT_PROGRESS = 1 << 0
MARIADB_CLIENT_STMT_BULK_OPERATIONS = 1 << 2
MARIADB_CLIENT_EXTENDED_METADATA = 1 << 3
MARIADB_CLIENT_CACHE_METADATA = 1 << 4
#: Extended capabilities the proxy hides from clients because they change the result framing (progress
#: packets inside results, bulk execution, column definitions with extra data, skipped metadata).
STRIPPED_MARIADB_CAPS = (
    MARIADB_CLIENT_PROGRESS
    | MARIADB_CLIENT_STMT_BULK_OPERATIONS
    | MARIADB_CLIENT_EXTENDED_METADATA
    | MARIADB_CLIENT_CACHE_METADATA
)
#: Capabilities MySQL Proxy removed from the greeting: it cannot relay TLS or compressed traffic.
STRIPPED_CAPS = CLIENT_SSL | CLIENT_COMPRESS

# Server status flags.
SERVER_STATUS_AUTOCOMMIT = 0x2
SERVER_MORE_RESULTS_EXISTS = 0x8
SERVER_STATUS_CURSOR_EXISTS = 0x40

# Commands.
COM_QUIT = 1
COM_INIT_DB = 2
COM_QUERY = 3
COM_FIELD_LIST = 4
COM_PROCESS_INFO = 10
COM_CHANGE_USER = 17
COM_BINLOG_DUMP = 18
COM_STMT_PREPARE = 22
COM_STMT_EXECUTE = 23
COM_STMT_SEND_LONG_DATA = 24
COM_STMT_CLOSE = 25
COM_STMT_FETCH = 28
COM_BINLOG_DUMP_GTID = 30
COM_RESET_CONNECTION = 31  # not in MySQL Proxy 0.8 (no proxy.COM_ name): ends prepared statements too
COM_STMT_BULK_EXECUTE = 250

COMMAND_NAMES: dict[str, int] = {
    "SLEEP": 0, "QUIT": 1, "INIT_DB": 2, "QUERY": 3, "FIELD_LIST": 4, "CREATE_DB": 5, "DROP_DB": 6, "REFRESH": 7,
    "SHUTDOWN": 8, "STATISTICS": 9, "PROCESS_INFO": 10, "CONNECT": 11, "PROCESS_KILL": 12, "DEBUG": 13, "PING": 14,
    "TIME": 15, "DELAYED_INSERT": 16, "CHANGE_USER": 17, "BINLOG_DUMP": 18, "TABLE_DUMP": 19, "CONNECT_OUT": 20,
    "REGISTER_SLAVE": 21, "STMT_PREPARE": 22, "STMT_EXECUTE": 23, "STMT_SEND_LONG_DATA": 24, "STMT_CLOSE": 25,
    "STMT_RESET": 26, "SET_OPTION": 27, "STMT_FETCH": 28, "DAEMON": 29,
}  # fmt: skip

MYSQL_TYPES: dict[str, int] = {
    "DECIMAL": 0, "TINY": 1, "SHORT": 2, "LONG": 3, "FLOAT": 4, "DOUBLE": 5, "NULL": 6, "TIMESTAMP": 7,
    "LONGLONG": 8, "INT24": 9, "DATE": 10, "TIME": 11, "DATETIME": 12, "YEAR": 13, "NEWDATE": 14, "BIT": 16,
    "NEWDECIMAL": 246, "ENUM": 247, "SET": 248, "TINY_BLOB": 249, "MEDIUM_BLOB": 250, "LONG_BLOB": 251,
    "BLOB": 252, "VAR_STRING": 253, "STRING": 254, "GEOMETRY": 255,
}  # fmt: skip
MYSQL_TYPE_STRING = 254
#: Column types a built result set marks binary (numbers).
NUMERIC_TYPES = {0, 1, 2, 3, 4, 5, 8, 9, 13, 246}

# Error codes the proxy answers with itself.
ER_UNKNOWN_ERROR = 1105  # "(proxy) ..." errors, as MySQL Proxy's
CR_CONN_HOST_ERROR = 2003  # no backend could be reached: what a client says when it cannot connect

CHARSET_UTF8 = 45  # utf8mb4_general_ci: what the proxy sends is valid UTF-8, 4-byte sequences included
CHARSET_BINARY = 63
PRI_KEY_FLAG = 0x2
BINARY_FLAG = 0x80
