"""No password in any error, log line, repr, /health or /metrics (issue 11, item 3).

A marker password goes through every path a URL takes — bad URLs of each kind through
``parse_url``, ``App()``, ``app.amqp.add_connection`` and ``$TRIOWORKER_AMQP_URL``; a good
URL with a wrong password against the real broker; a running app's reprs, ``/health`` and
``/metrics`` — and every output is searched for it.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Callable, Iterator
from urllib.parse import quote

import httpx
import pytest
import trio

from tests.support import rabbitmqctl
from tests.support.helpers import MUST_HAPPEN
from trioworker import App, open_app
from trioworker.amqp import AMQPError, URLError, connect, parse_url, redact_url

MARKER = "Zx9Secret" + secrets.token_hex(4)
#: Spellings of the marker a leak could take (raw, percent-encoded).
SPELLINGS = (MARKER, quote(MARKER, safe=""), MARKER[:6])

BAD_URLS = {
    "bad port": f"amqp://u:{MARKER}@h:notaport/%2F",
    "wrong scheme": f"http://u:{MARKER}@h:5672/%2F",
    "unencoded / in vhost": f"amqp://u:{MARKER}@h:5672/a/b",
    "bad IPv6": f"amqp://u:{MARKER}@[fe80::1/%2F",
    "invalid IPv6": f"amqp://u:{MARKER}@[::zz]:5672/%2F",
    "/ in password": f"amqp://u:{MARKER}/x@h:5672/%2F",
    "? in password": f"amqp://u:{MARKER}?x@h/%2F",
    "@ in password": f"amqp://u:{MARKER}@x@h:bad/%2F",
    "bad option": f"amqp://u:{MARKER}@h/%2F?heartbeat=x",
    "unknown option": f"amqp://u:{MARKER}@h/%2F?nope=1",
}


def assert_clean(*texts: object) -> None:
    for text in texts:
        for spelling in SPELLINGS:
            assert spelling not in str(text), f"password leaked: {text!r}"


def _chain(exc: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    stack = [exc]
    while stack:
        error = stack.pop()
        if id(error) in seen:
            continue
        seen.add(id(error))
        yield error
        if isinstance(error, BaseExceptionGroup):
            stack.extend(error.exceptions)
        for linked in (error.__cause__, error.__context__):
            if linked is not None:
                stack.append(linked)


def assert_error_clean(exc: BaseException) -> None:
    for error in _chain(exc):
        assert_clean(str(error), repr(error), *error.args)


@pytest.mark.parametrize("url", BAD_URLS.values(), ids=BAD_URLS.keys())
def test_bad_urls_never_show_the_password(url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    for attempt in (
        lambda: parse_url(url),
        lambda: App(url),
        lambda: App("amqp://guest:guest@127.0.0.1/%2F").amqp.add_connection("other", url),
    ):
        with pytest.raises(URLError) as info:
            attempt()
        assert_error_clean(info.value)
    monkeypatch.setenv("TRIOWORKER_AMQP_URL", url)
    with pytest.raises(URLError) as info:
        App()
    assert_error_clean(info.value)


def test_redact_url_hides_the_whole_password() -> None:
    assert redact_url(f"amqp://u:{MARKER}@h/%2F") == "amqp://u:***@h/%2F"
    assert redact_url(f"amqp://u:{MARKER}/x@y@h/") == "amqp://u:***@h/"
    assert redact_url("amqp://h:5672/%2F") == "amqp://h:5672/%2F"
    assert_clean(redact_url(f"no-scheme-u:{MARKER}@h"))


def test_reprs_of_parameters_and_app() -> None:
    url = f"amqp://u:{MARKER}@127.0.0.1:5672/%2F?heartbeat=5"
    params = parse_url(url)
    assert params.password == MARKER
    app = App(url)
    app.amqp.add_connection("other", url.replace("5672", "5673"))
    assert_clean(repr(params), str(params), params.safe_url(), repr(app), repr(app.amqp))


@pytest.mark.broker
async def test_a_wrong_password_against_the_broker(
    broker_host_port: tuple[str, int], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    host, port = broker_host_port
    url = f"amqp://guest:{MARKER}@{host}:{port}/%2F?connection_timeout=5"
    with trio.fail_after(MUST_HAPPEN), pytest.raises(AMQPError) as info:
        async with connect(url):
            pytest.fail("a wrong password was accepted")
    assert_error_clean(info.value)

    app = App(url, name="secrets")

    @app.amqp.consume("tw-secrets-never-declared")
    async def handle(messages: list[object]) -> None: ...

    with trio.move_on_after(3):  # a refused login: StartupError, or reconnect lines
        try:
            await app.serve(install_signal_handlers=False)
        except Exception as exc:
            assert_error_clean(exc)
    assert caplog.records, "nothing was logged"
    for record in caplog.records:
        assert_clean(record.getMessage(), record.args, record.exc_text or "")
        if record.exc_info and record.exc_info[1] is not None:
            assert_error_clean(record.exc_info[1])
    assert_clean(caplog.text)


@pytest.fixture
def marker_user(unique_name: Callable[..., str]) -> Iterator[str]:
    """A broker user whose password is the marker (deleted at teardown)."""
    user = unique_name("secret-user")
    rabbitmqctl.run("add_user", user, MARKER)
    try:
        rabbitmqctl.run("set_permissions", "-p", "/", user, ".*", ".*", ".*")
        yield user
    finally:
        rabbitmqctl.run("delete_user", user)


@pytest.mark.broker
async def test_a_running_app_shows_no_password(
    broker_host_port: tuple[str, int],
    marker_user: str,
    unique_name: Callable[..., str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    host, port = broker_host_port
    url = f"amqp://{marker_user}:{quote(MARKER, safe='')}@{host}:{port}/%2F"
    queue = unique_name("secret-q")
    app = App(url, name="secrets", http_port=0)

    @app.amqp.consume(queue, declare=True)
    async def handle(messages: list[object]) -> None: ...

    async with open_app(app):
        async with httpx.AsyncClient(base_url=app.http.url, timeout=MUST_HAPPEN) as client:
            with trio.fail_after(MUST_HAPPEN):
                while not app.health()["amqp"].ok:  # noqa: ASYNC110 - polling
                    await trio.sleep(0.01)
            health = await client.get("/health")
            metrics = await client.get("/metrics")
        assert health.status_code == 200 and metrics.status_code == 200
        sup = next(iter(app.amqp.supervisors))
        assert_clean(
            health.text,
            metrics.text,
            repr(app),
            repr(app.amqp),
            repr(sup),
            repr(sup.connection),
            repr(sup.connection.params) if sup.connection else "",
            app.health(),
        )
    await rabbitmqctl.delete_queue_async(queue)
    assert_clean(caplog.text)
    for record in caplog.records:
        assert_clean(record.getMessage())
