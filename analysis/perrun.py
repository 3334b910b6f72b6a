"""One run's analysis: ``analyse_run(run, slos) -> RunAnalysis``, plain data, nothing mutated.

Windows, request and metric-sample figures, derived figures, down windows, the per-request
values the comparisons and distribution plots need, the time series, and every warning the run
gives (those read with it, ``run.warnings``, first): analysis.build gathers them over runs.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Collection

import numpy as np
import pandas as pd

from core.rundir import LoadGeneratorSummary
from core.config import is_open_loop

from .catalogue import REQUEST_COMPARED
from .compute import gap_warnings, metric_figures, request_figures, stage_windows
from .errors import WarningList
from .health import health_warnings, stage_health
from .outages import MIN_DOWN_S, down_seconds, run_down_windows
from .paired import RunRequests, run_requests
from .rundata import RunData
from .timeseries import TimeSeries, run_timeseries
from .turns import turn_requests

DOWN_COLUMNS = ["run", "campaign", "run_id", "endpoint", "start_s", "start_unix", "end_unix",
                "duration_s", "failures", "error_category"]


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
class RunAnalysis:
    """What one run gives the report."""

    info: RunInfo
    per_run: pd.DataFrame            # one row per endpoint x stage: every figure
    errors: pd.DataFrame             # failed steady requests per endpoint x stage x category
    down: pd.DataFrame               # down windows (DOWN_COLUMNS)
    # (endpoint, level) -> record column -> [this run's steady ok values] (REQUEST_COMPARED)
    request_values: dict[tuple[str, float], dict[str, list[np.ndarray]]]
    timeseries: dict[str, TimeSeries]
    # configured metric sources with no sample at all: (endpoint, source, url)
    missing_sources: list[tuple[str, str, str]]
    warnings: WarningList = field(default_factory=WarningList)
    # completed steady requests with their request_key, for the paired A/B (analysis.paired)
    paired: RunRequests | None = None
    # steady conversation turns (analysis.turns); empty without multi-turn conversations
    turns: pd.DataFrame | None = None


def _bad(v: Any) -> bool:
    return v is None or (isinstance(v, float) and math.isnan(v))


def _lvl(x: Any) -> str:
    return "?" if _bad(x) else f"{x:g}"


def _or_unknown(value: Any) -> Any:
    return "?" if value is None else value


def analyse_run(run: RunData, slos: dict[str, float],
                timeseries_for: Collection[str] | None = None) -> RunAnalysis:
    """The run's figures and warnings. timeseries_for: endpoints to draw (None: all)."""
    warnings = WarningList()
    warnings.extend(run.warnings)
    windows = stage_windows(run, warnings)
    req, errors = request_figures(run, windows, slos)
    met, gaps, missing = metric_figures(run, windows, warnings)
    gap_warnings(gaps, warnings)
    per_run = _with_run_columns(run, _derived(req.merge(met, on=["endpoint", "stage"], how="left")))
    errors = _errors_frame(run, errors, windows)
    down = _down_windows(run, per_run, warnings)    # adds down_s, down_share to per_run
    _stage_warnings(run, per_run, warnings)
    lg = run.manifest.load_generator or LoadGeneratorSummary()
    if lg.saturated:
        warnings.add("saturated_load_generator", f"run {run.name}: the load generator was "
                     f"saturated (max CPU {_or_unknown(lg.max_cpu_percent)}%, "
                     f"{_or_unknown(lg.seconds_above_90)} s above 90%): its latencies include "
                     "client delay and are not the server's; rerun with more Locust workers",
                     run.ref)
    # The load generator's own lateness and lockstep, per endpoint and stage.
    health_warnings(run.ref, stage_health(run.records, run.manifest), warnings)
    locust = _count_warnings(run, warnings)
    wanted = run.endpoints if timeseries_for is None else [
        ep for ep in run.endpoints if ep in timeseries_for]
    timeseries = {ep: ts for ep in wanted
                  if (ts := run_timeseries(run, ep, windows)) is not None}
    info = RunInfo(run_id=run.run_id, name=run.name, path=str(run.path), campaign=run.campaign,
                   endpoints=run.endpoints, repetition=run.repetition,
                   status=str(getattr(run.manifest.status, "value", run.manifest.status)),
                   mode=run.mode, start_unix=run.manifest.start_unix,
                   end_unix=run.manifest.end_unix,
                   records=len(run.records), records_written=run.manifest.records_written,
                   locust_chat_requests=locust, saturated=bool(lg.saturated),
                   max_cpu_percent=lg.max_cpu_percent,
                   metrics_source="prometheus" if run.metrics is not None and
                   getattr(run.metrics, "attrs", {}).get("source") == "prometheus" else
                   ("metrics.csv" if run.metrics is not None else "none"))
    paired = run_requests(run.records, windows, run=run.name, campaign=run.campaign,
                          repetition=run.repetition, mode=run.mode)
    return RunAnalysis(info, per_run, errors, down, _request_values(run, windows), timeseries,
                       list(missing), warnings, paired, turn_requests(run.records, windows))


