"""The locustfile: one streaming chat user class per configured endpoint.

Run it with Locust directly (``make ui``) or through ``make loadtest``. Classes are made from
the endpoints file at import time, because Locust needs its user classes before it parses the
command line: the file comes from ``--endpoints-file``, ``$LOCUST_ENDPOINTS_FILE`` or
``endpoints.toml``. Closed loop: ``Chat_<label>`` users send one request after another.
Open loop (``--mode open``): ``OpenLoop_<label>`` users send Poisson arrivals. Trace replay
(``--mode trace``): ``Trace_<label>`` users send the trace file's arrivals.
"""

from __future__ import annotations

import os
import random
import sys
import time
from typing import Any, Iterator

import gevent
from gevent.event import Event
from gevent.pool import Pool
from locust import User, events, task
from locust.exception import StopUser

from core.config import CONFIG_ENV_VAR, ConfigError, load_config
from core.records import ErrorCategory, RequestRecord
from locustfiles import compat, runtime
from locustfiles.clients import ChatClient, chat_body, make_client
from locustfiles.context import RunContext, run_context
from locustfiles.conversation import Messages, Turn, conversation_place, last_of_conversation
from locustfiles.plan import user_class_name
from locustfiles.prompts import ConfigPromptError, arrival_rng, request_key
from locustfiles.traces import trace_key

runtime.install(events)


class RequestFailed(Exception):
    """A failed request as Locust's stats show it: the stable category (and HTTP status)."""


def report(environment: Any, record: RequestRecord) -> None:
    """Send the record home and fire the Locust events for it."""
    run_context(environment).sender.add(record)
    failure = None
    if not record.ok:
        status = f" (HTTP {record.http_status})" if record.error_category.startswith("http_") else ""
        failure = RequestFailed(f"{record.error_category}{status}")
    tokens = record.output_tokens
    environment.events.request.fire(
        request_type="CHAT", name=record.endpoint, response_time=record.e2e_s * 1000.0,
        response_length=int(tokens) if tokens == tokens else 0, exception=failure, context={})
    if record.ok and record.ttft_s == record.ttft_s:
        environment.events.request.fire(
            request_type="TTFT", name=record.endpoint, response_time=record.ttft_s * 1000.0,
            response_length=0, exception=None, context={})


class StreamingUser(User):
    """What both load modes share: the endpoint, prompts, clients, and sending one request.

    It has no task: Locust gives a subclass its bases' tasks too, so each mode's task lives
    only in its own class.
    """

    abstract = True
    endpoint_label = ""
    _instances = 0

    @property
    def ctx(self) -> RunContext:
        """The run's context (on the Locust environment)."""
        return run_context(self.environment)

    def on_start(self) -> None:
        ctx = self.ctx
        self.endpoint = ctx.config.endpoint(self.endpoint_label)
        self.client_kind = ctx.load.client
        type(self)._instances += 1
        runner = self.environment.runner
        # the same user (worker index, n-th user of its class) in every arm: the same stream
        self.stream = f"{getattr(runner, 'worker_index', 0)}-{type(self)._instances}"
        load = ctx.load
        # back-off and start spread only; what is sent comes from the keyed request stream
        self.rng = random.Random(f"{load.prompt_seed}/timing/{self.stream}")
        try:
            self.requests = ctx.request_stream(self.endpoint)
        except ConfigPromptError as exc:
            runtime.log.error("%s", exc)
            raise StopUser() from exc
        self._key_stage: int | None = None
        self._sent_in_stage = 0
        self._idle: list[ChatClient] = []
        self._due_unix: float | None = None
        self._failures_in_a_row = 0
        self._wake = Event()  # set by a graceful stop: ends any wait at once

    def on_stop(self) -> None:
        for client in self._idle:
            client.close()
        self._idle.clear()

    def stop(self, force: bool = False) -> bool:
        """A graceful stop (``--stop-timeout``) lets the request in flight finish.

        Locust kills at once a user it finds between tasks. With no wait time that user has
        already been woken to run its next task, which then starts a request before the kill
        lands, ~10 ms in: a stream cut for nothing. Marking it stopping ends it cleanly at its
        next task boundary instead. A user inside its task is woken from any wait (the start
        spread, a back-off, the next open-loop arrival), so the stop never waits on a timer.
        """
        if not force and compat.user_is_waiting(self):
            compat.mark_user_stopping(self)
            return False
        stopped = super().stop(force)
        wake = getattr(self, "_wake", None)
        if not stopped and wake is not None:
            wake.set()
        return stopped

    def next_key(self, stage: int | None = None) -> str:
        """The key of this user's next request: its stage (as tagged now, or the stage an
        open-loop arrival was drawn for) and its number there."""
        if stage is None:
            stage = self.ctx.sender.tags.stage
        if stage != self._key_stage:
            self._key_stage, self._sent_in_stage = stage, 0
        self._sent_in_stage += 1
        return request_key(stage, self.stream, self._sent_in_stage)

    def send(self, key: str, due_unix: float, turn: Turn | None = None) -> RequestRecord:
        """Stream the request of ``key`` that was due at ``due_unix``; records how late it left.
        The key decides the prompt and the requested output length (the same in every arm).
        ``turn``: a conversation's turn, sent with its history; its answer's text is kept."""
        client = self._idle.pop() if self._idle else make_client(self.client_kind, self.endpoint)
        record = self.ctx.sender.new_record(self.endpoint.label, self.endpoint.model, client.name)
        planned = self.requests.plan(key) if turn is None else turn.planned
        messages, answer = planned.messages, None
        if turn is not None:
            record.session, record.turn = turn.session, turn.number
            messages, answer = turn.messages, turn.answer
        record.request_key = key
        record.requested_tokens = planned.output_tokens
        record.dataset_item, record.shared_prefix = planned.dataset_item, planned.shared_prefix
        record.scheduled_unix = due_unix
        try:
            client.stream_chat(chat_body(self.endpoint, messages, record.requested_tokens),
                               record, answer)
        finally:  # an interrupted stream (GreenletExit) is recorded too
            record.send_lag_s = record.start_unix - due_unix
            report(self.environment, record)
            self._idle.append(client)
        return record


