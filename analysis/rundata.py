"""Reading one run directory (core.rundir layout) into frames, tolerating crashed runs.

CSV files are read with pyarrow's CSV reader (the engine behind ``pd.read_csv(engine="pyarrow")``,
used directly for its row-level error handler), only the needed columns, explicit types.
A file that ends mid-line (the writer crashed) is read up to its last complete line and the
report says so; malformed rows are skipped and counted.
"""

from __future__ import annotations

import csv
import io
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.csv as pacsv

from core.records import RECORD_FIELDS
from core.rundir import (LOCUST_CSV_PREFIX, LOCUST_JSON, LOCUST_LOG, MANIFEST, METRIC_FIELDS,
                         METRICS, RECORDS, SCHEMA_VERSION, STAGE_FIELDS, STAGES)

from .errors import AnalysisError, NoRecordsError, WarningList
from .runref import RunRef, run_ref

# The record columns the analysis reads, with their types.
_DICT = pa.dictionary(pa.int32(), pa.string())
RECORD_COLUMNS: dict[str, pa.DataType] = {
    "endpoint": _DICT, "model": _DICT, "repetition": pa.int64(), "stage": pa.int64(),
    "stage_users": pa.int64(), "phase": _DICT, "start_unix": pa.float64(),
    "send_lag_s": pa.float64(), "presend_s": pa.float64(), "ttft_s": pa.float64(),
    "ttfat_s": pa.float64(),
    "e2e_s": pa.float64(), "tpot_s": pa.float64(), "output_tokens": pa.float64(),
    "reasoning_tokens": pa.float64(), "answer_tokens": pa.float64(),
    "prompt_tokens": pa.float64(), "tokens_from_usage": pa.bool_(), "itl_mean_s": pa.float64(),
    "itl_p99_s": pa.float64(), "itl_max_s": pa.float64(), "ok": pa.bool_(),
    "error_category": _DICT, "error_message": pa.string(),
}
REQUIRED_RECORD_COLUMNS = ("endpoint", "stage", "phase", "start_unix", "ok")
METRIC_COLUMNS: dict[str, pa.DataType] = {
    "ts_unix": pa.float64(), "endpoint": _DICT, "source": _DICT, "metric": _DICT,
    "labels": _DICT, "value": pa.float64(),
}
NULLS = ["", "nan", "NaN", "NAN", "None", "null", "NA", "N/A"]


@dataclass
class CsvReadInfo:
    rows: int = 0
    skipped_rows: int = 0
    truncated: bool = False      # ended mid-line: the last partial line was dropped
    missing: bool = False
    error: str = ""


def _complete_length(path: Path) -> tuple[int, bool]:
    """Bytes up to and including the last newline, and whether the file ends mid-line."""
    size = path.stat().st_size
    if size == 0:
        return 0, False
    with open(path, "rb") as fh:
        fh.seek(size - 1)
        if fh.read(1) == b"\n":
            return size, False
        pos = size
        block = 1 << 16
        while pos > 0:
            start = max(0, pos - block)
            fh.seek(start)
            chunk = fh.read(pos - start)
            i = chunk.rfind(b"\n")
            if i >= 0:
                return start + i + 1, True
            pos = start
    return 0, True


