"""Profiles through real gunicorn (3 sync workers) of the demo site, with both samplers.

Users and their sessions are made in the server's database with ``manage.py shell``; requests carry the
session cookie as a browser would. The arming test runs ``manage.py instrumented_profile`` while traffic
goes to every worker, and reads the merged profiles back from the view page.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from instrumented.memcached import get_store, pack
from instrumented.profiling.store import new_reference
from instrumented.stats.reader import read_stats
from tests.support.servers import EXAMPLE, SiteServer, server_env

CREATE_USERS = """
import json, uuid
from importlib import import_module
from django.conf import settings
from django.contrib.auth import BACKEND_SESSION_KEY, HASH_SESSION_KEY, SESSION_KEY, get_user_model
User = get_user_model()
tag = uuid.uuid4().hex[:8]
out = {}
flags = {"user": {}, "staff": {"is_staff": True}, "superuser": {"is_staff": True, "is_superuser": True}}
for kind, extra in flags.items():
    user = User.objects.create_user(f"pf-{kind}-{tag}", password="pw", **extra)
    session = import_module(settings.SESSION_ENGINE).SessionStore()
    session[SESSION_KEY] = str(user.pk)
    session[BACKEND_SESSION_KEY] = "django.contrib.auth.backends.ModelBackend"
    session[HASH_SESSION_KEY] = user.get_session_auth_hash()
    session.save()
    out[kind] = session.session_key
print(json.dumps(out))
"""


@pytest.fixture(scope="module")
def sessions(site_data_dir: Path) -> dict[str, str]:
    """A session key per kind of user, in the server's database."""
    result = subprocess.run(
        [sys.executable, "manage.py", "shell", "-c", CREATE_USERS],
        cwd=EXAMPLE,
        env=server_env(site_data_dir, "setup"),
        check=True,
        capture_output=True,
        text=True,
    )
    return json.loads(result.stdout.strip().splitlines()[-1])


def fetch(server: SiteServer, path: str, session: str | None = None, profile: bool = False, **headers: str):
    """(status, headers, body) of one GET, as the given user."""
    request = urllib.request.Request(server.url + path, headers=headers)
    if session:
        request.add_header("Cookie", f"sessionid={session}")
    if profile:
        request.add_header("X-Instrumented-Profile", "1")
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, response.headers, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.headers, error.read()


def own_times(doc: dict) -> dict[str, float]:
    """Own time per function name from a speedscope evented profile."""
    frames = doc["shared"]["frames"]
    own: dict[str, float] = {}
    stack: list[list] = []
    for event in doc["profiles"][0]["events"]:
        if event["type"] == "O":
            if stack:
                parent = stack[-1]
                own[frames[parent[0]]["name"]] = own.get(frames[parent[0]]["name"], 0) + event["at"] - parent[1]
            stack.append([event["frame"], event["at"]])
        else:
            frame, since = stack.pop()
            own[frames[frame]["name"]] = own.get(frames[frame]["name"], 0) + event["at"] - since
            if stack:
                stack[-1][1] = event["at"]
    return own


@pytest.mark.parametrize("engine", ["pyinstrument", "builtin"])
def test_only_superusers_get_profiles_and_the_body_is_unchanged(site_server, sessions, engine: str) -> None:
    server = site_server(workers=3, INSTRUMENTED_TEST_PROFILE_ENGINE=engine)
    for who in ("anonymous", "user", "staff"):
        status, headers, _ = fetch(server, "/burn/?rounds=1000", sessions.get(who), profile=True)
        assert status == 200
        assert headers.get("X-Instrumented-Profile") is None and headers.get("X-Instrumented-Profile-Refused") is None

    su = sessions["superuser"]
    _, _, plain = fetch(server, "/burn/?rounds=400000", su)
    status, headers, body = fetch(server, "/burn/?rounds=400000", su, profile=True)
    assert status == 200 and body == plain
    ref = headers["X-Instrumented-Profile"]

    status, headers, page = fetch(server, f"/instrumented/profiles/{ref}/", su)
    assert status == 200
    assert "private" in headers["Cache-Control"] and "no-store" in headers["Cache-Control"]
    assert "script-src 'self'" in headers["Content-Security-Policy"]
    assert b"crunch_numbers" in page and b'class="pf-icicle"' in page
    assert re.search(rb'id="pf-hot".*?<tbody><tr><td>[0-9.]+</td><td>[0-9.]+ %</td>[^\n]*?crunch_numbers', page)

    status, _, raw = fetch(server, f"/instrumented/profiles/{ref}.json", su)
    own = own_times(json.loads(raw))
    assert max(own, key=own.__getitem__) == "crunch_numbers"

    for who in ("anonymous", "user", "staff"):
        assert fetch(server, f"/instrumented/profiles/{ref}/", sessions.get(who))[0] == 404


