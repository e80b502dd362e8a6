"""The app the CLI tests run: one bulk route on a private queue, recording what it handled.

Configured by the environment, because the CLI runs it in fresh processes:

- ``CLI_TEST_QUEUE``: the queue to consume (declared by the test);
- ``CLI_TEST_RESULTS``: a directory; each worker process appends one line of message ids
  (bodies are ASCII digits) per completed bulk to ``handled-<pid>.txt`` — after the handler's
  work, before the acknowledgement, so a line means "handled" and, after a graceful stop,
  "acked". One ``os.write`` per line: a killed worker leaves whole lines behind;
- ``CLI_TEST_SLEEP``: seconds each bulk takes (default 0.05), ``CLI_TEST_BULK`` (100);
- the App's own settings come from ``TRIOWORKER_*`` (the URL, the grace period).

Attributes for the discovery tests: ``app``, ``make_app`` (a factory), ``failing_app`` (a
factory whose app's startup hook fails: a StartupError), ``self_stopping_app`` (a factory:
an app that stops itself with an exit status), ``not_an_app``.
"""

from __future__ import annotations

import os

import trio

from trioworker import App, Message

not_an_app = 42


def _record(line: str) -> None:
    results = os.environ.get("CLI_TEST_RESULTS")
    if not results:
        return
    path = os.path.join(results, f"handled-{os.getpid()}.txt")
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, (line + "\n").encode())
    finally:
        os.close(fd)


def make_app() -> App:
    app = App(name=os.environ.get("CLI_TEST_APP_NAME", "tw-test-cli"))
    queue = os.environ.get("CLI_TEST_QUEUE", "tw-test-cli-unset")
    pause = float(os.environ.get("CLI_TEST_SLEEP", "0.05"))

    @app.amqp.consume(
        [queue], bulk_size=int(os.environ.get("CLI_TEST_BULK", "100")), flush_interval=0.2
    )
    async def handle(messages: list[Message]) -> None:
        await trio.sleep(pause)
        _record(" ".join(m.body.decode() for m in messages))

    return app


def failing_app() -> App:
    app = make_app()

    @app.on_startup
    async def refuse(app: App) -> None:
        raise RuntimeError("the test app refuses to start")

    return app


def self_stopping_app() -> App:
    """No broker: its started hook stops it with ``$CLI_TEST_EXIT_CODE`` (a job that ends
    itself), after a plain ``shutdown()`` that must not reset the status."""
    app = App(name="tw-test-cli-job")

    @app.on_started
    async def job(app: App) -> None:
        app.shutdown(exit_code=int(os.environ["CLI_TEST_EXIT_CODE"]))
        app.shutdown()

    @app.on_shutdown
    async def report(app: App) -> None:
        print(f"shutdown hook ran, exit code {app.exit_code}", flush=True)

    return app


app = make_app()
