"""Capacity under SLO: the SLO grammar, one probe's figures, and the comparison of capacities.

The search itself (which level to probe next, the probes as runs) is locustfiles.capacity's;
this module holds what it and the report both compute, as plain data:

- ``parse_slos("ttft_p99<=0.5,error_rate<=0.01")``: the SLOs (latencies in seconds);
- ``probe_figures(run_dir, slos)``: one probe run's SLO metrics over its steady window, its
  goodput, whether its load generator was late (analysis.health, the report's generator_late
  rule) and whether its failures were connection failures (the server down);
- ``compare(searches, baseline)``: per repetition the ratio of each endpoint's goodput to the
  baseline's, their geometric mean and its 95% Student-t interval (on the log ratios) across
  repetitions; ``headline(...)``: the sentence the campaign and the report print;
- ``read_capacity(paths)``: capacity.json of the campaign the report's runs came from.

Goodput (docs/capacity.md): the completed requests per second over the steady window of the
capacity probe, the highest level at which every SLO held. In open loop that is about the
capacity rate itself; in closed loop it is the throughput the capacity concurrency sustained.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterable

import numpy as np

from .definitions import SLO_FIELDS
from .errors import AnalysisError, WarningList
from .stats import t_half_width

CAPACITY_FILE = "capacity.json"
CAPACITY_SCHEMA = 1

# METRIC<=VALUE: a percentile of a per-request latency (seconds), or the error rate (a share)
LATENCY_COLUMNS = {name.removesuffix("_ms"): column for name, (column, _) in SLO_FIELDS.items()}
PERCENTILES = (50, 90, 95, 99)
SLO_METRICS: dict[str, tuple[str, float]] = {
    f"{name}_p{q}": (column, q / 100.0) for name, column in LATENCY_COLUMNS.items()
    for q in PERCENTILES}
ERROR_RATE = "error_rate"
# failures that say the server is not there (down, or unreachable): no SLO verdict, a stop
CONNECTION_FAILURES = ("connection_refused", "connect_failed", "connect_timeout")
DOWN_SHARE = 0.5     # a probe with more than this share of its requests failing to connect

PASS, FAIL, LATE, DOWN, FAILED = "pass", "fail", "late", "down", "failed"


class SloError(ValueError):
    """The --slo text cannot be used; the message says how to write it."""


@dataclass(frozen=True)
class Slo:
    metric: str      # a key of SLO_METRICS, or "error_rate"
    limit: float     # seconds (latencies) or a share 0..1 (error_rate)

    @property
    def text(self) -> str:
        return f"{self.metric}<={self.limit:g}"

    def words(self) -> str:
        """For people: 'p99 TTFT <= 500 ms', 'error rate <= 1%'."""
        if self.metric == ERROR_RATE:
            return f"error rate <= {self.limit * 100:g}%"
        name, q = self.metric.rsplit("_p", 1)
        return f"p{q} {name.upper()} <= {self.limit * 1e3:g} ms"

    def holds(self, value: float) -> bool:
        """NaN (no completed request to measure) does not meet an SLO."""
        return value == value and value <= self.limit


def slo_help() -> str:
    names = sorted({m.rsplit('_p', 1)[0] for m in SLO_METRICS})
    return (f"write METRIC<=VALUE[,METRIC<=VALUE...] with METRIC one of "
            f"{'/'.join(names)} followed by _p{'/_p'.join(map(str, PERCENTILES))} "
            f"(seconds), or error_rate (a share 0..1), e.g. "
            "--slo 'ttft_p99<=0.5,tpot_p99<=0.05,error_rate<=0.01'")


def parse_slos(text: str | Iterable[str]) -> tuple[Slo, ...]:
    """'ttft_p99<=0.5,error_rate<=0.01' (or a list of such parts) -> the SLOs, in order."""
    parts = [text] if isinstance(text, str) else list(text)
    items = [p.strip() for part in parts for p in str(part).split(",") if p.strip()]
    if not items:
        raise SloError(f"--slo is empty: {slo_help()}")
    out: dict[str, Slo] = {}
    for item in items:
        m = re.fullmatch(r"([a-z0-9_]+)\s*<=\s*(\S+)", item)
        if not m:
            raise SloError(f"--slo {item!r}: {slo_help()}")
        name, value = m.groups()
        if name not in SLO_METRICS and name != ERROR_RATE:
            hint = (" (give the limit in seconds under the percentile's name, e.g. ttft_p99<=0.2)"
                    if name.endswith("_ms") else "")
            raise SloError(f"--slo {item!r}: unknown metric {name!r}{hint}; {slo_help()}")
        try:
            limit = float(value)
        except ValueError:
            raise SloError(f"--slo {item!r}: the limit {value!r} is not a number (latencies "
                           "are in seconds, without a unit: 0.5 for 500 ms)") from None
        if not math.isfinite(limit) or limit <= 0:
            raise SloError(f"--slo {item!r}: the limit must be a number > 0")
        if name == ERROR_RATE and limit >= 1:
            raise SloError(f"--slo {item!r}: error_rate is a share of requests from 0 to 1 "
                           "(0.01 is 1%); a limit of 1 or more holds always")
        if name != ERROR_RATE and limit > 600:
            raise SloError(f"--slo {item!r}: latencies are in seconds; {limit:g} s is more than "
                           "ten minutes (did you mean milliseconds? 500 ms is 0.5)")
        if name in out:
            raise SloError(f"--slo: {name} is given twice; give each metric once")
        out[name] = Slo(name, limit)
    return tuple(out.values())


def slos_words(slos: Iterable[Slo]) -> str:
    return ", ".join(s.words() for s in slos)


# ---------------------------------------------------------------------------------------------
# One probe

@dataclass
class ProbeFigures:
    """One probe run's figures over its steady window (plain data)."""

    metrics: dict[str, float]            # SLO metric -> value (NaN: nothing to measure)
    requests: int                        # steady requests (ok or not)
    completed: int
    window_s: float
    goodput_per_s: float                 # completed / window_s
    late: bool                           # the generator_late rule (analysis.health)
    lateness: str = ""                   # why it was late, in words
    down: bool = False                   # most requests failed to connect
    down_reason: str = ""


