"""From run directories to one result: per-run figures, repetitions combined, endpoints compared.

``analyse(paths, Options()) -> Result`` is a pure function of the run directories (and, with
``--prometheus``, of the Prometheus server's data for the runs' time windows).
"""

from __future__ import annotations

import json
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pandas as pd
from scipy import stats as sps

from core.rundir import LoadGeneratorSummary, Manifest, find_run_dirs

from .compute import (TimeSeries, gap_warnings, metric_figures, parse_slos, request_figures,
                      run_timeseries, stage_windows)
from .definitions import METRICS
from .errors import AnalysisError, NoRecordsError, WarningList
from .health import health_warnings, stage_health
from .outages import MIN_DOWN_S, down_seconds, run_down_windows
from .rundata import RunData, load_run, read_manifest_checked
from .runref import RunRef, run_refs
from .stats import (CI_LEVEL, Comparison, request_compare, seed_for, verdict_words,
                    welch_compare)

# Compared per request (Mann-Whitney + bootstrap of medians): metric key -> record column.
REQUEST_COMPARED = {"ttft_p50": "ttft_s", "e2e_p50": "e2e_s", "tpot_p50": "tpot_s"}
# Compared per run (Welch over repetitions).
RUN_COMPARED = ("req_per_s", "output_tok_per_s", "goodput_per_s", "ttft_mean", "e2e_mean",
                "tpot_mean", "error_rate", "gpu_util_mean", "sm_active_mean", "gpu_mem_used_mean",
                "power_mean", "energy_per_token", "cpu_cores_mean", "rss_mean", "kv_cache_mean")
DOWN_COLUMNS = ["run", "campaign", "run_id", "endpoint", "start_s", "start_unix", "end_unix",
                "duration_s", "failures", "error_category"]
# Compared settings (a difference is a config_mismatch warning).
REQUEST_SETTINGS = ("max_tokens", "temperature", "ignore_eos")
LOAD_SETTINGS_IGNORED = ("repetitions",)


@dataclass
class Options:
    at: float = 16.0
    slos: dict[str, float] = field(default_factory=dict)
    baseline: str | None = None
    prometheus: str | None = None
    prom_map: dict[str, str] = field(default_factory=dict)   # instance -> endpoint label
    seed: int = 0
    n_boot: int = 1000
    notes: list[str] = field(default_factory=list)   # shown first in the report (--note)
    progress: Callable[[str], None] | None = None


@dataclass
class RunInfo:
    run_id: str
    name: str              # the report's name for the run (analysis.runref; a run is
    path: str              # (campaign, run_id))
    campaign: str
    endpoints: list[str]
    repetition: int
    status: str
    mode: str
    start_unix: float | None
    end_unix: float | None
    records: int
    records_written: Any
    locust_chat_requests: Any
    saturated: bool
    max_cpu_percent: Any
    metrics_source: str


@dataclass
class Result:
    runs: list[RunInfo]
    per_run: pd.DataFrame
    errors: pd.DataFrame
    combined: pd.DataFrame
    comparisons: pd.DataFrame
    warnings: WarningList
    endpoints: list[str]
    baseline: str
    levels: list[float]
    at_level: float | None
    level_name: str
    mode: str
    slos: dict[str, float]
    setup: dict[str, Any]
    timeseries: dict[str, TimeSeries]
    distributions: dict[str, dict[str, np.ndarray]]
    options: Options
    inputs: list[str]
    models: dict[str, str] = field(default_factory=dict)
    # one row per down window (analysis.outages): run, campaign, run_id, endpoint, start_s, ...
    down_windows: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=DOWN_COLUMNS))

    def value(self, endpoint: str, level: float, metric: str, stat: str = "mean") -> float:
        c = self.combined
        row = c[(c["endpoint"] == endpoint) & (c["level"] == level) & (c["metric"] == metric)]
        return float(row[stat].iloc[0]) if len(row) else math.nan


def _progress(opts: Options, text: str) -> None:
    if opts.progress:
        opts.progress(text)


def _bad(v: Any) -> bool:
    return v is None or (isinstance(v, float) and math.isnan(v))


