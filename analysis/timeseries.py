"""The time series of one run and endpoint, for the report's plot."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from core.rundir import series
from core.config import is_open_loop

from .rundata import RunData
from .samples import GAP_FACTOR, _level_text, endpoint_slices


# ---------------------------------------------------------------------------------------------
# Time series of one run (for the plot)

@dataclass
class TimeSeries:
    run_id: str
    endpoint: str
    t: np.ndarray                       # seconds since the first request, 1 s bins
    started: np.ndarray
    completed: np.ndarray               # ok requests per second, by completion time
    failed: np.ndarray
    ttft_p50_ms: np.ndarray             # median TTFT of requests started in the second
    users_t: np.ndarray                 # step function of the stage's users
    users: np.ndarray
    bands: list[tuple[float, float, str]]
    metric_name: str = ""
    metric_t: np.ndarray = field(default_factory=lambda: np.array([]))
    metric_v: np.ndarray = field(default_factory=lambda: np.array([]))
    run: str = ""                       # the run's name in the report (analysis.runref)


def run_timeseries(run: RunData, endpoint: str, windows: pd.DataFrame) -> TimeSeries | None:
    rec = run.records
    r = rec[rec["endpoint"] == endpoint]
    if not len(r):
        return None
    origin = float(np.floor(r["start_unix"].min()))
    start = r["start_unix"].to_numpy() - origin
    end = start + r["e2e_s"].fillna(0).to_numpy()
    ok = r["ok"].to_numpy()
    n = int(np.ceil(max(np.nanmax(end), np.nanmax(start)))) + 1
    started = np.bincount(start.astype(np.int64).clip(0, n - 1), minlength=n)
    completed = np.bincount(end[ok].astype(np.int64).clip(0, n - 1), minlength=n)
    failed = np.bincount(end[~ok].astype(np.int64).clip(0, n - 1), minlength=n)
    ttft = pd.Series(r["ttft_s"].to_numpy() * 1000.0).groupby(start.astype(np.int64)).median()
    ttft_p50 = np.full(n, np.nan)
    idx = ttft.index.to_numpy().clip(0, n - 1)
    ttft_p50[idx] = ttft.to_numpy()
    ut, uv = [], []
    for s in run.stages.itertuples(index=False):
        t_begin = s.ramp_unix if not math.isnan(s.ramp_unix) else s.steady_unix
        t_end = s.end_unix if not math.isnan(s.end_unix) else s.drain_unix
        if math.isnan(t_begin):
            continue
        users = s.rate if is_open_loop(run.mode) else s.users
        ut += [t_begin - origin]
        uv += [users]
        if not math.isnan(t_end):
            ut += [t_end - origin]
            uv += [users]
    bands = [(w.t0 - origin, w.t1 - origin, _level_text(w.level))
             for w in windows.itertuples(index=False) if not math.isnan(w.t1)]
    ts = TimeSeries(run.run_id, endpoint, np.arange(n, dtype=float), started, completed, failed,
                    ttft_p50, np.array(ut, dtype=float), np.array(uv, dtype=float), bands,
                    run=run.name)
    sl = endpoint_slices(run.metrics, endpoint)
    if sl is not None:
        for name, label, scale, how in (
                (series.GPU_UTILIZATION, "GPU utilization (%)", 100.0, "mean"),
                (series.VLLM_KV_CACHE_USAGE, "vLLM KV-cache usage (%)", 100.0, "mean"),
                (series.PROCESS_CPU, "server process CPU (cores)", 1.0, "rate")):
            mask = np.asarray(sl.metric == name)
            if not mask.any():
                continue
            df = pd.DataFrame({"ts": sl.ts[mask], "v": sl.value[mask]})
            agg = df.groupby("ts")["v"].agg("sum" if how == "rate" else "mean")
            t = agg.index.to_numpy() - origin
            v = agg.to_numpy() * scale
            if how == "rate":
                dt = np.diff(t)
                with np.errstate(divide="ignore", invalid="ignore"):
                    v = np.where(np.diff(v) >= 0, np.diff(v) / dt, np.nan)
                t = t[1:]
            interval = sl.intervals.get(series.source_of(name), 1.0)
            t, v = _break_gaps(t, v, interval)
            ts.metric_name, ts.metric_t, ts.metric_v = label, t, v
            break
    return ts


def _break_gaps(t: np.ndarray, v: np.ndarray, interval: float) -> tuple[np.ndarray, np.ndarray]:
    """Insert NaN where samples are further apart than GAP_FACTOR intervals: lines break."""
    if t.size < 2:
        return t, v
    cut = np.where(np.diff(t) > GAP_FACTOR * interval)[0]
    if not cut.size:
        return t, v
    t = np.insert(t, cut + 1, t[cut] + interval)
    v = np.insert(v.astype(float), cut + 1, np.nan)
    return t, v
