"""The load generator watching itself: its own CPU, and its event loop's lateness."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import gevent
import psutil

CPU_SATURATED_PERCENT = 90.0
CPU_SATURATED_SECONDS = 3.0      # this many seconds above 90% marks the generator saturated
LOOP_TICK_S = 0.01  # the event-loop lag probe's period


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


@dataclass
class LoopLagProbe:
    """The event loop's own lateness: a greenlet that asks to wake every 10 ms notes how late it
    woke. Everything else in the process (users sending, the reader, the flusher) waits behind
    the same loop, so this is the delay any of them may have had. Samples are kept per stage
    (steady phase, or the manual run) until the next batch of records takes them home."""

    samples: dict[str, list[float]] = field(default_factory=dict)
    worst_s: float = 0.0   # the worst lateness since the last take, in any phase (live view)

    def run(self, tags_of: Callable[[], Any]) -> None:
        due = time.perf_counter() + LOOP_TICK_S
        while True:
            gevent.sleep(max(0.0, due - time.perf_counter()))
            now = time.perf_counter()
            tags = tags_of()
            self.worst_s = max(self.worst_s, now - due)
            if tags.phase in ("steady", "manual"):
                self.samples.setdefault(str(tags.stage), []).append(round(now - due, 6))
            due = max(due + LOOP_TICK_S, now)  # a late wake-up is one sample, not a backlog

    def take(self) -> dict[str, list[float]]:
        taken, self.samples = self.samples, {}
        return taken

    def take_worst(self) -> float:
        """The worst lateness since the last call (seconds), whatever the phase."""
        worst, self.worst_s = self.worst_s, 0.0
        return round(worst, 6)


def lag_summary(samples: list[float]) -> dict[str, float]:
    """p50, p99 and max (ms) of event-loop lag samples (seconds), with their count."""
    ordered = sorted(samples)
    n = len(ordered)

    def rank(q: float) -> float:
        return round(ordered[max(0, math.ceil(q * n) - 1)] * 1e3, 3)

    return {"n": n, "p50_ms": rank(0.5), "p99_ms": rank(0.99), "max_ms": round(ordered[-1] * 1e3, 3)}