def discover(paths: list[str]) -> list[Path]:
    if not paths:
        raise AnalysisError("give one or more run directories (or a folder holding them)")
    for p in paths:
        if not Path(p).exists():
            raise AnalysisError(f"{p}: no such file or directory; pass a run directory written by "
                                "make loadtest (it holds manifest.json) or a folder of them")
        if not Path(p).is_dir():
            raise AnalysisError(f"{p}: not a directory; pass a run directory written by make "
                                "loadtest (it holds manifest.json) or a folder of them")
    try:
        dirs = find_run_dirs(paths)
    except (FileNotFoundError, OSError) as exc:
        raise AnalysisError(f"{exc}; pass a run directory written by make loadtest") from None
    if not dirs:
        raise AnalysisError(f"no run directory (a folder with manifest.json) at or below "
                            f"{', '.join(map(str, paths))}; pass the folder make loadtest wrote "
                            "(results/...)")
    # The same run reached twice through overlapping arguments counts once.
    seen, unique = set(), []
    for d in dirs:
        key = os.path.realpath(d)
        if key not in seen:
            seen.add(key)
            unique.append(d)
    return unique


def analyse(paths: list[str], opts: Options | None = None) -> Result:
    opts = opts or Options()
    slos = parse_slos(opts.slos)
    warnings = WarningList()
    dirs = discover([str(p) for p in paths])
    manifests: list[tuple[Path, Manifest]] = []
    reasons = []
    for d in dirs:
        try:
            manifests.append((d, read_manifest_checked(d)))
        except AnalysisError as exc:
            reasons.append(str(exc))
            warnings.add("skipped_run", f"{exc}")
    if not manifests:
        raise AnalysisError(reasons[0] if len(reasons) == 1 else
                            f"no usable run among {len(dirs)} directories; first: {reasons[0]}")
    manifests.sort(key=lambda dm: (_num(dm[1].start_unix), dm[1].campaign, dm[1].run_id))
    # A run is (campaign, run_id): the same pair twice is the same run (a copy) and counts once.
    first_seen: dict[tuple[str, str], Path] = {}
    todo: list[tuple[Path, Manifest, RunRef]] = []
    for (d, manifest), ref in zip(manifests, run_refs(manifests)):
        if ref.key in first_seen:
            warnings.add("skipped_run", f"{d}: the same run (campaign {ref.campaign!r}, run_id "
                         f"{ref.run_id!r}) as {first_seen[ref.key]}; counted once", ref)
            continue
        first_seen[ref.key] = d
        todo.append((d, manifest, ref))

    per_run_frames, error_frames, down_frames, runs = [], [], [], []
    request_values: dict[tuple[str, float], dict[str, list[np.ndarray]]] = {}
    timeseries: dict[str, TimeSeries] = {}
    loaded_runs: list[RunData] = []
    missing_sources: dict[tuple[str, str, str], list[str]] = {}
    no_records: list[NoRecordsError] = []
    t_start = time.monotonic()
    for i, (d, manifest, ref) in enumerate(todo, 1):
        _progress(opts, f"[{i}/{len(todo)}] reading {d}")
        try:
            run = load_run(d, manifest, ref)
        except AnalysisError as exc:
            reasons.append(str(exc))
            if isinstance(exc, NoRecordsError):
                no_records.append(exc)
            warnings.add("skipped_run", str(exc), ref)
            continue
        if opts.prometheus:
            from .prometheus import fetch_run_metrics
            _progress(opts, f"[{i}/{len(todo)}] querying {opts.prometheus}")
            run.metrics = fetch_run_metrics(opts.prometheus, run, opts.prom_map, run.warnings)
        warnings.extend(w for w in run.warnings if w not in warnings)
        info, per_run, errors, down = _analyse_run(run, slos, warnings, request_values,
                                                   timeseries, missing_sources)
        runs.append(info)
        per_run_frames.append(per_run)
        error_frames.append(errors)
        down_frames.append(down)
        loaded_runs.append(_light(run))
        del run
    if not runs:
        if no_records and len(no_records) == len(reasons):
            raise AnalysisError(
                str(no_records[0]) if len(no_records) == 1 else
                f"no records in any of the {len(no_records)} run(s) found: their records.csv "
                f"are missing, empty or header-only (first: {no_records[0]}); each run's "
                "locust.log says why it wrote none")
        raise AnalysisError(f"no usable run: {reasons[0]}" if reasons else "no usable run")
    _progress(opts, f"read {len(runs)} run(s) in {time.monotonic() - t_start:.1f} s; combining")

    for (ep, src, url), names in missing_sources.items():
        warnings.add("no_metrics", f"endpoint {ep}: no {src} samples in {len(names)} run(s) "
                     f"({', '.join(names[:3])}{', ...' if len(names) > 3 else ''}) although "
                     f"{'metrics_url' if src == 'server' else 'exporter_url'} is set ({url}); "
                     "its figures are n/a", endpoint=ep)
    per_run = pd.concat(per_run_frames, ignore_index=True)
    if not len(per_run) or per_run["level"].notna().sum() == 0:
        raise AnalysisError(
            "no stage reached its steady window in these runs (records of a web-UI run have "
            "phase 'manual', a run that crashed early has none): run a load shape with "
            "make loadtest, or pass runs that got past their warmup")
    if per_run["requests"].sum() == 0:
        # A report built from nothing must not look like one.
        raise AnalysisError(
            "no steady-state request in these runs: their records are all from ramp, warmup or "
            "drain (or from stages outside stages.csv), so every figure would be n/a; run a "
            "load shape whose stages reach steady state, or pass runs that got past their warmup")
    errors = pd.concat(error_frames, ignore_index=True) if error_frames else pd.DataFrame()
    down_windows = (pd.concat([f for f in down_frames if len(f)], ignore_index=True)
                    if any(len(f) for f in down_frames) else pd.DataFrame(columns=DOWN_COLUMNS))
    modes = sorted({r.mode for r in runs})
    mode = modes[0]
    _check_configs(loaded_runs, warnings)

    endpoints = []
    for r in runs:
        for e in r.endpoints:
            if e not in endpoints:
                endpoints.append(e)
    baseline = opts.baseline or endpoints[0]
    if baseline not in endpoints:
        raise AnalysisError(f"--baseline {baseline}: no such endpoint in these runs; "
                            f"endpoints: {', '.join(endpoints)}")
    endpoints = [baseline] + [e for e in endpoints if e != baseline]
    per_run = per_run[per_run["level"].notna()]
    levels = sorted(float(x) for x in per_run["level"].unique())
    at_level = min(levels, key=lambda x: (abs(x - opts.at), x)) if levels else None

    for ep in endpoints:
        n_runs = count_runs(per_run[per_run["endpoint"] == ep])
        if n_runs == 1:
            warnings.add("single_run", f"endpoint {ep}: one run only; no spread across "
                         "repetitions, confidence intervals reflect request-level noise only",
                         endpoint=ep)

    combined = combine(per_run)
    _progress(opts, "comparing endpoints")
    comparisons = compare(per_run, request_values, endpoints, baseline, levels, opts)
    distributions = {}
    if at_level is not None:
        for ep in endpoints:
            vals = request_values.get((ep, at_level))
            if vals:
                distributions[ep] = {k: np.concatenate(v) if v else np.array([])
                                     for k, v in vals.items()}
    models = {}
    for r in loaded_runs:
        for ep in r.endpoints:
            m = r.endpoint_config(ep).get("model")
            if m and ep not in models:
                models[ep] = str(m)
    setup = _setup(loaded_runs, runs, endpoints, models)
    level_name = "req/s" if mode == "open" else "users"
    return Result(runs=runs, per_run=per_run, errors=errors, combined=combined,
                  comparisons=comparisons, warnings=warnings, endpoints=endpoints,
                  baseline=baseline, levels=levels, at_level=at_level, level_name=level_name,
                  mode=mode, slos=slos, setup=setup, timeseries=timeseries,
                  distributions=distributions, options=opts, inputs=[str(p) for p in paths],
                  models=models, down_windows=down_windows)


