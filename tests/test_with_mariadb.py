"""bin/with-mariadb: a private MariaDB for a command when none answers, stopped after; none when one does."""

from __future__ import annotations

import glob
import os
import socket
import subprocess
import sys

from tests.support.ports import free_port
from tests.support.servers import ROOT

SCRIPT = str(ROOT / "bin" / "with-mariadb")
#: Connects as the tests do (root, no password, database test) and prints the server's data directory.
CLIENT = """
import sys, pymysql
conn = pymysql.connect(host="127.0.0.1", port=int(sys.argv[1]), user="root", password="", database="test")
with conn.cursor() as cursor:
    cursor.execute("SELECT @@datadir")
    print(cursor.fetchone()[0])
"""


def answers(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
    except OSError:
        return False
    return True


def test_a_private_server_runs_for_the_command_and_is_gone_after(tmp_path):
    port = free_port()
    env = dict(os.environ, MARIADB_PORT=str(port), TMPDIR=str(tmp_path))
    done = subprocess.run([SCRIPT, sys.executable, "-c", CLIENT, str(port)], env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().startswith(str(tmp_path / "instrumented-mariadb."))  # its own data directory
    assert "started a private MariaDB" in done.stderr
    assert not answers(port)  # stopped
    assert glob.glob(str(tmp_path / "instrumented-mariadb.*")) == []  # and its folder removed


def test_the_command_s_exit_status_is_kept(tmp_path):
    env = dict(os.environ, MARIADB_PORT=str(free_port()), TMPDIR=str(tmp_path))
    assert subprocess.run([SCRIPT, "sh", "-c", "exit 7"], env=env, capture_output=True).returncode == 7


def test_nothing_is_started_when_a_server_answers(tmp_path):
    with socket.socket() as listener:  # stands for the machine's own MariaDB
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        env = dict(os.environ, MARIADB_PORT=str(port), TMPDIR=str(tmp_path))
        done = subprocess.run([SCRIPT, "sh", "-c", "echo ran"], env=env, capture_output=True, text=True)
    assert done.returncode == 0 and done.stdout == "ran\n"
    assert "private MariaDB" not in done.stderr and list(tmp_path.iterdir()) == []
