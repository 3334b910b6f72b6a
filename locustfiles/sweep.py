"""The load shape: the [load] plan (concurrency sweep, open-loop rate sweep, or trace replay),
stage by stage.

Like Locust's own shapes, the shape owns its timeline: its state lives on the instance (which
runs on the master, or the local process). On every tick it finds the stage and phase of the
plan, opens and closes the stage rows of ``stages.csv`` (through the run writer), broadcasts the
stage tags, and after the last stage collects every process's last records before it ends the
run. A run stopped before its plan ended is ``interrupt``-ed by the quitting listener.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from locust import LoadTestShape
from locust.runners import MasterRunner

from locustfiles import compat
from locustfiles.context import RunContext, run_context
from locustfiles.messages import MSG_FLUSH, StageTags
from locustfiles.plan import Stage, locate
from locustfiles.writer import FINAL_FLUSH_TIMEOUT_S, locust_chat_requests

log = logging.getLogger("llm.runtime")

PHASE_ORDER = ("ramp", "warmup", "steady", "drain")


def generators(runner: Any) -> int:
    """Open loop and trace replay: one generator user per worker process (one in a local run)."""
    if isinstance(runner, MasterRunner):
        return max(1, runner.worker_count)
    return 1


class LoadPlanShape(LoadTestShape):
    """Stages from [load] stages (closed), rates (open) or the trace (one stage), each with ramp,
    warmup, steady, drain."""

    def __init__(self) -> None:
        super().__init__()
        self._current: tuple[int, str] | None = None
        self._stage_row: dict[str, Any] = {}
        self._stopping_since: float | None = None
        self._flush_sent = False

    @property
    def context(self) -> RunContext:
        return run_context(self.runner.environment)

    def tick(self) -> tuple[int, float] | None:
        ctx = self.context
        runner = self.runner
        where = locate(ctx.plan, self.get_run_time())
        now = time.time()
        if where is not None:
            stage, phase = where
            if self._current is None or self._current[0] != stage.index:
                self._close_stage(now)
                self._stage_row = {"stage": stage.index, "users": stage.users,
                                   "rate": stage.rate, "ramp_unix": now}
            if self._current != (stage.index, phase):
                self._mark_phases(ctx, stage, phase, now)
                self._current = (stage.index, phase)
            return self._stage_load(ctx, runner, stage, phase)
        return self._stopping(ctx, runner, now)

    @property
    def plan_finished(self) -> bool:
        """The shape ran its plan to the end (it is collecting, or has collected, the records)."""
        return self._stopping_since is not None

    def interrupt(self, runner: Any, now: float) -> None:
        """The run is being stopped before its plan ended (Ctrl-C, SIGTERM): stop the users at
        once (streams in flight are recorded as interrupted), collect every process's last
        records, and close the partial stage."""
        ctx = run_context(runner.environment)
        self._close_stage(now, partial=True)
        ctx.environment.stop_timeout = 0
        runner.stop()
        if isinstance(runner, MasterRunner) and ctx.writer is not None:
            ctx.writer.wait_for_final_batches(max(1, runner.worker_count), FINAL_FLUSH_TIMEOUT_S)

    # ---- the timeline ----

    def _mark_phases(self, ctx: RunContext, stage: Stage, phase: str, now: float) -> None:
        for name in PHASE_ORDER[1:PHASE_ORDER.index(phase) + 1]:
            self._stage_row.setdefault(f"{name}_unix", now)
        log.info("stage %d/%d (%s) phase %s", stage.index + 1, len(ctx.plan),
                 f"{stage.users} users" if stage.users else f"{stage.rate:g} req/s", phase)

    def _stage_load(self, ctx: RunContext, runner: Any, stage: Stage,
                    phase: str) -> tuple[int, float]:
        if ctx.load.mode == "closed":
            users = stage.users
            previous = ctx.plan[stage.index - 1].users if stage.index else 0
            spawn_rate = (max(1.0, abs(users - previous) / stage.ramp_s) if stage.ramp_s > 0
                          else float(max(users, 1)))
            tags = StageTags(stage.index, users, phase, 0.0)
        else:  # open loop and trace replay: one generator per process, the rate shared
            users = generators(runner)
            spawn_rate = float(users)
            tags = StageTags(stage.index, users, phase, stage.rate / users,
                             stage_start_unix=self._stage_row["ramp_unix"])
        ctx.broadcast(tags)  # every tick: workers that (re)joined late catch up
        return users, spawn_rate

    def _close_stage(self, now: float, partial: bool = False) -> None:
        """Write the current stage's row. A partial stage (the run was interrupted) keeps the
        phases it never reached blank, so no window is invented for them."""
        writer = self.context.writer if self._stage_row else None
        if self._stage_row and writer is not None:
            row = dict(self._stage_row)
            if not partial:
                for name in ("warmup_unix", "steady_unix", "drain_unix"):
                    row.setdefault(name, now)
            row["end_unix"] = now
            writer.write_stage(row)
        self._stage_row = {}

    def _stopping(self, ctx: RunContext, runner: Any, now: float) -> tuple[int, float] | None:
        """After the last stage: stop users, collect every record, then end the run."""
        if self._stopping_since is None:
            self._close_stage(now)
            self._stopping_since = now
            self._current = (-1, "drain")
            last = ctx.plan[-1]
            ctx.broadcast(StageTags(last.index, last.users, "drain", 0.0))
            log.info("plan complete: stopping users and collecting the last records")
            return 0, 100.0
        limit = FINAL_FLUSH_TIMEOUT_S + float(ctx.environment.stop_timeout or 0)
        if runner.user_count > 0 and now - self._stopping_since < limit:
            return 0, 100.0
        if not self._flush_sent:
            self._flush_sent = True
            runner.send_message(MSG_FLUSH, {})
            return 0, 100.0
        writer = ctx.writer
        expected = generators(runner) if isinstance(runner, MasterRunner) else 1
        complete = writer is not None and writer.final_batches >= expected
        counted = locust_chat_requests(ctx.environment)
        # a lost worker (its host died): Locust counted what it last reported, the records hold
        # what its last batch carried; they cannot agree, and no later batch will come
        in_sync = (writer is None or counted == writer.records.rows_written
                   or compat.missing_workers(runner) > 0)
        if (complete and in_sync) or now - self._stopping_since > limit:
            if not (complete and in_sync):
                log.warning("ending with %s of %d final record batches and %d records for %d "
                            "Locust requests", writer.final_batches if writer else 0,
                            expected, writer.records.rows_written if writer else 0, counted)
            return None
        return 0, 100.0
