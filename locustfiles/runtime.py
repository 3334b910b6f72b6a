"""The suite's Locust hooks, declared in one place: what each Locust process does, on which event.

Roles (Locust's own):
- every process that runs users (local or worker) has a ``RecordSender`` (``sender.py``): it
  buffers records and, about once a second, sends a ``RecordBatch`` (``messages.py``) with
  ``runner.send_message("llm_records", ...)``; a LocalRunner delivers that message to itself, so
  local and distributed runs take the same path;
- the process that writes (local or master) has the ``RunWriter`` (``writer.py``): it appends
  each batch to ``records.csv`` as it arrives, and keeps the stage rows, the manifest and the
  metric capture;
- the load shape (``sweep.py``, master/local only) owns the plan's timeline: it tags stages by
  broadcasting ``llm_stage`` on every tick, so every record carries the tags that were current
  when its request was sent, and it collects the last records when the plan ends.
Everything one process knows about the run is its ``RunContext`` (``context.py``), set on the
Locust environment at init.

Hooks (``install``):
- ``init_command_line_parser``: the suite's flags (``cliargs.add_arguments``);
- ``init``: the config (a config that cannot work is a clean exit 2 with its message), the
  context, the messages each process handles, the writer or the sender and their greenlets;
  where the run directory is written, the live view too: every batch also goes to
  ``LiveFigures`` (``livemetrics.py``), served on ``--llm-metrics-port`` and in the web UI's
  LLM tab (``webtab.py``);
- ``test_start`` / ``test_stop``: the CPU window; a process's last batch when its test stops;
- ``worker_connect`` (master): the worker's clock and config are checked (``workers.py``);
- ``quitting``: a run stopped before its plan ended is stopped and finalized as interrupted, one
  that recorded nothing as failed; the run directory is finalized.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import sys
import threading
import time
from pathlib import Path
from typing import Any, NoReturn

import gevent
from locust.runners import (STATE_INIT, STATE_RUNNING, STATE_SPAWNING, LocalRunner,
                            MasterRunner, WorkerRunner)

from core import secrets
from core.config import known_secrets
from core.rundir.manifest import RunStatus
from locustfiles import compat
from locustfiles.cliargs import add_arguments, config_from_options
from locustfiles import livemetrics, webtab
from locustfiles.context import RunContext, attach, find_context, run_context
from locustfiles.messages import (MSG_CLOCK, MSG_CLOCK_REPLY, MSG_FLUSH, MSG_RECORDS, MSG_STAGE,
                                  ClockProbe, ClockReply, RecordBatch, StageTags)
from locustfiles.sender import RecordSender
from locustfiles.workers import DEFAULT_MAX_CLOCK_OFFSET_S, WorkerRoster, reply_to_probe
from locustfiles.writer import (FINAL_FLUSH_TIMEOUT_S, RunWriter, build_manifest, capture_targets,
                                default_run_dir, endpoint_labels, locust_chat_requests)

log = logging.getLogger("llm.runtime")

USERS_RUNNING = (STATE_SPAWNING, STATE_RUNNING)

BAD_CONFIG_EXIT_CODE = 2

__all__ = ["install", "run_context"]


def scrub_logs() -> None:
    """Every log handler (set up by Locust before init) scrubs credentials: locust.log's
    second line of defence."""
    for handler in logging.getLogger().handlers:
        if not any(isinstance(f, secrets.ScrubLogFilter) for f in handler.filters):
            handler.addFilter(secrets.ScrubLogFilter())


def refuse_to_start(environment: Any, exc: Exception) -> NoReturn:
    """A config that cannot work: the message, and exit 2 before any user starts.

    SystemExit passes through Locust's event hooks (they catch Exception only) and out of
    ``locust.main``, as Locust's own start-up errors do (``sys.exit`` right after ``init``);
    see ``compat.exit_from_listener``."""
    log.error("%s", exc)
    sys.stderr.write(f"error: {exc}\n")
    environment.process_exit_code = BAD_CONFIG_EXIT_CODE
    compat.exit_from_listener(BAD_CONFIG_EXIT_CODE)


def on_init(environment: Any, **_kwargs: Any) -> None:
    scrub_logs()
    options = environment.parsed_options
    try:
        config = config_from_options(options)
    except ValueError as exc:   # ConfigError, ConfigPromptError
        refuse_to_start(environment, exc)
    known_secrets(config)  # the keys from the environment are scrubbed from logs and files too
    ctx = RunContext(environment, config, options)
    attach(environment, ctx)
    compat.exclude_ttft_from_aggregated(environment)
    runner = environment.runner
    if runner is None:
        return
    runs_users = isinstance(runner, (WorkerRunner, LocalRunner))
    if runs_users:
        sender = ctx.sender = RecordSender(runner, ctx.worker)
        runner.register_message(MSG_STAGE, lambda environment, msg, **kw:
                                sender.on_stage(StageTags.from_payload(msg.data)))
    if isinstance(runner, (MasterRunner, LocalRunner)):
        _start_writer(ctx, environment, runner, options)
    if isinstance(runner, MasterRunner):
        ctx.writer.track_own_cpu(f"{ctx.worker} (master)")
        _start_roster(ctx, environment, runner, options)
    if isinstance(runner, WorkerRunner):
        digest, host = config.digest(), socket.gethostname()
        runner.register_message(MSG_CLOCK, lambda environment, msg, **kw: reply_to_probe(
            runner.send_message, ClockProbe.from_payload(msg.data), ctx.worker, host, digest))
    if runs_users:
        def on_flush(environment: Any, msg: Any, **kw: Any) -> None:
            sender.cpu.mark_stop()
            sender.flush(final=True)

        runner.register_message(MSG_FLUSH, on_flush)
        sender.start()


def _start_writer(ctx: RunContext, environment: Any, runner: Any, options: Any) -> None:
    run_dir = Path(options.run_dir) if options.run_dir else default_run_dir(environment)
    ctx.run_id = run_dir.name
    if ctx.sender is not None:  # a local run: its own records carry the run's identity at once
        ctx.sender.tags.run_id, ctx.sender.tags.repetition = ctx.run_id, ctx.repetition
    writer = ctx.writer = RunWriter(run_dir, build_manifest(ctx, environment, run_dir))
    live = ctx.live = livemetrics.LiveFigures()

    def on_records(environment: Any, msg: Any, **kw: Any) -> None:
        batch = RecordBatch.from_payload(msg.data)
        writer.on_batch(batch)
        live.add_batch(batch)
        if ctx.roster is not None:
            ctx.roster.on_batch(batch)

    runner.register_message(MSG_RECORDS, on_records)
    writer.start_capture(capture_targets(ctx.config, endpoint_labels(environment)))
    _start_live_view(ctx, environment, options)
    gevent.spawn(ctx.manual_tags_loop)
    log.info("writing the run directory %s", run_dir)


def _start_roster(ctx: RunContext, environment: Any, runner: Any, options: Any) -> None:
    """The master's workers: their clocks and configs checked as they connect."""
    roster = ctx.roster = WorkerRoster(
        runner.send_message, ctx.config.digest(),
        float(getattr(options, "max_clock_offset_s", None) or DEFAULT_MAX_CLOCK_OFFSET_S),
        lambda reason: refuse_run(ctx, environment, reason))
    environment.events.worker_connect.add_listener(
        lambda client_id, **kw: roster.on_connect(client_id))
    # Locust's master listens from the moment it exists, before init: a worker that was already
    # waiting may have connected before this listener did
    for client_id in compat.connected_worker_ids(runner):
        roster.on_connect(client_id)
    runner.register_message(MSG_CLOCK_REPLY, lambda environment, msg, **kw:
                            roster.on_clock_reply(ClockReply.from_payload(msg.data)))
    expect = int(getattr(options, "expect_workers", 0) or 0)
    max_wait = float(getattr(options, "expect_workers_max_wait", 0) or 0)
    if getattr(options, "headless", False) and expect and max_wait:
        gevent.spawn(_workers_watchdog, ctx, environment, runner, expect, max_wait)


