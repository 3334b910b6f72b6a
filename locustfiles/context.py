"""What one Locust process knows about the run: the context, kept on the Locust environment.

It is made by the init listener (``locustfiles.runtime``) and set as ``environment.llm_run``;
users reach it through ``self.environment`` and the shape through its runner's environment
(``run_context(environment)``). It holds the config and the plan, the run's identity, this
process's part of the record pipeline (a ``RecordSender`` where users run, the ``RunWriter``
where the run directory is written) and the stage-tag broadcast.
"""

from __future__ import annotations

from typing import Any

import gevent

from core.config import Endpoint, SuiteConfig, is_open_loop
from locustfiles.datasets import load_dataset
from locustfiles.livemetrics import LiveFigures, LiveStatus
from locustfiles.messages import MSG_STAGE, StageTags
from locustfiles.plan import Stage, build_plan
from locustfiles.prompts import RequestStream, words_per_token
from locustfiles.sender import RecordSender, worker_id
from locustfiles.traces import Trace, TraceRequests, read_trace
from locustfiles.writer import RunWriter

ENV_ATTRIBUTE = "llm_run"
MANUAL_TAGS_INTERVAL_S = 0.5


class RunContext:
    """Everything one Locust process needs about the run; created at Locust's init event."""

    def __init__(self, environment: Any, config: SuiteConfig, options: Any):
        self.environment = environment
        self.config = config
        self.load = config.load
        # trace replay: the trace is read once per process, for the plan and the requests
        self.trace: Trace | None = (read_trace(config.load.trace_file)
                                    if config.load.mode == "trace" else None)
        self.plan: list[Stage] = build_plan(config.load, self.trace)
        self.repetition = int(getattr(options, "repetition", 0) or 0)
        self.campaign = getattr(options, "campaign", "") or ""
        self.worker = worker_id()
        self.run_id = ""
        self.sender: RecordSender | None = None   # where users run (local, worker)
        self.writer: RunWriter | None = None      # where the run directory is written (local, master)
        self.live: LiveFigures | None = None      # the live view's figures (local, master)
        self.tags = StageTags()                   # the tags last broadcast (local, master)
        self.roster: Any = None                   # the master's WorkerRoster (workers.py)
        self.refusal = ""                         # why the master refused the run, if it did
        self._streams: dict[str, RequestStream] = {}

    def broadcast(self, tags: StageTags) -> None:
        """Send the current tags to every process that runs users (the run's identity too)."""
        tags.run_id, tags.repetition = self.run_id, self.repetition
        self.tags = tags
        self.environment.runner.send_message(MSG_STAGE, tags.to_payload())

    def manual_tags_loop(self) -> None:
        """Without a load shape (web UI), keep tagging records with the current user count."""
        while True:
            self.broadcast_manual()
            gevent.sleep(MANUAL_TAGS_INTERVAL_S)

    def broadcast_manual(self) -> None:
        """Without a load shape (web UI), tag records with the current user count."""
        if self.environment.shape_class is None and self.environment.runner is not None:
            self.broadcast(StageTags(-1, self.environment.runner.target_user_count or 0,
                                     "manual", 0.0))

    def request_stream(self, endpoint: Endpoint) -> RequestStream:
        """The seeded request stream of an endpoint's users, made once per process (a prompts
        file is read once, not once per user). Raises ConfigPromptError."""
        stream = self._streams.get(endpoint.label)
        if stream is None:
            load, settings = self.load, endpoint.request
            stream = self._streams[endpoint.label] = RequestStream.from_settings(
                load, settings.max_tokens, settings.max_tokens_min,
                load_dataset(load.prompts_file, load.prompts_format)
                if load.prompts_file else None)
        return stream

    def trace_requests(self) -> TraceRequests:
        """Trace replay: what each arrival of the trace asks for (the same for every endpoint)."""
        if self.trace is None:
            raise RuntimeError('trace requests exist only in mode "trace"')
        return TraceRequests.of(self.trace, self.load.prompt_seed, words_per_token(self.load))

    def live_status(self) -> LiveStatus:
        """The run's state now, for the live metrics (master/local)."""
        env, tags = self.environment, self.tags
        runner = env.runner
        open_loop = is_open_loop(self.load.mode)
        return LiveStatus(
            run_id=self.run_id, repetition=self.repetition, campaign=self.campaign,
            mode="shape" if env.shape_class is not None else "manual", load_mode=self.load.mode,
            users=int(getattr(runner, "user_count", 0) or 0), stage=tags.stage,
            stage_users=tags.users, phase=tags.phase,
            target_rate=tags.rate_per_user * tags.users if open_loop and tags.stage >= 0 else 0.0,
            endpoints=tuple(sorted(cls.endpoint_label for cls in env.user_classes
                                   if getattr(cls, "endpoint_label", None))))


def attach(environment: Any, ctx: RunContext) -> None:
    setattr(environment, ENV_ATTRIBUTE, ctx)


def find_context(environment: Any) -> RunContext | None:
    """The run context of this Locust environment; None before init (or without the suite's
    init listener)."""
    return getattr(environment, ENV_ATTRIBUTE, None)


def run_context(environment: Any) -> RunContext:
    """The run context of this Locust environment."""
    ctx = find_context(environment)
    if ctx is None:
        raise RuntimeError("the run context exists only after Locust's init event")
    return ctx
