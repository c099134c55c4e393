"""Protocol framing and the streaming response tracker, on synthetic packets (no server needed)."""

from __future__ import annotations

import random
import struct

import pytest

from instrumented.proxy.mysql import auth
from instrumented.proxy.mysql import constants as c
from instrumented.proxy.mysql import packets as p
from instrumented.proxy.mysql.responses import ResponseTracker


def response(payloads: list[bytes]) -> bytes:
    return p.frame_all(payloads, 1)[0]


def text_result(rows: int, deprecate_eof: bool, more: bool = False) -> list[bytes]:
    payloads = p.text_resultset([(b"a", 253), (b"b", 8)], [[b"x" * i, str(i).encode()] for i in range(rows)],
                                deprecate_eof)  # fmt: skip
    if more:  # set SERVER_MORE_RESULTS_EXISTS on the terminator
        last = bytearray(payloads[-1])
        if deprecate_eof:
            info = p.parse_ok(last)
            last = bytearray(b"\xfe" + p.ok_packet(info.affected_rows, info.insert_id, info.status | 8)[1:])
        else:
            struct.pack_into("<H", last, 3, 0x2 | 0x8)
        payloads[-1] = bytes(last)
    return payloads


def feed_in_chunks(tracker: ResponseTracker, data: bytes, sizes: list[int]) -> int:
    """Feed data in the given chunk sizes; return how many bytes the tracker claimed."""
    used = 0
    pos = 0
    for size in sizes:
        chunk = data[pos : pos + size]
        pos += size
        if not chunk:
            break
        n = tracker.feed(chunk)
        used += n
        if tracker.done:
            break
    return used


@pytest.mark.parametrize("deprecate_eof", [False, True])
@pytest.mark.parametrize("chunking", ["whole", "bytewise", "random"])
def test_tracker_finds_end_of_result_set_whatever_the_chunking(deprecate_eof, chunking):
    data = response(text_result(50, deprecate_eof))
    trailing = b"NEXT"
    stream = data + trailing
    if chunking == "whole":
        sizes = [len(stream)]
    elif chunking == "bytewise":
        sizes = [1] * len(stream)
    else:
        rng = random.Random(7)
        sizes = [rng.randint(1, 40) for _ in range(len(stream))]
    tracker = ResponseTracker(c.COM_QUERY, deprecate_eof)
    used = feed_in_chunks(tracker, stream, sizes)
    assert tracker.done
    assert used == len(data)
    assert tracker.row_count == 50
    assert tracker.query_status == 0
    assert tracker.affected_rows is None
    assert tracker.bytes == len(data)


def test_tracker_multi_result_and_final_ok():
    payloads = (
        text_result(3, False, more=True)
        + text_result(2, False, more=True)
        + [p.ok_packet(affected_rows=7, insert_id=9, status=0x2)]
    )
    data = response(payloads)
    tracker = ResponseTracker(c.COM_QUERY, False)
    assert feed_in_chunks(tracker, data, [5] * len(data)) == len(data)
    assert tracker.done and tracker.row_count == 5
    assert tracker.affected_rows == 7 and tracker.insert_id == 9


def test_tracker_error_in_the_middle_of_rows():
    rows = text_result(4, False)[:-1]  # no terminator
    data = response([*rows, p.err_packet("Query execution was interrupted", 1317, "70100")])
    tracker = ResponseTracker(c.COM_QUERY, False)
    assert tracker.feed(data) == len(data)
    assert tracker.done and tracker.query_status == 0xFF
    assert tracker.err == (1317, b"70100", b"Query execution was interrupted")
    assert tracker.row_count == 4


def test_tracker_ok_and_err_single_packets():
    ok = response([p.ok_packet(affected_rows=3)])
    tracker = ResponseTracker(c.COM_QUERY, True)
    assert tracker.feed(ok + b"xx") == len(ok)
    assert tracker.affected_rows == 3 and tracker.done

    tracker = ResponseTracker(c.COMMAND_NAMES["PING"], False)
    assert tracker.feed(ok) == len(ok) and tracker.done and tracker.query_status == 0

    assert ResponseTracker(c.COM_STMT_CLOSE, False).done  # no response at all