def count_runs(frame: pd.DataFrame) -> int:
    """Distinct runs in a frame with campaign and run_id columns: a run is (campaign, run_id)."""
    if not len(frame):
        return 0
    return len(frame[["campaign", "run_id"]].drop_duplicates())


def _num(x: Any) -> float:
    return float(x) if isinstance(x, (int, float)) and not isinstance(x, bool) else math.inf


def _or_unknown(value: Any) -> Any:
    return "?" if value is None else value


def _light(run: RunData) -> RunData:
    """The run without its big frames (kept for config checks and the setup section)."""
    return RunData(path=run.path, run_id=run.run_id, manifest=run.manifest,
                   records=run.records.iloc[:0], stages=run.stages, metrics=None,
                   locust_chat_requests=run.locust_chat_requests, locust_source=run.locust_source,
                   ref=run.ref)


def _analyse_run(run: RunData, slos: dict[str, float], warnings: WarningList,
                 request_values: dict, timeseries: dict[str, TimeSeries],
                 missing_sources: dict[tuple[str, str, str], list[str]]
                 ) -> tuple[RunInfo, pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    windows = stage_windows(run, warnings)
    req, errors = request_figures(run, windows, slos)
    met, gaps, missing = metric_figures(run, windows, warnings)
    for key in missing:
        missing_sources.setdefault(key, []).append(run.name)
    gap_warnings(gaps, warnings)
    per_run = req.merge(met, on=["endpoint", "stage"], how="left")
    # Energy per output token: mean power from the energy counter (else the power gauge) / tok/s.
    watts = per_run["energy_w"].where(per_run["energy_w"].notna(), per_run["power_mean"])
    tok = per_run["output_tok_per_s"].where(per_run["output_tok_per_s"] > 0)
    per_run["energy_per_token"] = watts / tok
    per_run.insert(0, "run", run.name)
    per_run.insert(1, "campaign", run.campaign)
    per_run.insert(2, "run_id", run.run_id)
    per_run.insert(3, "repetition", run.repetition)
    models = {ep: str(run.endpoint_config(ep).get("model") or "") for ep in run.endpoints}
    if len(run.records):
        rec_models = (run.records.groupby("endpoint", observed=True)["model"]
                      .agg(lambda s: s.astype(str).mode().iloc[0] if len(s) else ""))
        for ep, m in rec_models.items():
            if m and not models.get(str(ep)):
                models[str(ep)] = m
    per_run.insert(5, "model", per_run["endpoint"].map(models))
    errors.insert(0, "run", run.name)
    errors.insert(1, "campaign", run.campaign)
    errors.insert(2, "run_id", run.run_id)
    if len(errors):
        errors = errors.merge(windows[["stage", "level"]], on="stage", how="left")
    else:
        errors["level"] = pd.Series(dtype=float)

    # Down windows (analysis.outages): failures as time, beside the per-request error rate.
    down = _down_windows(run, per_run, warnings)
    # Empty stages.
    for row in per_run.itertuples(index=False):
        if row.requests == 0:
            warnings.add("empty_stage", f"run {run.name}: endpoint {row.endpoint}: stage "
                         f"{row.stage} ({_lvl(row.level)} {'req/s' if run.mode == 'open' else 'users'}) "
                         "has no steady-state requests; its figures are n/a", run.ref,
                         row.endpoint)
    # Token counts from chunks.
    chunk_counted = per_run.groupby("endpoint")["tokens_from_chunks"].sum()
    for ep, n in chunk_counted.items():
        if n > 0:
            total = per_run.loc[per_run["endpoint"] == ep, "completed"].sum()
            warnings.add("tokens_from_chunks", f"run {run.name}: endpoint {ep}: {int(n)} of "
                         f"{int(total)} completed steady requests have token counts counted from "
                         "chunks (the server sent no usage); token figures are lower bounds",
                         run.ref, ep)
    # Saturated load generator.
    lg = run.manifest.load_generator or LoadGeneratorSummary()
    if lg.saturated:
        warnings.add("saturated_load_generator", f"run {run.name}: the load generator was "
                     f"saturated (max CPU {_or_unknown(lg.max_cpu_percent)}%, "
                     f"{_or_unknown(lg.seconds_above_90)} s above 90%): its latencies include "
                     "client delay and are not the server's; rerun with more Locust workers",
                     run.ref)
    # The load generator's own lateness and lockstep, per endpoint and stage.
    health_warnings(run.ref, stage_health(run.records, run.manifest), warnings)
    # Record counts.
    n_records = len(run.records)
    written = run.manifest.records_written
    if isinstance(written, int) and written != n_records:
        warnings.add("record_count_mismatch", f"run {run.name}: records.csv holds {n_records} "
                     f"records, the manifest says {written} were written", run.ref)
    counts = []
    if isinstance(run.manifest.locust_requests, int):
        counts.append(("manifest locust_requests", run.manifest.locust_requests))
    if isinstance(run.locust_chat_requests, int):
        counts.append((f"{run.locust_source} CHAT rows", run.locust_chat_requests))
    locust = counts[0][1] if counts else None
    for source, n in counts:
        if n != n_records:
            warnings.add("record_count_mismatch", f"run {run.name}: records.csv holds "
                         f"{n_records} records, Locust counted {n} CHAT requests ({source})",
                         run.ref)
    # Per-request values for the comparisons and the distribution plots.
    steady = run.records[(run.records["phase"] == "steady") & run.records["ok"]]
    lvl = dict(zip(windows["stage"], windows["level"]))
    for (ep, stage), g in steady.groupby(["endpoint", "stage"], observed=True):
        level = lvl.get(int(stage))
        if _bad(level):
            continue
        slot = request_values.setdefault((str(ep), float(level)),
                                         {k: [] for k in REQUEST_COMPARED.values()})
        for col in REQUEST_COMPARED.values():
            v = g[col].to_numpy(dtype=float)
            slot[col].append(v[~np.isnan(v)])
    for ep in run.endpoints:
        if ep not in timeseries:
            ts = run_timeseries(run, ep, windows)
            if ts is not None:
                timeseries[ep] = ts
    info = RunInfo(run_id=run.run_id, name=run.name, path=str(run.path), campaign=run.campaign,
                   endpoints=run.endpoints, repetition=run.repetition,
                   status=str(getattr(run.manifest.status, "value", run.manifest.status)),
                   mode=run.mode, start_unix=run.manifest.start_unix,
                   end_unix=run.manifest.end_unix,
                   records=n_records, records_written=written,
                   locust_chat_requests=locust, saturated=bool(lg.saturated),
                   max_cpu_percent=lg.max_cpu_percent,
                   metrics_source="prometheus" if run.metrics is not None and
                   getattr(run.metrics, "attrs", {}).get("source") == "prometheus" else
                   ("metrics.csv" if run.metrics is not None else "none"))
    return info, per_run, errors, down


def _down_windows(run: RunData, per_run: pd.DataFrame, warnings: WarningList) -> pd.DataFrame:
    """The run's down windows; adds down_s and down_share to per_run (in place) and warns."""
    start = run.manifest.start_unix
    if isinstance(start, (int, float)) and not isinstance(start, bool):
        origin = float(start)
    else:
        origin = float(run.records["start_unix"].min()) if len(run.records) else 0.0
    dw = run_down_windows(run.records, origin)
    by_ep = {str(ep): g for ep, g in dw.groupby("endpoint")} if len(dw) else {}
    empty = dw.iloc[:0]
    down_s = [down_seconds(by_ep.get(str(r.endpoint), empty), r.t0, r.t1)
              if r.requests > 0 and r.duration == r.duration else math.nan
              for r in per_run[["endpoint", "t0", "t1", "requests", "duration"]]
              .itertuples(index=False)]
    per_run["down_s"] = down_s
    per_run["down_share"] = per_run["down_s"] / per_run["duration"] * 100.0
    for ep, g in by_ep.items():
        longest = g.loc[g["duration_s"].idxmax()]
        warnings.add("endpoint_down", f"run {run.name}: endpoint {ep}: down (every request "
                     f"failed) for {g['duration_s'].sum():.1f} s in {len(g)} window(s) of at "
                     f"least {MIN_DOWN_S:g} s; longest {longest['duration_s']:.1f} s from "
                     f"{longest['start_s']:.1f} s into the run ({int(longest['failures']):,} "
                     f"failures, mostly {longest['error_category']}); the error rate counts "
                     "each retry: read failures per second and down share (Errors section)",
                     run.ref, ep)
    dw.insert(0, "run", run.name)
    dw.insert(1, "campaign", run.campaign)
    dw.insert(2, "run_id", run.run_id)
    return dw[DOWN_COLUMNS]


def _lvl(x: Any) -> str:
    return "?" if _bad(x) else f"{x:g}"


# ---------------------------------------------------------------------------------------------

def combine(per_run: pd.DataFrame) -> pd.DataFrame:
    """Long table: endpoint, level, metric, n, mean, std, ci_low, ci_high (t-interval over runs)."""
    keys = [k for k in METRICS if k in per_run]
    long = per_run.melt(id_vars=["endpoint", "level"], value_vars=keys, var_name="metric",
                        value_name="value").dropna(subset=["value"])
    if not len(long):
        return pd.DataFrame(columns=["endpoint", "level", "metric", "n", "mean", "std", "ci_low",
                                     "ci_high"])
    g = long.groupby(["endpoint", "level", "metric"], sort=False)["value"]
    out = g.agg(n="count", mean="mean", std="std").reset_index()
    n = out["n"].to_numpy()
    tcrit = np.where(n >= 2, sps.t.ppf(0.5 + CI_LEVEL / 2, np.maximum(n - 1, 1)), np.nan)
    half = tcrit * out["std"].to_numpy() / np.sqrt(n)
    out["ci_low"] = out["mean"] - half
    out["ci_high"] = out["mean"] + half
    out.loc[n < 2, "std"] = np.nan
    order = {k: i for i, k in enumerate(keys)}
    out["_o"] = out["metric"].map(order)
    return out.sort_values(["endpoint", "level", "_o"]).drop(columns="_o").reset_index(drop=True)


def compare(per_run: pd.DataFrame, request_values: dict, endpoints: list[str], baseline: str,
            levels: list[float], opts: Options) -> pd.DataFrame:
    rows = []
    for level in levels:
        a_rows = per_run[(per_run["endpoint"] == baseline) & (per_run["level"] == level)]
        for ep in endpoints:
            if ep == baseline:
                continue
            b_rows = per_run[(per_run["endpoint"] == ep) & (per_run["level"] == level)]
            if not len(a_rows) or not len(b_rows):
                continue
            for key, col in REQUEST_COMPARED.items():
                a = request_values.get((baseline, level), {}).get(col, [])
                b = request_values.get((ep, level), {}).get(col, [])
                if not a or not b:
                    continue
                cmp = request_compare(a, b, seed=seed_for(opts.seed, baseline, ep, level, key),
                                      n_boot=opts.n_boot)
                cmp.value_a *= 1000.0    # medians in ms, like the tables
                cmp.value_b *= 1000.0
                rows.append(_cmp_row(level, key, baseline, ep, cmp))
            for key in RUN_COMPARED:
                if key not in per_run:
                    continue
                a, b = a_rows[key].to_numpy(float), b_rows[key].to_numpy(float)
                if np.isnan(a).all() or np.isnan(b).all():
                    continue
                rows.append(_cmp_row(level, key, baseline, ep, welch_compare(a, b)))
    cols = ["level", "metric", "baseline", "endpoint", "value_baseline", "value", "change_pct",
            "ci_low_pct", "ci_high_pct", "p_value", "n_baseline", "n", "real", "method", "verdict"]
    return pd.DataFrame(rows, columns=cols)


def _cmp_row(level, key, baseline, ep, cmp: Comparison) -> dict[str, Any]:
    md = METRICS[key]
    words = verdict_words(ep, md.label, cmp, md.lower_is_better, baseline)
    return {"level": level, "metric": key, "baseline": baseline, "endpoint": ep,
            "value_baseline": cmp.value_a, "value": cmp.value_b, "change_pct": cmp.change_pct,
            "ci_low_pct": cmp.ci_low_pct, "ci_high_pct": cmp.ci_high_pct, "p_value": cmp.p_value,
            "n_baseline": cmp.n_a, "n": cmp.n_b,
            "real": "n/a" if cmp.real is None else ("yes" if cmp.real else "no"),
            "method": cmp.method, "verdict": words}


# ---------------------------------------------------------------------------------------------

def _check_configs(runs: list[RunData], warnings: WarningList) -> None:
    """Warn when runs combined or compared differ in settings that change the numbers."""
    load_sig: dict[str, list[str]] = {}
    for r in runs:
        load = {k: v for k, v in r.load.items() if k not in LOAD_SETTINGS_IGNORED}
        load_sig.setdefault(json.dumps(load, sort_keys=True, default=str), []).append(r.name)
    if len(load_sig) > 1:
        loads = [json.loads(s) for s in load_sig]
        keys = sorted({k for l in loads for k in l if len({json.dumps(x.get(k), default=str)
                                                             for x in loads}) > 1})
        detail = "; ".join(f"{k}: " + ", ".join(sorted({json.dumps(x.get(k), default=str)
                                                         for x in loads})) for k in keys[:5])
        warnings.add("config_mismatch", f"runs were made with different load settings ({detail}); "
                     "figures combined across them are not like for like")
    per_label: dict[str, dict[str, set[str]]] = {}
    for r in runs:
        for ep in r.endpoints:
            cfg = r.endpoint_config(ep)
            if not cfg:
                continue
            d = per_label.setdefault(ep, {})
            d.setdefault("model", set()).add(json.dumps(cfg.get("model")))
            d.setdefault("extra_body", set()).add(json.dumps(cfg.get("extra_body"), sort_keys=True))
            d.setdefault("request", set()).add(json.dumps(cfg.get("request"), sort_keys=True))
    for ep, d in per_label.items():
        diff = [k for k, v in d.items() if len(v) > 1]
        if diff:
            warnings.add("config_mismatch", f"endpoint {ep}: its runs differ in "
                         + ", ".join(f"{k} ({' vs '.join(sorted(d[k]))})" for k in diff)
                         + "; repetitions combined across them are not like for like",
                         endpoint=ep)
    # Across endpoints: request settings that change the work asked of the server.
    settings: dict[str, dict[str, Any]] = {}
    for r in runs:
        for ep in r.endpoints:
            req = r.endpoint_config(ep).get("request") or {}
            for k in REQUEST_SETTINGS:
                if k in req:
                    settings.setdefault(k, {}).setdefault(ep, req[k])
    for k, by_ep in settings.items():
        if len({json.dumps(v) for v in by_ep.values()}) > 1:
            warnings.add("config_mismatch", f"endpoints are compared with different {k} ("
                         + ", ".join(f"{e}={v}" for e, v in by_ep.items())
                         + "); the comparison is not like for like")


def _setup(runs: list[RunData], infos: list[RunInfo], endpoints: list[str],
           models: dict[str, str]) -> dict[str, Any]:
    first = runs[0]
    eps = {}
    for ep in endpoints:
        for r in runs:
            cfg = r.endpoint_config(ep)
            if cfg:
                eps[ep] = {"model": cfg.get("model"), "base_url": cfg.get("base_url"),
                           "extra_body": cfg.get("extra_body"), "request": cfg.get("request"),
                           "metrics_url": cfg.get("metrics_url"),
                           "exporter_url": cfg.get("exporter_url")}
                break
        else:
            eps[ep] = {"model": models.get(ep)}
    hosts = sorted({json.dumps(r.manifest.host.to_json(), sort_keys=True) for r in runs})
    versions = sorted({json.dumps(r.manifest.versions.to_json(), sort_keys=True) for r in runs})
    campaigns = sorted({i.campaign for i in infos if i.campaign})
    return {"endpoints": eps, "load": first.load, "hosts": [json.loads(h) for h in hosts],
            "versions": [json.loads(v) for v in versions], "campaigns": campaigns,
            "runs": len(infos), "repetitions": sorted({i.repetition for i in infos})}
