"""The memcached client: packing, the circuit breaker, failing open."""

import dataclasses
import time

from instrumented.codec import pack, unpack
from instrumented.conf import get_config
from instrumented.memcached import CircuitBreaker, Store, get_store


def test_pack_roundtrip_and_compression():
    small = {"a": 1}
    big = {"sql": "SELECT 1 " * 1000, "name": "vue ✓ 視圖"}
    assert unpack(pack(small)) == small
    packed = pack(big)
    assert packed[:1] == b"z" and len(packed) < 500
    assert unpack(packed) == big
    assert unpack(b"garbage") is None
    assert unpack(b"z not zlib") is None
    assert unpack(None) is None


def test_breaker_opens_after_threshold_and_backs_off():
    breaker = CircuitBreaker(threshold=2, cooldown=0.05, max_cooldown=0.2)
    breaker.failure()
    assert breaker.allow()
    breaker.failure()
    assert not breaker.allow()
    time.sleep(0.06)
    assert breaker.allow()
    breaker.failure()
    breaker.failure()
    assert not breaker.allow()
    time.sleep(0.06)
    assert not breaker.allow(), "the second cool-down is doubled"
    time.sleep(0.06)
    assert breaker.allow()
    breaker.success()


def test_real_memcached_operations(memcached):
    store = get_store()
    key = f"{store.config.keys.prefix}:test:value"
    assert store.set(key, b"hello", ttl=30)
    assert store.get(key) == b"hello"
    assert store.incr(f"{store.config.keys.prefix}:test:counter") == 1
    assert store.incr(f"{store.config.keys.prefix}:test:counter", 2) == 3
    assert store.add(key, b"other") is False
    assert store.append(key, b" world")
    assert store.get(key) == b"hello world"
    assert store.delete(key)
    assert store.get(key) is None
    assert store.ping(store.config.keys.ping()) is None


def test_too_large_value_is_refused_not_raised(memcached):
    store = get_store()
    assert store.set(f"{store.config.keys.prefix}:big", b"x" * (2 * 1024 * 1024)) is False


def test_unreachable_server_fails_open_fast():
    store = Store(dataclasses.replace(get_config(), servers=(("127.0.0.1", 1),), breaker_failures=2))
    start = time.perf_counter()
    for _ in range(50):
        assert store.get_many([f"{store.config.keys.prefix}:x"]) is None
        assert store.set(f"{store.config.keys.prefix}:x", b"1") is False
    assert time.perf_counter() - start < 2.0
    assert not store.available
    assert store.last_error and "Connection" in store.last_error