def _derived(per_run: pd.DataFrame) -> pd.DataFrame:
    """The catalogue's derived figures (source DERIVED), from the request and sample figures."""
    # Energy per output token: mean power from the energy counter (else the power gauge) / tok/s.
    watts = per_run["energy_w"].where(per_run["energy_w"].notna(), per_run["power_mean"])
    tok = per_run["output_tok_per_s"].where(per_run["output_tok_per_s"] > 0)
    per_run["energy_per_token"] = watts / tok
    return per_run


def _with_run_columns(run: RunData, per_run: pd.DataFrame) -> pd.DataFrame:
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
    return per_run


def _errors_frame(run: RunData, errors: pd.DataFrame, windows: pd.DataFrame) -> pd.DataFrame:
    errors.insert(0, "run", run.name)
    errors.insert(1, "campaign", run.campaign)
    errors.insert(2, "run_id", run.run_id)
    if len(errors):
        return errors.merge(windows[["stage", "level"]], on="stage", how="left")
    errors["level"] = pd.Series(dtype=float)
    return errors


def _stage_warnings(run: RunData, per_run: pd.DataFrame, warnings: WarningList) -> None:
    """Empty stages; token counts from chunks."""
    for row in per_run.itertuples(index=False):
        if row.requests == 0:
            warnings.add("empty_stage", f"run {run.name}: endpoint {row.endpoint}: stage "
                         f"{row.stage} ({_lvl(row.level)} {'req/s' if is_open_loop(run.mode) else 'users'}) "
                         "has no steady-state requests; its figures are n/a", run.ref,
                         row.endpoint)
    chunk_counted = per_run.groupby("endpoint")["tokens_from_chunks"].sum()
    for ep, n in chunk_counted.items():
        if n > 0:
            total = per_run.loc[per_run["endpoint"] == ep, "completed"].sum()
            warnings.add("tokens_from_chunks", f"run {run.name}: endpoint {ep}: {int(n)} of "
                         f"{int(total)} completed steady requests have token counts counted from "
                         "chunks (the server sent no usage); token figures are lower bounds",
                         run.ref, ep)


def _count_warnings(run: RunData, warnings: WarningList) -> int | None:
    """Record counts against the manifest and Locust; Locust's CHAT request count (or None)."""
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
    for source, n in counts:
        if n != n_records:
            warnings.add("record_count_mismatch", f"run {run.name}: records.csv holds "
                         f"{n_records} records, Locust counted {n} CHAT requests ({source})",
                         run.ref)
    return counts[0][1] if counts else None


def _request_values(run: RunData, windows: pd.DataFrame
                    ) -> dict[tuple[str, float], dict[str, list[np.ndarray]]]:
    """Per-request values for the comparisons and the distribution plots."""
    out: dict[tuple[str, float], dict[str, list[np.ndarray]]] = {}
    steady = run.records[(run.records["phase"] == "steady") & run.records["ok"]]
    lvl = dict(zip(windows["stage"], windows["level"]))
    for (ep, stage), g in steady.groupby(["endpoint", "stage"], observed=True):
        level = lvl.get(int(stage))
        if _bad(level):
            continue
        slot = out.setdefault((str(ep), float(level)), {k: [] for k in REQUEST_COMPARED.values()})
        for col in REQUEST_COMPARED.values():
            v = g[col].to_numpy(dtype=float)
            slot[col].append(v[~np.isnan(v)])
    return out


def _down_windows(run: RunData, per_run: pd.DataFrame, warnings: WarningList) -> pd.DataFrame:
    """The run's down windows; adds down_s and down_share to per_run (the frame this module
    built) and warns."""
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