def read_csv_table(path: Path, columns: dict[str, pa.DataType], *,
                   newlines_in_values: bool = False) -> tuple[pa.Table | None, list[str], CsvReadInfo]:
    """Read the wanted columns that exist; returns (table, header, info). Never raises on bad rows."""
    info = CsvReadInfo()
    if not path.is_file():
        info.missing = True
        return None, [], info
    length, info.truncated = _complete_length(path)
    if length == 0:
        return None, [], info
    with open(path, "rb") as fh:
        header_line = fh.readline(1 << 20).decode("utf-8", errors="replace")
    header = next(csv.reader([header_line]), [])
    wanted = [c for c in columns if c in header]
    skipped = [0]

    def on_invalid(row) -> str:
        skipped[0] += 1
        return "skip"

    read_opts = pacsv.ReadOptions(block_size=1 << 24, use_threads=True)
    parse_opts = pacsv.ParseOptions(newlines_in_values=newlines_in_values,
                                    invalid_row_handler=on_invalid)
    conv_opts = pacsv.ConvertOptions(
        column_types={c: columns[c] for c in wanted}, include_columns=wanted,
        null_values=NULLS, true_values=["True", "true", "1"], false_values=["False", "false", "0"],
        strings_can_be_null=False, quoted_strings_can_be_null=False)
    try:
        with pa.memory_map(str(path), "r") as mm:
            buf = mm.read_buffer(length)
            table = pacsv.read_csv(pa.BufferReader(buf), read_options=read_opts,
                                   parse_options=parse_opts, convert_options=conv_opts)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
        # Values that do not convert, an unterminated quote: fall back to a tolerant row reader.
        table, skipped[0] = _tolerant_read(path, length, header, wanted, columns)
        info.error = " ".join(str(exc).split())[:200]
    info.skipped_rows = skipped[0]
    info.rows = table.num_rows
    return table, header, info


def _tolerant_read(path: Path, length: int, header: list[str], wanted: list[str],
                   columns: dict[str, pa.DataType]) -> tuple[pa.Table, int]:
    """Slow path for damaged files: the csv module, row by row, skipping what does not parse."""
    idx = [header.index(c) for c in wanted]
    data: dict[str, list[Any]] = {c: [] for c in wanted}
    skipped = 0
    with open(path, "r", encoding="utf-8", errors="replace", newline="") as fh:
        text = fh.read(length)
    reader = csv.reader(io.StringIO(text))
    next(reader, None)
    while True:
        try:
            row = next(reader)
        except StopIteration:
            break
        except csv.Error:
            skipped += 1
            break
        if len(row) != len(header):
            skipped += 1
            continue
        try:
            values = [_convert(row[i], columns[c]) for i, c in zip(idx, wanted)]
        except ValueError:
            skipped += 1
            continue
        for c, v in zip(wanted, values):
            data[c].append(v)
    arrays = {}
    for c in wanted:
        t = columns[c]
        if pa.types.is_dictionary(t):
            arrays[c] = pa.array(data[c], type=pa.string()).dictionary_encode()
        else:
            arrays[c] = pa.array(data[c], type=t)
    return pa.table(arrays) if arrays else pa.table({}), skipped


def _convert(text: str, typ: pa.DataType) -> Any:
    if pa.types.is_dictionary(typ) or pa.types.is_string(typ):
        return text
    if text in NULLS:
        if pa.types.is_floating(typ):
            return math.nan
        return None
    if pa.types.is_boolean(typ):
        if text in ("True", "true", "1"):
            return True
        if text in ("False", "false", "0"):
            return False
        raise ValueError(text)
    if pa.types.is_integer(typ):
        return int(float(text))
    return float(text)


@dataclass
class RunData:
    """One run directory, read."""

    path: Path
    run_id: str
    manifest: dict[str, Any]
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
        return self.manifest.get("config") or {}

    @property
    def load(self) -> dict[str, Any]:
        return self.config.get("load") or {}

    @property
    def mode(self) -> str:
        return str(self.load.get("mode") or "closed")

    @property
    def repetition(self) -> int:
        rep = self.manifest.get("repetition")
        if isinstance(rep, (int, float)) and not isinstance(rep, bool):
            return int(rep)
        if len(self.records) and "repetition" in self.records:
            vals = self.records["repetition"].dropna()
            if len(vals):
                return int(vals.iloc[0])
        return 0

    @property
    def endpoints(self) -> list[str]:
        labels = list(self.manifest.get("endpoints") or [])
        if len(self.records):
            for e in self.records["endpoint"].astype(str).unique():
                if e not in labels:
                    labels.append(e)
        return labels

    def endpoint_config(self, label: str) -> dict[str, Any]:
        for ep in self.config.get("endpoints") or []:
            if isinstance(ep, dict) and ep.get("label") == label:
                return ep
        return {}


