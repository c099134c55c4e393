"""Settings validation and the system checks."""

import pytest
from django.core.checks import run_checks

from instrumented.conf import DEFAULTS, get_config, load, parse_server


def ids(messages) -> set[str]:
    return {m.id for m in messages if m.id and m.id.startswith("instrumented.")}


def test_defaults_are_valid(settings):
    settings.INSTRUMENTED = {}
    assert get_config().problems == ()
    assert get_config().window_seconds == DEFAULTS["WINDOW_SECONDS"] == 300


@pytest.mark.parametrize(
    ("override", "fragment"),
    [
        ({"SERVERS": []}, "SERVERS"),
        ({"SERVERS": ["nohost"]}, "host:port"),
        ({"WINDOW_SECONDS": 0}, "WINDOW_SECONDS"),
        ({"WINDOW_SECONDS": 5, "BUCKET_SECONDS": 10}, "at least BUCKET_SECONDS"),
        ({"SAMPLE_RATE": 2}, "SAMPLE_RATE"),
        ({"KEY_PREFIX": "has space"}, "KEY_PREFIX"),
        ({"MAX_VIEWS": "many"}, "MAX_VIEWS"),
        ({"NOT_A_SETTING": 1}, "Unknown"),
    ],
)
def test_bad_settings_are_reported(settings, override, fragment):
    settings.INSTRUMENTED = {**settings.INSTRUMENTED, **override}
    problems = get_config().problems
    assert any(fragment in p for p in problems), problems
    assert "instrumented.E001" in ids(run_checks(tags=["instrumented"]))


def test_bad_values_fall_back_to_their_defaults():
    config = load({"MAX_VIEWS": "many", "TIMEOUT": 2, "SERVERS": ["nohost", "10.0.0.1:11211"], "KEY_PREFIX": "a b"})
    assert config.max_views == DEFAULTS["MAX_VIEWS"]
    assert config.timeout == 2.0 and isinstance(config.timeout, float)
    assert config.servers == (("10.0.0.1", 11211),)
    assert config.key_prefix == DEFAULTS["KEY_PREFIX"]
    assert len(config.problems) == 3


def test_config_is_frozen():
    config = load({})
    with pytest.raises(AttributeError):
        config.max_views = 1  # type: ignore[misc]


def test_settings_must_be_a_dict(settings):
    settings.INSTRUMENTED = ["127.0.0.1:11211"]
    assert "instrumented.E001" in ids(run_checks(tags=["instrumented"]))


def test_parse_server():
    assert parse_server("127.0.0.1:11211") == ("127.0.0.1", 11211)
    assert parse_server("[::1]:11211") == ("::1", 11211)
    assert parse_server("host") is None
    assert parse_server("host:99999") is None


def test_middleware_missing_and_misplaced(settings):
    path = "instrumented.middleware.InstrumentedMiddleware"
    settings.MIDDLEWARE = [m for m in settings.MIDDLEWARE if m != path]
    assert "instrumented.W001" in ids(run_checks(tags=["instrumented"]))
    settings.MIDDLEWARE = [*settings.MIDDLEWARE, path]
    assert "instrumented.W002" in ids(run_checks(tags=["instrumented"]))


def test_memcached_reachable_is_quiet_and_unreachable_warns(settings, memcached):
    assert ids(run_checks(tags=["instrumented"])) == set()
    settings.INSTRUMENTED = {**settings.INSTRUMENTED, "SERVERS": ["127.0.0.1:1"]}
    assert "instrumented.W003" in ids(run_checks(tags=["instrumented"]))


def test_a_catch_all_before_the_dashboard_is_reported(settings):
    # Issue 23: on a Wagtail site /instrumented/ was the CMS's 404 and `check` was silent.
    assert "instrumented.W006" not in ids(run_checks(tags=["instrumented"]))
    settings.ROOT_URLCONF = "tests.urls_catch_all"
    messages = [m for m in run_checks(tags=["instrumented"]) if m.id == "instrumented.W006"]
    assert len(messages) == 1 and "/instrumented/ is answered by cms_serve" in messages[0].msg
    assert 'urlpatterns = [path("instrumented/", include("instrumented.urls")), *urlpatterns]' in messages[0].hint


def test_the_middleware_listed_twice_is_reported(settings):
    path = "instrumented.middleware.InstrumentedMiddleware"
    settings.MIDDLEWARE = [path, *[m for m in settings.MIDDLEWARE if m != path], path]
    messages = [m for m in run_checks(tags=["instrumented"]) if m.id == "instrumented.W007"]
    assert len(messages) == 1 and "2 times" in messages[0].msg


@pytest.mark.parametrize(
    ("servers", "said"),
    [
        ("10.0.0.1:11211,10.0.0.2:11211", "SERVERS is one string, '10.0.0.1:11211,10.0.0.2:11211'"),
        (["memcached://10.0.0.1:11211"], "is a URL: give its 'host:port' ('10.0.0.1:11211')"),
        ("memcached://10.0.0.1:11211/", "is a URL: give its 'host:port' ('10.0.0.1:11211')"),
        (["10.0.0.1"], "SERVERS entry '10.0.0.1' is not 'host:port'"),
        ({"host": "10.0.0.1"}, "SERVERS must be a list of"),
    ],
)
def test_servers_in_another_form_get_the_form_expected(servers, said):
    problems = " ".join(load({"SERVERS": servers}).problems)
    assert said in problems and '["127.0.0.1:11211"]' in problems, problems


def test_one_host_port_string_is_a_list_of_one():
    config = load({"SERVERS": "10.0.0.1:11211"})
    assert config.servers == (("10.0.0.1", 11211),) and config.problems == ()


def test_check_with_memcached_down_says_so_once():
    # Issue 23: after W003, the `check` command's own recording printed "memcached get failed" lines at exit.
    import subprocess
    import sys

    from tests.support.ports import free_port
    from tests.support.servers import EXAMPLE, server_env

    env = server_env(EXAMPLE / "data", "tcheck", INSTRUMENTED_TEST_MEMCACHED_SERVERS=f"127.0.0.1:{free_port()}")
    done = subprocess.run([sys.executable, "manage.py", "check"], cwd=EXAMPLE, env=env, capture_output=True, text=True)
    output = done.stdout + done.stderr
    assert done.returncode == 0 and "instrumented.W003" in output
    assert "memcached get failed" not in output and "memcached set failed" not in output, output
