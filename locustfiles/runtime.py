"""What one Locust process knows about the run, and the listeners that move records home.

Roles (Locust's own):
- every process that runs users (local or worker) buffers records and, about once a second,
  sends them with ``runner.send_message("llm_records", ...)``; a LocalRunner delivers that
  message to itself, so local and distributed runs take the same path;
- the process that writes (local or master) appends each batch to ``records.csv`` as it
  arrives, keeps the stage timeline, the manifest and the metric capture.
The load shape (master/local only) tags stages: it broadcasts ``llm_stage`` on every tick,
and every record carries the tags that were current when its request was sent.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import platform
import signal
import socket
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import gevent
import psutil
from gevent.threadpool import ThreadPool
from locust.runners import LocalRunner, MasterRunner, WorkerRunner

from core import rundir, secrets
from core.rundir import series
from core.rundir.capture import MetricsCapture, ScrapeTarget
from core.rundir.manifest import (Host, LoadGeneratorSummary, LoopLag, Manifest, ProcessCpu,
                                  RunStatus, Versions, suite_version)
from core.config import (ConfigError, LoadSettings, SuiteConfig, known_secrets, load_config,
                         with_overrides)
from core.records import RECORD_FIELDS, RequestRecord
from locustfiles.plan import Stage, build_plan, locate, total_duration_s
from locustfiles.prompts import check_prompts

log = logging.getLogger("llm.runtime")

MSG_RECORDS = "llm_records"
MSG_STAGE = "llm_stage"
MSG_FLUSH = "llm_flush"
FLUSH_INTERVAL_S = 1.0
MANUAL_TAGS_INTERVAL_S = 0.5
CPU_SATURATED_PERCENT = 90.0
CPU_SATURATED_SECONDS = 3.0      # this many seconds above 90% marks the generator saturated
FINAL_FLUSH_TIMEOUT_S = 20.0

LOAD_FIELDS = tuple(f.name for f in dataclasses.fields(LoadSettings))


def worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


@dataclass
class StageTags:
    """What a request is tagged with at send time (sent by the master with every tick)."""

    stage: int = -1
    users: int = 0
    phase: str = "manual"
    rate_per_user: float = 0.0
    run_id: str = ""
    repetition: int = 0


@dataclass
class CpuTracker:
    """Own-process CPU samples, to tell whether the load generator itself was the bottleneck."""

    process: psutil.Process = field(default_factory=psutil.Process)
    max_percent: float = 0.0
    seconds_above: float = 0.0
    cpu_at_start: float | None = None
    cpu_at_stop: float | None = None

    def __post_init__(self) -> None:
        self.process.cpu_percent(None)  # the first reading is meaningless; start the window

    def cpu_seconds(self) -> float:
        times = self.process.cpu_times()
        return times.user + times.system

    def mark_start(self) -> None:
        self.cpu_at_start = self.cpu_seconds()

    def mark_stop(self) -> None:
        if self.cpu_at_start is not None:
            self.cpu_at_stop = self.cpu_seconds()

    def sample(self, interval_s: float) -> float:
        percent = self.process.cpu_percent(None)
        self.max_percent = max(self.max_percent, percent)
        if percent >= CPU_SATURATED_PERCENT:
            self.seconds_above += interval_s
        return percent

    def summary(self) -> dict[str, float]:
        """CPU figures; cpu_seconds covers the test (start to stop) once it has started."""
        out = {"max_cpu_percent": round(self.max_percent, 1),
               "seconds_above_90": round(self.seconds_above, 1)}
        if self.cpu_at_start is not None:
            end = self.cpu_at_stop if self.cpu_at_stop is not None else self.cpu_seconds()
            out["cpu_seconds"] = round(end - self.cpu_at_start, 3)
        return out


LOOP_TICK_S = 0.01  # the event-loop lag probe's period


@dataclass
class LoopLagProbe:
    """The event loop's own lateness: a greenlet that asks to wake every 10 ms notes how late it
    woke. Everything else in the process (users sending, the reader, the flusher) waits behind
    the same loop, so this is the delay any of them may have had. Samples are kept per stage
    (steady phase, or the manual run) until the next batch of records takes them home."""

    samples: dict[str, list[float]] = field(default_factory=dict)

    def run(self, tags_of: Any) -> None:
        due = time.perf_counter() + LOOP_TICK_S
        while True:
            gevent.sleep(max(0.0, due - time.perf_counter()))
            now = time.perf_counter()
            tags = tags_of()
            if tags.phase in ("steady", "manual"):
                self.samples.setdefault(str(tags.stage), []).append(round(now - due, 6))
            due = max(due + LOOP_TICK_S, now)  # a late wake-up is one sample, not a backlog

    def take(self) -> dict[str, list[float]]:
        taken, self.samples = self.samples, {}
        return taken


def lag_summary(samples: list[float]) -> dict[str, float]:
    """p50, p99 and max (ms) of event-loop lag samples (seconds), with their count."""
    ordered = sorted(samples)
    n = len(ordered)

    def rank(q: float) -> float:
        return round(ordered[max(0, math.ceil(q * n) - 1)] * 1e3, 3)

    return {"n": n, "p50_ms": rank(0.5), "p99_ms": rank(0.99), "max_ms": round(ordered[-1] * 1e3, 3)}


class RunWriter:
    """Master/local side: writes the run directory as data arrives."""

    def __init__(self, run_dir: Path, manifest: Manifest):
        self.run_dir = run_dir
        run_dir.mkdir(parents=True, exist_ok=True)
        self.records = rundir.record_appender(run_dir)
        self.stages = rundir.stage_appender(run_dir)
        self.manifest = manifest
        self.cpu_by_process: dict[str, dict[str, float]] = {}
        self.loop_lag: dict[str, list[float]] = {}   # stage -> samples from every process
        self.final_acks: set[str] = set()
        self.capture: MetricsCapture | None = None
        # File writes and fsync go to one OS thread, so a slow disk never stalls the event loop
        # (in a local run the same loop timestamps the streams).
        self._io = ThreadPool(1)
        rundir.write_manifest(run_dir, manifest)

    def on_batch(self, data: dict[str, Any]) -> None:
        rows = data.get("rows") or []
        if self.records.closed:
            if rows:  # an empty batch is a late "nothing more": no loss
                log.error("a batch of %d records arrived after the run was finalized; they are "
                          "not in records.csv", len(rows))
            return
        if rows:
            text = self.records.encode_values(rows)  # lists in RECORD_FIELDS order
            self._io.apply(self.records.append_encoded, (text, len(rows)))
        if data.get("cpu"):
            self.cpu_by_process[data["worker"]] = data["cpu"]
        for stage, samples in (data.get("loop_lag") or {}).items():
            self.loop_lag.setdefault(stage, []).extend(samples)
        if data.get("final"):
            self.final_acks.add(data["worker"])

    def write_stage(self, row: dict[str, Any]) -> None:
        self.stages.write([row])

    def load_generator_summary(self) -> LoadGeneratorSummary:
        processes = self.cpu_by_process
        max_cpu = max((p["max_cpu_percent"] for p in processes.values()), default=0.0)
        above = max((p["seconds_above_90"] for p in processes.values()), default=0.0)
        return LoadGeneratorSummary(
            processes={worker: ProcessCpu.from_json(cpu) for worker, cpu in processes.items()},
            max_cpu_percent=max_cpu, seconds_above_90=above,
            saturated=above >= CPU_SATURATED_SECONDS,
            loop_lag_by_stage={stage: LoopLag.from_json(lag_summary(samples))
                               for stage, samples in sorted(self.loop_lag.items()) if samples})

    def finalize(self, status: str, locust_requests: int, *, interrupted_unix: float | None = None,
                 failure_reason: str | None = None) -> None:
        """Close every file and write the manifest's end: status, counts, and (when they apply)
        when the run was interrupted or why it failed."""
        if self.capture is not None:
            self.capture.stop()
            self.capture = None
        self._io.apply(self.records.close)  # after any write still queued in the I/O thread
        self._io.kill()
        self.stages.close()
        self.manifest.finish(status, end_unix=time.time(),
                             records_written=self.records.rows_written,
                             locust_requests=locust_requests,
                             load_generator=self.load_generator_summary(),
                             interrupted_unix=interrupted_unix, failure_reason=failure_reason)
        rundir.write_manifest(self.run_dir, self.manifest)


class RunContext:
    """Everything one Locust process needs about the run; created at Locust's init event."""

    def __init__(self, environment: Any, config: SuiteConfig, options: Any):
        self.environment = environment
        self.config = config
        self.load = config.load
        self.plan: list[Stage] = build_plan(config.load)
        self.repetition = int(getattr(options, "repetition", 0) or 0)
        self.campaign = getattr(options, "campaign", "") or ""
        self.worker = worker_id()
        self.tags = StageTags()
        self.buffer: list[list[Any]] = []
        # request ids: unique across processes and hosts without coordination
        self._id_prefix = f"{os.getpid():x}{os.urandom(4).hex()}"
        self._requests = 0
        self.cpu = CpuTracker()
        self.loop_lag = LoopLagProbe()
        self.writer: RunWriter | None = None
        self.run_id = ""
        # shape state (master/local)
        self._current: tuple[int, str] | None = None
        self._stage_row: dict[str, Any] = {}
        self._stopping_since: float | None = None
        self._flush_sent = False

    # ---- records (every process that runs users) ----

    def new_record(self, endpoint_label: str, model: str, client: str) -> RequestRecord:
        tags = self.tags
        self._requests += 1
        return RequestRecord(run_id=tags.run_id, endpoint=endpoint_label, model=model,
                             repetition=tags.repetition, stage=tags.stage,
                             stage_users=tags.users, phase=tags.phase, worker=self.worker,
                             client=client, request_id=f"{self._id_prefix}-{self._requests:x}")

    def add(self, record: RequestRecord) -> None:
        self.buffer.append([getattr(record, name) for name in RECORD_FIELDS])

    def flush(self, final: bool = False) -> None:
        rows, self.buffer = self.buffer, []
        try:
            self.environment.runner.send_message(
                MSG_RECORDS, {"worker": self.worker, "rows": rows, "cpu": self.cpu.summary(),
                              "loop_lag": self.loop_lag.take(), "final": final})
        except Exception:
            self.buffer = rows + self.buffer  # kept for the next batch
            raise

    def flusher(self) -> None:
        while True:
            gevent.sleep(FLUSH_INTERVAL_S)
            self.cpu.sample(FLUSH_INTERVAL_S)
            try:
                self.flush()
            except Exception:  # a lost batch must not stop the next ones
                log.exception("could not send a batch of records")

    # ---- stage tags ----

    def broadcast(self, tags: StageTags) -> None:
        """Send the current tags to every process that runs users (the run's identity too)."""
        tags.run_id, tags.repetition = self.run_id, self.repetition
        self.environment.runner.send_message(MSG_STAGE, dataclasses.asdict(tags))

    def on_stage_message(self, data: dict[str, Any]) -> None:
        self.tags = StageTags(**data)

    # ---- the shape (master/local) ----

    def generators(self, runner: Any) -> int:
        """Open loop: one generator user per worker process (one in a local run)."""
        if isinstance(runner, MasterRunner):
            return max(1, runner.worker_count)
        return 1

    def shape_tick(self, runner: Any, elapsed_s: float) -> tuple[int, float] | None:
        where = locate(self.plan, elapsed_s)
        now = time.time()
        if where is not None:
            stage, phase = where
            if self._current is None or self._current[0] != stage.index:
                self._close_stage(now)
                self._stage_row = {"stage": stage.index, "users": stage.users,
                                   "rate": stage.rate, "ramp_unix": now}
            if self._current != (stage.index, phase):
                self._mark_phases(stage, phase, now)
                self._current = (stage.index, phase)
            return self._stage_load(runner, stage, phase)
        return self._stopping(runner, now)

    def _mark_phases(self, stage: Stage, phase: str, now: float) -> None:
        order = ("ramp", "warmup", "steady", "drain")
        for name in order[1:order.index(phase) + 1]:
            self._stage_row.setdefault(f"{name}_unix", now)
        log.info("stage %d/%d (%s) phase %s", stage.index + 1, len(self.plan),
                 f"{stage.users} users" if stage.users else f"{stage.rate:g} req/s", phase)

    def _stage_load(self, runner: Any, stage: Stage, phase: str) -> tuple[int, float]:
        if self.load.mode == "closed":
            users = stage.users
            previous = self.plan[stage.index - 1].users if stage.index else 0
            spawn_rate = (max(1.0, abs(users - previous) / stage.ramp_s) if stage.ramp_s > 0
                          else float(max(users, 1)))
            tags = StageTags(stage.index, users, phase, 0.0)
        else:
            users = self.generators(runner)
            spawn_rate = float(users)
            tags = StageTags(stage.index, users, phase, stage.rate / users)
        self.broadcast(tags)  # every tick: workers that (re)joined late catch up
        return users, spawn_rate

    def _close_stage(self, now: float, partial: bool = False) -> None:
        """Write the current stage's row. A partial stage (the run was interrupted) keeps the
        phases it never reached blank, so no window is invented for them."""
        if self._stage_row and self.writer is not None:
            row = dict(self._stage_row)
            if not partial:
                for name in ("warmup_unix", "steady_unix", "drain_unix"):
                    row.setdefault(name, now)
            row["end_unix"] = now
            self.writer.write_stage(row)
        self._stage_row = {}

    def _stopping(self, runner: Any, now: float) -> tuple[int, float] | None:
        """After the last stage: stop users, collect every record, then end the run."""
        if self._stopping_since is None:
            self._close_stage(now)
            self._stopping_since = now
            self._current = (-1, "drain")
            last = self.plan[-1]
            self.broadcast(StageTags(last.index, last.users, "drain", 0.0))
            log.info("plan complete: stopping users and collecting the last records")
            return 0, 100.0
        limit = FINAL_FLUSH_TIMEOUT_S + float(self.environment.stop_timeout or 0)
        if runner.user_count > 0 and now - self._stopping_since < limit:
            return 0, 100.0
        if not self._flush_sent:
            self._flush_sent = True
            runner.send_message(MSG_FLUSH, {})
            return 0, 100.0
        writer = self.writer
        expected = self.generators(runner) if isinstance(runner, MasterRunner) else 1
        complete = writer is not None and len(writer.final_acks) >= expected
        counted = locust_chat_requests(self.environment)
        in_sync = writer is None or counted == writer.records.rows_written
        if (complete and in_sync) or now - self._stopping_since > limit:
            if not (complete and in_sync):
                log.warning("ending with %s of %d final record batches and %d records for %d "
                            "Locust requests", len(writer.final_acks) if writer else 0,
                            expected, writer.records.rows_written if writer else 0, counted)
            return None
        return 0, 100.0

    @property
    def plan_finished(self) -> bool:
        """The shape ran its plan to the end (it is collecting, or has collected, the records)."""
        return self._stopping_since is not None

    def interrupt(self, runner: Any, now: float) -> None:
        """The run is being stopped before its plan ended (Ctrl-C, SIGTERM): stop the users at
        once (streams in flight are recorded as interrupted), collect every process's last
        records, and close the partial stage."""
        self._close_stage(now, partial=True)
        self.environment.stop_timeout = 0
        runner.stop()
        if isinstance(runner, MasterRunner) and self.writer is not None:
            expected = max(1, runner.worker_count)
            deadline = time.time() + FINAL_FLUSH_TIMEOUT_S
            while len(self.writer.final_acks) < expected and time.time() < deadline:
                gevent.sleep(0.1)

    def manual_tags_loop(self) -> None:
        """Without a load shape (web UI), tag records with the current user count."""
        while True:
            self.broadcast_manual()
            gevent.sleep(MANUAL_TAGS_INTERVAL_S)

    def broadcast_manual(self) -> None:
        if self.environment.shape_class is None and self.environment.runner is not None:
            self.broadcast(StageTags(-1, self.environment.runner.target_user_count or 0,
                                     "manual", 0.0))


