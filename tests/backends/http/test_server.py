"""The HTTP backend against a real hypercorn server on port 0, with real HTTP requests."""

from __future__ import annotations

import logging
import socket
import threading
import time
from collections.abc import Callable
from typing import Any

import httpx
import pytest
import trio
import trio.testing

from trioworker import App, HTTPError, Request, Response, StartupError, open_app

from .conftest import MUST_HAPPEN, client_for, serving, wait_serving

MakeApp = Callable[..., App]


async def test_path_params_query_and_headers_reach_the_handler(make_app: MakeApp) -> None:
    app = make_app()

    @app.http.get("/items/{id:int}/{name}")
    async def item(request: Request) -> dict[str, Any]:
        return {
            "method": request.method,
            "path": request.path,
            "route": request.route,
            "params": request.path_params,
            "id_type": type(request.path_params["id"]).__name__,
            "tags": request.query.getlist("tag"),
            "first_tag": request.query["tag"],
            "trace": request.headers["x-TRACE-id"],
            "app_is_app": request.app is app,
        }

    async with serving(app) as client:
        r = await client.get("/items/42/b%C3%A9?tag=a&tag=b", headers={"X-Trace-Id": "t1"})
    assert r.status_code == 200
    assert r.headers["content-type"] == "application/json"
    assert r.json() == {
        "method": "GET",
        "path": "/items/42/bé",
        "route": "/items/{id:int}/{name}",
        "params": {"id": 42, "name": "bé"},
        "id_type": "int",
        "tags": ["a", "b"],
        "first_tag": "a",
        "trace": "t1",
        "app_is_app": True,
    }


async def test_each_method_reaches_its_own_handler(make_app: MakeApp) -> None:
    app = make_app()
    for method in ("get", "post", "put", "patch", "delete"):

        def make(m: str) -> Callable[[Request], Any]:
            async def handler(request: Request) -> dict[str, Any]:
                body = await request.json() if m != "get" else None
                return {"handler": m, "body": body}

            return handler

        getattr(app.http, method)("/thing")(make(method))

    async with serving(app) as client:
        for method in ("GET", "POST", "PUT", "PATCH", "DELETE"):
            payload = None if method == "GET" else {"n": method}
            r = await client.request(method, "/thing", json=payload)
            assert r.status_code == 200, r.text
            assert r.json() == {"handler": method.lower(), "body": payload}


async def test_return_values_over_the_wire(make_app: MakeApp) -> None:
    app = make_app()
    results: dict[str, Any] = {
        "dict": {"a": [1, "é"]},
        "list": [1, 2],
        "str": "héllo",
        "bytes": b"\x00\xff",
        "none": None,
        "response": Response(
            {"created": 1}, status=201, headers={"Location": "/x/1", "X-Extra": "yes"}
        ),
        "typed": Response("<p>hi</p>", content_type="text/html; charset=utf-8"),
    }

    @app.http.get("/r/{kind}")
    async def result(request: Request) -> Any:
        return results[request.path_params["kind"]]

    async with serving(app) as client:
        r = {kind: await client.get(f"/r/{kind}") for kind in results}
    assert (r["dict"].status_code, r["dict"].json()) == (200, {"a": [1, "é"]})
    assert r["list"].json() == [1, 2]
    assert r["str"].headers["content-type"] == "text/plain; charset=utf-8"
    assert r["str"].content == "héllo".encode()
    assert r["bytes"].headers["content-type"] == "application/octet-stream"
    assert r["bytes"].content == b"\x00\xff"
    assert r["none"].status_code == 204 and r["none"].content == b""
    assert "content-type" not in r["none"].headers
    created = r["response"]
    assert created.status_code == 201 and created.json() == {"created": 1}
    assert created.headers["location"] == "/x/1" and created.headers["x-extra"] == "yes"
    assert r["typed"].headers["content-type"] == "text/html; charset=utf-8"


async def test_sync_handlers_run_in_a_thread_without_blocking_the_loop(make_app: MakeApp) -> None:
    app = make_app()
    loop_thread = threading.get_ident()

    @app.http.get("/sync")
    def slow_sync(request: Request) -> dict[str, Any]:
        time.sleep(1.0)
        return {"thread": threading.get_ident()}

    @app.http.get("/fast")
    async def fast(request: Request) -> str:
        return "fast"

    async with serving(app) as client:
        sync_result: dict[str, Any] = {}

        async def call_sync() -> None:
            sync_result.update((await client.get("/sync")).json())

        async with trio.open_nursery() as nursery:
            nursery.start_soon(call_sync)
            await trio.sleep(0.2)
            started = time.monotonic()
            fast_response = await client.get("/fast")
            fast_took = time.monotonic() - started
    assert fast_response.text == "fast"
    assert fast_took < 0.7  # answered while the sync handler still slept
    assert sync_result["thread"] != loop_thread


