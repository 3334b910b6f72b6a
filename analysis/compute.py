"""Per-run computation: steady windows, request figures, metric-sample figures, gaps, time series.

Everything here works on one run (``RunData``) and is vectorised over its endpoints and stages.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from core.rundir import series
from core.rundir.series import SCRAPE_UP

from .definitions import METRICS, SLO_FIELDS
from .errors import WarningList
from .rundata import RunData

GIB = float(2 ** 30)
GAP_FACTOR = 2.5     # a gap: no sample for longer than this many scrape intervals


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
    df["level"] = df["rate"] if run.mode == "open" else df["users"]
    return df.sort_values("stage").reset_index(drop=True)


def _fmt_s(x: float) -> str:
    return "unknown" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.0f} s"


# ---------------------------------------------------------------------------------------------
# Request figures

_LAT = {"ttft": "ttft_s", "ttfat": "ttfat_s", "e2e": "e2e_s", "tpot": "tpot_s", "itl": "itl_mean_s"}


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
    lat_cols = list(_LAT.values())
    if len(ok):
        means = g[lat_cols].mean() * 1000.0
        quant = g[lat_cols].quantile([0.5, 0.9, 0.99]) * 1000.0   # linear interpolation
    for short, col in _LAT.items():
        out[f"{short}_mean"] = means[col] if len(ok) else np.nan
        for q in (50, 90, 99):
            out[f"{short}_p{q}"] = quant[col].xs(q / 100.0, level=-1) if len(ok) else np.nan
    out["itl_max"] = g["itl_max_s"].max() * 1000.0
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


# ---------------------------------------------------------------------------------------------
# Metric-sample figures

# key: (metric names, first found wins; aggregation across series at one instant; scale)
GAUGES: dict[str, tuple[tuple[str, ...], str, float]] = {
    "gpu_util": ((series.GPU_UTILIZATION,), "mean", 100.0),
    "sm_active": ((series.GPU_SM_ACTIVE,), "mean", 100.0),
    "tensor_active": ((series.GPU_TENSOR_ACTIVE,), "mean", 100.0),
    "dram_active": ((series.GPU_DRAM_ACTIVE,), "mean", 100.0),
    "gpu_mem_used": ((series.GPU_MEMORY_USED,), "sum", 1.0 / GIB),
    "gpu_mem_total": ((series.GPU_MEMORY_TOTAL,), "sum", 1.0 / GIB),
    "power": ((series.GPU_POWER,), "sum", 1.0),
    "rss": ((series.PROCESS_RSS,), "sum", 1.0 / GIB),
    "kv_cache": ((series.VLLM_KV_CACHE_USAGE, series.VLLM_GPU_CACHE_USAGE), "mean", 100.0),
    "running": ((series.VLLM_RUNNING,), "sum", 1.0),
    "waiting": ((series.VLLM_WAITING,), "sum", 1.0),
}
COUNTERS = {
    "energy_w": series.GPU_ENERGY,
    "cpu_cores_mean": series.PROCESS_CPU,
    "server_gen_tok_per_s": series.VLLM_GENERATION_TOKENS,
}
HISTOGRAMS = {
    "vllm_ttft": (series.VLLM_TTFT,),
    "vllm_itl": (series.VLLM_ITL, series.VLLM_TPOT),
    "vllm_e2e": (series.VLLM_E2E,),
}
METRIC_FIGURES = [k for k in METRICS if k.startswith(
    ("gpu_", "sm_", "tensor_", "dram_", "power_", "energy_", "cpu_", "rss_", "kv_", "running_",
     "waiting_", "server_gen", "vllm_"))]

_LE_RE = re.compile(r'(?:^|,)le="([^"]*)"')


def _counter_increase(ts: np.ndarray, codes: np.ndarray, values: np.ndarray
                      ) -> tuple[dict[int, float], dict[int, float], bool]:
    """Per series (label code): increase over the slice (resets counted from the restart), span."""
    if ts.size == 0:
        return {}, {}, False
    order = np.lexsort((ts, codes))
    c, t, v = codes[order], ts[order], values[order]
    same = c[1:] == c[:-1]
    d = np.diff(v)
    inc = np.where(d >= 0, d, v[1:])
    reset = bool(np.any((d < 0) & same))
    inc = np.where(same, inc, 0.0)
    uniq, first = np.unique(c, return_index=True)
    last = np.append(first[1:], c.size) - 1
    csum = np.concatenate([[0.0], np.cumsum(inc)])
    # increase of series i = sum of inc over positions first..last-1 (pairs inside the series)
    increases = csum[last] - csum[first]
    spans = t[last] - t[first]
    return ({int(u): float(x) for u, x in zip(uniq, increases)},
            {int(u): float(s) for u, s in zip(uniq, spans)}, reset)


def histogram_quantile(q: float, bounds: np.ndarray, cum: np.ndarray) -> float:
    """Prometheus-style quantile from cumulative bucket counts (bounds ascending, last +Inf)."""
    if cum.size == 0 or not cum[-1] > 0:
        return math.nan
    rank = q * cum[-1]
    i = int(np.searchsorted(cum, rank, side="left"))
    i = min(i, cum.size - 1)
    if math.isinf(bounds[i]):
        return float(bounds[i - 1]) if i > 0 else math.nan
    lower = 0.0 if i == 0 else float(bounds[i - 1])
    below = 0.0 if i == 0 else float(cum[i - 1])
    width = float(cum[i]) - below
    if width <= 0:
        return float(bounds[i])
    return lower + (float(bounds[i]) - lower) * (rank - below) / width


@dataclass
class Gap:
    run: Any                 # analysis.runref.RunRef (or a run id)
    endpoint: str
    source: str
    stage: int
    level: float
    longest_s: float
    failed: int
    error: str
    missing_all: bool


@dataclass
class MetricSlices:
    """One endpoint's samples in one run, as arrays sorted by time (fast window slicing)."""

    ts: np.ndarray
    metric: pd.Categorical
    labels: pd.Categorical
    source: pd.Categorical
    value: np.ndarray
    intervals: dict[str, float] = field(default_factory=dict)