def lateness_note(data: dict[str, Any]) -> str | None:
    """capacity.json's lateness rule in words when the user loosened it
    (--capacity-max-lateness-s); None under the report's generator_late rule."""
    limit = (data.get("settings") or {}).get("max_lateness_s")
    if limit is None:
        return None
    return (f"a probe counted as late only above a generator lateness p99 of {limit * 1e3:g} ms "
            "(--capacity-max-lateness-s), looser than the report's generator_late rule: the "
            "load offered may have trailed the load planned by up to that much, so these "
            "capacities are lower bounds of what a punctual generator would find")


def probe_figures(run_dir: Path, slos: Iterable[Slo],
                  max_lateness_s: float | None = None) -> ProbeFigures:
    """Read one probe run (a normal run directory of one stage) and measure its SLO metrics
    over the steady window; AnalysisError when it cannot be read. Late: the report's
    generator_late rule, or with ``max_lateness_s`` (--capacity-max-lateness-s, the user's
    explicit tolerance) a lateness p99 above it."""
    from .compute import stage_windows
    from .health import stage_health
    from .rundata import load_run

    run = load_run(Path(run_dir))
    windows = stage_windows(run, WarningList())
    rec = run.records
    steady = rec[rec["phase"] == "steady"]
    ok = steady[steady["ok"]]
    window = float(windows["duration"].sum()) if len(windows) else math.nan
    metrics: dict[str, float] = {}
    for slo in slos:
        if slo.metric == ERROR_RATE:
            metrics[ERROR_RATE] = ((len(steady) - len(ok)) / len(steady) if len(steady)
                                   else math.nan)
        else:
            column, q = SLO_METRICS[slo.metric]
            values = ok[column].dropna() if column in ok else ok.iloc[:0, :0]
            metrics[slo.metric] = float(values.quantile(q)) if len(values) else math.nan
    health = stage_health(run.records, run.manifest)
    if max_lateness_s is None:
        late_stages = [(h, h.late_limit_s) for h in health if h.late]
    else:
        late_stages = [(h, max_lateness_s) for h in health
                       if h.lateness_s == h.lateness_s and h.lateness_s > max_lateness_s]
    lateness = "; ".join(
        f"endpoint {h.endpoint}: lateness p99 {h.lateness_s * 1e3:.1f} ms beyond "
        f"{limit * 1e3:.1f} ms" for h, limit in late_stages)
    failed = steady[~steady["ok"]]
    conn = int(failed["error_category"].astype(str).isin(CONNECTION_FAILURES).sum())
    down = bool(len(steady) and conn > DOWN_SHARE * len(steady))
    if not len(steady) and len(rec):
        every = rec[~rec["ok"]]["error_category"].astype(str)
        down = bool(len(every) and every.isin(CONNECTION_FAILURES).mean() > DOWN_SHARE)
    down_reason = ""
    if down:
        first = (failed if len(failed) else rec[~rec["ok"]])
        sample = first[first["error_category"].astype(str).isin(CONNECTION_FAILURES)]
        cat = str(sample["error_category"].iloc[0]) if len(sample) else "connection failures"
        down_reason = (f"{conn or len(sample)} of {len(steady) or len(rec)} requests failed to "
                       f"connect ({cat}): the server is down or unreachable")
    goodput = len(ok) / window if window and window == window and window > 0 else math.nan
    return ProbeFigures(metrics=metrics, requests=int(len(steady)), completed=int(len(ok)),
                        window_s=window, goodput_per_s=goodput, late=bool(late_stages),
                        lateness=lateness, down=down, down_reason=down_reason)


