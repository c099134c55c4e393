"""The MariaDB the tests use: 127.0.0.1:3306 (or ``MARIADB_PORT``), root, empty password; shared: use unique names.

``MARIADB_PORT`` is the variable ``bin/with-mariadb`` reads too, so ``MARIADB_PORT=3310 ./bin/test`` runs the suite
against a private server of its own (two checkouts can then run their suites at once without sharing object names).
"""

from __future__ import annotations

import os

#: The port of the MariaDB under test.
PORT = int(os.environ.get("MARIADB_PORT", "3306"))
#: ``host:port`` of that server, for proxies' backend lists.
ADDRESS = f"127.0.0.1:{PORT}"
#: Connection parameters (PyMySQL keywords).
MARIADB = {"host": "127.0.0.1", "port": PORT, "user": "root", "password": "", "database": "test"}
