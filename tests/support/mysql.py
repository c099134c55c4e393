"""The MariaDB the tests use: 127.0.0.1:3306, root, empty password (shared: use unique names)."""

from __future__ import annotations

#: Connection parameters (PyMySQL keywords).
MARIADB = {"host": "127.0.0.1", "port": 3306, "user": "root", "password": "", "database": "test"}