async def test_unknown_path_is_404_and_other_method_is_405_with_allow(make_app: MakeApp) -> None:
    app = make_app()

    @app.http.get("/items/{id}")
    async def get_item(request: Request) -> str:
        return "item"

    @app.http.delete("/items/{id}")
    async def delete_item(request: Request) -> None:
        return None

    async with serving(app) as client:
        missing = await client.get("/nothing/here")
        wrong = await client.post("/items/1")
        builtin_wrong = await client.post("/health")
    assert missing.status_code == 404 and missing.json() == {"error": "not found"}
    assert wrong.status_code == 405 and wrong.json() == {"error": "method not allowed"}
    assert wrong.headers["allow"] == "DELETE, GET, HEAD"
    assert builtin_wrong.status_code == 405 and builtin_wrong.headers["allow"] == "GET, HEAD"


async def test_handler_exception_is_a_logged_500_without_internals(
    make_app: MakeApp, caplog: pytest.LogCaptureFixture
) -> None:
    app = make_app()

    @app.http.get("/boom/{id}")
    async def boom(request: Request) -> None:
        raise RuntimeError("database password is hunter2")

    @app.http.get("/sync-boom")
    def sync_boom(request: Request) -> None:
        raise KeyError("sync secret")

    caplog.set_level(logging.ERROR, logger="trioworker.http")
    async with serving(app) as client:
        r = await client.get("/boom/7")
        r_sync = await client.get("/sync-boom")
        after = await client.get("/health")  # the server is still fine
    for response in (r, r_sync):
        assert response.status_code == 500
        assert response.json() == {"error": "internal server error"}
    assert "hunter2" not in r.text and "secret" not in r_sync.text
    assert after.status_code == 200
    records = [rec for rec in caplog.records if rec.name == "trioworker.http"]
    assert any(
        rec.exc_info and "hunter2" in str(rec.exc_info[1]) and "/boom/7" in rec.getMessage()
        for rec in records
    )
    assert any(rec.exc_info and isinstance(rec.exc_info[1], KeyError) for rec in records)


async def test_malformed_json_body_is_a_clear_400(make_app: MakeApp) -> None:
    app = make_app()
    reached: list[Any] = []

    @app.http.post("/orders")
    async def create(request: Request) -> dict[str, Any]:
        data = await request.json()
        reached.append(data)
        return {"ok": True}

    async with serving(app) as client:
        bad = await client.post("/orders", content=b'{"items": [1, 2')
        empty = await client.post("/orders", content=b"")
        not_utf8 = await client.post("/orders", content=b'{"a": "\xff"}')
        good = await client.post("/orders", json={"items": [1]})
    assert bad.status_code == 400
    assert bad.json()["error"].startswith("malformed JSON body:")
    assert "line 1" in bad.json()["error"]
    assert empty.status_code == 400 and "empty" in empty.json()["error"]
    assert not_utf8.status_code == 400 and "UTF-8" in not_utf8.json()["error"]
    assert good.status_code == 200
    assert reached == [{"items": [1]}]


async def test_http_error_and_oversized_body(make_app: MakeApp) -> None:
    app = make_app()
    app.http.max_body_size = 100

    @app.http.get("/items/{id:int}")
    async def item(request: Request) -> dict[str, int]:
        if request.path_params["id"] != 1:
            raise HTTPError(404, "no such item")
        return {"id": 1}

    @app.http.post("/upload")
    async def upload(request: Request) -> dict[str, int]:
        return {"size": len(await request.body())}

    async def chunks() -> Any:  # no Content-Length: the limit applies while reading
        for _ in range(5):
            yield b"x" * 50

    async with serving(app) as client:
        missing = await client.get("/items/2")
        small = await client.post("/upload", content=b"x" * 100)
        declared = await client.post("/upload", content=b"x" * 101)
        streamed = await client.post("/upload", content=chunks())
    assert missing.status_code == 404 and missing.json() == {"error": "no such item"}
    assert small.json() == {"size": 100}
    for r in (declared, streamed):
        assert r.status_code == 413
        assert r.json() == {"error": "request body larger than 100 bytes"}