def _workers_watchdog(ctx: RunContext, environment: Any, runner: Any, expect: int,
                      max_wait: float) -> None:
    """Locust gives up on missing workers with a bare exit; end the run first, as failed, with
    the figures (so the manifest never stays 'running')."""
    gevent.sleep(max(0.0, max_wait - 1.0))
    if runner.state not in USERS_RUNNING and runner.worker_count < expect:
        refuse_run(ctx, environment, f"{expect} worker(s) expected, {runner.worker_count} "
                   f"connected within {max_wait:g} s (--expect-workers-max-wait): start them "
                   "(python -m locustfiles.remote_worker) and check that they reach the master")


def refuse_run(ctx: RunContext, environment: Any, reason: str) -> None:
    """A worker that cannot take part (another config, a clock too far off): the run stops and
    is finalized as failed with the reason; Locust exits 2."""
    if ctx.refusal:
        return
    ctx.refusal = reason
    log.error("refusing the run: %s", reason)
    sys.stderr.write(f"error: {reason}\n")
    environment.process_exit_code = BAD_CONFIG_EXIT_CODE
    # Not through Locust's shutdown: its SIGTERM handler is installed only once its start-up
    # (the wait for workers, the first spawn) is over, and a refusal comes during it. Finalize
    # here (the users stopped and their last records collected if they ran; failed, with the
    # reason), tell the workers to quit, and leave. In a greenlet of its own: a refusal comes
    # from a message handler, and the last records come through the same message listener.
    gevent.spawn(_end_refused_run, environment)


def _end_refused_run(environment: Any) -> None:
    on_quitting(environment)
    environment.runner.quit()
    logging.shutdown()
    os._exit(BAD_CONFIG_EXIT_CODE)