def verdict(figures: ProbeFigures, slos: Iterable[Slo]) -> tuple[str, list[str]]:
    """(PASS | FAIL | LATE | DOWN | FAILED, the SLOs that failed). A late or down probe, or
    one without a steady request, has no SLO verdict: its figures measure the client, or
    nothing."""
    if figures.down:
        return DOWN, []
    if figures.late:
        return LATE, []
    if not figures.requests:   # nothing measured: no verdict (a low open-loop rate, a short
        return FAILED, []      # steady window), and not a reason to search lower
    broken = [s.metric for s in slos if not s.holds(figures.metrics.get(s.metric, math.nan))]
    return (FAIL, broken) if broken else (PASS, [])


# ---------------------------------------------------------------------------------------------
# Comparing searches

@dataclass
class Ratio:
    """One endpoint against the baseline: goodput ratio per repetition and their summary."""

    endpoint: str
    baseline: str
    per_repetition: dict[int, float]            # repetition -> endpoint / baseline goodput
    left_out: dict[int, str] = field(default_factory=dict)   # repetition -> why no ratio
    ratio: float = math.nan                     # geometric mean of the ratios
    ci_low: float = math.nan                    # 95% t interval (log scale, exponentiated)
    ci_high: float = math.nan
    n: int = 0
    method: str = ""


def ratio_summary(ratios: list[float]) -> tuple[float, float, float]:
    """Geometric mean of paired ratios and its 95% Student-t interval over them (computed on
    log ratios, so a ratio and its inverse get mirror-image intervals); NaN bounds for n < 2."""
    logs = np.log(np.asarray(ratios, dtype=float))
    if not len(logs):
        return math.nan, math.nan, math.nan
    mean = float(logs.mean())
    if len(logs) < 2:
        return math.exp(mean), math.nan, math.nan
    half = float(t_half_width(len(logs), logs.std(ddof=1)))
    return math.exp(mean), math.exp(mean - half), math.exp(mean + half)


def compare(searches: list[dict[str, Any]], endpoints: list[str], baseline: str) -> list[Ratio]:
    """Every other endpoint's goodput over the baseline's, paired by repetition. ``searches``:
    capacity.json's "searches" (endpoint, repetition, status, goodput_per_s)."""
    by = {(s["endpoint"], int(s["repetition"])): s for s in searches}
    reps = sorted({int(s["repetition"]) for s in searches})
    out = []
    for ep in endpoints:
        if ep == baseline:
            continue
        r = Ratio(ep, baseline, {})
        for rep in reps:
            a, b = by.get((baseline, rep)), by.get((ep, rep))
            why = _no_ratio(a, baseline) or _no_ratio(b, ep)
            if why:
                r.left_out[rep] = why
                continue
            r.per_repetition[rep] = float(b["goodput_per_s"]) / float(a["goodput_per_s"])
        r.n = len(r.per_repetition)
        r.ratio, r.ci_low, r.ci_high = ratio_summary(list(r.per_repetition.values()))
        r.method = ("geometric mean of the per-repetition goodput ratios; 95% CI: Student t "
                    "over their logs" if r.n >= 2 else
                    "one repetition: no confidence interval" if r.n == 1 else
                    "no repetition with a capacity on both endpoints")
        out.append(r)
    return out


def _no_ratio(search: dict[str, Any] | None, endpoint: str) -> str:
    if search is None:
        return f"{endpoint}: no search"
    goodput = search.get("goodput_per_s")
    if search.get("capacity") is None:
        return f"{endpoint}: no capacity ({search.get('reason') or search.get('status')})"
    if not isinstance(goodput, (int, float)) or not goodput == goodput or goodput <= 0:
        return f"{endpoint}: capacity with no goodput (no level met the SLOs)"
    return ""


def _pct(ratio: float) -> str:
    return f"{(ratio - 1) * 100:+.0f}%"