async def test_head_is_get_without_the_body(make_app: MakeApp) -> None:
    app = make_app()
    calls: list[str] = []

    @app.http.get("/doc")
    async def doc(request: Request) -> dict[str, str]:
        calls.append(request.method)
        return {"text": "x" * 50}

    @app.http.get("/explicit")
    async def explicit_get(request: Request) -> str:
        return "get body"

    @app.http.head("/explicit")
    async def explicit_head(request: Request) -> Response:
        calls.append("explicit")
        return Response(headers={"X-Head": "1"})

    async with serving(app) as client:
        get = await client.get("/doc")
        head = await client.head("/doc")
        explicit = await client.head("/explicit")
        health_head = await client.head("/health")
    assert head.status_code == 200 and head.content == b""
    assert head.headers["content-length"] == get.headers["content-length"] == str(len(get.content))
    assert head.headers["content-type"] == "application/json"
    assert explicit.headers["x-head"] == "1"
    assert health_head.status_code == 200 and health_head.content == b""
    assert calls == ["GET", "HEAD", "explicit"]


async def test_head_keeps_the_connection_usable(make_app: MakeApp) -> None:
    # Raw HTTP/1.1 on one socket: the HEAD answer has the GET length and no body bytes, so
    # the GET pipelined after it on the same connection is read intact.
    app = make_app()

    @app.http.get("/doc")
    async def doc(request: Request) -> str:
        return "0123456789"

    async with open_app(app):
        stream = await trio.open_tcp_stream("127.0.0.1", app.http.port)
        async with stream:
            request = b"%s /doc HTTP/1.1\r\nHost: t\r\n\r\n"
            await stream.send_all(request % b"HEAD" + request % b"GET")
            received = b""
            with trio.fail_after(MUST_HAPPEN):
                while received.count(b"HTTP/1.1 200") < 2 or not received.endswith(b"0123456789"):
                    chunk = await stream.receive_some()
                    assert chunk, f"connection closed after {received!r}"
                    received += chunk
    head, get = received.split(b"HTTP/1.1 200")[1:]
    assert b"content-length: 10" in head.lower() and not head.endswith(b"0123456789")
    assert get.endswith(b"\r\n\r\n0123456789")


async def test_handlers_must_take_the_request(make_app: MakeApp) -> None:
    app = make_app()
    with pytest.raises(TypeError, match="must take one argument, the request"):

        @app.http.get("/none")
        async def no_args() -> None:
            return None

    with pytest.raises(ValueError, match="already routed"):
        app.http.get("/a")(lambda request: None)
        app.http.get("/a")(lambda request: None)


async def test_route_added_to_a_running_server_is_served_at_once(make_app: MakeApp) -> None:
    app = make_app()
    async with serving(app) as client:
        assert (await client.get("/late")).status_code == 404

        @app.http.get("/late")
        async def late(request: Request) -> str:
            return "late"

        r = await client.get("/late")
    assert (r.status_code, r.text) == (200, "late")


async def test_server_starts_with_the_first_route_of_a_running_app(no_broker_url: str) -> None:
    app = App(amqp_url=no_broker_url, name="http-late-start", grace_period=5.0)
    app.http.port = 0  # where to listen, once something turns the server on
    async with open_app(app):
        assert not app.http.active and not app.http.serving
        assert "http" not in app.health()

        @app.http.get("/first")
        def first(request: Request) -> str:
            return "first"

        await wait_serving(app)
        assert app.http.port != 0
        async with client_for(app) as client:
            r = await client.get("/first")
            health = await client.get("/health")
    assert r.text == "first"
    assert health.json()["backends"]["http"]["ok"] is True


async def test_a_worker_without_routes_does_not_listen(no_broker_url: str) -> None:
    app = App(amqp_url=no_broker_url, name="http-off")
    app.amqp.enable()  # an AMQP-only worker
    assert app.http.port == 8080 and not app.http.active
    async with open_app(app):
        assert not app.http.serving
        assert set(app.health()) == {"amqp"}


async def test_an_http_only_app_runs_without_a_broker(make_app: MakeApp) -> None:
    app = make_app()  # its amqp_url is a port where nothing listens

    @app.http.get("/hello")
    async def hello(request: Request) -> str:
        return "hello"

    async with serving(app) as client:
        r = await client.get("/hello")
        health = await client.get("/health")
    assert r.text == "hello"
    assert health.status_code == 200
    assert set(health.json()["backends"]) == {"http"}
    assert not list(app.amqp.supervisors)  # it never dialled the broker