def _start_live_view(ctx: RunContext, environment: Any, options: Any) -> None:
    """The live metrics on their port, and the LLM tab when the web UI runs."""
    live, writer = ctx.live, ctx.writer
    port = getattr(options, "llm_metrics_port", 0)
    if port:
        collector = livemetrics.LiveCollector(live, ctx.live_status)
        config_json = json.dumps({"run": f"{ctx.campaign}/{ctx.run_id}",
                                  "config": ctx.config.to_file_dict()}).encode()
        livemetrics.serve(livemetrics.registry_for(collector),
                          getattr(options, "llm_metrics_host", None) or "127.0.0.1", port,
                          lambda: config_json)
    if environment.web_ui is not None:
        def rows() -> list[dict[str, Any]]:
            latest = writer.capture.latest() if writer.capture is not None else {}
            return webtab.tab_rows(live.recent_requests(), latest, endpoint_labels(environment))

        webtab.install(environment.web_ui, rows)


def on_test_start(environment: Any, **_kwargs: Any) -> None:
    ctx = find_context(environment)
    if ctx is None:
        return
    if ctx.sender is not None:
        ctx.sender.cpu.mark_start()
    if ctx.writer is not None:
        ctx.broadcast_manual()


def on_test_stop(environment: Any, **_kwargs: Any) -> None:
    ctx = find_context(environment)
    if ctx is None or ctx.sender is None:
        return
    ctx.sender.cpu.mark_stop()
    finalized = ctx.writer is not None and ctx.writer.records.closed
    if not finalized:
        ctx.sender.flush(final=True)


def on_quitting(environment: Any, **_kwargs: Any) -> None:
    """Finalize the run directory. Locust fires this before it stops the runner, so a run that
    quits before its plan ended (a signal) is stopped here first and finalized as interrupted;
    a run that recorded nothing is a failure, never "complete"."""
    ctx = find_context(environment)
    if ctx is None or ctx.writer is None:
        return
    runner = environment.runner
    details: dict[str, Any] = {}
    status = RunStatus.COMPLETE
    shape = environment.shape_class   # the LoadPlanShape instance (locustfiles/sweep.py)
    if shape is not None and not shape.plan_finished:
        now = time.time()
        log.warning("the run was stopped before its plan ended: finalizing it as interrupted")
        if runner.state != STATE_INIT:   # users ran: stop them and collect their last records
            shape.interrupt(runner, now)
        status, details["interrupted_unix"] = RunStatus.INTERRUPTED, now
    elif shape is None and runner.state in USERS_RUNNING:
        # A run by hand ends here (Ctrl-C, SIGTERM, the web UI's quit). Stop the users before
        # counting: a stream ending while the files close would reach Locust's count but not
        # records.csv.
        runner.stop()
        if isinstance(runner, MasterRunner):
            ctx.writer.wait_for_final_batches(max(1, runner.worker_count), FINAL_FLUSH_TIMEOUT_S)
    if isinstance(runner, LocalRunner) and ctx.sender.buffer:
        ctx.sender.flush(final=True)
    writer = ctx.writer
    if ctx.refusal:
        status, details["failure_reason"] = RunStatus.FAILED, ctx.refusal
        environment.process_exit_code = BAD_CONFIG_EXIT_CODE
    elif writer.records.rows_written == 0 and status == RunStatus.COMPLETE:
        status = RunStatus.FAILED
        details["failure_reason"] = ("no request was recorded: no user sent one (see the errors "
                                     "above in this log)")
        log.error("the run recorded no requests: marking it failed")
        environment.process_exit_code = 1
    if ctx.roster is not None:
        details["workers"] = ctx.roster.summary()
    writer.finalize(status, locust_chat_requests(environment), **details)
    log.info("run directory %s: %s (%d records)", writer.run_dir, status,
             writer.records.rows_written)


def honour_sigint() -> None:
    """Let SIGINT stop this Locust process even when it was started with SIGINT ignored.

    A shell starts background jobs (``make ui &``, a CI script) with SIGINT ignored, and Python
    keeps an inherited "ignore"; Locust would then never see Ctrl-C, nor the SIGINT that the
    campaign runner stops it with, and the run directory would never be finalized.
    """
    if (threading.current_thread() is threading.main_thread()
            and signal.getsignal(signal.SIGINT) is signal.SIG_IGN):
        signal.signal(signal.SIGINT, signal.default_int_handler)


def install(events: Any) -> None:
    """Hook the suite into Locust (called once, by the locustfile)."""
    honour_sigint()
    # The record writer runs in an OS thread; by default a thread keeps the GIL for up to 5 ms
    # before the event loop (which sends requests on time) can take it back.
    sys.setswitchinterval(0.001)
    events.init_command_line_parser.add_listener(add_arguments)
    events.init.add_listener(on_init)
    events.test_start.add_listener(on_test_start)
    events.test_stop.add_listener(on_test_stop)
    events.quitting.add_listener(on_quitting)
