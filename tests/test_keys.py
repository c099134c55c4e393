"""The key scheme: one place, ASCII, short, versioned, no user input unhashed."""

from instrumented.keys import SCHEMA_VERSION, Keys, make_process_id


def test_every_key_is_prefixed_versioned_ascii_and_short():
    keys = Keys("site")
    pid = make_process_id()
    user_pk = "ユーザー with spaces " * 20
    all_keys = [
        keys.bucket(123, pid),
        keys.bucket_index(123),
        keys.rollup(pid),
        keys.series(pid),
        keys.live(1_700_000_000),
        keys.marker(pid),
        keys.error_meta("7kq2m9x4d1h8vz"),
        keys.error_page("7kq2m9x4d1h8vz"),
        keys.error_index(456),
        keys.error_lookups(user_pk),
        keys.ping(),
    ]
    assert len(set(all_keys)) == len(all_keys)
    for key in all_keys:
        assert key.startswith(f"site{SCHEMA_VERSION}:")
        assert key.isascii() and " " not in key and len(key) <= 250


def test_process_ids_are_unique_ascii():
    ids = {make_process_id() for _ in range(50)}
    assert len(ids) == 50
    assert all(i.isascii() and " " not in i for i in ids)