async def test_the_server_is_turned_on_by_port_env_or_enable(
    no_broker_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TRIOWORKER_HTTP_PORT", "0")
    monkeypatch.setenv("TRIOWORKER_HTTP_HOST", "localhost")
    by_env = App(amqp_url=no_broker_url, name="http-env")
    monkeypatch.delenv("TRIOWORKER_HTTP_PORT")
    monkeypatch.delenv("TRIOWORKER_HTTP_HOST")
    by_enable = App(amqp_url=no_broker_url, name="http-enable")
    by_enable.http.port = 0
    assert by_env.http.active and not by_enable.http.active
    async with open_app(by_env), open_app(by_enable):
        assert by_env.http.serving and by_env.http.host == "localhost"
        assert not by_enable.http.serving
        by_enable.http.enable()
        await wait_serving(by_enable)
        for app in (by_env, by_enable):
            async with client_for(app) as client:
                assert (await client.get("/health")).status_code == 200


def test_bad_port_settings_are_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ValueError, match="0 to 65535"):
        App(http_port=70000)
    monkeypatch.setenv("TRIOWORKER_HTTP_PORT", "http")
    with pytest.raises(ValueError, match="TRIOWORKER_HTTP_PORT must be a port number"):
        App()
    monkeypatch.delenv("TRIOWORKER_HTTP_PORT")
    with pytest.raises(ValueError, match="must start with '/'"):
        App(health_path="healthz")


@pytest.mark.broker
async def test_a_taken_port_fails_startup_and_leaves_nothing_running(
    make_app: MakeApp, amqp_url: str
) -> None:
    with socket.socket() as taken:
        taken.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        app = make_app(http_port=port, amqp_url=amqp_url)
        app.amqp.enable()  # started before the HTTP server: it must be stopped again
        with pytest.raises(StartupError, match=f"cannot listen on 127.0.0.1:{port}") as info:
            async with open_app(app):
                pytest.fail("the app must not start")
    assert isinstance(info.value.__cause__, OSError)
    assert not app.running and not app.http.serving
    for supervisor in app.amqp.supervisors:  # the AMQP backend was stopped, not leaked
        assert supervisor.connection is None or supervisor.connection.is_closed


async def test_graceful_shutdown_lets_an_in_flight_request_finish(make_app: MakeApp) -> None:
    app = make_app()
    started = trio.Event()

    @app.http.get("/slow")
    async def slow(request: Request) -> dict[str, bool]:
        started.set()
        await trio.sleep(1.5)
        return {"done": True}

    results: list[httpx.Response] = []
    async with open_app(app):
        url = app.http.url
        async with client_for(app) as client:

            async def call() -> None:
                results.append(await client.get("/slow"))

            async with trio.open_nursery() as nursery:
                nursery.start_soon(call)
                await started.wait()
                app.shutdown()
                # No new connections once the stop began, while /slow is still running.
                with trio.fail_after(MUST_HAPPEN):
                    while True:
                        try:
                            async with httpx.AsyncClient(base_url=url) as fresh:
                                await fresh.get("/health")
                        except httpx.ConnectError:
                            break
                        await trio.sleep(0.05)
                assert not results
    assert results[0].status_code == 200 and results[0].json() == {"done": True}


async def test_requests_past_the_grace_period_are_cancelled(make_app: MakeApp) -> None:
    app = make_app(grace_period=0.5)
    started = trio.Event()
    finished: list[bool] = []

    @app.http.get("/forever")
    async def forever(request: Request) -> None:
        started.set()
        await trio.sleep(60)
        finished.append(True)

    errors: list[BaseException] = []
    async with open_app(app), client_for(app) as client:

        async def call() -> None:
            try:
                await client.get("/forever")
            except httpx.HTTPError as exc:
                errors.append(exc)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(call)
            await started.wait()
            t0 = time.monotonic()
            app.shutdown()
    assert time.monotonic() - t0 < 10  # not the 60 s of the handler
    assert not finished and errors  # cut off, the client saw the connection close


async def test_health_is_503_while_shutting_down(make_app: MakeApp) -> None:
    app = make_app()
    started = trio.Event()
    release = trio.Event()

    @app.http.get("/hold")
    async def hold(request: Request) -> str:
        started.set()
        await release.wait()
        return "released"

    # The listener closes at once on shutdown, so ask the running ASGI app directly, as a
    # request already accepted on a keep-alive connection would.
    inner = httpx.AsyncClient(transport=httpx.ASGITransport(app=app.http.asgi), base_url="http://t")
    async with open_app(app), client_for(app) as client, inner:
        assert (await inner.get("/health")).status_code == 200
        held: list[httpx.Response] = []

        async def call() -> None:
            held.append(await client.get("/hold"))

        async with trio.open_nursery() as nursery:
            nursery.start_soon(call)
            await started.wait()
            app.shutdown()
            await trio.sleep(0.1)
            assert app.shutting_down
            during = await inner.get("/health")
            release.set()
    assert during.status_code == 503
    assert during.json()["status"] == "shutting down"
    assert held[0].text == "released"


