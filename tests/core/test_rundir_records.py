"""The record column table drives everything about records.csv; ErrorCategory covers the clients."""

from __future__ import annotations

import ast
import csv
import dataclasses
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

import core.records
from core.rundir import (ERROR_CATEGORIES, FIELD_DEFINITIONS, RECORD_COLUMNS, RECORD_DEFAULTS,
                         RECORD_FIELDS, ErrorCategory, RequestRecord, record_appender,
                         record_values)
from core.rundir.read import read_records_table, records_frame
from core.rundir.records import record_arrow_schema, record_arrow_types

ROOT = Path(__file__).resolve().parents[2]


def test_the_table_is_the_dataclass():
    assert RECORD_FIELDS == tuple(f.name for f in dataclasses.fields(RequestRecord))
    assert [c.name for c in RECORD_COLUMNS] == list(RECORD_FIELDS)
    assert set(FIELD_DEFINITIONS) == set(RECORD_FIELDS) and all(FIELD_DEFINITIONS.values())
    new = RequestRecord()
    for c in RECORD_COLUMNS:
        value = getattr(new, c.name)
        assert type(value) is c.type, c.name
        assert value == c.default or (math.isnan(value) and math.isnan(c.default))
        assert RECORD_DEFAULTS[c.name] is c.default
    # core.records re-exports the same objects (the load generator imports them from there)
    assert core.records.RequestRecord is RequestRecord
    assert core.records.RECORD_FIELDS is RECORD_FIELDS
    assert core.records.ERROR_CATEGORIES is ERROR_CATEGORIES


def test_the_table_drives_the_arrow_schema():
    schema = record_arrow_schema()
    assert schema.names == list(RECORD_FIELDS)
    expected = {str: pa.string(), int: pa.int64(), float: pa.float64(), bool: pa.bool_()}
    for c in RECORD_COLUMNS:
        t = schema.field(c.name).type
        if c.categorical:
            assert t == pa.dictionary(pa.int32(), pa.string()), c.name
        else:
            assert t == expected[c.type], c.name
    assert list(record_arrow_types(["ok", "stage"])) == ["ok", "stage"]


def test_written_records_read_back_with_their_types(tmp_path):
    rec = RequestRecord(run_id="r", endpoint="A", stage=0, stage_users=2, phase="steady",
                        start_unix=1.5, ttft_s=0.25, output_tokens=16.0,
                        tokens_from_usage=True, http_status=200, ok=True)
    bad = RequestRecord(run_id="r", endpoint="A", error_category=ErrorCategory.STREAM_ERROR,
                        error_message='a "quoted", multi\nline message')
    appender = record_appender(tmp_path)
    appender.append_encoded(appender.encode_values([record_values(rec), record_values(bad)]), 2)
    appender.close()
    with open(tmp_path / "records.csv", newline="") as fh:
        assert next(csv.reader(fh)) == list(RECORD_FIELDS)
    table, header, info = read_records_table(tmp_path / "records.csv")
    assert header == list(RECORD_FIELDS) and table.num_rows == 2 and not info.skipped_rows
    df = records_frame(table)
    assert df["stage"].tolist() == [0, -1] and df["stage"].dtype == np.int64
    assert df["ok"].tolist() == [True, False] and df["tokens_from_usage"].tolist() == [True, False]
    assert isinstance(df["endpoint"].dtype, pd.CategoricalDtype)
    assert df["error_category"].astype(str).tolist() == ["", "stream_error"]
    assert df["error_message"].iloc[1] == 'a "quoted", multi\nline message'
    assert math.isnan(df["ttft_s"].iloc[1])


def test_missing_columns_and_blank_cells_read_as_the_table_says(tmp_path):
    path = tmp_path / "records.csv"
    path.write_text("endpoint,stage,phase,start_unix,ok,stage_users,tokens_from_usage\n"
                    "A,0,steady,1.0,True,,\n"
                    "A,,steady,2.0,,3,False\n")
    names = ["endpoint", "stage", "phase", "start_unix", "ok", "stage_users",
             "tokens_from_usage", "repetition", "ttft_s", "model", "error_message"]
    table, _, _ = read_records_table(path, names)
    df = records_frame(table, names)
    columns = {c.name: c for c in RECORD_COLUMNS}
    assert df["stage"].tolist() == [0, columns["stage"].read_default]
    assert df["stage_users"].tolist() == [columns["stage_users"].read_default, 3]
    assert df["ok"].tolist() == [True, columns["ok"].read_default]
    # an older file without token counts from chunks got its tokens from usage
    assert columns["tokens_from_usage"].read_default is True
    assert df["tokens_from_usage"].tolist() == [True, False]
    assert df["repetition"].tolist() == [0, 0] and df["repetition"].dtype == np.int64
    assert df["ttft_s"].isna().all()
    assert isinstance(df["model"].dtype, pd.CategoricalDtype) and (df["model"] == "").all()
    assert (df["error_message"] == "").all()


def test_error_categories_are_derived_from_the_enum():
    assert list(ERROR_CATEGORIES) == [c.value for c in ErrorCategory]
    assert all(ERROR_CATEGORIES[c] == c.definition for c in ErrorCategory)
    assert ErrorCategory.STREAM_TRUNCATED == "stream_truncated"
    assert f"{ErrorCategory.HTTP_5XX}: x" == "http_5xx: x"
    assert ErrorCategory.for_http_status(404) is ErrorCategory.HTTP_4XX
    assert ErrorCategory.for_http_status(503) is ErrorCategory.HTTP_5XX


def _stream_failure_categories() -> tuple[set[str], list[str]]:
    """Every category the load generator's code can give a StreamFailure, and the calls that
    do not name one through ErrorCategory."""
    used: set[str] = set()
    loose: list[str] = []
    for path in sorted((ROOT / "locustfiles").glob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
                    and node.func.id == "StreamFailure"):
                continue
            where = f"{path.name}:{node.lineno}"
            arg = node.args[0] if node.args else None
            if (isinstance(arg, ast.Attribute) and isinstance(arg.value, ast.Name)
                    and arg.value.id == "ErrorCategory"):
                used.add(arg.attr)
            elif (isinstance(arg, ast.Call) and isinstance(arg.func, ast.Attribute)
                  and arg.func.attr == "for_http_status"):
                used |= {"HTTP_4XX", "HTTP_5XX"}
            else:
                loose.append(where)
    return used, loose


def test_every_category_a_client_can_emit_is_an_error_category_and_back():
    used, loose = _stream_failure_categories()
    assert not loose, f"StreamFailure with a category not taken from ErrorCategory: {loose}"
    members = {c.name for c in ErrorCategory}
    assert used <= members, used - members
    assert used == members, f"categories no client emits: {members - used}"


def test_a_failure_outside_the_categories_is_refused():
    from locustfiles.stream import StreamFailure

    failure = StreamFailure("stream_error", "boom", 200)
    assert failure.category == ErrorCategory.STREAM_ERROR and type(failure.category) is str
    assert str(failure) == "stream_error: boom"
    with pytest.raises(ValueError):
        StreamFailure("stream_eror", "typo")
