"""Profiles in memcached: references, the stored value and its check, arms ("the next N requests of a view").

Everything read back is untrusted: a profile is shown or merged only after :func:`check_profile`, an arm
only after :func:`check_arm`. The request path never calls this module: a superuser's own profile is
written when that request ends, armed profiles by the flusher thread (:func:`on_flush`).
"""

from __future__ import annotations

import math
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from ..codec import pack, unpack
from ..conf import Config
from ..failopen import fail_open
from ..memcached import Store, get_store
from ..references import new_reference, normalize_reference
from ..stats import processes
from .tree import MAX_TEXT, check_tree

#: Most requests one arm may ask for.
MAX_ARMED = 50
#: Most arms kept at once (the oldest go first).
MAX_ARMS = 20
#: Largest stored profile value read back (bytes, inflated).
MAX_PROFILE_BYTES = 4 * 1024 * 1024


def _number(value: Any, high: float) -> bool:
    return type(value) in (int, float) and math.isfinite(value) and 0 <= value <= high


#: The metadata of a stored profile: name -> (type, bound) checked on read.
_TEXT_FIELDS = ("engine", "view", "route", "method", "path", "process")
_NUMBER_FIELDS = {"at": 4e9, "ms": 86_400_000.0, "samples": 1e9, "status": 999, "interval_ms": 1000.0}
_TOTALS = ("sql", "cache", "http")


def check_profile(value: Any, ref: str, max_nodes: int) -> dict[str, Any] | None:
    """A stored profile if it is well formed and stored under ``ref``, else None (forged, damaged, foreign)."""
    if not isinstance(value, dict) or value.get("v") != 1 or value.get("ref") != ref:
        return None
    for name in _TEXT_FIELDS:
        if not isinstance(value.get(name), str) or len(value[name]) > MAX_TEXT:
            return None
    for name, high in _NUMBER_FIELDS.items():
        if not _number(value.get(name), high):
            return None
    for name in ("arm", "truncated", "note"):
        if value.get(name) is not None and (not isinstance(value[name], str) or len(value[name]) > MAX_TEXT):
            return None
    for name in _TOTALS:
        totals = value.get(name)
        if not isinstance(totals, dict) or not _number(totals.get("calls"), 1e9) or not _number(totals.get("ms"), 1e9):
            return None
    tree = check_tree(value.get("tree"), max_nodes)
    if tree is None:
        return None
    return {**value, "tree": tree}


def save_profile(store: Store, profile: dict[str, Any]) -> bool:
    """Store one profile for the window."""
    return store.set(store.config.keys.profile(profile["ref"]), pack(profile), store.config.ttl)


def load_profile(ref: str) -> dict[str, Any] | None:
    """A checked stored profile, or None (expired, unknown, unreachable or refused)."""
    store = get_store()
    raw = store.get(store.config.keys.profile(ref))
    return check_profile(unpack(raw, MAX_PROFILE_BYTES), ref, store.config.profile_max_nodes)


# -- arms -------------------------------------------------------------------------------------------------------------


def check_arm(value: Any, max_name: int) -> dict[str, Any] | None:
    """One arm from memcached if well formed: ``{"id", "view", "n", "until", "by", "at"}``."""
    if not isinstance(value, dict) or normalize_reference(value.get("id")) != value.get("id"):
        return None
    view, by = value.get("view"), value.get("by")
    if not isinstance(view, str) or not view or len(view) > max_name or not isinstance(by, str) or len(by) > MAX_TEXT:
        return None
    n = value.get("n")
    if type(n) is not int or not 1 <= n <= MAX_ARMED:
        return None
    if not _number(value.get("until"), 4e9) or not _number(value.get("at"), 4e9):
        return None
    return {key: value[key] for key in ("id", "view", "n", "until", "by", "at")}


def read_arms(store: Store, now: float | None = None) -> list[dict[str, Any]]:
    """The arms that have not expired, checked (a forged entry is left out)."""
    value = unpack(store.get(store.config.keys.profile_arms()))
    return _live_arms(value, store.config, time.time() if now is None else now)


def _live_arms(value: Any, config: Config, now: float) -> list[dict[str, Any]]:
    if not isinstance(value, dict) or not isinstance(value.get("arms"), list):
        return []
    arms = [check_arm(arm, config.max_name_length) for arm in value["arms"][:MAX_ARMS]]
    return [arm for arm in arms if arm is not None and arm["until"] > now]


def arm_view(view: str, n: int, by: str, store: Store | None = None) -> dict[str, Any] | None:
    """Arm ``view`` for its next ``n`` requests (every process, until the window ends); None if not stored.

    The arms value is read, changed and written back: two superusers arming in the same instant may
    lose one arm (the view page shows what is armed).
    """
    store = store or get_store()
    config = store.config
    now = time.time()
    arm_id = new_reference()
    arm: dict[str, Any] = {
        "id": arm_id,
        "view": view[: config.max_name_length],
        "n": max(1, min(int(n), MAX_ARMED)),
        "until": now + config.window_seconds,
        "by": by[:MAX_TEXT],
        "at": now,
    }
    arms = [a for a in read_arms(store, now) if a["view"] != arm["view"]][-(MAX_ARMS - 1) :]
    store.add(config.keys.profile_claims(arm_id), b"0", config.ttl)
    if not store.set(config.keys.profile_arms(), pack({"arms": [*arms, arm]}), config.ttl):
        return None
    return arm