def locust_chat_requests(environment: Any) -> int:
    """Requests Locust counted for the CHAT event (failures included)."""
    return sum(entry.num_requests for (name, method), entry in environment.stats.entries.items()
               if method == "CHAT")


_context: RunContext | None = None


def context() -> RunContext:
    if _context is None:
        raise RuntimeError("the run context exists only after Locust's init event")
    return _context


# ---- command line ----

def _csv_of(kind: type):
    def parse(text: str):
        try:
            return tuple(kind(x) for x in text.split(",") if x.strip())
        except ValueError:
            raise ValueError(f"expected a comma-separated list, got {text!r}") from None
    return parse


def add_arguments(parser: Any) -> None:
    """One flag per setting of [load], plus the run's identity. Unset flags keep the file's value."""
    group = parser.add_argument_group("LLM load suite")
    group.add_argument("--endpoints-file", default=None, env_var="LOCUST_ENDPOINTS_FILE",
                       help="endpoints/load config (TOML or JSON); default endpoints.toml")
    group.add_argument("--run-dir", default=None,
                       help="run directory to write (default results/<time>-<classes>)")
    group.add_argument("--campaign", default="", help="campaign id (set by make loadtest)")
    group.add_argument("--repetition", type=int, default=0, help="repetition number")
    kinds = {"stages": _csv_of(int), "rates": _csv_of(float)}
    defaults = LoadSettings()
    for name in LOAD_FIELDS:
        if name == "repetitions":
            continue
        default = getattr(defaults, name)
        kind = kinds.get(name) or type(default)
        group.add_argument(f"--{name.replace('_', '-')}", dest=f"load_{name}", type=kind,
                           default=None, help=f"[load] {name} (config default: {default})")