def read_manifest_checked(run_dir: Path) -> dict[str, Any]:
    """The manifest, or AnalysisError saying what is wrong with it."""
    path = run_dir / MANIFEST
    if not path.is_file():
        raise AnalysisError(f"{run_dir}: {MANIFEST} is missing; pass a run directory written by "
                            "make loadtest (or a folder holding such directories)")
    try:
        with open(path, encoding="utf-8") as fh:
            manifest = json.load(fh)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise AnalysisError(f"{run_dir}: {MANIFEST} is not readable JSON ({exc}); the run may "
                            "have crashed while writing it: leave this run out") from None
    if not isinstance(manifest, dict):
        raise AnalysisError(f"{run_dir}: {MANIFEST} is not a JSON object; leave this run out")
    # Another tool's manifest.json (find_run_dirs takes any folder holding one): say so, rather
    # than calling it an old run.
    lacking = [k for k in ("schema_version", "run_id") if manifest.get(k) in (None, "")]
    if lacking:
        raise AnalysisError(
            f"{run_dir}: not a run directory of this suite: its {MANIFEST} has no "
            f"{' and no '.join(lacking)} (another tool's file?); pass the run directories "
            "make loadtest wrote (results/<campaign>/runs/...), or leave this folder out")
    version = manifest.get("schema_version")
    if version != SCHEMA_VERSION:
        newer = isinstance(version, int) and version > SCHEMA_VERSION
        raise AnalysisError(
            f"{run_dir}: written with run-directory schema_version {version!r}, this analysis "
            f"reads version {SCHEMA_VERSION}; "
            + ("update the suite to read it" if newer else
               "rebuild its report with the suite version that wrote it, or leave it out"))
    return manifest


def _read_records(run_dir: Path, run: RunRef, warnings: WarningList) -> pd.DataFrame:
    path = run_dir / RECORDS
    table, header, info = read_csv_table(path, RECORD_COLUMNS, newlines_in_values=True)
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
    df = table.to_pandas()
    for c, typ in RECORD_COLUMNS.items():
        if c in df:
            continue
        if pa.types.is_floating(typ):
            df[c] = np.nan
        elif pa.types.is_boolean(typ):
            df[c] = c == "tokens_from_usage"
        elif pa.types.is_integer(typ):
            df[c] = 0
        else:
            df[c] = pd.Categorical([""] * len(df)) if pa.types.is_dictionary(typ) else ""
    df["ok"] = df["ok"].fillna(False).astype(bool)
    df["tokens_from_usage"] = df["tokens_from_usage"].fillna(True).astype(bool)
    for c in ("stage", "stage_users", "repetition"):
        if df[c].isna().any():
            df[c] = df[c].fillna(-1)
        df[c] = df[c].astype(np.int64)
    for c in ("endpoint", "phase", "error_category", "model"):
        if not isinstance(df[c].dtype, pd.CategoricalDtype):
            df[c] = df[c].astype("category")
    return df


def _read_stages(run_dir: Path) -> tuple[pd.DataFrame, bool]:
    path = run_dir / STAGES
    cols = {c: (pa.int64() if c == "stage" else pa.float64()) for c in STAGE_FIELDS}
    table, header, info = read_csv_table(path, cols)
    if table is None or "stage" not in header:
        return pd.DataFrame({c: pd.Series(dtype=float) for c in STAGE_FIELDS}), info.truncated
    df = table.to_pandas()
    for c in STAGE_FIELDS:
        if c not in df:
            df[c] = np.nan
    df = df.dropna(subset=["stage"]).copy()
    df["stage"] = df["stage"].astype(np.int64)
    # Several rows for one stage (a writer that appends phase by phase): keep the latest values.
    df = df.groupby("stage", as_index=False).last()
    return df[list(STAGE_FIELDS)].sort_values("stage").reset_index(drop=True), info.truncated


def read_metrics_csv(path: Path, run: RunRef | str, warnings: WarningList) -> pd.DataFrame | None:
    table, header, info = read_csv_table(path, METRIC_COLUMNS)
    if table is None:
        return None
    missing = [c for c in METRIC_FIELDS if c not in header]
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