def endpoint_slices(metrics: pd.DataFrame | None, endpoint: str) -> MetricSlices | None:
    if metrics is None or not len(metrics):
        return None
    m = metrics[metrics["endpoint"] == endpoint]
    if not len(m):
        return None
    sl = MetricSlices(ts=m["ts_unix"].to_numpy(), metric=m["metric"].array,
                      labels=m["labels"].array, source=m["source"].array,
                      value=m["value"].to_numpy())
    for src in pd.unique(np.asarray(sl.source)):
        sl.intervals[str(src)] = _scrape_interval(sl, str(src))
    return sl


def _ok_times(sl: MetricSlices, src: str, i0: int, i1: int) -> tuple[np.ndarray, int, str]:
    """Successful scrape times of a source in [i0, i1), failed count, a failure text."""
    src_mask = np.asarray(sl.source[i0:i1] == src)
    met = sl.metric[i0:i1]
    up_mask = src_mask & np.asarray(met == SCRAPE_UP)
    if up_mask.any():
        vals = sl.value[i0:i1][up_mask]
        ts = sl.ts[i0:i1][up_mask]
        failed_mask = vals < 0.5
        err = ""
        if failed_mask.any():
            labels = np.asarray(sl.labels[i0:i1][up_mask])[failed_mask]
            texts = pd.Series(labels).astype(str).str.extract(r'error="([^"]*)"')[0].dropna()
            err = texts.mode().iloc[0] if len(texts) else ""
        return ts[~failed_mask], int(failed_mask.sum()), err
    return np.unique(sl.ts[i0:i1][src_mask]), 0, ""


def _scrape_interval(sl: MetricSlices, src: str) -> float:
    ts, _, _ = _ok_times(sl, src, 0, sl.ts.size)
    if ts.size < 3:
        return 1.0
    d = np.diff(np.unique(ts))
    d = d[d > 0]
    return float(np.median(d)) if d.size else 1.0


def window_metric_figures(sl: MetricSlices, t0: float, t1: float
                          ) -> tuple[dict[str, float], dict[str, tuple[float, int, str, bool]], bool]:
    """Figures for one endpoint's window [t0, t1); per-source gap info; counter reset seen."""
    out: dict[str, float] = {k: math.nan for k in METRIC_FIGURES}
    i0, i1 = np.searchsorted(sl.ts, [t0, t1], side="left")
    gaps: dict[str, tuple[float, int, str, bool]] = {}
    for src, interval in sl.intervals.items():
        ok_ts, failed, err = _ok_times(sl, src, i0, i1)
        edges = np.concatenate([[t0], ok_ts, [t1]])
        longest = float(np.max(np.diff(edges))) if edges.size > 1 else t1 - t0
        missing_all = ok_ts.size == 0
        if failed or missing_all or longest > GAP_FACTOR * interval:
            gaps[src] = (longest, failed, err, missing_all)
    reset = False
    if i1 <= i0:
        return out, gaps, reset
    w = pd.DataFrame({"ts": sl.ts[i0:i1], "metric": sl.metric[i0:i1],
                      "labels": sl.labels[i0:i1], "value": sl.value[i0:i1]})
    groups = {str(k): g for k, g in w.groupby("metric", observed=True, sort=False)}
    for key, (names, how, scale) in GAUGES.items():
        g = next((groups[n] for n in names if n in groups), None)
        if g is None:
            continue
        per_ts = g.groupby("ts", sort=True)["value"].agg(how).to_numpy() * scale
        per_ts = per_ts[~np.isnan(per_ts)]
        if not per_ts.size:
            continue
        for stat, val in (("mean", per_ts.mean()), ("max", per_ts.max()),
                          ("p95", np.percentile(per_ts, 95))):
            if f"{key}_{stat}" in out:
                out[f"{key}_{stat}"] = float(val)
        if key == "gpu_mem_total":
            out["gpu_mem_total"] = float(per_ts.max())
    for key, name in COUNTERS.items():
        g = groups.get(name)
        if g is None:
            continue
        inc, span, r = _counter_increase(g["ts"].to_numpy(), g["labels"].cat.codes.to_numpy(),
                                         g["value"].to_numpy())
        reset |= r
        rates = [inc[c] / span[c] for c in inc if span[c] > 0]
        if rates:
            out[key] = float(np.sum(rates))
    for key, names in HISTOGRAMS.items():
        base = next((n for n in names if f"{n}_count" in groups), None)
        if base is None:
            continue
        totals = {}
        for part in ("_sum", "_count"):
            g = groups.get(base + part)
            if g is None:
                continue
            inc, _, r = _counter_increase(g["ts"].to_numpy(), g["labels"].cat.codes.to_numpy(),
                                          g["value"].to_numpy())
            reset |= r
            totals[part] = sum(inc.values())
        if totals.get("_count", 0) > 0 and "_sum" in totals:
            out[f"{key}_mean"] = totals["_sum"] / totals["_count"] * 1000.0
        g = groups.get(base + "_bucket")
        if g is not None and f"{key}_p50" in out:
            codes = g["labels"].cat.codes.to_numpy()
            inc, _, r = _counter_increase(g["ts"].to_numpy(), codes, g["value"].to_numpy())
            reset |= r
            cats = g["labels"].cat.categories
            by_le: dict[float, float] = {}
            for code, x in inc.items():
                m = _LE_RE.search(str(cats[code]))
                if not m:
                    continue
                try:
                    le = float(m.group(1).replace("+Inf", "inf"))
                except ValueError:
                    continue
                by_le[le] = by_le.get(le, 0.0) + x
            if by_le:
                bounds = np.array(sorted(by_le))
                cum = np.array([by_le[b] for b in bounds])
                if not math.isinf(bounds[-1]):
                    bounds = np.append(bounds, math.inf)
                    cum = np.append(cum, cum[-1])
                out[f"{key}_p50"] = histogram_quantile(0.5, bounds, cum) * 1000.0
    return out, gaps, reset