def arm_profiles(arm: dict[str, Any], store: Store | None = None) -> list[dict[str, Any]]:
    """The checked profiles stored for one arm, oldest first."""
    store = store or get_store()
    keys = store.config.keys
    raw = store.get(keys.profile_refs(arm["id"])) or b""
    refs = []
    for ref in raw.decode("ascii", "replace").split()[: MAX_ARMED * 4]:
        if normalize_reference(ref) == ref and ref not in refs:
            refs.append(ref)
    if not refs:
        return []
    values = store.get_many([keys.profile(ref) for ref in refs]) or {}
    profiles = []
    max_nodes = store.config.profile_max_nodes
    for ref in refs:
        profile = check_profile(unpack(values.get(keys.profile(ref)), MAX_PROFILE_BYTES), ref, max_nodes)
        if profile is not None and profile.get("arm") == arm["id"] and profile.get("view") == arm["view"]:
            profiles.append(profile)
    return profiles[: arm["n"]]


# -- this process: what it learnt at its last flush, and what it has to write ------------------------------------------


#: For this long after an arm is learnt a process takes only its share of the N (N / live processes, rounded
#: up), so the profiles come from every process that serves the view; then up to N, so a view that only some
#: processes serve still gets its N.
SHARE_SECONDS = 5.0


@dataclass
class LocalArm:
    """One arm as this process knows it: how many requests it profiled for it, whether all N are in."""

    id: str
    view: str
    n: int
    until: float
    share: int = 0
    learnt: float = 0.0
    taken: int = 0
    full: bool = False

    def wanted(self, now: float) -> bool:
        limit = self.share if self.share and now < self.learnt + SHARE_SECONDS else self.n
        return not self.full and self.taken < limit and now < self.until


@dataclass
class Watch:
    """The process's profiling state: read by the middleware (``armed``: one attribute test a request)."""

    armed: bool = False
    arms: dict[str, LocalArm] = field(default_factory=dict)
    pending: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def take(self, view: str) -> LocalArm | None:
        """Claim a profile of ``view`` for its arm in this process, if it still wants one."""
        arm = self.arms.get(view)
        if arm is None:
            return None
        with self.lock:
            if not arm.wanted(time.time()):
                return None
            arm.taken += 1
            self._update()
            return arm

    def _update(self) -> None:
        now = time.time()
        self.armed = any(arm.wanted(now) for arm in self.arms.values())


watch = Watch()


def on_flush(store: Store) -> None:
    """The flusher's share: write armed profiles (each claims one of its arm's N first), learn the arms."""
    keys = store.config.keys
    with watch.lock:
        pending, watch.pending = watch.pending, []
    for arm_id, profile in pending:
        with fail_open("storing a profile failed"):
            claimed = store.incr(keys.profile_claims(arm_id), 1, ttl=store.config.ttl)
            arm = next((a for a in watch.arms.values() if a.id == arm_id), None)
            if claimed is None or (arm is not None and claimed > arm.n):
                if arm is not None:
                    arm.full = True
                continue
            if save_profile(store, profile):
                entry = f"{profile['ref']} ".encode()
                if not store.add(keys.profile_refs(arm_id), entry, store.config.ttl):
                    store.append(keys.profile_refs(arm_id), entry)
    _learn(store)


def _learn(store: Store) -> None:
    """Read the arms and the claims of the ones this process knows (one multi-get); update ``watch``."""
    keys = store.config.keys
    known: list[str] = [arm.id for arm in watch.arms.values()]
    now = time.time()
    live = processes.live_keys(keys, now, store.config.flush_interval, 4)  # the last flush intervals' processes
    values = store.get_many([keys.profile_arms(), *live] + [keys.profile_claims(a) for a in known])
    if values is None:
        return  # memcached unreachable: keep what we knew (arms expire by their own time)
    arms = _live_arms(unpack(values.get(keys.profile_arms())), store.config, now)
    writing = max(1, len(processes.live(values, live)))
    with watch.lock:
        fresh: dict[str, LocalArm] = {}
        for arm in arms:
            local = watch.arms.get(arm["view"])
            if local is None or local.id != arm["id"]:
                share = -(-arm["n"] // writing)
                local = LocalArm(arm["id"], arm["view"], arm["n"], arm["until"], share=share, learnt=now)
            claims = values.get(keys.profile_claims(str(arm["id"])))
            if claims is not None and claims.strip().isdigit() and int(claims) >= local.n:
                local.full = True
            fresh[arm["view"]] = local
        watch.arms = fresh
        watch._update()


def queue(arm_id: str, profile: dict[str, Any]) -> None:
    """Hand an armed profile to the flusher (at most a few per arm are ever waiting)."""
    with watch.lock:
        if len(watch.pending) < MAX_ARMED * 2:
            watch.pending.append((arm_id, profile))


def install() -> None:
    """Ride on the stats flusher: at each flush, write armed profiles and learn the arms (once per process)."""
    from ..stats.flusher import flush_hooks

    if on_flush not in flush_hooks:
        flush_hooks.append(on_flush)
