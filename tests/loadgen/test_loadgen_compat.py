"""The private details of Locust, geventhttpclient and gevent that locustfiles.compat relies on.

Each check names the detail it guards: after an upgrade, a failure here says which one changed
(see locustfiles/compat.py for what each is for, and the versions it was checked on). The checks
run in one fresh interpreter that imports Locust first, as a Locust process does (Locust
monkey-patches the process it is imported into).
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

CHECKS = r'''
import locust  # noqa: F401  (monkey-patches first, as in a Locust process)
import _socket, inspect, json, traceback

import gevent
from gevent.server import StreamServer

from locustfiles import compat

results = {}


def check(name):
    def run(fn):
        try:
            fn()
            results[name] = "ok"
        except BaseException as exc:  # noqa: BLE001 - every failure is reported by name
            results[name] = f"{type(exc).__name__}: {exc}\n{traceback.format_exc(limit=3)}"
        return fn
    return run


@check("locust LOCUST_STATE_* (locust.user.task)")
def _():
    running, waiting, stopping = compat.user_states()
    assert len({running, waiting, stopping}) == 3, (running, waiting, stopping)


@check("locust User._state (stop() kills a WAITING user, marks a RUNNING one STOPPING)")
def _():
    from locust import User, constant, task
    from locust.env import Environment

    class U(User):
        wait_time = constant(0)

        @task
        def t(self):
            pass

    env = Environment(user_classes=[U])
    user = U(env)
    assert compat.user_state(user) is None
    running, waiting, stopping = compat.user_states()
    user._state = running
    assert user.stop() is False and compat.user_is_stopping(user)
    user._state = waiting
    assert compat.user_is_waiting(user)
    compat.mark_user_stopping(user)
    assert compat.user_is_stopping(user)
    source = inspect.getsource(User.stop)
    assert "_state" in source and "LOCUST_STATE_WAITING" in source, source
    import importlib
    task_module = importlib.import_module("locust.user.task")
    assert "_state == LOCUST_STATE_STOPPING" in inspect.getsource(task_module), \
        "TaskSet no longer checks the STOPPING state at task boundaries"


@check("locust RequestStats.log_request(method, name, response_time, content_length) "
       "called by the runner's request listener")
def _():
    from locust.env import Environment
    from locust.stats import RequestStats

    params = list(inspect.signature(RequestStats.log_request).parameters)
    assert params == ["self", "method", "name", "response_time", "content_length"], params
    env = Environment(user_classes=[])
    runner = env.create_local_runner()
    try:
        compat.exclude_ttft_from_aggregated(env)
        fire = env.events.request.fire
        fire(request_type="CHAT", name="A", response_time=200.0, response_length=16,
             exception=None, context={})
        fire(request_type="TTFT", name="A", response_time=20.0, response_length=0,
             exception=None, context={})
        assert env.stats.get("A", "CHAT").num_requests == 1
        assert env.stats.get("A", "TTFT").num_requests == 1
        assert env.stats.total.num_requests == 1, env.stats.total.num_requests
    finally:
        runner.quit()


@check("locust EventHook.fire lets SystemExit from a listener through")
def _():
    from locust.event import EventHook

    hook = EventHook()
    hook.add_listener(lambda **kw: compat.exit_from_listener(2))
    try:
        hook.fire(environment=None)
    except SystemExit as exc:
        assert exc.code == 2
    else:
        raise AssertionError("the hook swallowed SystemExit")


def serve_one_chunked_response():
    body = b"data: {}\n\n"
    reply = (b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
             b"Transfer-Encoding: chunked\r\n\r\n"
             + b"%x\r\n%s\r\n" % (len(body), body))

    def handle(sock, _addr):
        sock.recv(65536)
        sock.sendall(reply)
        gevent.sleep(0.2)
        sock.sendall(b"0\r\n\r\n")
        gevent.sleep(0.2)

    server = StreamServer(("127.0.0.1", 0), handle)
    server.start()
    return server


@check("geventhttpclient HTTPClient._connection_pool (its class swapped for locustfiles.pool's)")
def _():
    from geventhttpclient import HTTPClient
    from geventhttpclient.connectionpool import ConnectionPool

    from locustfiles.pool import StampedPool, pool_class_for

    http = HTTPClient("127.0.0.1", 9, concurrency=1)
    assert isinstance(compat.connection_pool(http), ConnectionPool)
    compat.swap_pool_class(http, pool_class_for)
    assert type(compat.connection_pool(http)) is StampedPool
    http.close()


@check("geventhttpclient ConnectionPool._create_socket / _create_tcp_socket(family, socktype, "
       "protocol) / _semaphore")
def _():
    from geventhttpclient.connectionpool import ConnectionPool

    from locustfiles.pool import StampedPool

    params = list(inspect.signature(ConnectionPool._create_tcp_socket).parameters)
    assert params == ["self", "family", "socktype", "protocol"], params
    assert list(inspect.signature(ConnectionPool._create_socket).parameters) == ["self"]
    server = serve_one_chunked_response()
    made = []

    class Spy(StampedPool):
        def _create_tcp_socket(self, family, socktype, protocol):
            made.append((family, socktype))
            return super()._create_tcp_socket(family, socktype, protocol)

    from geventhttpclient import HTTPClient

    http = HTTPClient("127.0.0.1", server.server_port, concurrency=1)
    pool = compat.connection_pool(http)
    pool.__class__ = Spy
    try:
        sock = pool.get_socket()          # takes the pool's one slot, connects
        assert made, "get_socket() did not go through _create_tcp_socket"
        fresh = compat.create_pool_socket(pool)
        assert fresh.fileno() >= 0
        fresh.close()
        slot = pool._semaphore
        assert slot.locked(), "get_socket() did not take the _semaphore slot"
        compat.release_pool_slot(pool)
        assert not slot.locked()
        sock.close()
    finally:
        http.close()
        server.stop()


@check("geventhttpclient HTTPSocketPoolResponse._sock / ._body_buffer (feed() appends in place)")
def _():
    from geventhttpclient import HTTPClient

    server = serve_one_chunked_response()
    http = HTTPClient("127.0.0.1", server.server_port, concurrency=1, network_timeout=5)
    try:
        response = http.request("POST", "/", body=b"{}")
        sock = compat.response_socket(response)
        buffer = compat.response_body_buffer(response)
        assert sock is not None and isinstance(buffer, bytearray)
        while not response.message_complete:
            response.feed(sock.recv(65536))
        assert compat.response_body_buffer(response) is buffer, "feed() replaced the buffer"
        assert bytes(buffer) == b"data: {}\n\n", bytes(buffer)
        response.release()
        assert compat.response_socket(response) is None, "release() kept the socket"
    finally:
        http.close()
        server.stop()


@check("gevent socket._sock (the plain socket under gevent's wrapper)")
def _():
    import gevent.socket

    sock = gevent.socket.socket()
    try:
        raw = compat.raw_socket(sock)
        assert isinstance(raw, _socket.socket) and raw.fileno() == sock.fileno()
        assert hasattr(raw, "recvmsg")
        assert raw.gettimeout() == 0.0, "the plain socket is not non-blocking"
    finally:
        sock.close()


@check("locust MasterRunner.clients (.all nodes with .id; .missing)")
def _():
    import socket as _s
    from locust.env import Environment
    from locust.runners import STATE_MISSING, WorkerNode

    with _s.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    runner = Environment().create_master_runner("127.0.0.1", port)
    try:
        assert compat.connected_worker_ids(runner) == []
        runner.clients["early-1"] = WorkerNode("early-1")
        runner.clients["gone-2"] = WorkerNode("gone-2", state=STATE_MISSING)
        assert sorted(compat.connected_worker_ids(runner)) == ["early-1", "gone-2"]
        assert compat.missing_workers(runner) == 1
    finally:
        runner.quit()


print("RESULTS " + json.dumps(results))
'''

DETAILS = [
    "locust LOCUST_STATE_* (locust.user.task)",
    "locust User._state (stop() kills a WAITING user, marks a RUNNING one STOPPING)",
    "locust RequestStats.log_request(method, name, response_time, content_length) "
    "called by the runner's request listener",
    "locust EventHook.fire lets SystemExit from a listener through",
    "geventhttpclient HTTPClient._connection_pool (its class swapped for locustfiles.pool's)",
    "geventhttpclient ConnectionPool._create_socket / _create_tcp_socket(family, socktype, "
    "protocol) / _semaphore",
    "geventhttpclient HTTPSocketPoolResponse._sock / ._body_buffer (feed() appends in place)",
    "gevent socket._sock (the plain socket under gevent's wrapper)",
    "locust MasterRunner.clients (.all nodes with .id; .missing)",
]


@pytest.fixture(scope="module")
def results() -> dict[str, str]:
    proc = subprocess.run([sys.executable, "-c", CHECKS], cwd=ROOT, capture_output=True,
                          text=True, timeout=120)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULTS ")]
    assert lines, f"the compat checks did not run:\n{proc.stdout}\n{proc.stderr}"
    return json.loads(lines[-1][len("RESULTS "):])


@pytest.mark.parametrize("detail", DETAILS)
def test_each_private_detail_still_behaves_as_relied_on(results, detail):
    from importlib import metadata

    versions = {name: metadata.version(name) for name in ("locust", "geventhttpclient", "gevent")}
    assert results.get(detail) == "ok", (
        f"{detail} changed (installed {versions}; locustfiles/compat.py was checked on "
        f"its CHECKED_ON versions): {results.get(detail, 'not checked')}")


def test_every_check_is_listed(results):
    assert sorted(results) == sorted(DETAILS)


def test_the_checked_versions_are_within_the_declared_bounds():
    """pyproject.toml bounds each library below the next version compat was not checked on."""
    import tomllib

    from locustfiles.compat import CHECKED_ON

    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    for name, checked in CHECKED_ON.items():
        spec = next((d for d in deps if re.split(r"[<>=!~ ;\[]", d, 1)[0] == name), None)
        assert spec is not None and "<" in spec, f"{name} has no upper bound in pyproject.toml"
        bound = spec.split("<", 1)[1].split(",")[0].strip()
        assert _version(checked) < _version(bound), (name, checked, bound)


def _version(text: str) -> tuple[int, ...]:
    return tuple(int(x) for x in text.split(".") if x.isdigit())


def test_only_compat_touches_the_private_details():
    private = re.compile(r"\.(_sock|_body_buffer|_connection_pool|_state|_semaphore)\b"
                         r"|LOCUST_STATE_")
    offenders = []
    for path in sorted((ROOT / "locustfiles").glob("*.py")):
        if path.name == "compat.py":
            continue
        for number, line in enumerate(path.read_text().splitlines(), 1):
            if private.search(line.split("#")[0]):
                offenders.append(f"{path.name}:{number}: {line.strip()}")
    assert not offenders, "go through locustfiles.compat:\n" + "\n".join(offenders)