def headline(r: Ratio, slos: Iterable[Slo]) -> str:
    """'B sustains 18% more goodput than A at p99 TTFT <= 500 ms (95% CI +12% to +24%, 5
    repetitions)'."""
    where = slos_words(slos)
    if r.n == 0:
        return (f"{r.endpoint} vs {r.baseline}: no comparison at {where}: no repetition has a "
                "capacity on both")
    change = (r.ratio - 1) * 100
    how = "more" if change >= 0 else "less"
    text = f"{r.endpoint} sustains {abs(change):.0f}% {how} goodput than {r.baseline} at {where}"
    if r.n >= 2:
        return text + f" (95% CI {_pct(r.ci_low)} to {_pct(r.ci_high)}, {r.n} repetitions)"
    return text + " (1 repetition: no confidence interval)"


def endpoint_summary(searches: list[dict[str, Any]], endpoint: str) -> dict[str, Any]:
    """One endpoint's capacities and goodputs over its repetitions: mean and 95% t interval."""
    found = [s for s in searches if s["endpoint"] == endpoint and s.get("capacity") is not None]
    out: dict[str, Any] = {"endpoint": endpoint, "searches": sum(
        s["endpoint"] == endpoint for s in searches), "with_capacity": len(found)}
    for key in ("capacity", "goodput_per_s"):
        values = np.asarray([float(s[key]) for s in found
                             if isinstance(s.get(key), (int, float))], dtype=float)
        mean = float(values.mean()) if len(values) else math.nan
        half = float(t_half_width(len(values), values.std(ddof=1))) if len(values) >= 2 \
            else math.nan
        out[key] = {"mean": mean, "ci_low": mean - half, "ci_high": mean + half,
                    "n": int(len(values))}
    return out


def summarise(data: dict[str, Any]) -> dict[str, Any]:
    """capacity.json's "comparison": per endpoint summaries, ratios, headlines."""
    slos = tuple(Slo(s["metric"], float(s["limit"])) for s in data["slos"])
    endpoints = list(data["endpoints"])
    ratios = compare(data["searches"], endpoints, endpoints[0])
    return {"baseline": endpoints[0],
            "endpoints": [endpoint_summary(data["searches"], ep) for ep in endpoints],
            "ratios": [asdict(r) for r in ratios],
            "headlines": [headline(r, slos) for r in ratios]}


# ---------------------------------------------------------------------------------------------
# The report's side

def campaign_dirs(run_dirs: Iterable[Path]) -> list[Path]:
    """The campaign folders of run directories laid out as <campaign>/runs/<run>."""
    out: list[Path] = []
    for d in run_dirs:
        d = Path(d).resolve()
        if d.parent.name == "runs" and d.parent.parent not in out:
            out.append(d.parent.parent)
    return out


def read_capacity(run_dirs: Iterable[Path]) -> dict[str, Any] | None:
    """capacity.json of the capacity campaign the runs came from (None: not a capacity
    campaign). Runs of several capacity campaigns cannot be shown as one: AnalysisError."""
    found = [c / CAPACITY_FILE for c in campaign_dirs(run_dirs) if (c / CAPACITY_FILE).is_file()]
    if not found:
        return None
    if len(found) > 1:
        raise AnalysisError(f"these runs come from {len(found)} capacity campaigns "
                            f"({', '.join(str(p.parent) for p in found)}); build one report per "
                            "campaign (pass its runs/ folder)")
    try:
        data = json.loads(found[0].read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise AnalysisError(f"{found[0]}: unreadable ({exc}); rebuild the report without it "
                            "by passing run directories outside that campaign") from None
    if not isinstance(data, dict) or data.get("capacity_schema") != CAPACITY_SCHEMA:
        raise AnalysisError(f"{found[0]}: not a capacity file of this version (capacity_schema "
                            f"{CAPACITY_SCHEMA} expected)")
    data["path"] = str(found[0])
    data["comparison"] = summarise(data)    # recomputed: the report's own arithmetic
    return data


def search_rows(data: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per search (endpoint, repetition): the report's and summary.json's table."""
    return [{"endpoint": x["endpoint"], "repetition": x["repetition"], "status": x["status"],
             "capacity": x["capacity"], "low": x["low"], "high": x["high"],
             "goodput_per_s": x["goodput_per_s"], "probes": x["probes"], "reason": x["reason"]}
            for x in data["searches"]]


def probe_rows(data: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per probe, its SLO metrics as columns."""
    names = [s["metric"] for s in data["slos"]]
    return [{"endpoint": p["endpoint"], "repetition": p["repetition"], "probe": p["number"],
             "level": p["level"], **{n: p["metrics"].get(n, math.nan) for n in names},
             "verdict": p["verdict"], "goodput_per_s": p["goodput_per_s"],
             "run_dir": p["run_dir"], "reason": p["reason"]} for p in data["probes"]]