def test_tracker_rows_larger_than_16mb_use_continuation_packets():
    big = b"\xfe" + b"y" * (c.MAX_PAYLOAD + 100)  # a row that starts with 0xfe must not look like EOF
    payloads = [p.lenenc_int(1), p.column_definition(b"c"), p.eof_packet(), big, p.eof_packet()]
    data = response(payloads)
    tracker = ResponseTracker(c.COM_QUERY, False)
    used = feed_in_chunks(tracker, data, [65536] * (len(data) // 65536 + 2))
    assert tracker.done and used == len(data)
    assert tracker.row_count == 1


def test_tracker_local_infile_waits_for_the_client():
    request = response([b"\xfb/tmp/data.csv"])
    tracker = ResponseTracker(c.COM_QUERY, False)
    assert tracker.feed(request) == len(request)
    assert tracker.waiting_for_client and tracker.relays_client and not tracker.done
    file_data = p.frame(b"x" * 100, 2)[0]
    tracker.client_data(file_data[:7])  # a packet split across reads
    tracker.client_data(file_data[7:])
    assert tracker.waiting_for_client
    tracker.client_data(p.frame(b"", 3)[0])
    assert not tracker.waiting_for_client
    ok = p.frame(p.ok_packet(affected_rows=10), 4)[0]
    assert tracker.feed(ok) == len(ok)
    assert tracker.done and tracker.affected_rows == 10


def test_tracker_prepare_counts_parameter_and_column_definitions():
    ok = b"\x00" + struct.pack("<IHHBH", 5, 2, 3, 0, 0)
    payloads = (
        [ok] + [p.column_definition(b"?")] * 3 + [p.eof_packet()] + [p.column_definition(b"c")] * 2 + [p.eof_packet()]
    )
    data = response(payloads)
    tracker = ResponseTracker(c.COM_STMT_PREPARE, False)
    assert tracker.feed(data + b"zz") == len(data) and tracker.done
    tracker = ResponseTracker(c.COM_STMT_PREPARE, True)
    data = response([ok] + [p.column_definition(b"?")] * 5)
    assert tracker.feed(data) == len(data) and tracker.done


def test_frame_splits_payloads_of_16mb_and_more():
    payload = b"q" * (c.MAX_PAYLOAD * 2)
    data, seq = p.frame(payload, 0)
    assert seq == 3  # two full packets and the empty terminator
    assert list(p.iter_packets(data)) == [payload]


def greeting(caps: int, ext: int) -> bytes:
    scramble = b"abcdefgh" + b"ijklmnopqrst"
    return (
        b"\x0a" + b"10.11.19-MariaDB\x00" + struct.pack("<I", 42) + scramble[:8] + b"\x00"
        + struct.pack("<H", caps & 0xFFFF) + b"\x21" + struct.pack("<H", 2) + struct.pack("<H", caps >> 16)
        + bytes([21]) + b"\x00" * 6 + struct.pack("<I", ext) + scramble[8:] + b"\x00" + b"mysql_native_password\x00"
    )  # fmt: skip


def test_greeting_parse_and_capability_stripping():
    caps = c.CLIENT_SSL | c.CLIENT_COMPRESS | c.CLIENT_PROTOCOL_41 | c.CLIENT_SECURE_CONNECTION | c.CLIENT_PLUGIN_AUTH
    caps |= c.CLIENT_DEPRECATE_EOF
    payload = greeting(caps, c.MARIADB_CLIENT_PROGRESS | c.MARIADB_CLIENT_CACHE_METADATA | (1 << 1))
    g = auth.parse_greeting(payload)
    assert g.thread_id == 42 and g.mysqld_version == 101119 and g.auth_plugin == b"mysql_native_password"
    assert g.scramble == b"abcdefghijklmnopqrst"
    stripped = auth.parse_greeting(auth.strip_greeting(payload, g))
    assert not stripped.capabilities & (c.CLIENT_SSL | c.CLIENT_COMPRESS)
    assert stripped.capabilities & c.CLIENT_DEPRECATE_EOF
    assert stripped.mariadb_caps == 1 << 1


def test_auth_response_parse():
    caps = c.CLIENT_PROTOCOL_41 | c.CLIENT_SECURE_CONNECTION | c.CLIENT_CONNECT_WITH_DB | c.CLIENT_PLUGIN_AUTH
    payload = (struct.pack("<IIB", caps, 1 << 24, 33) + b"\x00" * 23 + b"alice\x00" + b"\x14" + b"s" * 20
               + b"shop\x00" + b"mysql_native_password\x00")  # fmt: skip
    response = auth.parse_auth_response(payload)
    assert (response.username, response.database, response.auth_plugin) == (b"alice", b"shop", b"mysql_native_password")
    assert response.auth_response == b"s" * 20
    ssl = auth.parse_auth_response(struct.pack("<IIB", caps | c.CLIENT_SSL, 1 << 24, 33) + b"\x00" * 23)
    assert ssl.is_ssl_request


def test_built_result_set_parses_back():
    payloads = p.text_resultset([(b"n", 8), (b"s", 254)], [[b"1", None], [b"2", b"two"]], False)
    assert p.read_lenenc_int(payloads[0], 0)[0] == 2
    col = p.parse_column_definition(payloads[1])
    assert (col.name, col.type) == (b"n", 8)
    assert p.parse_text_row(payloads[4], 2) == [b"1", None]
    assert p.parse_text_row(payloads[5], 2) == [b"2", b"two"]
    code, state, msg = p.parse_err(p.err_packet("nope", 1227, "42000"))
    assert (code, state, msg) == (1227, b"42000", b"nope")