def config_from_options(options: Any) -> SuiteConfig:
    """The config with the command line's overrides, its prompts file checked (no load starts
    on a config that cannot work)."""
    config = load_config(getattr(options, "endpoints_file", None))
    overrides = {name: getattr(options, f"load_{name}", None) for name in LOAD_FIELDS
                 if name != "repetitions"}
    config = with_overrides(config, **overrides)
    check_prompts(config.load.prompts_file)
    return config


# ---- listeners ----

def _manifest(ctx: RunContext, environment: Any, run_dir: Path) -> Manifest:
    import locust

    labels = sorted({cls.endpoint_label for cls in environment.user_classes
                     if getattr(cls, "endpoint_label", None)})
    return Manifest(
        run_id=run_dir.name,
        campaign=ctx.campaign,
        repetition=ctx.repetition,
        endpoints=labels,
        user_classes=[cls.__name__ for cls in environment.user_classes],
        status=RunStatus.RUNNING,
        start_unix=time.time(),
        config=ctx.config.to_public_dict(),
        plan=[dataclasses.asdict(s) for s in ctx.plan],
        planned_duration_s=total_duration_s(ctx.plan),
        mode="shape" if environment.shape_class is not None else "manual",
        versions=Versions(suite=suite_version(), locust=locust.__version__,
                          python=platform.python_version()),
        host=Host(hostname=socket.gethostname(), platform=platform.platform(),
                  cpu_count=os.cpu_count(), memory_bytes=psutil.virtual_memory().total),
        command=list(sys.argv),
    )


