"""The report: sections rendered to HTML (plots inline) and Markdown, tables to CSV/JSON.

    write_report(result, out_dir) -> {"html": ..., "md": ..., "summary": ..., "tables": [...]}
    summary_text(result) -> str    (one screen for the terminal)

Every string that came from a server, a config or a file is escaped (html.escape) in HTML and
in Markdown, so a model called ``<script>`` is shown, never run.
"""

from __future__ import annotations

import base64
import html
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from core import secrets
from core.records import ERROR_CATEGORIES, FIELD_DEFINITIONS

from .build import count_runs
from .definitions import METRICS, OTHER_DEFINITIONS
from .errors import WARNING_CODES
from .outages import MIN_DOWN_S

NA = "n/a"


# ---------------------------------------------------------------------------------------------
# Building blocks

@dataclass
class Table:
    name: str                       # file stem under tables/
    title: str
    display: pd.DataFrame           # strings, as shown
    raw: pd.DataFrame | None = None  # numbers, written to tables/<name>.csv/.json
    note: str = ""
    write: bool = True              # False: shown only (its numbers are in another table's file)


@dataclass
class Section:
    id: str
    title: str
    blocks: list[tuple[str, Any]] = field(default_factory=list)   # (kind, payload)

    def p(self, text: str) -> "Section":
        self.blocks.append(("p", text))
        return self

    def items(self, items: list[str]) -> "Section":
        self.blocks.append(("list", items))
        return self

    def table(self, t: Table) -> "Section":
        self.blocks.append(("table", t))
        return self

    def figure(self, fig_id: str, caption: str, png: bytes) -> "Section":
        self.blocks.append(("figure", (fig_id, caption, png)))
        return self

    def defs(self, pairs: list[tuple[str, str]]) -> "Section":
        self.blocks.append(("defs", pairs))
        return self


def _isnan(x: Any) -> bool:
    return x is None or (isinstance(x, (float, np.floating)) and math.isnan(x))


def fmt(x: Any, decimals: int = 1) -> str:
    if _isnan(x):
        return NA
    if isinstance(x, (int, np.integer)):
        return f"{int(x):,}"
    return f"{float(x):,.{decimals}f}"


def fmt_ci(mean: float, lo: float, hi: float, decimals: int = 1) -> str:
    """'98.2 ± 3.1' (mean and 95% CI half-width over runs); just the mean with one run."""
    if _isnan(mean):
        return NA
    if _isnan(lo) or _isnan(hi):
        return fmt(mean, decimals)
    return f"{fmt(mean, decimals)} ± {fmt((hi - lo) / 2, decimals)}"


def fmt_pct_change(x: float) -> str:
    return NA if _isnan(x) else f"{x:+.1f}%"


def fmt_level(x: float) -> str:
    return NA if _isnan(x) else f"{x:g}"


