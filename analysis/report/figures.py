"""The report's figures as PNG bytes (matplotlib, Agg backend; nothing is shown on screen)."""

from __future__ import annotations

import io

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from ..catalogue import METRICS  # noqa: E402
from ..timeseries import TimeSeries  # noqa: E402
from .model import ep_name, has_metric  # noqa: E402

COLORS = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#17becf"]
DPI = 90


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI)
    plt.close(fig)
    return buf.getvalue()


def _series(result, endpoint: str, metric: str):
    c = result.combined
    rows = c[(c["endpoint"] == endpoint) & (c["metric"] == metric)].sort_values("level")
    x = rows["level"].to_numpy(float)
    y = rows["mean"].to_numpy(float)
    half = (rows["ci_high"] - rows["mean"]).to_numpy(float)
    return x, y, np.where(np.isnan(half), 0.0, half)


def _level_axis(ax, result) -> None:
    levels = [lv for lv in result.levels if lv > 0]
    if levels and max(levels) / min(levels) >= 8:
        ax.set_xscale("log", base=2)
        ax.set_xticks(levels)
        ax.get_xaxis().set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:g}"))
        ax.get_xaxis().set_minor_locator(matplotlib.ticker.NullLocator())
    ax.set_xlabel("concurrency (users)" if result.level_name == "users" else "request rate (req/s)")
    ax.grid(True, alpha=0.3)


def _plain(text: str) -> str:
    """Text for matplotlib as typed: '$' would start mathtext (and can fail to parse)."""
    return str(text).replace("$", r"\$")


def _name(result, ep: str) -> str:
    return _plain(ep_name(result, ep))


def _panel(ax, result, metrics: list[tuple[str, str]], ylabel: str, title: str) -> bool:
    drawn = False
    for i, ep in enumerate(result.endpoints):
        for j, (metric, style) in enumerate(metrics):
            x, y, err = _series(result, ep, metric)
            if not x.size or np.isnan(y).all():
                continue
            label = _name(result, ep) + ("" if j == 0 else f", {METRICS[metric].label}")
            ax.errorbar(x, y, yerr=err, fmt=style, color=COLORS[i % len(COLORS)], capsize=3,
                        label=label, markersize=4)
            drawn = True
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    _level_axis(ax, result)
    if drawn:
        ax.legend(fontsize=8)
        ax.set_ylim(bottom=0)
    else:
        ax.text(0.5, 0.5, "no data", transform=ax.transAxes, ha="center", va="center")
    return drawn


def latency_figure(result) -> bytes:
    fig, axes = plt.subplots(1, 2, figsize=(11, 4), layout="constrained")
    _panel(axes[0], result, [("ttft_p50", "o-"), ("ttft_p99", "s--")], "ms",
           "TTFT p50 (solid) and p99 (dashed)")
    _panel(axes[1], result, [("e2e_mean", "o-"), ("e2e_p99", "s--")], "ms",
           "E2E mean response time (solid) and p99 (dashed)")
    fig.suptitle("Latency vs concurrency (mean of runs, 95% CI bars)", fontsize=10)
    return _png(fig)


def throughput_figure(result) -> bytes:
    fig, axes = plt.subplots(1, 2, figsize=(11, 4), layout="constrained")
    req = [("req_per_s", "o-")] + ([("goodput_per_s", "s--")] if result.slos else [])
    _panel(axes[0], result, req, "req/s",
           "Completed req/s" + (" (solid), goodput (dashed)" if result.slos else ""))
    _panel(axes[1], result, [("output_tok_per_s", "o-")], "tokens/s", "Output tokens/s")
    fig.suptitle("Throughput vs concurrency (mean of runs, 95% CI bars)", fontsize=10)
    return _png(fig)


def utilization_figure(result) -> bytes | None:
    panels = []
    if has_metric(result, "gpu_util_mean"):
        panels.append(([("gpu_util_mean", "o-")] + ([("sm_active_mean", "s--")]
                       if has_metric(result, "sm_active_mean") else []), "%",
                       "GPU utilization (NVML, solid)" + (", SM activity (dashed)"
                                                          if has_metric(result, "sm_active_mean") else "")))
    if has_metric(result, "cpu_cores_mean"):
        panels.append(([("cpu_cores_mean", "o-")], "cores", "Server process CPU"))
    if has_metric(result, "kv_cache_mean"):
        panels.append(([("kv_cache_mean", "o-")], "%", "vLLM KV-cache usage"))
    if not panels:
        return None
    fig, axes = plt.subplots(1, len(panels), figsize=(5.5 * len(panels), 4), squeeze=False,
                             layout="constrained")
    for ax, (metrics, unit, title) in zip(axes[0], panels):
        _panel(ax, result, metrics, unit, title)
    fig.suptitle("Utilization vs concurrency (mean of runs, 95% CI bars)", fontsize=10)
    return _png(fig)


MAX_POINTS = 1500


