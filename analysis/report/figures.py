"""The report's figures: their data computed once (FigureData), drawn twice.

``figure_data`` functions turn the Result into plain data (series of x, y, 95% CI half-widths,
colours, axis titles); ``render_png`` draws it with matplotlib (Agg backend; the PNGs of
report.md and the no-script fallback of report.html) and ``interactive.render`` draws the same
data with plotly for report.html (zoom, pan, hover values, legend toggling).
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from ..catalogue import METRICS  # noqa: E402
from ..timeseries import TimeSeries  # noqa: E402
from .model import Lookup, ep_name, has_metric  # noqa: E402

COLORS = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#17becf"]
DPI = 90


@dataclass
class Series:
    """One line of a panel. Text is plain (renderers escape it for their own syntax)."""
    name: str                        # legend label, as in the static figure
    x: np.ndarray
    y: np.ndarray
    color: str
    group: str = ""                  # legend group (the endpoint): toggled together
    err: np.ndarray | None = None    # half-width of the 95% CI over runs (symmetric bars)
    dash: bool = False
    marker: str = ""                 # "o", "s" or "" (a plain line)
    step: bool = False               # a step function (value holds until the next point)
    quantity: str = ""               # what y is, for the hover ("TTFT p99")
    unit: str = ""
    text: list[str] | None = None    # hover value per point, formatted as in the tables
    y_format: str = ".1f"            # d3 format of y in the hover when there is no text
    lw: float = 1.5


@dataclass
class Panel:
    title: str
    ylabel: str
    series: list[Series] = field(default_factory=list)
    xlabel: str = ""
    x_levels: list[float] | None = None   # concurrency axis: ticks at the levels
    x_log: bool = False                   # log scale (base 2 ticks at the levels)
    y_from_zero: bool = True
    legend: bool = True
    bands: list[tuple[float, float, str]] = field(default_factory=list)   # shaded x spans
    band_labels: bool = False             # label the bands above this panel
    ylabel_small: bool = False


@dataclass
class FigureData:
    id: str
    caption: str
    title: str
    panels: list[Panel]
    columns: bool = False            # panels stacked (shared x) instead of side by side
    size: tuple[float, float] = (11, 4)   # inches (matplotlib); plotly takes the height
    corner_note: str = ""            # e.g. "10 s means"
    x_name: str = ""                 # the x value in the hover ("users", "s")


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI)
    plt.close(fig)
    return buf.getvalue()


# --- data --------------------------------------------------------------------------------------

def _series(result, endpoint: str, metric: str):
    c = result.combined
    rows = c[(c["endpoint"] == endpoint) & (c["metric"] == metric)].sort_values("level")
    x = rows["level"].to_numpy(float)
    y = rows["mean"].to_numpy(float)
    half = (rows["ci_high"] - rows["mean"]).to_numpy(float)
    return x, y, np.where(np.isnan(half), 0.0, half)


def _level_name(result) -> str:
    return "concurrency (users)" if result.level_name == "users" else "request rate (req/s)"


def _level_panel(result, lk: Lookup, metrics: list[tuple[str, str]], ylabel: str,
                 title: str) -> Panel:
    """A panel of metrics vs concurrency, one colour per endpoint, mean of runs with CI bars."""
    levels = [lv for lv in result.levels if lv > 0]
    panel = Panel(title, ylabel, xlabel=_level_name(result), x_levels=levels or None,
                  x_log=bool(levels) and max(levels) / min(levels) >= 8)
    for i, ep in enumerate(result.endpoints):
        for j, (metric, style) in enumerate(metrics):
            x, y, err = _series(result, ep, metric)
            if not x.size or np.isnan(y).all():
                continue
            m = METRICS[metric]
            label = ep_name(result, ep) + ("" if j == 0 else f", {m.label}")
            panel.series.append(Series(
                label, x, y, COLORS[i % len(COLORS)], group=ep_name(result, ep), err=err,
                dash="--" in style, marker=style[0], quantity=m.label, unit=m.unit,
                text=[lk.cell(ep, lv, metric) for lv in x]))
    return panel


def latency_data(result, lk: Lookup | None = None) -> FigureData:
    lk = lk or Lookup(result)
    return FigureData("latency", "Latency vs concurrency: TTFT and E2E, mean over runs with 95% CI.",
                      "Latency vs concurrency (mean of runs, 95% CI bars)", [
        _level_panel(result, lk, [("ttft_p50", "o-"), ("ttft_p99", "s--")], "ms",
                     "TTFT p50 (solid) and p99 (dashed)"),
        _level_panel(result, lk, [("e2e_mean", "o-"), ("e2e_p99", "s--")], "ms",
                     "E2E mean response time (solid) and p99 (dashed)")],
        x_name=result.level_name)


def throughput_data(result, lk: Lookup | None = None) -> FigureData:
    lk = lk or Lookup(result)
    req = [("req_per_s", "o-")] + ([("goodput_per_s", "s--")] if result.slos else [])
    return FigureData("throughput",
                      "Throughput vs concurrency: completed req/s and output tokens/s.",
                      "Throughput vs concurrency (mean of runs, 95% CI bars)", [
        _level_panel(result, lk, req, "req/s",
                     "Completed req/s" + (" (solid), goodput (dashed)" if result.slos else "")),
        _level_panel(result, lk, [("output_tok_per_s", "o-")], "tokens/s", "Output tokens/s")],
        x_name=result.level_name)


def utilization_data(result, lk: Lookup | None = None) -> FigureData | None:
    lk = lk or Lookup(result)
    specs = []
    if has_metric(result, "gpu_util_mean"):
        sm = has_metric(result, "sm_active_mean")
        specs.append(([("gpu_util_mean", "o-")] + ([("sm_active_mean", "s--")] if sm else []),
                      "%", "GPU utilization (NVML, solid)" + (", SM activity (dashed)" if sm else "")))
    if has_metric(result, "cpu_cores_mean"):
        specs.append(([("cpu_cores_mean", "o-")], "cores", "Server process CPU"))
    if has_metric(result, "kv_cache_mean"):
        specs.append(([("kv_cache_mean", "o-")], "%", "vLLM KV-cache usage"))
    if not specs:
        return None
    return FigureData("utilization", "GPU utilization (or server process CPU) and KV-cache usage "
                      "vs concurrency.", "Utilization vs concurrency (mean of runs, 95% CI bars)",
                      [_level_panel(result, lk, m, unit, title) for m, unit, title in specs],
                      size=(5.5 * len(specs), 4), x_name=result.level_name)


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


def timeseries_data(ts: TimeSeries, level_name: str, model: str = "") -> FigureData:
    span = float(ts.t[-1] - ts.t[0]) if ts.t.size else 0.0
    width = float(np.ceil(span / MAX_POINTS)) if span > MAX_POINTS else 1.0
    t_c, completed = _bin(ts.t, ts.completed, width)
    _, failed = _bin(ts.t, ts.failed, width)
    _, ttft = _bin(ts.t, ts.ttft_p50_ms, width)
    lw = 0.8
    users = Panel("", level_name, legend=False, y_from_zero=False, bands=ts.bands,
                  band_labels=True)
    if ts.users_t.size:
        users.series.append(Series(level_name, ts.users_t, ts.users, "black", step=True,
                                   quantity=level_name, y_format=",.6~g", lw=1.5))
    reqs = Panel("", "req/s", [Series("completed", t_c, completed, COLORS[0], lw=lw,
                                      quantity="completed", unit="req/s", y_format=",.4~f")],
                 legend=False, y_from_zero=False, bands=ts.bands)
    if ts.failed.any():
        reqs.series.append(Series("failed", t_c, failed, COLORS[1], lw=lw, quantity="failed",
                                  unit="req/s", y_format=",.4~f"))
        reqs.legend = True
    panels = [users, reqs,
              Panel("", "TTFT p50 (ms)", [Series("TTFT p50", t_c, ttft, COLORS[2], lw=lw,
                                                 quantity="TTFT p50", unit="ms")],
                    legend=False, y_from_zero=False, bands=ts.bands)]
    if ts.metric_name:
        m_t, m_v = _bin(ts.metric_t, ts.metric_v, width)
        panels.append(Panel("", ts.metric_name, [Series(ts.metric_name, m_t, m_v, COLORS[3],
                                                        lw=lw, quantity=ts.metric_name,
                                                        y_format=",.2f")],
                            legend=False, y_from_zero=False, bands=ts.bands, ylabel_small=True))
    panels[-1].xlabel = "seconds since the run's first request (shaded: steady windows)"
    run = ts.run or ts.run_id
    title = f"Run {run}, endpoint {ts.endpoint}" + (f" ({model})" if model else "")
    return FigureData(f"timeseries-{ts.endpoint}",
                      f"Time series of run {run} for endpoint {ts.endpoint}: users, req/s, TTFT "
                      "and a metric, steady windows shaded; metric gaps break the line.",
                      title, panels, columns=True, size=(11, 1.9 * len(panels) + 0.6),
                      corner_note=f"{width:g} s means" if width > 1 else "", x_name="s")


# --- matplotlib --------------------------------------------------------------------------------

def _plain(text: str) -> str:
    """Text for matplotlib as typed: '$' would start mathtext (and can fail to parse)."""
    return str(text).replace("$", r"\$")


def _draw_panel(ax, panel: Panel) -> None:
    for s in panel.series:
        if s.err is not None:
            ax.errorbar(s.x, s.y, yerr=s.err, fmt=s.marker + ("--" if s.dash else "-"),
                        color=s.color, capsize=3, label=_plain(s.name), markersize=4)
        elif s.step:
            ax.step(s.x, s.y, where="post", color=s.color, label=_plain(s.name))
        else:
            ax.plot(s.x, s.y, color=s.color, lw=s.lw, label=_plain(s.name),
                    ls="--" if s.dash else "-")
    if panel.ylabel_small:
        ax.set_ylabel(_plain(panel.ylabel), fontsize=8)
    else:
        ax.set_ylabel(_plain(panel.ylabel))
    if panel.title:
        ax.set_title(_plain(panel.title))
    if panel.x_log and panel.x_levels:
        ax.set_xscale("log", base=2)
        ax.set_xticks(panel.x_levels)
        ax.get_xaxis().set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:g}"))
        ax.get_xaxis().set_minor_locator(matplotlib.ticker.NullLocator())
    if panel.xlabel:
        ax.set_xlabel(_plain(panel.xlabel))
    for t0, t1, _ in panel.bands:
        ax.axvspan(t0, t1, color="#f2d16b", alpha=0.25, lw=0)
    if panel.band_labels:
        for t0, t1, label in panel.bands:
            ax.text((t0 + t1) / 2, 1.0, _plain(label), transform=ax.get_xaxis_transform(),
                    ha="center", va="bottom", fontsize=7)
    ax.grid(True, alpha=0.3)
    if panel.series:
        if panel.legend:
            ax.legend(fontsize=8)
        if panel.y_from_zero:
            ax.set_ylim(bottom=0)
    elif panel.legend:      # a concurrency panel without any value
        ax.text(0.5, 0.5, "no data", transform=ax.transAxes, ha="center", va="center")


def render_png(data: FigureData) -> bytes:
    n = len(data.panels)
    if data.columns:
        fig, axes = plt.subplots(n, 1, figsize=data.size, sharex=True, squeeze=False,
                                 layout="constrained")
        axes = axes[:, 0]
    else:
        fig, axes = plt.subplots(1, n, figsize=data.size, squeeze=False, layout="constrained")
        axes = axes[0]
    for ax, panel in zip(axes, data.panels):
        _draw_panel(ax, panel)
    if data.corner_note:
        axes[0].set_title(data.corner_note, fontsize=8, loc="right")
    fig.suptitle(_plain(data.title), fontsize=10)
    return _png(fig)


def latency_figure(result) -> bytes:
    return render_png(latency_data(result))


def throughput_figure(result) -> bytes:
    return render_png(throughput_data(result))


def utilization_figure(result) -> bytes | None:
    data = utilization_data(result)
    return None if data is None else render_png(data)


def timeseries_figure(ts: TimeSeries, level_name: str, model: str = "") -> bytes:
    return render_png(timeseries_data(ts, level_name, model))


def distribution_figure(result) -> bytes | None:
    """CDFs at the "At N" level (static only: 5,000 points per line read well as an image)."""
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
            ax.plot(v, y, color=COLORS[i % len(COLORS)], label=_plain(ep_name(result, ep)))
            drawn = True
        ax.set_xlabel(f"{title} (ms)")
        ax.set_ylabel("share of requests")
        ax.set_title(f"{title} CDF at {result.at_level:g} {result.level_name} (all runs pooled)")
        ax.grid(True, alpha=0.3)
        if drawn:
            ax.legend(fontsize=8)
    return _png(fig)


Figure = tuple[str, str, bytes, "FigureData | None"]   # (id, caption, png, data: interactive)


def all_figures(result) -> list[Figure]:
    """(id, caption, png, data) for each figure the data allows; data (the figure's FigureData)
    is given for the figures drawn interactively in report.html, None for static-only ones."""
    lk = Lookup(result)

    def both(data: FigureData) -> Figure:
        return (data.id, data.caption, render_png(data), data)

    figs = [both(latency_data(result, lk)), both(throughput_data(result, lk))]
    u = utilization_data(result, lk)
    if u is not None:
        figs.append(both(u))
    d = distribution_figure(result)
    if d is not None:
        figs.append(("distribution", f"Latency distributions at {result.at_level:g} "
                     f"{result.level_name}.", d, None))
    for ep in result.endpoints:
        ts = result.timeseries.get(ep)
        if ts is not None:
            figs.append(both(timeseries_data(ts, result.level_name, result.models.get(ep, ""))))
    return figs
