"""The load plan: stages and their phases as plain data, and where a moment falls in it.

Each stage runs four phases back to back:
  ramp    users are started (closed loop) or the new rate begins (open loop);
  warmup  load held, results excluded (caches fill, batches settle);
  steady  load held: requests STARTED here are the stage's results;
  drain   load held, requests started here are excluded, so steady requests finish under the
          same concurrency instead of a falling one.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from core.config import LoadSettings


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


def build_plan(load: LoadSettings) -> list[Stage]:
    """The stages of one run, in order."""
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
    (closed loop) or ``OpenLoop_<label>`` (open loop), the label made an identifier."""
    prefix = "OpenLoop" if mode == "open" else "Chat"
    return f"{prefix}_{re.sub(r'[^A-Za-z0-9_]', '_', label)}"
