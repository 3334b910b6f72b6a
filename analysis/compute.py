"""Per-run figures from the records: steady windows, request figures, the --slo keys.

Everything here works on one run (``RunData``) and is vectorised over its endpoints and stages.
The metric-sample figures are analysis.samples', the time series for the plot analysis.timeseries'
(both re-exported here).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd

from core.config import is_open_loop

from .catalogue import METRICS, RECORDS
from .definitions import SLO_FIELDS
from .errors import WarningList
from .rundata import RunData
from .samples import (COUNTERS, GAP_FACTOR, GAUGES, HISTOGRAMS, Gap,  # noqa: F401
                      MetricSlices, endpoint_slices, gap_warnings, histogram_quantile,
                      metric_figures, window_metric_figures)
from .timeseries import TimeSeries, run_timeseries  # noqa: F401


# ---------------------------------------------------------------------------------------------
# Steady windows

def stage_windows(run: RunData, warnings: WarningList) -> pd.DataFrame:
    """One row per stage with a steady window: stage, users, rate, level, t0, t1, duration.

    From stages.csv: [steady_unix, drain_unix). A stage row whose steady_unix is blank never
    reached its steady state (an interrupted run's partial stage: its end_unix is the stop) and
    has no window. A stage stopped during its steady state (drain_unix blank, end_unix set) ends
    at end_unix. Only a row cut short altogether (no steady_unix and no end_unix: a crashed
    writer) whose records say they were steady gets a window estimated from those records.
    """
    rec = run.records
    steady = rec[rec["phase"] == "steady"]
    load = run.load
    steady_s = float(load.get("steady_s") or math.nan)
    last_start = float(rec["start_unix"].max()) if len(rec) else math.nan
    end_unix = run.manifest.end_unix
    stopped = run.manifest.interrupted_unix
    rows: list[dict[str, Any]] = []
    st = run.stages
    known = set(int(s) for s in st["stage"]) if len(st) else set()
    users_from_records = (steady.groupby("stage")["stage_users"].agg(lambda s: s.mode().iloc[0])
                          if len(steady) else pd.Series(dtype=float))
    for r in st.itertuples(index=False):
        t0, t1 = float(r.steady_unix), float(r.drain_unix)
        stage_end = float(r.end_unix)
        stage = int(r.stage)
        if math.isnan(t0):
            if math.isnan(stage_end) and stage in users_from_records.index:
                t0 = float(steady.loc[steady["stage"] == stage, "start_unix"].min())
                warnings.add("missing_stage_timeline", f"run {run.name}: stage {stage} has no "
                             "steady_unix in stages.csv; window start taken from its first "
                             "steady request", run.ref)
            else:
                continue  # never reached steady state (the run ended or was stopped before)
        if math.isnan(t1) and not math.isnan(stage_end) and stage_end > t0:
            # stopped during its steady state (an interrupted run): the window ends at the stop
            t1 = stage_end
            planned = f" of the planned {_fmt_s(steady_s)}" if not math.isnan(steady_s) else ""
            warnings.add("incomplete_run", f"run {run.name}: stage {stage} was stopped during "
                         f"its steady state; its steady window runs from steady_unix to the "
                         f"stop (end_unix): {_fmt_s(t1 - t0)}{planned}", run.ref)
        elif math.isnan(t1):
            candidates = [t0 + steady_s] if not math.isnan(steady_s) else []
            if not math.isnan(last_start) and last_start > t0:
                candidates.append(last_start)
            for t in (end_unix, stopped):
                if isinstance(t, (int, float)) and not isinstance(t, bool) and t and t > t0:
                    candidates.append(float(t))
            t1 = min(candidates) if candidates else math.nan
            warnings.add("incomplete_run", f"run {run.name}: stage {stage} has no drain time "
                         f"in stages.csv (cut short); its steady window ends at the last sign of "
                         f"life ({_fmt_s(t1 - t0)} long)", run.ref)
        users = r.users if not (isinstance(r.users, float) and math.isnan(r.users)) else (
            users_from_records.get(stage, math.nan))
        rows.append({"stage": stage, "users": users, "rate": r.rate, "t0": t0, "t1": t1,
                     "estimated": False})
    for stage in sorted(set(int(s) for s in steady["stage"].unique()) - known):
        if stage < 0:
            continue
        s = steady.loc[steady["stage"] == stage, "start_unix"]
        t0, t1 = float(s.min()), float(s.max())
        n = len(s)
        t1 = t1 + (t1 - t0) / max(1, n - 1)  # one mean gap past the last start
        warnings.add("missing_stage_timeline", f"run {run.name}: stage {stage} is not in "
                     "stages.csv; its steady window was estimated from its requests' start times",
                     run.ref)
        rows.append({"stage": stage, "users": users_from_records.get(stage, math.nan),
                     "rate": math.nan, "t0": t0, "t1": t1, "estimated": True})
    df = pd.DataFrame(rows, columns=["stage", "users", "rate", "t0", "t1", "estimated"])
    df["duration"] = (df["t1"] - df["t0"]).where(lambda d: d > 0)
    df["level"] = df["rate"] if is_open_loop(run.mode) else df["users"]
    return df.sort_values("stage").reset_index(drop=True)


def _fmt_s(x: float) -> str:
    return "unknown" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.0f} s"


# ---------------------------------------------------------------------------------------------
# Request figures

# The per-request latency figures: the catalogue's records figures of one record column (seconds,
# shown in ms), each a mean, a linear-interpolation percentile or a max over the ok requests.
_LATENCY = [m for m in METRICS.values() if m.source == RECORDS and m.column]
_MS = 1000.0


def parse_slos(items: list[str] | dict[str, float] | None) -> dict[str, float]:
    """--slo ttft_ms=200 --slo tpot_ms=50 -> {"ttft_ms": 200.0, "tpot_ms": 50.0}."""
    from .errors import AnalysisError
    if not items:
        return {}
    if isinstance(items, dict):
        pairs = list(items.items())
    else:
        pairs = []
        for item in items:
            for part in str(item).split(","):
                if not part.strip():
                    continue
                if "=" not in part:
                    raise AnalysisError(f"--slo {part!r}: write it as KEY=VALUE, e.g. --slo ttft_ms=200")
                k, v = part.split("=", 1)
                pairs.append((k.strip(), v.strip()))
    out = {}
    for k, v in pairs:
        if k not in SLO_FIELDS:
            raise AnalysisError(f"--slo {k}: unknown SLO; use one of {', '.join(SLO_FIELDS)}")
        try:
            out[k] = float(v)
        except ValueError:
            raise AnalysisError(f"--slo {k}={v}: the limit must be a number") from None
        if not out[k] > 0:
            raise AnalysisError(f"--slo {k}={v}: the limit must be > 0")
    return out


def _latency_figures(g, has_ok: bool) -> pd.DataFrame:
    """The _LATENCY figures per group of ok requests (columns in catalogue order)."""
    cols = list(dict.fromkeys(m.column for m in _LATENCY if m.stat in ("mean",) or
                              m.stat.startswith("p")))
    qs = sorted({int(m.stat[1:]) for m in _LATENCY if m.stat.startswith("p")})
    if has_ok:
        means = g[cols].mean() * _MS
        quant = g[cols].quantile([q / 100.0 for q in qs]) * _MS   # linear interpolation
    figs = {}
    for m in _LATENCY:
        if m.stat == "max":
            figs[m.key] = g[m.column].max() * _MS
        elif not has_ok:
            figs[m.key] = np.nan
        elif m.stat == "mean":
            figs[m.key] = means[m.column]
        else:
            figs[m.key] = quant[m.column].xs(int(m.stat[1:]) / 100.0, level=-1)
    return pd.DataFrame(figs, index=g.size().index)


def request_figures(run: RunData, windows: pd.DataFrame, slos: dict[str, float]
                    ) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(figures per endpoint x stage, error counts per endpoint x stage x category)."""
    rec = run.records
    steady = rec[rec["phase"] == "steady"]
    keys = ["endpoint", "stage"]
    g_all = steady.groupby(keys, observed=True)
    out = pd.DataFrame({"requests": g_all.size()})
    if "send_lag_s" in steady and steady["send_lag_s"].notna().any():
        out["send_lag_p99"] = g_all["send_lag_s"].quantile(0.99) * 1000.0
    ok = steady[steady["ok"]]
    g = ok.groupby(keys, observed=True)
    out["completed"] = g.size()
    out["output_tokens_sum"] = g["output_tokens"].sum(min_count=1)
    out["output_tokens_mean"] = g["output_tokens"].mean()
    out["reasoning_tokens_mean"] = g["reasoning_tokens"].mean()
    out["answer_tokens_mean"] = g["answer_tokens"].mean()
    out["tokens_from_chunks"] = (~ok["tokens_from_usage"]).groupby(
        [ok["endpoint"], ok["stage"]], observed=True).sum()
    out = out.join(_latency_figures(g, has_ok=len(ok) > 0))
    if slos:
        good = pd.Series(True, index=ok.index)
        for key, limit in slos.items():
            col, factor = SLO_FIELDS[key]
            good &= (ok[col] * factor) <= limit   # NaN compares False: does not meet the SLO
        out["good"] = good.groupby([ok["endpoint"], ok["stage"]], observed=True).sum()
    failed = steady[~steady["ok"]]
    errors = (failed.groupby(["endpoint", "stage", "error_category"], observed=True).size()
              .rename("count").reset_index())
    if len(failed):
        ekeys = ["endpoint", "stage", "error_category"]
        msgs = failed[ekeys].copy()
        msgs["example"] = failed["error_message"].astype(str).str.slice(0, 200)
        top = (msgs.groupby(ekeys + ["example"], observed=True).size().rename("n").reset_index()
               .sort_values("n", ascending=False, kind="stable").drop_duplicates(ekeys))
        errors = errors.merge(top[ekeys + ["example"]], on=ekeys, how="left")
    else:
        errors["example"] = pd.Series(dtype=str)
    errors["error_category"] = errors["error_category"].astype(str).replace("", "unknown")

    # Every endpoint x window, even those without requests (empty stages).
    endpoints = run.endpoints
    grid = pd.MultiIndex.from_product([endpoints, windows["stage"].astype(np.int64).tolist()],
                                      names=keys)
    out = out.reset_index()
    out["endpoint"] = out["endpoint"].astype(str)
    out["stage"] = out["stage"].astype(np.int64)
    out = out.set_index(keys).reindex(grid)
    out["requests"] = out["requests"].fillna(0)
    out["completed"] = out["completed"].fillna(0)
    out["tokens_from_chunks"] = out["tokens_from_chunks"].fillna(0)
    if "good" not in out:
        out["good"] = out["completed"]
    out["good"] = out["good"].fillna(0)
    out = out.reset_index().merge(windows, on="stage", how="left")
    dur = out["duration"]
    has = out["requests"] > 0
    out["req_per_s"] = (out["completed"] / dur).where(has)
    out["goodput_per_s"] = (out["good"] / dur).where(has)
    out["goodput_pct"] = (out["good"] / out["completed"] * 100.0).where(out["completed"] > 0)
    tokens_known = out["output_tokens_sum"].notna() | (out["completed"] == 0)
    out["output_tok_per_s"] = (out["output_tokens_sum"].fillna(0) / dur).where(has & tokens_known)
    out["error_rate"] = ((out["requests"] - out["completed"]) / out["requests"] * 100.0).where(has)
    # the same failures per second of the window (a storm of fast retries reads as time)
    out["failures_per_s"] = ((out["requests"] - out["completed"]) / dur).where(has)
    if len(errors):
        errors["endpoint"] = errors["endpoint"].astype(str)
    return out, errors
