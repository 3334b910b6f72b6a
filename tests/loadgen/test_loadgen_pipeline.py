"""The record pipeline's typed messages, and the run writer fed with them (no Locust process)."""

from __future__ import annotations

import logging
import math

import pytest

from core import rundir
from core.records import RECORD_FIELDS, RequestRecord
from core.rundir.manifest import Manifest, RunStatus
from locustfiles.messages import RecordBatch, StageTags
from locustfiles.writer import RunWriter


def _row(request_id: str) -> list:
    record = RequestRecord(run_id="r", endpoint="A", model="m", request_id=request_id,
                           start_unix=1.0, e2e_s=0.5, ok=True, http_status=200)
    return [getattr(record, name) for name in RECORD_FIELDS]


def test_a_batch_survives_its_wire_form():
    batch = RecordBatch(worker="h:1", rows=[_row("a-1")], cpu={"max_cpu_percent": 5.0,
                        "seconds_above_90": 0.0}, loop_lag={"0": [0.001]},
                        loop_lag_worst_s=0.004, in_flight={"A": 3}, final=True)
    payload = batch.to_payload()
    assert set(payload) == {"worker", "rows", "cpu", "loop_lag", "loop_lag_worst_s", "in_flight",
                            "final"}
    assert RecordBatch.from_payload(payload) == batch


def test_a_batch_without_its_optional_parts_reads_as_empty():
    assert RecordBatch.from_payload({"worker": "h:1", "rows": None}) == RecordBatch("h:1")
    with pytest.raises(KeyError):
        RecordBatch.from_payload({"rows": []})   # whose batch it is cannot be missing


def test_stage_tags_survive_their_wire_form():
    tags = StageTags(2, 8, "steady", 0.5, "run-1", 3)
    assert StageTags.from_payload(tags.to_payload()) == tags


def test_the_writer_appends_batches_and_keeps_cpu_lag_and_final_acks(tmp_path, caplog):
    writer = RunWriter(tmp_path / "run", Manifest(run_id="run", status=RunStatus.RUNNING))
    writer.on_batch(RecordBatch("h:1", rows=[_row("a-1"), _row("a-2")],
                                cpu={"max_cpu_percent": 95.0, "seconds_above_90": 4.0},
                                loop_lag={"0": [0.002, 0.004]}))
    writer.on_batch(RecordBatch.from_payload(  # through the message payload and back
        RecordBatch("h:2", rows=[_row("b-1")], final=True).to_payload()))
    assert writer.final_batches == 1
    writer.finalize(RunStatus.COMPLETE, 3)
    manifest = rundir.read_manifest(tmp_path / "run")
    assert manifest.records_written == 3 and manifest.load_generator.saturated
    assert math.isclose(manifest.load_generator.loop_lag_by_stage["0"].max_ms, 4.0)
    with caplog.at_level(logging.ERROR, logger="llm.runtime"):
        writer.on_batch(RecordBatch("h:1", final=True))   # a late "nothing more": silent
        assert not caplog.records
        writer.on_batch(RecordBatch("h:1", rows=[_row("a-3")]))
    assert "after the run was finalized" in caplog.text
    assert len((tmp_path / "run" / rundir.RECORDS).read_text().splitlines()) == 4