def _default_run_dir(environment: Any) -> Path:
    names = "-".join(sorted(getattr(c, "endpoint_label", c.__name__)
                            for c in environment.user_classes)) or "run"
    return Path("results") / f"{time.strftime('%Y%m%d-%H%M%S')}-{names}"


def exclude_ttft_from_aggregated(environment: Any) -> None:
    """Keep the "Aggregated" row about requests: TTFT events go to their own rows only.

    Each request fires two events (CHAT with E2E, TTFT); counted both in Aggregated, its
    req/s would double and its percentiles would mix two different quantities.
    """
    stats = environment.stats
    original = stats.log_request

    def log_request(method: str, name: str, response_time: float, content_length: int) -> None:
        if method == "TTFT":
            stats.get(name, method).log(response_time, content_length)
        else:
            original(method, name, response_time, content_length)

    stats.log_request = log_request


def scrub_logs() -> None:
    """Every log handler (set up by Locust before init) scrubs credentials: locust.log's
    second line of defence."""
    for handler in logging.getLogger().handlers:
        if not any(isinstance(f, secrets.ScrubLogFilter) for f in handler.filters):
            handler.addFilter(secrets.ScrubLogFilter())


def on_init(environment: Any, **_kwargs: Any) -> None:
    global _context
    scrub_logs()
    options = environment.parsed_options
    try:
        config = config_from_options(options)
    except (ConfigError, ValueError) as exc:
        log.error("%s", exc)
        sys.stderr.write(f"error: {exc}\n")
        os._exit(2)
    known_secrets(config)  # the keys from the environment are scrubbed from logs and files too
    ctx = RunContext(environment, config, options)
    _context = ctx
    exclude_ttft_from_aggregated(environment)
    runner = environment.runner
    if runner is None:
        return
    runner.register_message(MSG_STAGE, lambda environment, msg, **kw: ctx.on_stage_message(msg.data))
    if isinstance(runner, (MasterRunner, LocalRunner)):
        run_dir = Path(options.run_dir) if options.run_dir else _default_run_dir(environment)
        ctx.run_id = run_dir.name
        ctx.tags.run_id, ctx.tags.repetition = ctx.run_id, ctx.repetition
        ctx.writer = RunWriter(run_dir, _manifest(ctx, environment, run_dir))
        runner.register_message(MSG_RECORDS,
                                lambda environment, msg, **kw: ctx.writer.on_batch(msg.data))
        ctx.writer.capture = _start_capture(ctx, environment, run_dir)
        gevent.spawn(ctx.manual_tags_loop)
        log.info("writing the run directory %s", run_dir)
    if isinstance(runner, MasterRunner):
        master_cpu = CpuTracker()

        def sample_master() -> None:
            while True:
                gevent.sleep(FLUSH_INTERVAL_S)
                master_cpu.sample(FLUSH_INTERVAL_S)
                ctx.writer.cpu_by_process[f"{ctx.worker} (master)"] = master_cpu.summary()

        gevent.spawn(sample_master)
    if isinstance(runner, (WorkerRunner, LocalRunner)):
        def on_flush(environment: Any, msg: Any, **kw: Any) -> None:
            ctx.cpu.mark_stop()
            ctx.flush(final=True)

        runner.register_message(MSG_FLUSH, on_flush)
        gevent.spawn(ctx.flusher)
        gevent.spawn(ctx.loop_lag.run, lambda: ctx.tags)