class ChatUser(StreamingUser):
    """Streams chat completions to one endpoint, back to back (closed loop).

    The first request waits a random 0..``start_spread_s``, so users started together do not
    send together. With ``turns`` > 1 the requests are conversations
    (``locustfiles.conversation``): a turn after the first sends the history with the answers,
    think_time_s after the answer before it ended; a failed turn ends its conversation (the next
    request starts the next one, at the key it would have had anyway), and so does a new stage.
    """

    abstract = True
    _history: Messages = []   # the conversation so far (turns > 1); empty: none under way

    @task
    def chat(self) -> None:
        due = self._due_unix
        if due is None:
            # Locust starts floor(spawn rate) users at once every second; without a spread
            # their requests would leave together, and with fixed output lengths they would
            # stay in step for the rest of the stage (bursts no real traffic has).
            spread = self.ctx.load.start_spread_s
            if spread > 0 and self._wake.wait(self.rng.uniform(0.0, spread)):
                return  # stopping
            due = time.time()
        elif due > time.time() and self._wake.wait(due - time.time()):
            return  # stopping during a back-off: nothing was in flight
        turns = self.ctx.load.turns
        if turns > 1:
            record, pause = self.converse(due, turns)
        else:
            record, pause = self.send(self.next_key(), due), 0.0
        # the next request is due the moment this stream ended (its last byte's arrival),
        # or after a back-off when it failed, or after the think time within a conversation
        end = record.start_unix + record.e2e_s
        self._due_unix = ((end if end == end else time.time()) + self.backoff_after(record)
                          + pause)

    def converse(self, due: float, turns: int) -> tuple[RequestRecord, float]:
        """Send the next turn of this user's conversation: the request and the pause before
        the next one (the think time while the conversation goes on, else none)."""
        key = self.next_key()
        session, number = conversation_place(self._key_stage, self.stream,
                                              self._sent_in_stage, turns)
        # turn 1 (a new conversation, or a new stage's first request) starts from no history
        history = self._history if number > 1 else []
        planned = self.requests.turn(session, number)
        turn = Turn(session, number, planned, [*history, *planned.messages])
        self._history = []   # until this turn succeeds: a stop or a failure ends it here
        record = self.send(key, due, turn)
        if record.ok and number < turns:
            self._history = turn.history_after()
            return record, self.ctx.load.think_time_s
        # over: its last turn was answered, or a turn failed and the turns left are skipped, so
        # the next conversation starts at its own first key in every arm
        self._sent_in_stage = last_of_conversation(self._sent_in_stage, turns)
        return record, 0.0

    def backoff_after(self, record: RequestRecord) -> float:
        """Seconds to wait after this request: none after a success; after a failure,
        failure_backoff_s doubling with each failure in a row up to failure_backoff_max_s, at a
        random 50-100% of it so users that failed together do not retry together. Without it a
        user retries a refused connection thousands of times a second, and an outage reads as
        thousands of failures instead of its duration."""
        if record.ok or record.error_category == ErrorCategory.INTERRUPTED:
            self._failures_in_a_row = 0
            return 0.0
        load = self.ctx.load
        self._failures_in_a_row += 1
        if load.failure_backoff_s <= 0:
            return 0.0
        cap = min(load.failure_backoff_max_s,
                  load.failure_backoff_s * 2 ** min(self._failures_in_a_row - 1, 30))
        return cap * self.rng.uniform(0.5, 1.0)


