"""The load generator's own health, per endpoint and stage: can the stage's figures be trusted?

Two faults make a load test measure the client instead of the server:
- lateness: requests leave later than they were due (``send_lag_s``: behind the Poisson
  schedule, or behind the end of the user's previous stream) or the event loop wakes late
  (``load_generator.loop_lag_by_stage`` in the manifest). The load offered is then not the
  load planned, and any timing the kernel did not stamp carries the delay;
- lockstep: many requests leave in the same instant, a burst no real traffic has, which changes
  what the server does (one batch, one queue spike).

The rules (stated in the report's warnings and in docs/):
- ``generator_late``: lateness p99 (the larger of the steady requests' send-lag p99 and the
  event loop's lag p99) exceeds ``max(1% of the stage's TTFT p50, 2 ms)``;
- ``lockstep``: more than 10% of the steady sends have two or more other sends of the same
  endpoint within 1 ms.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from core.rundir import Manifest

LATE_SHARE_OF_P50 = 0.01
LATE_FLOOR_S = 0.002
LOCKSTEP_WINDOW_S = 0.001
LOCKSTEP_NEIGHBOURS = 2
LOCKSTEP_SHARE = 0.10


@dataclass(frozen=True)
class StageHealth:
    endpoint: str
    stage: int
    requests: int
    send_lag_p99_s: float
    presend_p99_s: float
    loop_lag_p99_s: float
    ttft_p50_s: float
    lockstep_share: float

    @property
    def lateness_s(self) -> float:
        values = [v for v in (self.send_lag_p99_s, self.loop_lag_p99_s) if v == v]
        return max(values) if values else math.nan

    @property
    def late_limit_s(self) -> float:
        p50 = self.ttft_p50_s if self.ttft_p50_s == self.ttft_p50_s else 0.0
        return max(LATE_SHARE_OF_P50 * p50, LATE_FLOOR_S)

    @property
    def late(self) -> bool:
        return self.lateness_s == self.lateness_s and self.lateness_s > self.late_limit_s

    @property
    def lockstep(self) -> bool:
        return self.lockstep_share > LOCKSTEP_SHARE


def lockstep_share(start_unix: np.ndarray) -> float:
    """Share of sends with at least LOCKSTEP_NEIGHBOURS others within LOCKSTEP_WINDOW_S."""
    t = np.sort(start_unix[~np.isnan(start_unix)])
    if len(t) < LOCKSTEP_NEIGHBOURS + 1:
        return 0.0
    lo = np.searchsorted(t, t - LOCKSTEP_WINDOW_S, side="left")
    hi = np.searchsorted(t, t + LOCKSTEP_WINDOW_S, side="right")
    return float(np.mean((hi - lo - 1) >= LOCKSTEP_NEIGHBOURS))


def _p(values: pd.Series, q: float) -> float:
    values = values.dropna()
    return float(values.quantile(q)) if len(values) else math.nan


def stage_health(records: pd.DataFrame, manifest: Manifest) -> list[StageHealth]:
    """Health of every (endpoint, stage) from a run's steady records and its manifest."""
    steady = records[records["phase"] == "steady"]
    loop = manifest.load_generator.loop_lag_by_stage if manifest.load_generator else {}
    out = []
    for (endpoint, stage), group in steady.groupby(["endpoint", "stage"], observed=True):
        lag = loop.get(str(int(stage)))
        loop_p99 = lag.p99_ms if lag is not None else None
        ok = group[group["ok"]]
        out.append(StageHealth(
            endpoint=str(endpoint), stage=int(stage), requests=len(group),
            send_lag_p99_s=_p(group["send_lag_s"], 0.99) if "send_lag_s" in group else math.nan,
            presend_p99_s=_p(group["presend_s"], 0.99) if "presend_s" in group else math.nan,
            loop_lag_p99_s=loop_p99 / 1e3 if isinstance(loop_p99, (int, float)) else math.nan,
            ttft_p50_s=_p(ok["ttft_s"], 0.5),
            lockstep_share=lockstep_share(group["start_unix"].to_numpy(dtype=float))))
    return out


def health_warnings(run: Any, health: list[StageHealth], warnings: Any) -> None:
    """Add the named warnings for late or lockstep stages; run: an analysis.runref.RunRef (its
    name is printed) or a run id."""
    for h in health:
        if h.late:
            warnings.add(
                "generator_late",
                f"run {run}: endpoint {h.endpoint}: stage {h.stage}: the load generator was "
                f"late (send lag p99 {_ms(h.send_lag_p99_s)}, event-loop lag p99 "
                f"{_ms(h.loop_lag_p99_s)}, pre-send p99 {_ms(h.presend_p99_s)}) beyond "
                f"{_ms(h.late_limit_s)} (the larger of 1% of TTFT p50 {_ms(h.ttft_p50_s)} and "
                f"2 ms): the load offered was not the load planned, so this stage's latency "
                "figures are not to be trusted", run, h.endpoint)
        if h.lockstep:
            warnings.add(
                "lockstep",
                f"run {run}: endpoint {h.endpoint}: stage {h.stage}: {h.lockstep_share:.0%} "
                f"of the steady requests left within 1 ms of two or more others (limit "
                f"{LOCKSTEP_SHARE:.0%}): bursts no real traffic has (closed-loop users against a "
                "batching server send together when their requests end in the same step); vary "
                "output lengths ([request] max_tokens_min) or use open loop",
                run, h.endpoint)


def _ms(seconds: float) -> str:
    return "n/a" if seconds != seconds else f"{seconds * 1e3:.1f} ms"
