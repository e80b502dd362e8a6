"""The Nameko 2.14.1 service the interop tests talk to (run by ``nameko run peer``).

It runs in the Nameko venv (tests/nameko/venv.py), never in ours: this module is not a
test module and nothing of ours imports it. Its name and the name of the trioworker
service it talks to come from the environment, unique per test module.
"""

import os

import eventlet
from nameko.events import EventDispatcher, event_handler
from nameko.extensions import DependencyProvider
from nameko.rpc import RpcProxy, rpc

NAME = os.environ["NK_SERVICE"]
OUR = os.environ["OUR_SERVICE"]

#: Events our service dispatched, as Nameko's handlers received them (one process).
RECEIVED = []


class WorkerContext(DependencyProvider):
    """The worker's context itself: its call id stack and context data."""

    def get_dependency(self, worker_ctx):
        return worker_ctx


def _seen(ctx):
    return {"call_id_stack": ctx.call_id_stack, "data": dict(ctx.data)}


class Peer:
    name = NAME

    dispatch = EventDispatcher()
    our = RpcProxy(OUR)
    ctx = WorkerContext()

    @rpc
    def add(self, a, b):
        return a + b

    @rpc
    def add_slowly(self, a, b, seconds):
        eventlet.sleep(seconds)
        return a + b

    @rpc
    def typed(self, value):
        """What kombu's JSON turned a marker object into (datetime, Decimal, UUID...)."""
        return [type(value).__name__, value]

    @rpc
    def fail(self, message):
        raise ValueError(message)

    @rpc
    def context(self):
        return _seen(self.ctx)

    @rpc
    def emit(self, event_type, payloads):
        for payload in payloads:
            self.dispatch(event_type, payload)
        return self.ctx.call_id_stack

    @rpc
    def relay(self, method, *args, **kwargs):
        return getattr(self.our, method)(*args, **kwargs)

    @rpc
    def received(self, event_type):
        return [event for event in RECEIVED if event["event_type"] == event_type]

    @event_handler(OUR, "hello")
    def on_hello(self, payload):
        RECEIVED.append({"event_type": "hello", "payload": payload, **_seen(self.ctx)})

    @event_handler(OUR, "pong")
    def on_pong(self, payload):
        RECEIVED.append({"event_type": "pong", "payload": payload, **_seen(self.ctx)})
