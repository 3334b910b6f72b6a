"""The load plan: stages and their phases as plain data, and where a moment falls in it.

Each stage runs four phases back to back:
  ramp    users are started (closed loop) or the new rate begins (open loop);
  warmup  load held, results excluded (caches fill, batches settle);
  steady  load held: requests STARTED here are the stage's results;
  drain   load held, requests started here are excluded, so steady requests finish under the
          same concurrency instead of a falling one.

A trace replay (mode "trace") is one stage at the trace's mean rate (arrivals over the scaled
span, so the report's req/s axis reads as in open loop): ramp is a lead-in with no arrival (the
generators start), the first warmup_s of scaled trace time is warmup, the rest of the trace
steady, then drain_s for the last streams (locustfiles/traces.py).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from core.config import OPEN_LOOP_MODES, LoadSettings, is_open_loop  # noqa: F401 (re-exported)
from locustfiles.traces import Trace, read_trace, trace_windows

@dataclass(frozen=True)
class Stage:
    index: int
    users: int          # closed loop: concurrent users; open loop: 0
    rate: float         # open loop: requests/s; closed loop: 0
    start_s: float      # offset from the start of the run
    ramp_s: float
    warmup_s: float
    steady_s: float
    drain_s: float

    @property
    def end_s(self) -> float:
        return self.start_s + self.ramp_s + self.warmup_s + self.steady_s + self.drain_s

    def phase_at(self, elapsed_s: float) -> str:
        offset = elapsed_s - self.start_s
        for name, length in (("ramp", self.ramp_s), ("warmup", self.warmup_s),
                             ("steady", self.steady_s)):
            if offset < length:
                return name
            offset -= length
        return "drain"


def build_plan(load: LoadSettings, trace: Trace | None = None) -> list[Stage]:
    """The stages of one run, in order. A trace replay reads its trace_file unless given it
    (TraceError when it cannot be replayed)."""
    if load.mode == "trace":
        trace = trace or read_trace(load.trace_file)
        warmup_s, steady_s = trace_windows(trace, load.trace_time_scale, load.warmup_s)
        return [Stage(index=0, users=0, rate=trace.mean_rate(load.trace_time_scale), start_s=0.0,
                      ramp_s=load.ramp_s, warmup_s=warmup_s, steady_s=steady_s,
                      drain_s=load.drain_s)]
    levels = load.stages if load.mode == "closed" else load.rates
    stages = []
    start = 0.0
    for index, level in enumerate(levels):
        stage = Stage(index=index,
                      users=int(level) if load.mode == "closed" else 0,
                      rate=float(level) if load.mode == "open" else 0.0,
                      start_s=start, ramp_s=load.ramp_s, warmup_s=load.warmup_s,
                      steady_s=load.steady_s, drain_s=load.drain_s)
        stages.append(stage)
        start = stage.end_s
    return stages


def locate(plan: list[Stage], elapsed_s: float) -> tuple[Stage, str] | None:
    """The stage and phase at a moment of the run; None once the plan is over."""
    for stage in plan:
        if elapsed_s < stage.end_s:
            return stage, stage.phase_at(elapsed_s)
    return None


def total_duration_s(plan: list[Stage]) -> float:
    return plan[-1].end_s if plan else 0.0


def user_class_name(mode: str, label: str) -> str:
    """The Locust user class that loads endpoint ``label`` in this mode: ``Chat_<label>``
    (closed loop), ``OpenLoop_<label>`` (open loop) or ``Trace_<label>`` (trace replay), the
    label made an identifier."""
    prefix = {"open": "OpenLoop", "trace": "Trace"}.get(mode, "Chat")
    return f"{prefix}_{re.sub(r'[^A-Za-z0-9_]', '_', label)}"
