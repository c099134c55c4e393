"""Packaging for django-instrumented."""

from pathlib import Path

from setuptools import find_packages, setup

HERE = Path(__file__).parent

setup(
    name="django-instrumented",
    version="0.1.0",
    description=(
        "Production visibility for Django with DEBUG off: live per-view stats in memcached, "
        "superuser tracebacks and error references, time-boxed MySQL query logging."
    ),
    long_description=(HERE / "README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    license="BSD-3-Clause",
    python_requires=">=3.11",
    # mysql_proxy_lua is a package too, so the proxy host can find the scripts with importlib.resources.
    packages=find_packages(include=["instrumented", "instrumented.*", "mysql_proxy_lua"]),
    include_package_data=True,
    package_data={
        "instrumented": [
            "templates/**/*",
            "static/**/*",
            "py.typed",
        ],
        "instrumented.proxy.lua": ["bootstrap.lua"],  # the host's sandbox and API, read with importlib.resources
        "mysql_proxy_lua": ["*.lua", "lib/*.lua", "README.md"],
    },
    install_requires=[
        # Django 5.2 LTS runs on Python 3.11; 6.x needs 3.12+. pip picks the newest the interpreter allows.
        "Django>=5.2,<7",
        "pymemcache>=4.0",
        "sqlparse>=0.5",
        "rich>=13",
    ],
    extras_require={
        # The MySQL proxy host runs MySQL Proxy Lua scripts through lupa's Lua 5.1 runtime.
        # uvloop: the proxy host's event loop when installed (measured: the plain asyncio loop alone costs
        # about twice a socat relay's latency; uvloop brings a bare relay to socat's level).
        "proxy": ["lupa>=2.0", "uvloop>=0.19; sys_platform != 'win32'"],
        # The demo runs under a multi-process server; PyMySQL (pure Python) is its MySQL driver for the DBA panel.
        # requests: the demo's outgoing-HTTP view (http.client, as urllib uses too, is probed either way).
        # Profiles on demand use pyinstrument's sampler when it is installed (else a small built-in one).
        "profile": ["pyinstrument>=4.6"],
        "demo": ["gunicorn>=22", "PyMySQL>=1.1", "requests>=2.31"],
        "test": [
            "pytest>=8",
            "pytest-django>=4.8",
            # A hung socket or browser fails its test instead of the whole CI run.
            "pytest-timeout>=2.2",
            "gunicorn>=22",
            "uvicorn>=0.30",
            "PyMySQL>=1.1",
            "mysqlclient>=2.2",
            "selenium>=4.20",
            # The Quick start test serves a fresh project's static files the way the README says.
            "whitenoise>=6",
            # A real Prometheus/OpenMetrics parser reads /instrumented/metrics; a real Celery worker runs tasks.
            "prometheus_client>=0.20",
            "celery>=5.3",
            "lupa>=2.0",
            "ruff>=0.6",
            # Type-checks instrumented/ in ./bin/test (plain mypy: Django's objects are Any, see pyproject.toml).
            "mypy>=1.10",
            # The outgoing-HTTP probe is tested through requests (urllib3 over http.client) and httpx's transport.
            "requests>=2.31",
            "httpx>=0.27",
            # Call sites and hints are tested on real libraries' code: a Wagtail site (7.x/8.x support Django 5.2
            # and 6), a DRF API, Jinja2 templates; psycopg runs the same site on PostgreSQL.
            "wagtail>=7.0",
            "djangorestframework>=3.15",
            "Jinja2>=3.1",
            "psycopg[binary]>=3.1",
            # Profiles: both samplers are tested (pyinstrument, and the built-in one with PROFILE_ENGINE="builtin").
            "pyinstrument>=4.6",
        ],
    },
    entry_points={
        "console_scripts": [
            "instrumented-proxy = instrumented.proxy.__main__:main",
        ],
    },
    classifiers=[
        "Framework :: Django",
        "Framework :: Django :: 5.2",
        "Framework :: Django :: 6.0",
        "Programming Language :: Python :: 3",
        "License :: OSI Approved :: BSD License",
    ],
)