def _json_safe(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {str(k): _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_json_safe(v) for v in obj]
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        return None if math.isnan(obj) or math.isinf(obj) else float(obj)
    if isinstance(obj, (np.bool_,)):
        return bool(obj)
    if isinstance(obj, Path):
        return str(obj)
    return obj


def _records(df: pd.DataFrame) -> list[dict]:
    return _json_safe(df.astype(object).where(df.notna(), None).to_dict(orient="records"))


class _Lookup:
    """Fast access to combined values: (endpoint, level, metric) -> row."""

    def __init__(self, result):
        self.result = result
        c = result.combined
        self.d = {(r.endpoint, float(r.level), r.metric): r for r in c.itertuples(index=False)}

    def get(self, ep, level, metric):
        return self.d.get((ep, float(level), metric))

    def cell(self, ep, level, metric) -> str:
        r = self.get(ep, level, metric)
        if r is None:
            return NA
        return fmt_ci(r.mean, r.ci_low, r.ci_high, METRICS[metric].decimals)

    def has(self, metric) -> bool:
        return any(k[2] == metric and not _isnan(v.mean) for k, v in self.d.items())

    def raw(self, metrics: list[str]) -> pd.DataFrame:
        c = self.result.combined
        return c[c["metric"].isin(metrics)].reset_index(drop=True)


def _ep_name(result, ep: str) -> str:
    model = result.models.get(ep)
    return f"{ep} ({model})" if model and model != ep else ep


def _metric_header(key: str) -> str:
    m = METRICS[key]
    return f"{m.label} ({m.unit})" if m.unit else m.label


def _by_level_table(result, lk: _Lookup, name: str, title: str, metrics: list[str],
                    note: str = "") -> Table | None:
    """Rows endpoint x level, one column per metric."""
    metrics = [m for m in metrics if lk.has(m)]
    if not metrics:
        return None
    rows = []
    for ep in result.endpoints:
        for level in result.levels:
            if not any(lk.get(ep, level, m) is not None for m in metrics + ["requests"]):
                continue
            row = {"endpoint": _ep_name(result, ep), result.level_name: fmt_level(level)}
            for m in metrics:
                row[_metric_header(m)] = lk.cell(ep, level, m)
            rows.append(row)
    return Table(name, title, pd.DataFrame(rows), lk.raw(metrics), note)


def _level_columns_table(result, lk: _Lookup, name: str, title: str, metric: str,
                         extra: list[tuple[str, str]] = ()) -> Table | None:
    """Study shape: rows = level, one column per endpoint (plus extra metrics per endpoint)."""
    if not lk.has(metric):
        return None
    rows = []
    for level in result.levels:
        row = {result.level_name: fmt_level(level)}
        for ep in result.endpoints:
            row[_ep_name(result, ep)] = lk.cell(ep, level, metric)
        for key, label in extra:
            if lk.has(key):
                for ep in result.endpoints:
                    row[f"{_ep_name(result, ep)} {label}"] = lk.cell(ep, level, key)
        rows.append(row)
    return Table(name, title, pd.DataFrame(rows), lk.raw([metric] + [k for k, _ in extra]))


def _cmp_lookup(result) -> dict[tuple[float, str, str], Any]:
    c = result.comparisons
    return {(float(r.level), r.metric, r.endpoint): r for r in c.itertuples(index=False)}


# ---------------------------------------------------------------------------------------------
# Sections

AT_ROWS = [("req_per_s", "throughput (req/s)"),
           ("ttft_mean", "time to first token, mean (ms)"),
           ("ttft_p50", "time to first token, p50 (ms)"),
           ("e2e_mean", "mean response time (ms)"),
           ("output_tok_per_s", "output tokens/s"),
           ("tpot_p50", "TPOT p50 (ms)"),
           ("error_rate", "error rate (%)"),
           ("gpu_util_mean", "GPU utilization (%)"),
           ("cpu_cores_mean", "server process CPU (cores)")]


def at_table(result, lk: _Lookup, cmps: dict) -> Table | None:
    level = result.at_level
    if level is None:
        return None
    rows, raw = [], []
    others = [e for e in result.endpoints if e != result.baseline]
    for key, label in AT_ROWS:
        if not any(lk.get(ep, level, key) is not None for ep in result.endpoints):
            continue
        row = {"metric": label}
        raw_row: dict[str, Any] = {"metric": key}
        for ep in result.endpoints:
            row[_ep_name(result, ep)] = lk.cell(ep, level, key)
            r = lk.get(ep, level, key)
            raw_row[f"{ep}_mean"] = r.mean if r is not None else math.nan
            raw_row[f"{ep}_ci_low"] = r.ci_low if r is not None else math.nan
            raw_row[f"{ep}_ci_high"] = r.ci_high if r is not None else math.nan
            raw_row[f"{ep}_n"] = r.n if r is not None else 0
        for ep in others:
            c = cmps.get((float(level), key, ep))
            suffix = f" {ep} vs {result.baseline}" if len(others) > 1 else ""
            if c is None:
                row[f"change{suffix}"] = NA
                row[f"real?{suffix}"] = NA
                continue
            change = fmt_pct_change(c.change_pct)
            if not _isnan(c.ci_low_pct):
                change += f" [{c.ci_low_pct:+.0f}, {c.ci_high_pct:+.0f}]"
            row[f"change{suffix}"] = change
            row[f"real?{suffix}"] = c.real
            raw_row[f"{ep}_change_pct"] = c.change_pct
            raw_row[f"{ep}_change_ci_low_pct"] = c.ci_low_pct
            raw_row[f"{ep}_change_ci_high_pct"] = c.ci_high_pct
            raw_row[f"{ep}_p_value"] = c.p_value
            raw_row[f"{ep}_real"] = c.real
        rows.append(row)
        raw.append(raw_row)
    if not rows:
        return None
    n_runs = {ep: count_runs(result.per_run[(result.per_run["endpoint"] == ep) &
                                            (result.per_run["level"] == level)])
              for ep in result.endpoints}
    note = ("Mean over runs ± 95% CI half-width (runs: "
            + ", ".join(f"{ep} {n}" for ep, n in n_runs.items())
            + f"). change = B / {result.baseline} - 1 with its 95% CI in brackets; real? = the "
            "difference passes the test in Definitions (yes), does not (no: not distinguishable "
            "from noise), or cannot be judged (n/a).")
    return Table(f"at_{fmt_level(level)}", f"At {fmt_level(level)} concurrent requests"
                 if result.level_name == "users" else f"At {fmt_level(level)} req/s",
                 pd.DataFrame(rows), pd.DataFrame(raw), note)


def gpu_memory_table(result, lk: _Lookup) -> tuple[Table | None, str]:
    level = result.at_level
    metrics = [m for m in ("gpu_mem_used_mean", "gpu_mem_used_max", "gpu_mem_total",
                           "kv_cache_mean", "rss_mean", "rss_max") if lk.has(m)]
    if not metrics or level is None:
        return None, ""
    rows = []
    for ep in result.endpoints:
        row = {"endpoint": _ep_name(result, ep)}
        for m in metrics:
            if m in ("gpu_mem_used_max", "rss_max", "gpu_mem_total"):
                # the largest over every stage of every run
                vals = [v.mean for k, v in lk.d.items() if k[0] == ep and k[2] == m]
                vals = [v for v in vals if not _isnan(v)]
                row[_metric_header(m) + (", all stages" if m != "gpu_mem_total" else "")] = (
                    fmt(max(vals), 2) if vals else NA)
            else:
                row[_metric_header(m) + f" at {fmt_level(level)} {result.level_name}"] = \
                    lk.cell(ep, level, m)
        rows.append(row)
    sentence = ""
    key = "gpu_mem_used_mean" if lk.has("gpu_mem_used_mean") else (
        "rss_mean" if lk.has("rss_mean") else None)
    if key and len(result.endpoints) > 1:
        a = lk.get(result.baseline, level, key)
        parts = []
        for ep in result.endpoints[1:]:
            b = lk.get(ep, level, key)
            if a is None or b is None or _isnan(a.mean) or _isnan(b.mean) or a.mean == 0:
                continue
            diff = b.mean - a.mean
            parts.append(f"{ep} uses {abs(diff):.2f} GiB ({abs(diff) / a.mean * 100:.1f}%) "
                         f"{'less' if diff < 0 else 'more'} "
                         f"{'GPU memory' if key.startswith('gpu') else 'process memory (RSS)'} "
                         f"than {result.baseline} at {fmt_level(level)} {result.level_name}")
        sentence = "; ".join(parts) + "." if parts else ""
    raw = lk.raw(metrics)
    return Table("gpu_memory", "GPU memory", pd.DataFrame(rows), raw), sentence


def errors_table(result) -> Table | None:
    e = result.errors
    if e is None or not len(e):
        return None
    keys = ["endpoint", "level"]
    pr = result.per_run
    total = pr.groupby(keys)["requests"].sum()
    # per time: the steady windows (all runs together) in which the endpoint had requests
    active = pr[pr["requests"] > 0]
    seconds = active.groupby(keys)["duration"].sum(min_count=1)
    down = active.groupby(keys)["down_s"].sum(min_count=1)
    g = e.groupby(["endpoint", "level", "error_category"], dropna=False)
    agg = g["count"].sum().reset_index()
    if "example" in e:
        ex = e.dropna(subset=["example"]).groupby(["endpoint", "level", "error_category"])[
            "example"].first()
        agg = agg.merge(ex.reset_index(), on=["endpoint", "level", "error_category"], how="left")
    else:
        agg["example"] = ""
    agg["share_pct"] = [r.count / n * 100 if n > 0 else math.nan
                        for r, n in ((r, total.get((r.endpoint, r.level), 0))
                                     for r in agg.itertuples(index=False))]
    agg["steady_s"] = [seconds.get((r.endpoint, r.level), math.nan)
                       for r in agg.itertuples(index=False)]
    agg["failures_per_s"] = agg["count"] / agg["steady_s"].where(agg["steady_s"] > 0)
    agg["down_s"] = [down.get((r.endpoint, r.level), math.nan) for r in agg.itertuples(index=False)]
    agg["down_share"] = agg["down_s"] / agg["steady_s"].where(agg["steady_s"] > 0) * 100.0
    rows = []
    for r in agg.itertuples(index=False):
        rows.append({"endpoint": _ep_name(result, r.endpoint),
                     result.level_name: fmt_level(r.level), "category": r.error_category,
                     "failed requests": fmt(int(r.count)),
                     "% of steady requests": fmt(r.share_pct, 2),
                     _metric_header("failures_per_s"): fmt(r.failures_per_s,
                                                           METRICS["failures_per_s"].decimals),
                     _metric_header("down_s"): fmt(r.down_s, METRICS["down_s"].decimals),
                     _metric_header("down_share"): fmt(r.down_share,
                                                       METRICS["down_share"].decimals),
                     "example message": "" if _isnan(r.example) else str(r.example)[:200]})
    return Table("errors", "Errors by category", pd.DataFrame(rows), agg,
                 "Failed steady-state requests, all runs together. % of steady requests is the "
                 "per-request error rate; failures per second divides the same failures by the "
                 "steady windows' seconds, and endpoint down (s, share of those seconds) is the "
                 f"time the endpoint failed every request for at least {MIN_DOWN_S:g} s (for the "
                 "endpoint and level, all categories; see down window in Definitions): clients "
                 "retrying a down endpoint make a short outage read as a high error rate. "
                 "Categories: core.records.ERROR_CATEGORIES (see Definitions).")


def down_tables(result) -> list[Table]:
    """One 'Endpoint down' table per run with down windows (analysis.outages)."""
    dw = result.down_windows
    if dw is None or not len(dw):
        return []
    tables = []
    for i, (name, g) in enumerate(dw.groupby("run", sort=False)):
        rows = [{"endpoint": _ep_name(result, r.endpoint),
                 "start (s into the run)": fmt(r.start_s, 1),
                 "duration (s)": fmt(r.duration_s, 1), "failures": fmt(int(r.failures)),
                 "dominant error category": str(r.error_category)}
                for r in g.itertuples(index=False)]
        tables.append(Table(f"endpoint_down-{i + 1}", f"Endpoint down: run {name}",
                            pd.DataFrame(rows), g.reset_index(drop=True),
                            f"Spans of at least {MIN_DOWN_S:g} s in which the endpoint's "
                            "requests ended and none succeeded (down window in Definitions); "
                            "start is seconds since the run's start; every phase counts, not "
                            "only steady windows. Numbers: tables/endpoint_down.csv.",
                            write=False))
    return tables


def comparisons_table(result) -> Table | None:
    c = result.comparisons
    if not len(c):
        return None
    rows = []
    for r in c.itertuples(index=False):
        md = METRICS[r.metric]
        rows.append({result.level_name: fmt_level(r.level), "metric": md.label,
                     result.baseline: fmt(r.value_baseline, md.decimals) + (f" {md.unit}" if md.unit else ""),
                     "endpoint": r.endpoint, "value": fmt(r.value, md.decimals)
                     + (f" {md.unit}" if md.unit else ""),
                     "change": fmt_pct_change(r.change_pct),
                     "95% CI of change": NA if _isnan(r.ci_low_pct) else
                     f"{r.ci_low_pct:+.1f}% to {r.ci_high_pct:+.1f}%",
                     "p": NA if _isnan(r.p_value) else f"{r.p_value:.3g}",
                     "verdict": r.verdict})
    return Table("comparisons", "Comparison, stage by stage: is each difference real?",
                 pd.DataFrame(rows), c,
                 "p50 rows: per-request test (Mann-Whitney U + hierarchical bootstrap of the "
                 "ratio of medians); other rows: Welch t-test over per-repetition values. "
                 "Values are medians of pooled requests (p50 rows) or means over runs.")


def per_run_table(result) -> Table:
    pr = result.per_run
    cols = ["run", "repetition", "endpoint", "level", "duration", "requests", "completed",
            "req_per_s", "output_tok_per_s", "ttft_p50", "e2e_mean", "error_rate",
            "failures_per_s", "down_share", "gpu_util_mean", "cpu_cores_mean"]
    per_time = ("failures_per_s", "down_share")      # shown when there is something to show
    cols = [c for c in cols if c in pr and (c not in METRICS or c == "req_per_s" or (
        (pr[c] > 0).any() if c in per_time else pr[c].notna().any()))]
    rows = []
    for r in pr.sort_values(["endpoint", "level", "repetition", "campaign", "run_id"]
                            ).itertuples(index=False):
        row = {}
        for c in cols:
            v = getattr(r, c)
            if c in METRICS:
                row[_metric_header(c)] = fmt(v, METRICS[c].decimals)
            elif c == "level":
                row[result.level_name] = fmt_level(v)
            elif c == "duration":
                row["steady window (s)"] = fmt(v, 1)
            else:
                row[c] = str(v)
        rows.append(row)
    return Table("per_run", "Per-run figures", pd.DataFrame(rows), pr,
                 "One row per run, endpoint and stage (tables/per_run.csv has every figure).")


def runs_table(result) -> Table:
    rows = []
    for r in result.runs:
        rows.append({"run": r.name, "campaign": r.campaign, "endpoints": ", ".join(r.endpoints),
                     "repetition": str(r.repetition), "status": r.status,
                     "records": fmt(r.records),
                     "records_written": fmt(r.records_written) if isinstance(r.records_written, int) else NA,
                     "Locust CHAT requests": fmt(r.locust_chat_requests) if isinstance(r.locust_chat_requests, int) else NA,
                     "load generator max CPU %": fmt(r.max_cpu_percent, 0)
                     if isinstance(r.max_cpu_percent, (int, float)) else NA,
                     "saturated": "yes" if r.saturated else "no",
                     "metrics": r.metrics_source})
    raw = pd.DataFrame([r.__dict__ for r in result.runs])
    if len(raw):
        raw["endpoints"] = raw["endpoints"].map(lambda x: ",".join(x))
    return Table("runs", "Runs", pd.DataFrame(rows), raw)


def build_sections(result, figures: list[tuple[str, str, bytes]]) -> list[Section]:
    lk = _Lookup(result)
    cmps = _cmp_lookup(result)
    figs = {f[0]: f for f in figures}
    secs: list[Section] = []
    ln = result.level_name

    s = Section("summary", "Summary")
    for note in result.options.notes:
        s.p(f"Note: {note}")
    eps = ", ".join(_ep_name(result, ep) for ep in result.endpoints)
    s.p(f"{len(result.runs)} run(s); endpoints {eps}; baseline {result.baseline}; "
        f"{len(result.levels)} level(s) of {ln}: "
        + ", ".join(fmt_level(x) for x in result.levels) + ".")
    if result.slos:
        s.p("SLOs for goodput: " + ", ".join(f"{k} <= {v:g}" for k, v in result.slos.items()) + ".")
    else:
        s.p("No SLOs given (--slo): goodput equals throughput.")
    if result.at_level is not None:
        lines = []
        for key in ("req_per_s", "ttft_p50", "e2e_p50", "tpot_p50", "output_tok_per_s"):
            for ep in result.endpoints[1:]:
                c = cmps.get((float(result.at_level), key, ep))
                if c is not None:
                    lines.append(f"At {fmt_level(result.at_level)} {ln}: {c.verdict}.")
        if lines:
            s.items(lines)
    if result.at_level is not None and abs(result.at_level - result.options.at) > 1e-9:
        s.p(f"--at {result.options.at:g} is not a level of these runs; the nearest, "
            f"{fmt_level(result.at_level)}, is used.")
    secs.append(s)

    s = Section("warnings", f"Warnings ({len(result.warnings)})")
    if result.warnings:
        s.items([w.text() for w in result.warnings])
    else:
        s.p("None: no saturated load generator, no chunk-counted tokens, no metric gaps, no "
            "config or record-count mismatch, no empty stage.")
    secs.append(s)

    s = Section("at", "At N concurrent requests")
    t = at_table(result, lk, cmps)
    if t is not None:
        s.title = t.title
        s.table(t)
    else:
        s.p("No level to show.")
    secs.append(s)

    s = Section("gpu-utilization", "GPU utilization by concurrency")
    t = _level_columns_table(result, lk, "gpu_utilization", "GPU utilization by concurrency (%)",
                             "gpu_util_mean", [("sm_active_mean", "SM activity %"),
                                               ("kv_cache_mean", "KV-cache %")])
    if t is not None:
        t.note = ("NVML utilization is the share of time any kernel ran: it reads high even at "
                  "batch size 1 and says little about headroom; SM activity and KV-cache usage "
                  "say more.")
        s.table(t)
    else:
        s.p("No GPU utilization samples in these runs (CPU-served models, or no exporter).")
    t = _level_columns_table(result, lk, "process_cpu", "Server process CPU by concurrency (cores)",
                             "cpu_cores_mean", [("kv_cache_mean", "KV-cache %")])
    if t is not None:
        s.table(t)
    if "utilization" in figs:
        s.figure(*figs["utilization"])
    secs.append(s)

    s = Section("gpu-memory", "GPU memory")
    t, sentence = gpu_memory_table(result, lk)
    if t is not None:
        if not lk.has("gpu_mem_used_mean"):
            t.title = "Memory (no GPU samples: server process RSS)"
        s.table(t)
        if sentence:
            s.p(sentence)
        s.p("vLLM pre-allocates most GPU memory for its KV cache (--gpu-memory-utilization, 0.9 "
            "by default): memory in use measures that setting as much as the model. Compare "
            "KV-cache usage, or run both with the same setting.")
    else:
        s.p("No GPU memory or process memory samples in these runs.")
    secs.append(s)

    s = Section("latency", "Latency by concurrency")
    for fid in ("latency", "distribution"):
        if fid in figs:
            s.figure(*figs[fid])
    t = _by_level_table(result, lk, "latency", "Latency by concurrency",
                        ["ttft_mean", "ttft_p50", "ttft_p90", "ttft_p99", "e2e_mean", "e2e_p50",
                         "e2e_p90", "e2e_p99"])
    if t is not None:
        s.table(t)
    secs.append(s)

    s = Section("throughput", "Throughput by concurrency")
    if "throughput" in figs:
        s.figure(*figs["throughput"])
    t = _by_level_table(result, lk, "throughput", "Throughput by concurrency",
                        ["req_per_s", "goodput_per_s", "goodput_pct", "output_tok_per_s",
                         "error_rate", "requests", "send_lag_p99"])
    if t is not None:
        s.table(t)
    secs.append(s)

    s = Section("tokens", "Tokens by concurrency")
    t = _by_level_table(result, lk, "tokens", "Token-level figures by concurrency",
                        ["output_tok_per_s", "output_tokens_mean", "reasoning_tokens_mean",
                         "answer_tokens_mean", "tpot_p50", "tpot_p99", "itl_p50", "itl_p99",
                         "itl_max", "ttfat_p50", "ttfat_p99", "energy_per_token"])
    if t is not None:
        t.note = ("Requests/s mean little without the tokens behind them: a model that stops "
                  "earlier 'wins'. Compare output tokens per request and TPOT.")
        s.table(t)
    secs.append(s)

    s = Section("server", "Server-side view (vLLM metrics)")
    t = _by_level_table(result, lk, "server", "vLLM's own figures beside the client's",
                        ["ttft_mean", "vllm_ttft_mean", "ttft_p50", "vllm_ttft_p50",
                         "vllm_itl_mean", "vllm_e2e_mean", "server_gen_tok_per_s", "running_mean",
                         "running_max", "waiting_mean", "waiting_max", "kv_cache_mean",
                         "kv_cache_max", "power_mean", "sm_active_p95", "gpu_util_p95"])
    if t is not None and any(lk.has(m) for m in ("vllm_ttft_mean", "running_mean",
                                                   "kv_cache_mean", "power_mean")):
        t.note = ("vLLM's TTFT runs from the request's arrival in the server to its first "
                  "token; the client's adds the network and the client. A large gap between "
                  "them points at the client or the network.")
        s.table(t)
    else:
        s.p("No server metric samples in these runs.")
    secs.append(s)

    s = Section("errors", "Errors")
    t = errors_table(result)
    if t is not None:
        s.table(t)
    else:
        s.p("No failed steady-state requests.")
    downs = down_tables(result)
    for t in downs:
        s.table(t)
    if not downs:
        s.p(f"No endpoint was down (failing every request for at least {MIN_DOWN_S:g} s) in "
            "any run.")
    secs.append(s)

    s = Section("comparison", "Comparison, stage by stage")
    t = comparisons_table(result)
    if t is not None:
        s.table(t)
    else:
        s.p("One endpoint only: nothing to compare.")
    secs.append(s)

    s = Section("timeseries", "Time series")
    any_ts = False
    for fid, cap, png in figures:
        if fid.startswith("timeseries-"):
            s.figure(fid, cap, png)
            any_ts = True
    if not any_ts:
        s.p("No records to plot.")
    secs.append(s)

    s = Section("per-run", "Per-run figures")
    s.table(per_run_table(result))
    secs.append(s)

    secs.append(setup_section(result))
    secs.append(definitions_section(result))
    return secs


def setup_section(result) -> Section:
    s = Section("setup", "Test setup")
    st = result.setup
    rows = []
    for ep, cfg in st["endpoints"].items():
        req = cfg.get("request") or {}
        rows.append({"endpoint": ep, "model": str(cfg.get("model") or ""),
                     "base_url": str(cfg.get("base_url") or ""),
                     "extra_body": json.dumps(cfg.get("extra_body") or {}, sort_keys=True),
                     "max_tokens": str(req.get("max_tokens", "")),
                     "temperature": str(req.get("temperature", "")),
                     "ignore_eos": str(req.get("ignore_eos", "")),
                     "metrics": ", ".join(x for x in (cfg.get("metrics_url"), cfg.get("exporter_url")) if x)})
    s.table(Table("setup_endpoints", "Endpoints and models", pd.DataFrame(rows)))
    load = st.get("load") or {}
    s.table(Table("setup_load", "Load settings (first run)",
                  pd.DataFrame([{"setting": k, "value": json.dumps(v) if isinstance(v, (list, dict))
                                 else str(v)} for k, v in load.items()])))
    hosts = "; ".join(f"{h.get('hostname', '?')} ({h.get('platform', '?')}, "
                      f"{h.get('cpu_count', '?')} CPUs)" for h in st.get("hosts") or [])
    versions = "; ".join(", ".join(f"{k} {v}" for k, v in ver.items())
                         for ver in st.get("versions") or [])
    s.p(f"Load generator host(s): {hosts or NA}. Versions: {versions or NA}. "
        f"Campaign(s): {', '.join(st.get('campaigns') or []) or NA}. Repetitions: "
        f"{', '.join(str(r) for r in st.get('repetitions') or [])}.")
    gpu_total = [(ep, v.mean) for (ep, _, m), v in _Lookup(result).d.items()
                 if m == "gpu_mem_total" and not _isnan(v.mean)]
    if gpu_total:
        seen = {}
        for ep, v in gpu_total:
            seen.setdefault(ep, v)
        s.p("GPU memory total per endpoint: " + ", ".join(f"{ep} {v:.1f} GiB"
                                                          for ep, v in seen.items()) + ".")
    s.table(runs_table(result))
    s.p("Inputs: " + ", ".join(result.inputs))
    return s


def definitions_section(result) -> Section:
    s = Section("definitions", "Definitions")
    s.p("Computed figures (analysis.definitions):")
    s.defs([(f"{m.label}" + (f" ({m.unit})" if m.unit else "") + f" [{m.key}]", m.definition)
            for m in METRICS.values()])
    s.p("Method:")
    s.defs(list(OTHER_DEFINITIONS.items()))
    s.p("Per-request record fields (core.records.FIELD_DEFINITIONS):")
    s.defs(list(FIELD_DEFINITIONS.items()))
    s.p("Error categories (core.records.ERROR_CATEGORIES):")
    s.defs(list(ERROR_CATEGORIES.items()))
    s.p("Warnings:")
    s.defs(list(WARNING_CODES.items()))
    return s


# ---------------------------------------------------------------------------------------------
# Rendering

def md_escape(text: Any) -> str:
    """Markdown cell/paragraph text: no raw HTML (& and < escaped), no table breaks."""
    t = str(text).replace("&", "&amp;").replace("<", "&lt;")
    return " ".join(t.replace("|", "\\|").split()) if "\n" in t or "\r" in t else t.replace("|", "\\|")


def md_table(df: pd.DataFrame) -> str:
    if df is None or not len(df.columns):
        return ""
    cols = [md_escape(c) for c in df.columns]
    lines = ["| " + " | ".join(cols) + " |", "| " + " | ".join("---" for _ in cols) + " |"]
    for row in df.itertuples(index=False):
        lines.append("| " + " | ".join(md_escape(v) for v in row) + " |")
    return "\n".join(lines)


def render_markdown(result, sections: list[Section]) -> str:
    out = [f"# {md_escape(_title(result))}", ""]
    for s in sections:
        out += [f"## {md_escape(s.title)}", ""]
        for kind, payload in s.blocks:
            if kind == "p":
                out += [md_escape(payload), ""]
            elif kind == "list":
                out += [f"- {md_escape(x)}" for x in payload] + [""]
            elif kind == "table":
                if payload.title and payload.title != s.title:
                    out += [f"### {md_escape(payload.title)}", ""]
                out += [md_table(payload.display), ""]
                if payload.note:
                    out += [f"_{md_escape(payload.note)}_", ""]
            elif kind == "figure":
                fid, caption, _ = payload
                out += [f"![{md_escape(caption)}](report.html#fig-{md_escape(fid)}) "
                        f"(figure in report.html)", ""]
            elif kind == "defs":
                out += [f"- **{md_escape(k)}**: {md_escape(v)}" for k, v in payload] + [""]
    return "\n".join(out).rstrip() + "\n"


_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2em auto;max-width:1200px;
color:#222;padding:0 1em;line-height:1.4}
h1{font-size:1.6em}h2{font-size:1.3em;border-bottom:1px solid #ddd;padding-bottom:.2em;margin-top:2em}
h3{font-size:1.05em}
table{border-collapse:collapse;margin:.5em 0 1em;font-size:.85em}
th,td{border:1px solid #ccc;padding:.25em .5em;text-align:right;vertical-align:top}
th{background:#f3f3f3}td:first-child,th:first-child{text-align:left}
.note{color:#555;font-size:.85em;max-width:60em}
.warn{background:#fff4e5;border:1px solid #f0b36b;padding:.5em 1em}
.ok{background:#eef8ee;border:1px solid #9c9;padding:.5em 1em}
figure{margin:1em 0}figcaption{color:#555;font-size:.85em}img{max-width:100%}
dl{font-size:.85em}dt{font-weight:600;margin-top:.4em}dd{margin-left:1.5em}
nav a{margin-right:.8em;font-size:.9em}
"""


def _title(result) -> str:
    eps = " vs ".join(_ep_name(result, ep) for ep in result.endpoints)
    return f"LLM load test report: {eps}"


def _html_table(t: Table) -> str:
    e = html.escape
    head = "".join(f"<th>{e(str(c))}</th>" for c in t.display.columns)
    body = []
    for row in t.display.itertuples(index=False):
        body.append("<tr>" + "".join(f"<td>{e(str(v))}</td>" for v in row) + "</tr>")
    return (f'<table id="table-{e(t.name)}"><thead><tr>{head}</tr></thead><tbody>'
            + "".join(body) + "</tbody></table>")


def render_html(result, sections: list[Section]) -> str:
    e = html.escape
    parts = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
             f"<title>{e(_title(result))}</title><style>{_CSS}</style></head><body>",
             f"<h1>{e(_title(result))}</h1>",
             "<nav>" + "".join(f'<a href="#{e(s.id)}">{e(s.title)}</a>' for s in sections)
             + "</nav>"]
    for s in sections:
        parts.append(f'<section id="{e(s.id)}"><h2>{e(s.title)}</h2>')
        for kind, payload in s.blocks:
            if kind == "p":
                parts.append(f"<p>{e(payload)}</p>")
            elif kind == "list":
                cls = "warn" if s.id == "warnings" else ""
                parts.append(f'<ul class="{cls}">' + "".join(f"<li>{e(x)}</li>" for x in payload)
                             + "</ul>")
            elif kind == "table":
                if payload.title and payload.title != s.title:
                    parts.append(f"<h3>{e(payload.title)}</h3>")
                parts.append(_html_table(payload))
                if payload.note:
                    parts.append(f'<p class="note">{e(payload.note)}</p>')
            elif kind == "figure":
                fid, caption, png = payload
                b64 = base64.b64encode(png).decode("ascii")
                parts.append(f'<figure id="fig-{e(fid)}"><img alt="{e(caption)}" '
                             f'src="data:image/png;base64,{b64}"><figcaption>{e(caption)}'
                             "</figcaption></figure>")
            elif kind == "defs":
                parts.append("<dl>" + "".join(f"<dt>{e(k)}</dt><dd>{e(v)}</dd>" for k, v in payload)
                             + "</dl>")
        parts.append("</section>")
    parts.append("</body></html>")
    return "\n".join(parts)


def _all_tables(sections: list[Section]) -> list[Table]:
    return [p for s in sections for k, p in s.blocks if k == "table"]


def _write(path: Path, text: str) -> None:
    """Every report file is written here, scrubbed of anything shaped like a credential
    (core.secrets: the second line of defence behind the config's refusal)."""
    path.write_text(secrets.scrub(text), encoding="utf-8")


def write_report(result, out_dir: Path, progress=None) -> dict[str, Any]:
    """Write report.html, report.md, summary.json and tables/ into out_dir."""
    from .plots import all_figures
    out_dir = Path(out_dir)
    (out_dir / "tables").mkdir(parents=True, exist_ok=True)
    if progress:
        progress("drawing figures")
    figures = all_figures(result)
    sections = build_sections(result, figures)
    if progress:
        progress(f"writing {out_dir}")
    written = []
    extra = [Table("combined", "", result.combined)]
    if len(result.down_windows):
        extra.append(Table("endpoint_down", "", result.down_windows))
    for t in [t for t in _all_tables(sections) if t.write] + extra:
        raw = t.raw if t.raw is not None else t.display
        csv_path = out_dir / "tables" / f"{t.name}.csv"
        _write(csv_path, raw.to_csv(index=False))
        _write(out_dir / "tables" / f"{t.name}.json",
               json.dumps(_records(raw), indent=1, allow_nan=False))
        written.append(csv_path)
    html_path = out_dir / "report.html"
    _write(html_path, render_html(result, sections))
    md_path = out_dir / "report.md"
    _write(md_path, render_markdown(result, sections))
    summary_path = out_dir / "summary.json"
    _write(summary_path, json.dumps(summary_dict(result), indent=1, allow_nan=False))
    return {"html": html_path, "md": md_path, "summary": summary_path, "tables": written,
            "figures": [f[0] for f in figures]}


def summary_dict(result) -> dict[str, Any]:
    lk = _Lookup(result)
    at = {}
    if result.at_level is not None:
        cmps = _cmp_lookup(result)
        for key, _ in AT_ROWS:
            entry = {}
            for ep in result.endpoints:
                r = lk.get(ep, result.at_level, key)
                if r is not None:
                    entry[ep] = {"mean": r.mean, "std": r.std, "ci_low": r.ci_low,
                                 "ci_high": r.ci_high, "n": r.n}
                c = cmps.get((float(result.at_level), key, ep))
                if c is not None:
                    entry.setdefault(ep, {})["vs_baseline"] = {
                        "change_pct": c.change_pct, "ci_low_pct": c.ci_low_pct,
                        "ci_high_pct": c.ci_high_pct, "p_value": c.p_value, "real": c.real,
                        "verdict": c.verdict}
            if entry:
                at[key] = entry
    return _json_safe({
        "report_schema": 1, "inputs": result.inputs,
        "runs": [r.__dict__ for r in result.runs], "endpoints": result.endpoints,
        "models": result.models, "baseline": result.baseline, "mode": result.mode,
        "level_name": result.level_name, "levels": result.levels, "at_level": result.at_level,
        "slos": result.slos, "warnings": [w.to_dict() for w in result.warnings], "at": at,
        "down_windows": _records(result.down_windows),
        "combined": _records(result.combined), "comparisons": _records(result.comparisons),
        "setup": result.setup,
        "definitions": {k: m.definition for k, m in METRICS.items()} | OTHER_DEFINITIONS,
    })


def summary_text(result, paths: dict[str, Any] | None = None, width: int = 100) -> str:
    """A one-screen terminal summary: the At-N table, the verdicts, the warnings."""
    lk = _Lookup(result)
    cmps = _cmp_lookup(result)
    lines = [_title(result)]
    lines += [f"Note: {note}" for note in result.options.notes]
    lines.append(f"{len(result.runs)} run(s), {len(result.levels)} level(s) of "
                 f"{result.level_name}: " + ", ".join(fmt_level(x) for x in result.levels))
    if result.at_level is not None:
        lines.append("")
        lines.append(f"At {fmt_level(result.at_level)} {result.level_name} "
                     f"(mean over runs ± 95% CI):")
        eps = result.endpoints
        w0 = 32
        cw = max(16, min(24, (width - w0 - 20) // max(1, len(eps))))
        header = f"  {'metric':<{w0}}" + "".join(f"{ep[:cw - 1]:>{cw}}" for ep in eps)
        if len(eps) > 1:
            header += f"{'change':>10}  real?"
        lines.append(header)
        for key, label in AT_ROWS:
            if not any(lk.get(ep, result.at_level, key) is not None for ep in eps):
                continue
            row = f"  {label[:w0]:<{w0}}" + "".join(
                f"{lk.cell(ep, result.at_level, key)[:cw - 1]:>{cw}}" for ep in eps)
            if len(eps) > 1:
                c = cmps.get((float(result.at_level), key, eps[1]))
                row += (f"{fmt_pct_change(c.change_pct):>10}  {c.real}" if c is not None
                        else f"{NA:>10}  {NA}")
            lines.append(row)
        verdicts = [cmps[(float(result.at_level), k, ep)].verdict
                    for k in ("ttft_p50", "e2e_p50", "req_per_s") for ep in eps[1:]
                    if (float(result.at_level), k, ep) in cmps]
        if verdicts:
            lines.append("")
            lines += [f"  {v}" for v in verdicts]
    lines.append("")
    if result.warnings:
        lines.append(f"Warnings ({len(result.warnings)}):")
        for w in result.warnings[:8]:
            text = w.text()
            lines.append("  " + (text if len(text) <= width - 2 else text[:width - 5] + "..."))
        if len(result.warnings) > 8:
            lines.append(f"  ... and {len(result.warnings) - 8} more in the report")
    else:
        lines.append("Warnings: none")
    if paths:
        lines.append("")
        lines.append(f"Report: {paths.get('html')}")
        lines.append(f"        {paths.get('md')}, {Path(paths.get('summary')).name}, tables/")
    return "\n".join(lines)