# The event loop's timers fire up to about a millisecond late (epoll waits in whole
# milliseconds): an open-loop arrival sleeps on a timer until this long before it is due and
# spends the rest in event-loop turns, which run everything else meanwhile.
TIMER_SLACK_S = 0.0015


class OpenLoopUser(StreamingUser):
    """Sends requests at Poisson arrival times, whether or not earlier ones finished.

    The rate comes from the stage tags (the stage's rate divided among generator users). A send
    that cannot start on time (the in-flight cap is reached) starts late, and its lag is
    recorded: overload shows as latency and lag, not as fewer requests.
    """

    abstract = True

    @task
    def generate(self) -> None:
        self._pool = pool = Pool(self.ctx.load.max_in_flight)
        wake = self._wake
        for key, due in self.schedule():
            delay = due - time.time()
            if delay > TIMER_SLACK_S and wake.wait(delay - TIMER_SLACK_S):
                break  # stopping: no more arrivals
            while time.time() < due:  # the last stretch: event-loop turns, not a timer
                gevent.sleep(0)
            pool.wait_available()
            pool.spawn(self.send, key, due)
        pool.join()  # the streams in flight finish (a forced stop kills them, recorded)

    def schedule(self) -> Iterator[tuple[str, float]]:
        """The arrivals to send, (key, due unix time), in time order, until the user stops:
        Poisson at the stage's rate, restarted with each stage."""
        ctx, wake = self.ctx, self._wake
        next_at = time.time()
        stage, arrivals = None, None
        while not compat.user_is_stopping(self):
            tags = ctx.sender.tags
            rate = tags.rate_per_user
            if rate <= 0 or tags.users == 0:
                wake.wait(0.05)
                next_at = time.time()
                continue
            if tags.stage != stage:   # a new stage: its arrival offsets are the same in every arm
                stage, arrivals = tags.stage, arrival_rng(ctx.load.prompt_seed, tags.stage,
                                                          self.stream)
                next_at = time.time()
            next_at += arrivals.expovariate(rate)
            yield self.next_key(stage), next_at

    def on_stop(self) -> None:
        pool = getattr(self, "_pool", None)
        if pool is not None:
            pool.kill(block=True, timeout=5)
        super().on_stop()


class TraceReplayUser(OpenLoopUser):
    """Replays the trace's arrival schedule (mode "trace"), whether or not earlier requests
    finished, as open loop does.

    Arrival ``i`` is due at the stage's start (``stage_start_unix`` in the tags: stages.csv's
    ramp_unix) + ramp_s + its offset / trace_time_scale; with several generators (one per worker
    process) each sends its share, ``i % generators == worker index % generators``. Its key is
    ``<stage>/trace/<line>``: a synthetic prompt of about the line's input length and its output
    length, the same in every arm. After its share it sends nothing more until the run stops.
    """

    abstract = True

    def on_start(self) -> None:
        super().on_start()
        self.requests = self.ctx.trace_requests()

    def schedule(self) -> Iterator[tuple[str, float]]:
        ctx, wake = self.ctx, self._wake
        while not compat.user_is_stopping(self):
            tags = ctx.sender.tags
            if tags.stage < 0 or tags.users == 0 or tags.stage_start_unix <= 0:
                wake.wait(0.05)   # before the shape's first tick reached this process
                continue
            stage = ctx.plan[tags.stage]
            start = tags.stage_start_unix + stage.ramp_s
            index = getattr(self.environment.runner, "worker_index", 0)
            scale = ctx.load.trace_time_scale
            for arrival in ctx.trace.share(index, tags.users):
                yield trace_key(stage.index, arrival.line), start + arrival.offset_s / scale
            break
        while not compat.user_is_stopping(self):   # replayed: idle until the run stops
            wake.wait(1.0)


def _peek_option(name: str) -> str | None:
    """A command-line option's value before Locust parses the command line."""
    argv = sys.argv
    for i, arg in enumerate(argv):
        if arg == name and i + 1 < len(argv):
            return argv[i + 1]
        if arg.startswith(name + "="):
            return arg.split("=", 1)[1]
    return None


def _make_user_classes() -> dict[str, type]:
    path = _peek_option("--endpoints-file") or os.environ.get(CONFIG_ENV_VAR)
    try:
        config = load_config(path)
    except ConfigError as exc:
        sys.stderr.write(f"error: {exc}\n")
        raise SystemExit(2) from None
    mode = _peek_option("--mode") or config.load.mode
    base = {"open": OpenLoopUser, "trace": TraceReplayUser}.get(mode, ChatUser)
    classes = {}
    for ep in config.endpoints:
        name = user_class_name(mode, ep.label)
        classes[name] = type(name, (base,), {
            "endpoint_label": ep.label, "abstract": False, "_instances": 0,
            "__doc__": f"Streams chat completions to endpoint {ep.label!r} ({ep.model})."})
    return classes


globals().update(_make_user_classes())