@pytest.mark.broker
async def test_health_lists_every_backend(make_app: MakeApp, amqp_url: str) -> None:
    app = make_app(amqp_url=amqp_url)
    app.amqp.enable()
    async with serving(app) as client:
        r = await client.get("/health")
    assert r.status_code == 200
    assert r.headers["cache-control"] == "no-store"
    body = r.json()
    assert body["status"] == "ok"
    assert body["backends"]["amqp"] == {"ok": True, "status": "ok", "detail": ""}
    assert body["backends"]["http"]["ok"] is True


async def test_builtins_can_be_moved_or_turned_off(make_app: MakeApp) -> None:
    app = make_app(health_path="/healthz", metrics_path=None)
    with pytest.raises(ValueError, match="built-in endpoint"):
        app.http.get("/healthz")(lambda request: None)

    @app.http.get("/metrics")  # free now: the user's own route
    async def mine(request: Request) -> str:
        return "my metrics"

    async with serving(app) as client:
        moved = await client.get("/healthz")
        old = await client.get("/health")
        metrics = await client.get("/metrics")
        app.http.health_path = None
        off = await client.get("/healthz")
    assert moved.status_code == 200 and moved.json()["status"] == "ok"
    assert old.status_code == 404 and off.status_code == 404
    assert metrics.text == "my metrics"


async def test_metrics_count_requests_by_route_template(make_app: MakeApp) -> None:
    app = make_app()

    @app.http.get("/items/{id}")
    async def item(request: Request) -> str:
        return "x"

    async with serving(app) as client:
        for path in ("/items/1", "/items/2", "/items/3"):
            await client.get(path)
        await client.get("/nope/1")
        await client.post("/items/1")
        await client.request("BREW", "/items/1")
        r = await client.get("/metrics")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    text = r.text
    sample = 'trioworker_http_requests_total{{method="{}",route="{}",status="{}"}}'
    assert sample.format("GET", "/items/{id}", 200) + " 3.0" in text
    assert sample.format("GET", "<unmatched>", 404) + " 1.0" in text
    assert sample.format("POST", "<unmatched>", 405) + " 1.0" in text
    assert sample.format("OTHER", "<unmatched>", 405) + " 1.0" in text
    assert "/items/1" not in text


async def test_a_failing_builtin_is_a_logged_500(
    make_app: MakeApp, caplog: pytest.LogCaptureFixture
) -> None:
    class Broken:
        """A user collector that fails at scrape time."""

        def describe(self) -> list[Any]:
            return []  # so registering does not call collect()

        def collect(self) -> Any:
            raise RuntimeError("collector secret")

    app = make_app()
    app.metrics.registry.register(Broken())  # type: ignore[arg-type]
    caplog.set_level(logging.ERROR, logger="trioworker.http")
    async with serving(app) as client:
        r = await client.get("/metrics")
        health = await client.get("/health")
    assert r.status_code == 500 and r.json() == {"error": "internal server error"}
    assert "secret" not in r.text
    assert any(
        rec.name == "trioworker.http"
        and "collector secret" in str(rec.exc_info and rec.exc_info[1])
        for rec in caplog.records
    )
    assert health.status_code == 200


async def test_a_send_meeting_the_close_in_progress_is_dropped_not_raised() -> None:
    # hypercorn's _close() sends the EOF without the send lock: a send of the reader's task
    # meeting it raised BusyResourceError and stopped the whole server. Here a task stuck
    # in send_all (a lockstep stream: it waits for a reader) stands for that EOF.
    from hypercorn.events import Closed, RawData

    from trioworker.backends.http._server import _TCPServer

    class Protocol:
        def __init__(self) -> None:
            self.events: list[object] = []

        async def handle(self, event: object) -> None:
            self.events.append(event)

    ours, _peer = trio.testing.lockstep_stream_pair()
    server = _TCPServer.__new__(_TCPServer)  # only what protocol_send uses
    server.stream = ours  # type: ignore[assignment]
    server.send_lock = trio.Lock()
    server.protocol = Protocol()  # type: ignore[assignment]
    async with trio.open_nursery() as nursery:
        nursery.start_soon(ours.send_all, b"the close in progress")
        await trio.testing.wait_all_tasks_blocked()
        await server.protocol_send(RawData(b"a close frame"))  # no BusyResourceError
        nursery.cancel_scope.cancel()
    assert [type(e) for e in server.protocol.events] == [Closed]  # type: ignore[attr-defined]