def normalise_metrics(df: pd.DataFrame) -> pd.DataFrame:
    """Types and order the analysis expects: categoricals, float ts/value, sorted by time."""
    df = df.dropna(subset=["ts_unix"])
    for c in ("endpoint", "source", "metric", "labels"):
        if not isinstance(df[c].dtype, pd.CategoricalDtype):
            df[c] = df[c].fillna("").astype(str).astype("category")
    df["ts_unix"] = df["ts_unix"].astype(float)
    df["value"] = pd.to_numeric(df["value"], errors="coerce").astype(float)
    order = np.argsort(df["ts_unix"].to_numpy(), kind="stable")
    return df.iloc[order].reset_index(drop=True)


def _locust_chat_requests(run_dir: Path, labels: list[str]) -> tuple[int | None, str]:
    """CHAT requests Locust counted (locust.json preferred: the final numbers)."""
    jpath = run_dir / f"{LOCUST_JSON}.json"
    if jpath.is_file():
        try:
            entries = json.loads(jpath.read_text(encoding="utf-8"))
            if isinstance(entries, list):
                total = 0
                for e in entries:
                    if isinstance(e, dict) and e.get("method") == "CHAT":
                        total += int(e.get("num_requests") or 0)
                return total, jpath.name
        except (OSError, ValueError, TypeError):
            pass
    spath = run_dir / f"{LOCUST_CSV_PREFIX}_stats.csv"
    if spath.is_file():
        try:
            df = pd.read_csv(spath)
            rows = df[df["Type"] == "CHAT"]
            return int(rows["Request Count"].sum()), spath.name
        except (OSError, ValueError, KeyError, pd.errors.ParserError):
            pass
    return None, ""


def load_run(run_dir: Path, manifest: dict[str, Any] | None = None,
             ref: RunRef | None = None) -> RunData:
    """Read a run directory; AnalysisError when it cannot be used at all (NoRecordsError when
    it holds no record)."""
    run_dir = Path(run_dir)
    if manifest is None:
        manifest = read_manifest_checked(run_dir)
    ref = ref or run_ref(manifest, run_dir)
    warnings = WarningList()
    records = _read_records(run_dir, ref, warnings)
    stages, stages_truncated = _read_stages(run_dir)
    status = manifest.get("status")
    if status != "complete":
        warnings.add("incomplete_run", incomplete_text(ref, manifest, stages), ref)
    if stages_truncated:
        warnings.add("truncated_file", f"run {ref}: {STAGES} ends mid-line", ref)
    metrics = read_metrics_csv(run_dir / METRICS, ref, warnings)
    labels = list(manifest.get("endpoints") or [])
    chat, source = _locust_chat_requests(run_dir, labels)
    return RunData(path=run_dir, run_id=ref.run_id, manifest=manifest, records=records,
                   stages=stages, metrics=metrics, locust_chat_requests=chat,
                   locust_source=source, warnings=warnings, ref=ref)


PHASES = ("ramp", "warmup", "steady", "drain")


def _num(x: Any) -> float:
    return float(x) if isinstance(x, (int, float)) and not isinstance(x, bool) else math.nan


def incomplete_text(run: RunRef | str, manifest: dict[str, Any], stages: pd.DataFrame) -> str:
    """The incomplete_run warning of a run whose manifest status is not 'complete'.

    An interrupted run (Ctrl-C/SIGTERM; status 'interrupted', interrupted_unix) says when it
    stopped (seconds into the run: interrupted_unix - start_unix), in which stage and phase, and
    what that means for the stage's figures."""
    status = manifest.get("status")
    if status != "interrupted":
        reason = manifest.get("failure_reason")
        why = (f"failure_reason: {' '.join(str(reason).split())[:200]}" if reason else
               "the run crashed or is still running")
        return (f"run {run}: manifest status is {status!r}, not 'complete' ({why}); its figures "
                "cover what was written")
    stop, start = _num(manifest.get("interrupted_unix")), _num(manifest.get("start_unix"))
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
        times = [(p, _num(getattr(row, f"{p}_unix"))) for p in PHASES]
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