def test_async_view_under_gunicorn(site_server, sessions) -> None:
    server = site_server(workers=3)
    su = sessions["superuser"]
    _, _, plain = fetch(server, "/async-burn/", su)
    status, headers, body = fetch(server, "/async-burn/", su, profile=True)
    assert status == 200 and body == plain
    status, _, raw = fetch(server, f"/instrumented/profiles/{headers['X-Instrumented-Profile']}.json", su)
    names = {frame["name"] for frame in json.loads(raw)["shared"]["frames"]}
    assert {"async_burn", "crunch_numbers", "(await)"} <= names


def test_forged_profile_is_refused(site_server, sessions) -> None:
    server = site_server(workers=1)
    store = get_store()
    ref = new_reference()
    forged = {
        "v": 1,
        "ref": ref,
        "engine": "builtin",
        "view": "<script>x</script>",
        "tree": {"frames": [], "nodes": []},
    }
    assert store.set(store.config.keys.profile(ref), pack(forged))
    status, _, page = fetch(server, f"/instrumented/profiles/{ref}/", sessions["superuser"])
    assert status == 404 and b"No profile" in page and b"<script>x" not in page


def test_arming_n_across_three_workers_yields_n_merged(site_server, sessions, site_data_dir, key_prefix) -> None:
    server = site_server(workers=3)
    n = 6
    stop = threading.Event()

    def traffic() -> None:
        while not stop.is_set():
            try:
                fetch(server, "/burn/?rounds=100000")
            except OSError:  # a busy machine: the next one
                pass

    threads = [threading.Thread(target=traffic) for _ in range(6)]
    for thread in threads:
        thread.start()
    # Every worker serves and flushes before the arm, as on a site that is up (each learns it at its next flush).
    deadline = time.monotonic() + 60
    while read_stats()["processes_live"] < 3 and time.monotonic() < deadline:
        time.sleep(0.2)
    command = subprocess.Popen(
        [sys.executable, "manage.py", "instrumented_profile", "shop:burn", "-n", str(n), "--timeout", "120"],
        cwd=EXAMPLE,
        env=server_env(site_data_dir, key_prefix),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        out, err = command.communicate(timeout=150)
    finally:
        stop.set()
        for thread in threads:
            thread.join()
    assert command.returncode == 0, err
    header = re.search(r"shop:burn: (\d+) request\(s\) of (\d+) on (\d+) process\(es\)", out)
    assert header is not None, out
    assert int(header[1]) == n and int(header[2]) == n
    processes = int(header[3])
    assert processes >= 2, out  # six concurrent clients keep all three workers busy
    assert "crunch_numbers" in out.split("Merged call tree:")[0]  # among the functions by own time

    status, _, page = fetch(server, "/instrumented/view/?name=shop%3Aburn", sessions["superuser"])
    assert status == 200
    assert f"{n} of {n} stored".encode() in page
    merged = re.search(rb'id="pf-merged">Merged call tree of (\d+) requests on (\d+) process', page)
    assert merged is not None and int(merged[1]) == n and int(merged[2]) == processes


@pytest.mark.parametrize("engine", ["pyinstrument", "builtin"])
def test_asgi_async_view_is_profiled_and_a_sync_view_refused(site_server, sessions, engine: str) -> None:
    server = site_server(workers=1, kind="asgi", INSTRUMENTED_TEST_PROFILE_ENGINE=engine)
    su = sessions["superuser"]
    _, _, plain = fetch(server, "/async-burn/", su)
    status, headers, body = fetch(server, "/async-burn/", su, profile=True)
    assert status == 200 and body == plain
    status, _, raw = fetch(server, f"/instrumented/profiles/{headers['X-Instrumented-Profile']}.json", su)
    own = own_times(json.loads(raw))
    assert {"async_burn", "crunch_numbers"} <= set(own)
    assert max((name for name in own if name != "(await)"), key=own.__getitem__) == "crunch_numbers"
    assert own["(await)"] > 0 and own.get("(request)", 0) < own["crunch_numbers"]

    status, headers, body = fetch(server, "/burn/?rounds=1000", su, profile=True)
    assert status == 200 and body.startswith(b"burnt")
    assert headers.get("X-Instrumented-Profile") is None
    assert "sync view under ASGI" in headers["X-Instrumented-Profile-Refused"]
    status, headers, _ = fetch(server, "/burn/?rounds=1000", sessions["staff"], profile=True)
    assert headers.get("X-Instrumented-Profile-Refused") is None