def metric_figures(run: RunData, windows: pd.DataFrame, warnings: WarningList
                   ) -> tuple[pd.DataFrame, list[Gap], list[tuple[str, str, str]]]:
    """Metric-sample figures per endpoint x stage window, the gaps found, and the configured
    sources (endpoint, source, url) with no sample at all in the run."""
    rows = []
    gaps: list[Gap] = []
    missing: list[tuple[str, str, str]] = []
    for ep in run.endpoints:
        sl = endpoint_slices(run.metrics, ep)
        cfg = run.endpoint_config(ep)
        configured = {series.SERVER: cfg.get("metrics_url"),
                      series.EXPORTER: cfg.get("exporter_url")}
        present = set(sl.intervals) if sl is not None else set()
        for src, url in configured.items():
            if url and src not in present:
                missing.append((ep, src, str(url)))
        reset_any = False
        for w in windows.itertuples(index=False):
            row = {"endpoint": ep, "stage": int(w.stage)}
            if sl is not None and not math.isnan(w.t1):
                figs, g, reset = window_metric_figures(sl, w.t0, w.t1)
                row.update(figs)
                reset_any |= reset
                for src, (longest, failed, err, missing_all) in g.items():
                    gaps.append(Gap(run.ref, ep, src, int(w.stage), w.level, longest, failed,
                                    err, missing_all))
            rows.append(row)
        if reset_any:
            warnings.add("counter_reset", f"run {run.name}: endpoint {ep}: a counter went "
                         "backwards inside a steady window (a restart?); increases were counted "
                         "from the restart", run.ref, ep)
    df = pd.DataFrame(rows, columns=["endpoint", "stage"]) if not rows else pd.DataFrame(rows)
    for k in METRIC_FIGURES + ["energy_w"]:
        if k not in df:
            df[k] = math.nan
    return df, gaps, missing


def gap_warnings(gaps: list[Gap], warnings: WarningList) -> None:
    """One warning per run x endpoint x source, naming the stages and the worst gap."""
    by: dict[tuple[Any, str, str], list[Gap]] = {}
    for g in gaps:
        by.setdefault((g.run, g.endpoint, g.source), []).append(g)
    for (run, ep, src), items in by.items():
        levels = ", ".join(_level_text(g.level) for g in items)
        failed = sum(g.failed for g in items)
        longest = max(g.longest_s for g in items)
        errs = sorted({g.error for g in items if g.error})
        text = (f"run {run}: endpoint {ep}: {src} metrics have gaps in {len(items)} steady "
                f"window(s) (level {levels}): longest {longest:.1f} s without a sample")
        if failed:
            text += f", {failed} failed scrape(s)"
        if errs:
            text += f" ({'; '.join(errs[:3])})"
        if any(g.missing_all for g in items):
            text += "; some windows have no sample at all (n/a)"
        warnings.add("metrics_gap", text, run, ep)


def _level_text(level: float) -> str:
    if level is None or (isinstance(level, float) and math.isnan(level)):
        return "?"
    return f"{level:g}"


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
        users = s.rate if run.mode == "open" else s.users
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
