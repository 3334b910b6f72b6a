"""Generic readers of a run directory's CSV files, tolerant of crashed runs.

CSV files are read with pyarrow's CSV reader (the engine behind ``pd.read_csv(engine="pyarrow")``,
used directly for its row-level error handler), only the needed columns, with the types the
run directory declares (records: ``core.rundir.records``; stages and metrics: below). A file that
ends mid-line (the writer crashed) is read up to its last complete line and ``CsvReadInfo`` says
so; malformed rows are skipped and counted. What to make of that (warnings, errors) is the
caller's business: this module only reads.

pandas and pyarrow are imported with this module, so the load generator (which imports
``core.rundir``) never imports it.
"""

from __future__ import annotations

import csv
import io
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.csv as pacsv

from .layout import (LOCUST_JSON_FILE, LOCUST_STATS_CSV, METRIC_FIELDS, STAGE_FIELDS)
from .records import COLUMN_BY_NAME, RECORD_FIELDS, record_arrow_types

NULLS = ["", "nan", "NaN", "NAN", "None", "null", "NA", "N/A"]
_DICT = pa.dictionary(pa.int32(), pa.string())

# stages.csv and metrics.csv, as read
STAGE_COLUMNS: dict[str, pa.DataType] = {c: (pa.int64() if c == "stage" else pa.float64())
                                         for c in STAGE_FIELDS}
METRIC_COLUMNS: dict[str, pa.DataType] = {
    c: (pa.float64() if c in ("ts_unix", "value") else _DICT) for c in METRIC_FIELDS}
_METRIC_CATEGORIES = tuple(c for c in METRIC_FIELDS if c not in ("ts_unix", "value"))


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


# ---------------------------------------------------------------------------------------------
# records.csv

def read_records_table(path: Path, names: Iterable[str] | None = None
                       ) -> tuple[pa.Table | None, list[str], CsvReadInfo]:
    """The wanted record columns that the file has (all by default), typed by the record table."""
    return read_csv_table(Path(path), record_arrow_types(names), newlines_in_values=True)


def records_frame(table: pa.Table, names: Iterable[str] | None = None) -> pd.DataFrame:
    """A records table as a frame with every wanted column: a column the file lacks, or a blank
    cell, reads as the column's read default (core.rundir.records); integer and boolean columns
    get their own dtypes and categorical columns are pandas categoricals."""
    df = table.to_pandas()
    n = len(df)
    for name in (RECORD_FIELDS if names is None else names):
        col = COLUMN_BY_NAME[name]
        fill = col.read_default
        if name not in df:
            df[name] = pd.Categorical([fill] * n) if col.categorical else [fill] * n
            if col.type is int:
                df[name] = df[name].astype(np.int64)
            elif col.type is float:
                df[name] = df[name].astype(float)
            elif col.type is bool:
                df[name] = df[name].astype(bool)
            continue
        if col.type is bool:
            df[name] = df[name].fillna(fill).astype(bool)
        elif col.type is int:
            if df[name].isna().any():
                df[name] = df[name].fillna(fill)
            df[name] = df[name].astype(np.int64)
        elif col.categorical and not isinstance(df[name].dtype, pd.CategoricalDtype):
            df[name] = df[name].astype("category")
    return df


# ---------------------------------------------------------------------------------------------
# stages.csv

def read_stages(path: Path) -> tuple[pd.DataFrame, bool]:
    """One row per stage (STAGE_FIELDS, sorted; blank times NaN) and whether the file ends
    mid-line. Several rows for one stage (a writer that appends phase by phase): the latest
    values win. A missing or empty file is an empty frame."""
    table, header, info = read_csv_table(Path(path), STAGE_COLUMNS)
    if table is None or "stage" not in header:
        return pd.DataFrame({c: pd.Series(dtype=float) for c in STAGE_FIELDS}), info.truncated
    df = table.to_pandas()
    for c in STAGE_FIELDS:
        if c not in df:
            df[c] = np.nan
    df = df.dropna(subset=["stage"]).copy()
    df["stage"] = df["stage"].astype(np.int64)
    df = df.groupby("stage", as_index=False).last()
    return df[list(STAGE_FIELDS)].sort_values("stage").reset_index(drop=True), info.truncated


# ---------------------------------------------------------------------------------------------
# metrics.csv

def read_metrics_table(path: Path) -> tuple[pa.Table | None, list[str], CsvReadInfo]:
    return read_csv_table(Path(path), METRIC_COLUMNS)


def missing_metric_columns(header: list[str]) -> list[str]:
    return [c for c in METRIC_FIELDS if c not in header]


def normalise_metrics(df: pd.DataFrame) -> pd.DataFrame:
    """Types and order the analysis expects: categoricals, float ts/value, sorted by time."""
    df = df.dropna(subset=["ts_unix"])
    for c in _METRIC_CATEGORIES:
        if not isinstance(df[c].dtype, pd.CategoricalDtype):
            df[c] = df[c].fillna("").astype(str).astype("category")
    df["ts_unix"] = df["ts_unix"].astype(float)
    df["value"] = pd.to_numeric(df["value"], errors="coerce").astype(float)
    order = np.argsort(df["ts_unix"].to_numpy(), kind="stable")
    return df.iloc[order].reset_index(drop=True)


# ---------------------------------------------------------------------------------------------
# Locust's own files

def locust_chat_requests(run_dir: Path) -> tuple[int | None, str]:
    """CHAT requests Locust counted, and the file it came from (locust.json preferred: the
    final numbers; else locust_stats.csv); (None, "") when neither can be read."""
    run_dir = Path(run_dir)
    jpath = run_dir / LOCUST_JSON_FILE
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
    spath = run_dir / LOCUST_STATS_CSV
    if spath.is_file():
        try:
            df = pd.read_csv(spath)
            rows = df[df["Type"] == "CHAT"]
            return int(rows["Request Count"].sum()), spath.name
        except (OSError, ValueError, KeyError, pd.errors.ParserError):
            pass
    return None, ""
