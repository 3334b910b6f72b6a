"""Per-run figures from metric samples (metrics.csv or Prometheus): gauges, counters, histograms
per steady window, and the gaps found in them.

Which figures exist is the catalogue's (analysis.catalogue: source metrics.csv); how each family
is read from its series (core.rundir.series) is here.
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

from .catalogue import SAMPLE_FIGURES
from .errors import WarningList
from .rundata import RunData

GIB = float(2 ** 30)
GAP_FACTOR = 2.5     # a gap: no sample for longer than this many scrape intervals


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
# The figures a window's samples give: the catalogue's metrics.csv figures (and, as NaN until
# analysis.build fills them, the derived ones among them).
METRIC_FIGURES = SAMPLE_FIGURES

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
