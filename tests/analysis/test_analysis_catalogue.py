"""The metric catalogue drives computing, comparing and showing; one run's analysis is plain data."""

from __future__ import annotations

import copy

import pandas as pd
import pytest

from support import synth
from core.rundir import RECORD_FIELDS
from analysis import catalogue
from analysis.catalogue import METRICS, REQUEST, RUN, shown_in
from analysis.perrun import RunAnalysis, analyse_run
from analysis.rundata import load_run

VIEWS = ("at", "latency", "throughput", "tokens", "server", "gpu_memory", "per_run", "headline",
         "terminal", "compare", "paired")


def test_every_definition_is_complete_and_consistent():
    for m in METRICS.values():
        assert m.source in (catalogue.RECORDS, catalogue.METRICS_CSV, catalogue.DERIVED), m.key
        assert m.stat and m.label and m.definition, m.key
        assert m.compare in (None, REQUEST, RUN), m.key
        assert (m.compare is None) == (m.position("compare") is None), m.key
        if m.compare == REQUEST:
            assert m.column, m.key
        if m.column:
            assert m.column in RECORD_FIELDS, m.key
        if m.position("at") is not None:
            assert m.at_label, m.key
        assert {v for v, _ in m.show} <= set(VIEWS), m.key


@pytest.mark.parametrize("view", VIEWS)
def test_a_view_has_one_metric_per_position(view):
    positions = [m.position(view) for m in METRICS.values() if m.position(view) is not None]
    assert positions and len(positions) == len(set(positions))


def test_what_is_compared_comes_from_the_catalogue():
    assert list(catalogue.REQUEST_COMPARED) == ["ttft_p50", "e2e_p50", "tpot_p50"]
    assert catalogue.REQUEST_COMPARED["ttft_p50"] == "ttft_s"
    assert catalogue.RUN_COMPARED[0] == "req_per_s"
    assert set(shown_in("compare")) == set(catalogue.REQUEST_COMPARED) | set(catalogue.RUN_COMPARED)


def _run(tmp_path):
    spec = synth.SynthSpec(stages=(1, 4), steady_s=8.0, all_histograms=True)
    synth.synth_run(tmp_path / "r01", spec, run_id="r01")
    return load_run(tmp_path / "r01")


def test_every_figure_is_computed(tmp_path):
    """A figure added to the catalogue but computed nowhere fails here, not as a silent NaN."""
    ra = analyse_run(_run(tmp_path), {})
    missing = set(METRICS) - set(ra.per_run.columns)
    assert missing <= {"send_lag_p99"}     # open loop only
    for key in ("ttft_p50", "gpu_util_mean", "vllm_ttft_p50", "energy_per_token", "down_share"):
        assert ra.per_run[key].notna().any(), key


def test_analyse_run_returns_plain_data_and_changes_nothing(tmp_path):
    run = _run(tmp_path)
    records, stages, warnings = run.records.copy(), run.stages.copy(), list(run.warnings)
    manifest = copy.deepcopy(run.manifest)
    first = analyse_run(run, {"ttft_ms": 100.0})
    again = analyse_run(run, {"ttft_ms": 100.0})
    assert isinstance(first, RunAnalysis)
    pd.testing.assert_frame_equal(run.records, records)
    pd.testing.assert_frame_equal(run.stages, stages)
    assert run.warnings == warnings and run.manifest == manifest
    pd.testing.assert_frame_equal(first.per_run, again.per_run)
    assert first.warnings == again.warnings
    assert set(first.timeseries) == {"A", "B"}
    assert set(first.request_values) == {("A", 1.0), ("A", 4.0), ("B", 1.0), ("B", 4.0)}
    assert analyse_run(run, {}, timeseries_for=["B"]).timeseries.keys() == {"B"}
