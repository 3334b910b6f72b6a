"""From run directories to one result: per-run figures, repetitions combined, endpoints compared.

``analyse(paths, Options()) -> Result`` is a pure function of the run directories (and, with
``--prometheus``, of the Prometheus server's data for the runs' time windows).
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pandas as pd

from core.rundir import Manifest, find_run_dirs
from core.config import is_open_loop

from .capacity import read_capacity
from .combine import combine, compare, count_runs  # noqa: F401  (count_runs: the report's)
from .compute import parse_slos
from .errors import AnalysisError, NoRecordsError, WarningList
from .perrun import DOWN_COLUMNS, RunAnalysis, RunInfo, analyse_run  # noqa: F401
from .rundata import RunData, load_run, read_manifest_checked
from .runref import RunRef, run_refs
from .configs import check_configs, setup_summary
from .paired import PairedResult, analyse_paired
from .timeseries import TimeSeries
from .turns import TurnsResult, analyse_turns


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
    # the paired A/B on the same requests (analysis.paired)
    paired: PairedResult = field(default_factory=PairedResult)
    # capacity.json of the capacity campaign the runs came from (analysis.capacity); else None
    capacity: dict[str, Any] | None = None
    # multi-turn conversations: first vs later turns (analysis.turns); empty without them
    turns: TurnsResult = field(default_factory=TurnsResult)

    def value(self, endpoint: str, level: float, metric: str, stat: str = "mean") -> float:
        c = self.combined
        row = c[(c["endpoint"] == endpoint) & (c["level"] == level) & (c["metric"] == metric)]
        return float(row[stat].iloc[0]) if len(row) else math.nan


def _progress(opts: Options, text: str) -> None:
    if opts.progress:
        opts.progress(text)


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
    capacity = read_capacity(dirs)
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

    analyses: list[RunAnalysis] = []
    loaded_runs: list[RunData] = []
    drawn: set[str] = set()          # endpoints with a time series (the first run's)
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
        ra = analyse_run(run, slos, timeseries_for=[e for e in run.endpoints if e not in drawn])
        drawn |= set(ra.timeseries)
        warnings.extend(w for w in ra.warnings if w not in warnings)
        analyses.append(ra)
        loaded_runs.append(_light(run))
        del run
    runs = [ra.info for ra in analyses]
    if not runs:
        if no_records and len(no_records) == len(reasons):
            raise AnalysisError(
                str(no_records[0]) if len(no_records) == 1 else
                f"no records in any of the {len(no_records)} run(s) found: their records.csv "
                f"are missing, empty or header-only (first: {no_records[0]}); each run's "
                "locust.log says why it wrote none")
        raise AnalysisError(f"no usable run: {reasons[0]}" if reasons else "no usable run")
    _progress(opts, f"read {len(runs)} run(s) in {time.monotonic() - t_start:.1f} s; combining")

    missing_sources: dict[tuple[str, str, str], list[str]] = {}
    for ra in analyses:
        for key in ra.missing_sources:
            missing_sources.setdefault(key, []).append(ra.info.name)
    for (ep, src, url), names in missing_sources.items():
        warnings.add("no_metrics", f"endpoint {ep}: no {src} samples in {len(names)} run(s) "
                     f"({', '.join(names[:3])}{', ...' if len(names) > 3 else ''}) although "
                     f"{'metrics_url' if src == 'server' else 'exporter_url'} is set ({url}); "
                     "its figures are n/a", endpoint=ep)
    per_run = pd.concat([ra.per_run for ra in analyses], ignore_index=True)
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
    errors = pd.concat([ra.errors for ra in analyses], ignore_index=True)
    downs = [ra.down for ra in analyses if len(ra.down)]
    down_windows = (pd.concat(downs, ignore_index=True) if downs
                    else pd.DataFrame(columns=DOWN_COLUMNS))
    request_values = _merged_request_values(analyses)
    timeseries: dict[str, TimeSeries] = {}
    for ra in analyses:
        for ep, ts in ra.timeseries.items():
            timeseries.setdefault(ep, ts)
    modes = sorted({r.mode for r in runs})
    mode = modes[0]
    check_configs(loaded_runs, warnings, capacity=capacity is not None)

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
    comparisons = compare(per_run, request_values, endpoints, baseline, levels,
                          seed=opts.seed, n_boot=opts.n_boot)
    _progress(opts, "pairing requests")
    paired = analyse_paired([ra.paired for ra in analyses if ra.paired is not None], endpoints,
                            baseline, seed=opts.seed, n_boot=opts.n_boot)
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
    setup = setup_summary(loaded_runs, runs, endpoints, models)
    level_name = "req/s" if is_open_loop(mode) else "users"
    return Result(runs=runs, per_run=per_run, errors=errors, combined=combined,
                  comparisons=comparisons, warnings=warnings, endpoints=endpoints,
                  baseline=baseline, levels=levels, at_level=at_level, level_name=level_name,
                  mode=mode, slos=slos, setup=setup, timeseries=timeseries,
                  distributions=distributions, options=opts, inputs=[str(p) for p in paths],
                  models=models, down_windows=down_windows, paired=paired, capacity=capacity,
                  turns=analyse_turns([ra.turns for ra in analyses if ra.turns is not None],
                                      endpoints))


def _num(x: Any) -> float:
    return float(x) if isinstance(x, (int, float)) and not isinstance(x, bool) else math.inf


def _light(run: RunData) -> RunData:
    """The run without its big frames (kept for config checks and the setup section)."""
    return RunData(path=run.path, run_id=run.run_id, manifest=run.manifest,
                   records=run.records.iloc[:0], stages=run.stages, metrics=None,
                   locust_chat_requests=run.locust_chat_requests, locust_source=run.locust_source,
                   ref=run.ref)


def _merged_request_values(analyses: list[RunAnalysis]
                           ) -> dict[tuple[str, float], dict[str, list[np.ndarray]]]:
    """(endpoint, level) -> record column -> one array of steady ok values per run."""
    out: dict[tuple[str, float], dict[str, list[np.ndarray]]] = {}
    for ra in analyses:
        for key, cols in ra.request_values.items():
            slot = out.setdefault(key, {c: [] for c in cols})
            for c, arrays in cols.items():
                slot[c].extend(arrays)
    return out
