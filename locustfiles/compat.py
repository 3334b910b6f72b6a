"""Every private detail of Locust, geventhttpclient and gevent that the load generator relies on.

Nothing else in ``locustfiles/`` touches a private attribute of these libraries: it goes through
a function here, so an upgrade that breaks one breaks it in one place, and
``tests/loadgen/test_loadgen_compat.py`` names the detail that broke. Each entry says what it
is, why it is used and the versions it was checked on. ``pyproject.toml`` bounds the libraries
below their next major version (gevent: its next year's series); before moving a bound, run the
compat test against the new version.

Checked on: locust 2.47.0, geventhttpclient 2.6.1, gevent 26.9.0 (Python 3.11).

Locust is imported lazily here: importing it monkey-patches the process, and the HTTP clients
(which use this module) also run outside Locust (benches, tests).
"""

from __future__ import annotations

from typing import Any, Callable, NoReturn

CHECKED_ON = {"locust": "2.47.0", "geventhttpclient": "2.6.1", "gevent": "26.9.0"}

# ---------------------------------------------------------------------------------------------
# Locust
#
# User._state and LOCUST_STATE_* (locust.user.task). A user's state: RUNNING inside a task,
# WAITING between tasks, STOPPING once a graceful stop was asked for; User.stop() kills a
# WAITING user at once, and TaskSet checks STOPPING at each task boundary. StreamingUser.stop
# marks a waiting user STOPPING instead (so a request is never cut ~10 ms in), and the open-loop
# generator ends its arrivals when it sees STOPPING. Checked on locust 2.47.0.

def user_states() -> tuple[str, str, str]:
    """Locust's (RUNNING, WAITING, STOPPING) user states."""
    from locust.user.task import LOCUST_STATE_RUNNING, LOCUST_STATE_STOPPING, LOCUST_STATE_WAITING

    return LOCUST_STATE_RUNNING, LOCUST_STATE_WAITING, LOCUST_STATE_STOPPING


def user_state(user: Any) -> str | None:
    """The user's Locust state (None before its greenlet started)."""
    return user._state


def user_is_waiting(user: Any) -> bool:
    return user._state == user_states()[1]


def user_is_stopping(user: Any) -> bool:
    return user._state == user_states()[2]


def mark_user_stopping(user: Any) -> None:
    """A graceful stop: the user ends at its next task boundary (what User.stop does to a
    RUNNING user)."""
    user._state = user_states()[2]


# RequestStats.log_request(method, name, response_time, content_length), called positionally by
# the runner's request listener (locust/runners.py: ``self.stats.log_request(request_type, name,
# response_time, response_length)``) and counted in the "Aggregated" row. It is replaced on the
# environment's stats object so that TTFT events get their own rows only. Checked on
# locust 2.47.0.

def exclude_ttft_from_aggregated(environment: Any) -> None:
    """Keep the "Aggregated" row about requests: TTFT events go to their own rows only.

    Each request fires two events (CHAT with E2E, TTFT); counted both in Aggregated, its
    req/s would double and its percentiles would mix two different quantities.
    """
    stats = environment.stats
    original: Callable[[str, str, float, int], None] = stats.log_request

    def log_request(method: str, name: str, response_time: float, content_length: int) -> None:
        if method == "TTFT":
            stats.get(name, method).log(response_time, content_length)
        else:
            original(method, name, response_time, content_length)

    stats.log_request = log_request


# EventHook.fire catches Exception from a listener (logs it, and Locust then exits 1 after
# init), but lets SystemExit through: the init listener refuses a config that cannot work with
# SystemExit(2), before any user starts, as Locust's own start-up errors exit. Checked on
# locust 2.47.0.

def exit_from_listener(code: int) -> NoReturn:
    """Leave Locust from an event listener with this exit code (SystemExit passes the hook)."""
    raise SystemExit(code)


# ---------------------------------------------------------------------------------------------
# geventhttpclient
#
# HTTPClient._connection_pool: the client's pool (ConnectionPool / SSLConnectionPool). The fast
# client swaps its class for a subclass (locustfiles.pool) that stamps, times and ages its
# connections, and reads the socket the pool last handed out. Checked on geventhttpclient 2.6.1.

def connection_pool(http: Any) -> Any:
    return http._connection_pool


def swap_pool_class(http: Any, pool_class: Callable[[Any], type]) -> None:
    """Give the client's pool the class ``pool_class(pool)`` picks (a subclass of its own)."""
    pool = http._connection_pool
    pool.__class__ = pool_class(pool)


# ConnectionPool hooks the subclasses in locustfiles.pool override or call: ``_create_socket()``
# (connect: a new socket, or raise), ``_create_tcp_socket(family, socktype, protocol)`` (the
# socket object before connect), and ``_semaphore`` (the pool's slot; get_socket acquires it
# and a failure after that must release it). Checked on geventhttpclient 2.6.1.
POOL_HOOKS = ("_create_socket", "_create_tcp_socket")


def create_pool_socket(pool: Any) -> Any:
    return pool._create_socket()


def release_pool_slot(pool: Any) -> None:
    pool._semaphore.release()


# HTTPSocketPoolResponse._sock (the connection the response reads from; None once released)
# and ._body_buffer (a bytearray of body bytes parsed by feed() and not yet read; one object for
# the response's life: feed() appends to it in place). The fast client reads the stream itself:
# it feeds raw socket data into the response's parser and takes the body bytes out of that
# buffer. Checked on geventhttpclient 2.6.1.

def response_socket(response: Any) -> Any:
    return response._sock


def response_body_buffer(response: Any) -> bytearray:
    return response._body_buffer


# ---------------------------------------------------------------------------------------------
# gevent
#
# gevent.socket.socket._sock: the plain, non-blocking socket under gevent's cooperative wrapper.
# Kernel stamps are read (recvmsg with MSG_ERRQUEUE, MSG_PEEK) and the reactor polls on it
# directly, without gevent's wait on every call. Checked on gevent 26.9.0.

def raw_socket(sock: Any) -> Any:
    return sock._sock


def missing_workers(runner: Any) -> int:
    """A master's workers that stopped sending heartbeats (Locust's ``clients.missing``); 0 for
    any other runner. Their requests counted by Locust and the records they sent can differ."""
    clients = getattr(runner, "clients", None)
    return len(getattr(clients, "missing", ()) or ()) if clients is not None else 0


def connected_worker_ids(runner: Any) -> list[str]:
    """The client ids of the workers a master has seen so far (Locust's ``clients``)."""
    clients = getattr(runner, "clients", None)
    return [node.id for node in getattr(clients, "all", ())] if clients is not None else []
