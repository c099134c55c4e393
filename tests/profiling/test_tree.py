"""The stored call tree: building, the check that refuses forged values, merging, speedscope, the sampler."""

from __future__ import annotations

import copy
import threading
import time

import pytest

from instrumented.memcached import get_store, pack
from instrumented.profiling import store as profile_store
from instrumented.profiling.sampler import Sampler
from instrumented.profiling.store import check_arm, check_profile, load_profile, new_reference
from instrumented.profiling.tree import ROOT, Node, add_stack, check_tree, encode, hot_functions, merge, speedscope

A = ("view", "/srv/app/views.py", 10)
B = ("helper", "/srv/app/helpers.py", 3)
C = ("query", "/lib/site-packages/django/db/models/query.py", 600)


def built() -> dict:
    root = Node(ROOT)
    add_stack(root, [A, B], 300)
    add_stack(root, [A, C], 100)
    add_stack(root, [A], 50)
    return encode(root, 100)


def test_encode_is_pre_ordered_and_adds_up() -> None:
    tree = built()
    assert check_tree(tree, 100) == tree
    nodes = tree["nodes"]
    assert nodes[0][1] == -1 and nodes[0][2] == 450
    names = [tree["frames"][n[0]][0] for n in nodes]
    assert names == ["(request)", "view", "helper", "query"]  # the heaviest child first
    assert nodes[1][2:] == [450, 50]


def test_cut_trees_keep_their_time_in_the_parent() -> None:
    root = Node(ROOT)
    for i in range(50):
        add_stack(root, [A, (f"f{i}", "x.py", i)], 10 + i)
    tree = encode(root, 10)
    assert len(tree["nodes"]) == 10 and check_tree(tree, 10) is not None
    assert tree["nodes"][0][2] == sum(10 + i for i in range(50))
    view = tree["nodes"][1]
    kept = sum(n[2] for n in tree["nodes"][2:])
    assert view[3] + kept == view[2]


@pytest.mark.parametrize(
    "forge",
    [
        lambda t: t["nodes"][2].__setitem__(1, 5),  # a parent after its child
        lambda t: t["nodes"][2].__setitem__(0, 99),  # no such frame
        lambda t: t["nodes"][1].__setitem__(3, 10**9),  # own time above the total
        lambda t: t["nodes"][2].__setitem__(2, 10**6),  # children longer than their parent
        lambda t: t["nodes"][0].__setitem__(1, 0),  # a root with a parent
        lambda t: t["frames"][1].__setitem__(2, "10"),  # a line that is not a number
        lambda t: t["frames"][1].__setitem__(0, "x" * 5000),  # a huge name
        lambda t: t["nodes"].append([0, 0, 1.5, 0]),  # a float time
        lambda t: t["nodes"][1].__setitem__(2, True),  # a bool is not a time
        lambda t: t.__setitem__("nodes", []),
    ],
)
def test_forged_trees_are_refused(forge) -> None:
    tree = copy.deepcopy(built())
    forge(tree)
    assert check_tree(tree, 100) is None


def test_too_many_nodes_are_refused() -> None:
    assert check_tree(built(), 3) is None


def profile_value(ref: str, **changes) -> dict:
    value = {
        "v": 1,
        "ref": ref,
        "engine": "builtin",
        "view": "shop:burn",
        "route": "burn/",
        "method": "GET",
        "path": "/burn/",
        "status": 200,
        "process": "host.1",
        "at": time.time(),
        "ms": 1.0,
        "samples": 3,
        "interval_ms": 1.0,
        "arm": None,
        "truncated": None,
        "note": None,
        "sql": {"calls": 0, "ms": 0.0},
        "cache": {"calls": 0, "ms": 0.0},
        "http": {"calls": 0, "ms": 0.0},
        "tree": built(),
    }
    value.update(changes)
    return value


def test_profiles_are_checked_field_by_field() -> None:
    ref = new_reference()
    assert check_profile(profile_value(ref), ref, 100) is not None
    assert check_profile(profile_value(ref), new_reference(), 100) is None  # stored under another key
    for bad in (
        {"v": 2},
        {"view": ["x"]},
        {"ms": float("nan")},
        {"ms": -1},
        {"status": "200"},
        {"sql": {"calls": "many", "ms": 0}},
        {"note": 5},
        {"tree": {"frames": [], "nodes": []}},
    ):
        assert check_profile(profile_value(ref, **bad), ref, 100) is None, bad