def _bin(t: np.ndarray, v: np.ndarray, width: float) -> tuple[np.ndarray, np.ndarray]:
    """Mean of the non-NaN values in bins of `width` seconds; empty bins stay NaN (gaps)."""
    if width <= 1 or t.size == 0:
        return t, v.astype(float)
    v = v.astype(float)
    idx = np.floor(t / width).astype(np.int64)
    idx -= idx.min()
    good = ~np.isnan(v)
    sums = np.bincount(idx[good], weights=v[good], minlength=idx.max() + 1)
    counts = np.bincount(idx[good], minlength=idx.max() + 1)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.where(counts > 0, sums / np.maximum(counts, 1), np.nan)
    centers = (np.arange(mean.size) + np.floor(t.min() / width)) * width + width / 2
    return centers, mean


def timeseries_figure(ts: TimeSeries, level_name: str, model: str = "") -> bytes:
    span = float(ts.t[-1] - ts.t[0]) if ts.t.size else 0.0
    width = float(np.ceil(span / MAX_POINTS)) if span > MAX_POINTS else 1.0
    t_c, completed = _bin(ts.t, ts.completed, width)
    _, failed = _bin(ts.t, ts.failed, width)
    _, ttft = _bin(ts.t, ts.ttft_p50_ms, width)
    m_t, m_v = _bin(ts.metric_t, ts.metric_v, width) if ts.metric_name else (None, None)
    n = 4 if ts.metric_name else 3
    fig, axes = plt.subplots(n, 1, figsize=(11, 1.9 * n + 0.6), sharex=True,
                             layout="constrained")
    ax = axes[0]
    if ts.users_t.size:
        ax.step(ts.users_t, ts.users, where="post", color="black")
    ax.set_ylabel(level_name)
    axes[1].plot(t_c, completed, color=COLORS[0], lw=0.8, label="completed")
    if ts.failed.any():
        axes[1].plot(t_c, failed, color=COLORS[1], lw=0.8, label="failed")
        axes[1].legend(fontsize=8)
    axes[1].set_ylabel("req/s")
    axes[2].plot(t_c, ttft, color=COLORS[2], lw=0.8)
    axes[2].set_ylabel("TTFT p50 (ms)")
    if ts.metric_name:
        axes[3].plot(m_t, m_v, color=COLORS[3], lw=0.8)
        axes[3].set_ylabel(ts.metric_name, fontsize=8)
    if width > 1:
        axes[0].set_title(f"{width:g} s means", fontsize=8, loc="right")
    for a in axes:
        for t0, t1, label in ts.bands:
            a.axvspan(t0, t1, color="#f2d16b", alpha=0.25, lw=0)
        a.grid(True, alpha=0.3)
    for t0, t1, label in ts.bands:
        axes[0].text((t0 + t1) / 2, 1.0, label, transform=axes[0].get_xaxis_transform(),
                     ha="center", va="bottom", fontsize=7)
    axes[-1].set_xlabel("seconds since the run's first request (shaded: steady windows)")
    title = f"Run {ts.run or ts.run_id}, endpoint {ts.endpoint}" + (f" ({model})" if model else "")
    fig.suptitle(_plain(title), fontsize=10)
    return _png(fig)


def distribution_figure(result) -> bytes | None:
    if not result.distributions:
        return None
    fig, axes = plt.subplots(1, 2, figsize=(11, 4), layout="constrained")
    for ax, (col, title) in zip(axes, (("ttft_s", "TTFT"), ("e2e_s", "E2E"))):
        drawn = False
        for i, ep in enumerate(result.endpoints):
            v = result.distributions.get(ep, {}).get(col)
            if v is None or not v.size:
                continue
            v = np.sort(v) * 1000.0
            if v.size > 5000:  # plot 5000 evenly spaced order statistics
                v = v[np.linspace(0, v.size - 1, 5000).astype(int)]
            y = np.linspace(0, 1, v.size)
            ax.plot(v, y, color=COLORS[i % len(COLORS)], label=_name(result, ep))
            drawn = True
        ax.set_xlabel(f"{title} (ms)")
        ax.set_ylabel("share of requests")
        ax.set_title(f"{title} CDF at {result.at_level:g} {result.level_name} (all runs pooled)")
        ax.grid(True, alpha=0.3)
        if drawn:
            ax.legend(fontsize=8)
    return _png(fig)


def all_figures(result) -> list[tuple[str, str, bytes]]:
    """(id, caption, png) for each figure the data allows."""
    figs = [("latency", "Latency vs concurrency: TTFT and E2E, mean over runs with 95% CI.",
             latency_figure(result)),
            ("throughput", "Throughput vs concurrency: completed req/s and output tokens/s.",
             throughput_figure(result))]
    u = utilization_figure(result)
    if u is not None:
        figs.append(("utilization", "GPU utilization (or server process CPU) and KV-cache usage "
                     "vs concurrency.", u))
    d = distribution_figure(result)
    if d is not None:
        figs.append(("distribution", f"Latency distributions at {result.at_level:g} "
                     f"{result.level_name}.", d))
    for ep in result.endpoints:
        ts = result.timeseries.get(ep)
        if ts is not None:
            run = ts.run or ts.run_id
            figs.append((f"timeseries-{ep}", f"Time series of run {run} for endpoint {ep}: "
                         "users, req/s, TTFT and a metric, steady windows shaded; metric gaps "
                         "break the line.",
                         timeseries_figure(ts, result.level_name, result.models.get(ep, ""))))
    return figs

