"""Reading one run directory into frames for the analysis, tolerating crashed runs.

The reading itself is the run directory's (``core.rundir.read``: typed, tolerant CSV readers;
``core.rundir.read_manifest``: the one manifest reader); this module decides what a damaged or
empty file means for the report (``AnalysisError``, ``NoRecordsError``, warnings).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from core.rundir import (LOCUST_LOG, METRICS, RECORD_FIELDS, RECORDS, STAGE_PHASES, STAGES,
                         Manifest, ManifestError, RunStatus, phase_column, read_manifest)
from core.rundir.manifest import CLOCK_WARN_S
from core.rundir.read import (locust_chat_requests, missing_metric_columns, normalise_metrics,
                              read_metrics_table, read_records_table, read_stages, records_frame)

from .errors import AnalysisError, NoRecordsError, WarningList
from .runref import RunRef, run_ref

# The record columns the analysis reads (types and defaults: core.rundir.records).
RECORD_COLUMNS = ("endpoint", "model", "repetition", "stage", "stage_users", "phase", "request_key",
                  "start_unix", "send_lag_s", "presend_s", "ttft_s", "ttfat_s", "e2e_s",
                  "tpot_s", "output_tokens", "reasoning_tokens", "answer_tokens", "prompt_tokens",
                  "tokens_from_usage", "itl_mean_s", "itl_p99_s", "itl_max_s", "ok",
                  "error_category", "error_message", "session", "turn")
REQUIRED_RECORD_COLUMNS = ("endpoint", "stage", "phase", "start_unix", "ok")


@dataclass
class RunData:
    """One run directory, read."""

    path: Path
    run_id: str
    manifest: Manifest
    records: pd.DataFrame
    stages: pd.DataFrame                 # STAGE_FIELDS, one row per stage
    metrics: pd.DataFrame | None         # METRIC_FIELDS, sorted by ts_unix
    locust_chat_requests: int | None     # from locust.json / locust_stats.csv
    locust_source: str = ""
    warnings: WarningList = field(default_factory=WarningList)
    ref: RunRef | None = None            # (campaign, run_id) and the name the report prints

    def __post_init__(self) -> None:
        if self.ref is None:
            self.ref = run_ref(self.manifest, self.path)

    @property
    def campaign(self) -> str:
        return self.ref.campaign

    @property
    def name(self) -> str:
        """The run as the report names it (analysis.runref)."""
        return self.ref.name

    @property
    def config(self) -> dict[str, Any]:
        return self.manifest.config

    @property
    def load(self) -> dict[str, Any]:
        return self.manifest.load

    @property
    def mode(self) -> str:
        return str(self.load.get("mode") or "closed")

    @property
    def repetition(self) -> int:
        if self.manifest.repetition is not None:
            return int(self.manifest.repetition)
        if len(self.records) and "repetition" in self.records:
            vals = self.records["repetition"].dropna()
            if len(vals):
                return int(vals.iloc[0])
        return 0

    @property
    def endpoints(self) -> list[str]:
        labels = list(self.manifest.endpoints)
        if len(self.records):
            for e in self.records["endpoint"].astype(str).unique():
                if e not in labels:
                    labels.append(e)
        return labels

    def endpoint_config(self, label: str) -> dict[str, Any]:
        return self.manifest.endpoint_config(label)


def read_manifest_checked(run_dir: Path) -> Manifest:
    """The manifest (core.rundir.read_manifest), or AnalysisError saying what is wrong with it."""
    try:
        return read_manifest(run_dir)
    except ManifestError as exc:
        raise AnalysisError(str(exc)) from None


def _read_records(run_dir: Path, run: RunRef, warnings: WarningList) -> pd.DataFrame:
    table, header, info = read_records_table(run_dir / RECORDS, RECORD_COLUMNS)
    log = run_dir / LOCUST_LOG
    if info.missing:
        raise NoRecordsError(f"{run_dir}: no records: {RECORDS} is missing; see {log} for why "
                             "the run wrote none, then leave it out or rerun it")
    if table is None:
        raise NoRecordsError(f"{run_dir}: no records: {RECORDS} is empty (0 bytes); see {log} "
                             "for why the run wrote none, then leave it out or rerun it")
    if table.num_rows == 0:
        what = "holds only its header"
        if info.skipped_rows or info.truncated or info.error:
            what = "holds no readable row (the rows it has are malformed or cut short)"
        raise NoRecordsError(f"{run_dir}: no records: {RECORDS} {what}; see {log} for why the "
                             "run wrote none, then leave it out or rerun it")
    missing = [c for c in REQUIRED_RECORD_COLUMNS if c not in header]
    if missing:
        raise AnalysisError(f"{run_dir}: {RECORDS} lacks column(s) {', '.join(missing)}; it was "
                            f"not written by this suite's schema (expected {', '.join(RECORD_FIELDS[:5])}, ...)")
    if info.truncated or info.skipped_rows or info.error:
        what = []
        if info.truncated:
            what.append("it ends mid-line (the last, partial row was dropped)")
        if info.skipped_rows:
            what.append(f"{info.skipped_rows} malformed row(s) were skipped")
        if info.error:
            what.append(f"read row by row after: {info.error}")
        warnings.add("truncated_file", f"run {run}: {RECORDS}: " + "; ".join(what), run)
    return records_frame(table, RECORD_COLUMNS)


def read_metrics_csv(path: Path, run: RunRef | str, warnings: WarningList) -> pd.DataFrame | None:
    table, header, info = read_metrics_table(path)
    if table is None:
        return None
    missing = missing_metric_columns(header)
    if missing:
        warnings.add("truncated_file", f"run {run}: {METRICS} lacks column(s) "
                     f"{', '.join(missing)}; metric samples ignored", run)
        return None
    if info.truncated or info.skipped_rows or info.error:
        warnings.add("truncated_file", f"run {run}: {METRICS}: "
                     + ("ends mid-line; " if info.truncated else "")
                     + (f"{info.skipped_rows} malformed row(s) skipped" if info.skipped_rows else "")
                     , run)
    df = table.to_pandas()
    return normalise_metrics(df)


def load_run(run_dir: Path, manifest: Manifest | None = None,
             ref: RunRef | None = None) -> RunData:
    """Read a run directory; AnalysisError when it cannot be used at all (NoRecordsError when
    it holds no record)."""
    run_dir = Path(run_dir)
    if manifest is None:
        manifest = read_manifest_checked(run_dir)
    ref = ref or run_ref(manifest, run_dir)
    warnings = WarningList()
    records = _read_records(run_dir, ref, warnings)
    stages, stages_truncated = read_stages(run_dir / STAGES)
    if manifest.status != RunStatus.COMPLETE:
        warnings.add("incomplete_run", incomplete_text(ref, manifest, stages), ref)
    for text in worker_texts(ref, manifest, stages):
        warnings.add(*text, ref)
    if stages_truncated:
        warnings.add("truncated_file", f"run {ref}: {STAGES} ends mid-line", ref)
    metrics = read_metrics_csv(run_dir / METRICS, ref, warnings)
    chat, source = locust_chat_requests(run_dir)
    return RunData(path=run_dir, run_id=ref.run_id, manifest=manifest, records=records,
                   stages=stages, metrics=metrics, locust_chat_requests=chat,
                   locust_source=source, warnings=warnings, ref=ref)


def _num(x: Any) -> float:
    return float(x) if isinstance(x, (int, float)) and not isinstance(x, bool) else math.nan


def worker_texts(run: RunRef | str, manifest: Manifest,
                 stages: pd.DataFrame) -> list[tuple[str, str]]:
    """The worker_lost and worker_clock warnings of a distributed run (manifest workers[])."""
    out = []
    start = _num(manifest.start_unix)
    for w in manifest.workers or []:
        if w.lost:
            last = _num(w.last_batch_unix)
            when = ("before its first batch" if math.isnan(last) else
                    f"after {last - start:.1f} s into the run{_stage_at(stages, last)}"
                    if not math.isnan(start) else "at an unknown time")
            out.append(("worker_lost", f"run {run}: worker {w.worker} ({w.host or '?'}) stopped "
                        f"sending records {when}; its {w.records} records until then are kept"))
        offset = _num(w.clock_offset_s)
        if abs(offset) > CLOCK_WARN_S:
            out.append(("worker_clock", f"run {run}: worker {w.worker} ({w.host or '?'}): clock "
                        f"{offset * 1e3:+.1f} ms off the master's"))
    return out


def _stage_at(stages: pd.DataFrame, t: float) -> str:
    """' (stage N)' for the stage running at unix time t, or ''."""
    if stages is None or stages.empty or "ramp_unix" not in stages:
        return ""
    started = stages[stages["ramp_unix"] <= t]
    return f" (stage {int(started['stage'].iloc[-1]) + 1})" if len(started) else ""


def incomplete_text(run: RunRef | str, manifest: Manifest, stages: pd.DataFrame) -> str:
    """The incomplete_run warning of a run whose manifest status is not 'complete'.

    An interrupted run (Ctrl-C/SIGTERM; status 'interrupted', interrupted_unix) says when it
    stopped (seconds into the run: interrupted_unix - start_unix), in which stage and phase, and
    what that means for the stage's figures."""
    status = manifest.status
    if status != RunStatus.INTERRUPTED:
        status = getattr(status, "value", status)      # printed as the plain string
        reason = manifest.failure_reason
        why = (f"failure_reason: {' '.join(str(reason).split())[:200]}" if reason else
               "the run crashed or is still running")
        return (f"run {run}: manifest status is {status!r}, not 'complete' ({why}); its figures "
                "cover what was written")
    stop, start = _num(manifest.interrupted_unix), _num(manifest.start_unix)
    if math.isnan(stop):
        when = "at an unknown time (the manifest has no interrupted_unix)"
    elif math.isnan(start):
        when = "at an unknown time into the run (the manifest has no start_unix)"
    else:
        when = f"{stop - start:.1f} s into the run"
    text = f"run {run}: manifest status is 'interrupted': stopped early (Ctrl-C/SIGTERM) {when}"
    # The stage it was in: the last one that had begun by then, and the last phase it reached.
    where = ""
    for row in stages.sort_values("stage").itertuples(index=False):
        times = [(p, _num(getattr(row, phase_column(p)))) for p in STAGE_PHASES]
        reached = [(p, t) for p, t in times if not math.isnan(t) and
                   (math.isnan(stop) or t <= stop)]
        if reached:
            where = (int(row.stage), reached[-1][0])
    if where:
        stage, phase = where
        text += f", during stage {stage} ({phase})"
        if phase in ("ramp", "warmup"):
            text += ": that stage never reached its steady state and has no figures"
        elif phase == "steady":
            text += ": that stage's steady window ends at the stop (steady_unix to end_unix)"
    return text + "; the figures cover the stages it reached"