def test_forged_profile_in_memcached_is_refused(memcached) -> None:
    store = get_store()
    good, forged = new_reference(), new_reference()
    store.set(store.config.keys.profile(good), pack(profile_value(good)))
    tree = built()
    tree["nodes"][2][2] = 10**6
    store.set(store.config.keys.profile(forged), pack(profile_value(forged, tree=tree)))
    assert load_profile(good) is not None
    assert load_profile(forged) is None
    store.set(store.config.keys.profile(forged), b"jnot json")
    assert load_profile(forged) is None


def test_arms_are_checked() -> None:
    now = time.time()
    arm = {"id": new_reference(), "view": "shop:burn", "n": 10, "until": now + 60, "by": "root", "at": now}
    assert check_arm(arm, 200) == arm
    for bad in ({"n": 51}, {"n": 0}, {"n": 2.0}, {"id": "../x"}, {"view": ""}, {"until": "soon"}, {"by": None}):
        assert check_arm({**arm, **bad}, 200) is None, bad


def test_forged_arms_do_not_arm_this_process(memcached) -> None:
    store = get_store()
    now = time.time()
    forged = {
        "arms": [{"id": new_reference(), "view": "shop:burn", "n": 10_000, "until": now + 60, "by": "", "at": now}]
    }
    store.set(store.config.keys.profile_arms(), pack(forged))
    profile_store._learn(store)
    assert not profile_store.watch.armed and profile_store.watch.arms == {}
    armed = profile_store.arm_view("shop:burn", 3, "root", store)
    assert armed is not None
    profile_store._learn(store)
    assert profile_store.watch.armed and profile_store.watch.arms["shop:burn"].n == 3
    profile_store.watch.arms.clear()
    profile_store.watch._update()


def test_merge_adds_the_same_call_paths() -> None:
    merged = merge([built(), built()], 100)
    assert check_tree(merged, 100) is not None
    assert merged["nodes"][0][2] == 900
    hot = hot_functions(merged)
    assert hot[0]["function"] == "helper" and hot[0]["self_ms"] == pytest.approx(0.6)


def test_speedscope_events_nest() -> None:
    doc = speedscope(built(), "GET /x")
    events = doc["profiles"][0]["events"]
    depth, last = 0, 0
    for event in events:
        assert event["at"] >= last
        last = event["at"]
        depth += 1 if event["type"] == "O" else -1
        assert depth >= 0
    assert depth == 0 and doc["profiles"][0]["endValue"] == 450
    assert doc["shared"]["frames"][events[1]["frame"]]["name"] == "view"


def spin_in_named_function(stop: threading.Event) -> None:
    while not stop.is_set():
        sum(i * i for i in range(200))


def test_builtin_sampler_sees_the_busy_function_and_its_thread_ends() -> None:
    stop = threading.Event()
    anchors: list = []
    sampler_box: list[Sampler] = []

    def run() -> None:
        import sys

        anchors.append(sys._getframe())
        sampler = Sampler(anchors[0], 0.001, 30.0)
        sampler_box.append(sampler)
        sampler.start()
        spin_in_named_function(stop)
        sampler_box.append(sampler.stop())  # type: ignore[arg-type]

    import sys

    switch = sys.getswitchinterval()
    worker = threading.Thread(target=run)
    before = {t.name for t in threading.enumerate()}
    worker.start()
    while len(sampler_box) < 1:
        time.sleep(0.001)
    assert "instrumented-profiler" in {t.name for t in threading.enumerate()} - before
    time.sleep(0.1)
    stop.set()
    worker.join()
    assert "instrumented-profiler" not in {t.name for t in threading.enumerate()}
    assert sys.getswitchinterval() == switch  # shortened only while the profile ran
    tree = encode(sampler_box[0].root, 100)
    assert check_tree(tree, 100) is not None
    names = [tree["frames"][n[0]][0] for n in tree["nodes"]]
    assert names[1] == "spin_in_named_function"
    assert tree["nodes"][1][2] > 50_000  # most of the 100 ms