def _start_capture(ctx: RunContext, environment: Any, run_dir: Path) -> MetricsCapture | None:
    labels = {getattr(c, "endpoint_label", None) for c in environment.user_classes}
    targets = []
    for ep in ctx.config.endpoints:
        if ep.label not in labels:
            continue
        if ep.exporter_url:
            targets.append(ScrapeTarget(ep.label, series.EXPORTER, ep.exporter_url))
        if ep.metrics_url:
            targets.append(ScrapeTarget(ep.label, series.SERVER, ep.metrics_url))
    if not targets:
        return None
    capture = MetricsCapture(targets, run_dir / rundir.METRICS, interval_s=1.0)
    capture.start()
    return capture


def on_test_start(environment: Any, **_kwargs: Any) -> None:
    if _context is not None:
        _context.cpu.mark_start()
        if _context.writer is not None:
            _context.broadcast_manual()


def on_test_stop(environment: Any, **_kwargs: Any) -> None:
    ctx = _context
    if ctx is None:
        return
    ctx.cpu.mark_stop()
    runner = environment.runner
    finalized = ctx.writer is not None and ctx.writer.records.closed
    if isinstance(runner, (WorkerRunner, LocalRunner)) and not finalized:
        ctx.flush(final=True)


def on_quitting(environment: Any, **_kwargs: Any) -> None:
    """Finalize the run directory. Locust fires this before it stops the runner, so a run that
    quits before its plan ended (a signal) is stopped here first and finalized as interrupted;
    a run that recorded nothing is a failure, never "complete"."""
    ctx = _context
    if ctx is None or ctx.writer is None:
        return
    runner = environment.runner
    details: dict[str, Any] = {}
    status = RunStatus.COMPLETE
    if environment.shape_class is not None and not ctx.plan_finished:
        now = time.time()
        log.warning("the run was stopped before its plan ended: finalizing it as interrupted")
        ctx.interrupt(runner, now)
        status, details["interrupted_unix"] = RunStatus.INTERRUPTED, now
    if isinstance(runner, LocalRunner) and ctx.buffer:
        ctx.flush(final=True)
    writer = ctx.writer
    if writer.records.rows_written == 0 and status == RunStatus.COMPLETE:
        status = RunStatus.FAILED
        details["failure_reason"] = ("no request was recorded: no user sent one (see the errors "
                                     "above in this log)")
        log.error("the run recorded no requests: marking it failed")
        environment.process_exit_code = 1
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
    honour_sigint()
    # The record writer runs in an OS thread; by default a thread keeps the GIL for up to 5 ms
    # before the event loop (which sends requests on time) can take it back.
    sys.setswitchinterval(0.001)
    events.init_command_line_parser.add_listener(add_arguments)
    events.init.add_listener(on_init)
    events.test_start.add_listener(on_test_start)
    events.test_stop.add_listener(on_test_stop)
    events.quitting.add_listener(on_quitting)
