"""Trace replay (mode "trace"): the reader, the plan, the requests, and replays against the stub.

The replays check what a trace replay promises: every arrival is sent exactly once per arm (also
split over two worker processes), at the stage's start + ramp_s + its offset / trace_time_scale,
never early and late by little, asking for its output length with a prompt sized by its input
length, under the same key in every arm.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from analysis.build import Options, analyse
from core.config import LoadSettings, load_config
from locustfiles.plan import build_plan, is_open_loop, user_class_name
from locustfiles.prompts import WORDS_PER_TOKEN
from locustfiles.traces import (SAMPLE_PATH, TRACE_END_MARGIN_S, TraceError, TraceRequests,
                                convert_azure, read_trace, sample_trace, trace_key)
from support import run_campaign, write_config


def _write(path: Path, lines: list) -> Path:
    path.write_text("".join((x if isinstance(x, str) else json.dumps(x)) + "\n" for x in lines))
    return path


# ---- the reader ----

def test_mooncake_lines_and_the_aliases_read_alike(tmp_path):
    trace = read_trace(_write(tmp_path / "t.jsonl", [
        {"timestamp": 2000, "input_length": 100, "output_length": 10, "hash_ids": [1, 2]},
        {"timestamp_ms": 2500, "input_tokens": 50, "output_tokens": 5},
        "",
        {"t_s": 3.0, "prompt_tokens": 7, "completion_tokens": 3},
        {"arrival_s": 4.25, "input_length": 1, "output_length": 1, "meta": "ignored"},
    ]))
    assert [(a.line, a.offset_s, a.input_tokens, a.output_tokens) for a in trace.arrivals] == [
        (1, 0.0, 100, 10), (2, 0.5, 50, 5), (4, 1.0, 7, 3), (5, 2.25, 1, 1)]
    assert trace.span_s == 2.25 and trace.out_of_order == 0
    assert trace.mean_rate(1.0) == 1.78 and trace.mean_rate(2.0) == 3.56   # 4 / 2.25 s


def test_lines_out_of_time_order_are_replayed_in_time_order(tmp_path):
    trace = read_trace(_write(tmp_path / "t.jsonl", [
        {"t_s": 1.0, "input_length": 1, "output_length": 1},
        {"t_s": 0.0, "input_length": 2, "output_length": 1},
        {"t_s": 1.0, "input_length": 3, "output_length": 1},
        {"t_s": 0.5, "input_length": 4, "output_length": 1}]))
    assert [a.line for a in trace.arrivals] == [2, 4, 1, 3]    # equal times: file order
    assert trace.out_of_order == 2
    assert "2 line(s) out of time order" in trace.summary(1.0, 100)


@pytest.mark.parametrize("line, message", [
    ("{not json", "not JSON"),
    ('[1, 2]', "expected a JSON object"),
    ('{"input_length": 1, "output_length": 1}', "no arrival time"),
    ('{"timestamp": -5, "input_length": 1, "output_length": 1}', "negative"),
    ('{"timestamp": "soon", "input_length": 1, "output_length": 1}', "is not a number"),
    ('{"timestamp": 5, "output_length": 1}', "no input length"),
    ('{"timestamp": 5, "input_length": 0, "output_length": 1}', "at least 1"),
    ('{"timestamp": 5, "input_length": 2.5, "output_length": 1}', "whole number"),
    ('{"timestamp": 5, "input_length": true, "output_length": 1}', "is not a number"),
    ('{"timestamp": 5, "t_s": 1, "input_length": 1, "output_length": 1}', "keep one"),
])
def test_a_bad_line_is_named_with_its_number_and_the_fix(tmp_path, line, message):
    path = _write(tmp_path / "t.jsonl", [{"timestamp": 0, "input_length": 1, "output_length": 1},
                                         "", line])
    with pytest.raises(TraceError) as err:
        read_trace(path)
    assert f"{path}:3:" in str(err.value) and message in str(err.value)


@pytest.mark.parametrize("lines, message", [
    ([], r"0 arrival\(s\)"),
    ([{"timestamp": 0, "input_length": 1, "output_length": 1}], r"1 arrival\(s\)"),
    ([{"timestamp": 7, "input_length": 1, "output_length": 1}] * 3, "the same time"),
])
def test_a_trace_with_nothing_to_replay_over_time_is_refused(tmp_path, lines, message):
    with pytest.raises(TraceError, match=message):
        read_trace(_write(tmp_path / "t.jsonl", lines))


def test_a_missing_trace_file_says_where_it_was_looked_for(tmp_path):
    with pytest.raises(TraceError, match="not found .*config file's folder"):
        read_trace(tmp_path / "nope.jsonl")


# ---- the plan, the split and the requests ----

def _trace_load(path: Path, **settings) -> LoadSettings:
    return LoadSettings(mode="trace", trace_file=str(path), **settings)


def test_a_trace_is_one_stage_at_its_mean_rate_covering_the_scaled_trace(tmp_path):
    path = _write(tmp_path / "t.jsonl", [{"t_s": t, "input_length": 5, "output_length": 5}
                                         for t in (10.0, 12.0, 30.0)])
    load = _trace_load(path, trace_time_scale=2.0, ramp_s=3.0, warmup_s=4.0, drain_s=5.0)
    (stage,) = build_plan(load)
    assert stage.rate == pytest.approx(3 / 10.0)          # 3 arrivals over 20 s / 2
    assert (stage.ramp_s, stage.warmup_s, stage.drain_s) == (3.0, 4.0, 5.0)
    assert stage.warmup_s + stage.steady_s == pytest.approx(10.0 + TRACE_END_MARGIN_S)
    assert stage.phase_at(3.0 + 3.9) == "warmup" and stage.phase_at(3.0 + 4.1) == "steady"
    assert stage.phase_at(3.0 + 10.0) == "steady"           # the last arrival
    assert is_open_loop("trace") and is_open_loop("open") and not is_open_loop("closed")
    assert user_class_name("trace", "a.b") == "Trace_a_b"


def test_a_warmup_as_long_as_the_trace_is_refused_with_the_fix(tmp_path):
    path = _write(tmp_path / "t.jsonl", [{"t_s": t, "input_length": 5, "output_length": 5}
                                         for t in (0.0, 6.0)])
    with pytest.raises(TraceError, match=r"lasts 3.0s .* lower warmup_s"):
        build_plan(_trace_load(path, trace_time_scale=2.0, warmup_s=3.0))


def test_a_relative_trace_file_is_read_from_the_config_folder(tmp_path):
    (tmp_path / "cfg").mkdir()
    _write(tmp_path / "cfg" / "t.jsonl", [{"t_s": 0, "input_length": 1, "output_length": 1},
                                          {"t_s": 20, "input_length": 1, "output_length": 1}])
    cfg = write_config(tmp_path / "cfg" / "ep.json", [
        {"label": "A", "base_url": "http://127.0.0.1:9/v1", "model": "m"}],
        load={"mode": "trace", "trace_file": "t.jsonl"})
    (stage,) = build_plan(load_config(cfg).load)
    assert stage.rate == pytest.approx(0.1)


def test_generators_split_the_arrivals_each_sent_once():
    trace = read_trace(SAMPLE_PATH)
    for generators in (1, 2, 3):
        lines = [a.line for i in range(generators) for a in trace.share(i, generators)]
        assert sorted(lines) == sorted(a.line for a in trace.arrivals)
    # a worker index past the count (a replacement worker) takes the share of its remainder
    assert trace.share(3, 2) == trace.share(1, 2)


def test_each_arrival_asks_for_its_lengths_the_same_in_every_arm():
    trace = read_trace(SAMPLE_PATH)
    requests = TraceRequests.of(trace, seed=5, words_per_token=WORDS_PER_TOKEN)
    short = min(trace.arrivals, key=lambda a: a.input_tokens)
    long = max(trace.arrivals, key=lambda a: a.input_tokens)
    plans = {a.line: requests.plan(trace_key(0, a.line)) for a in (short, long)}
    for arrival in (short, long):
        planned = plans[arrival.line]
        words = len(planned.messages[0]["content"].split())
        assert words == max(1, round(arrival.input_tokens * WORDS_PER_TOKEN))
        assert planned.output_tokens == arrival.output_tokens
        assert planned.dataset_item == arrival.line
        again = TraceRequests.of(trace, 5, WORDS_PER_TOKEN)
        assert again.plan(trace_key(0, arrival.line)) == planned
    other_seed = TraceRequests.of(trace, 6, WORDS_PER_TOKEN).plan(trace_key(0, short.line))
    assert other_seed.messages != plans[short.line].messages


# ---- the shipped sample and the Azure converter ----

def test_the_shipped_sample_is_its_generators_output():
    shipped = [json.loads(line) for line in SAMPLE_PATH.read_text().splitlines()]
    assert shipped == sample_trace(), "regenerate: python -m locustfiles.traces sample"
    trace = read_trace(SAMPLE_PATH)
    gaps = np.diff([a.offset_s for a in trace.arrivals])
    assert 60 <= trace.span_s <= 120
    assert gaps.std() > 1.5 * gaps.mean()     # bursty: burstier than Poisson (std = mean)
    assert max(a.input_tokens + a.output_tokens for a in trace.arrivals) <= 1024


def test_an_azure_csv_converts_to_a_trace(tmp_path):
    source = tmp_path / "azure.csv"
    source.write_text("TIMESTAMP,ContextTokens,GeneratedTokens\n"
                      "2023-11-16 18:15:46.6805900,374,44\n"
                      "2023-11-16 18:15:50.1805900,396,109\n"
                      "2023-11-16 18:15:47.0000000,879,0\n")
    assert convert_azure(source, tmp_path / "t.jsonl") == 3
    trace = read_trace(tmp_path / "t.jsonl")
    assert [(a.line, a.input_tokens, a.output_tokens) for a in trace.arrivals] == [
        (1, 374, 44), (3, 879, 1), (2, 396, 109)]
    assert [a.offset_s for a in trace.arrivals] == pytest.approx([0.0, 0.31941, 3.5])
    bad = tmp_path / "bad.csv"
    bad.write_text("TIMESTAMP,Tokens\n1,2\n")
    with pytest.raises(TraceError, match="ContextTokens, GeneratedTokens"):
        convert_azure(bad, tmp_path / "x.jsonl")


def test_the_campaign_refuses_a_bad_trace_before_any_load(tmp_path):
    _write(tmp_path / "t.jsonl", [{"t_s": 0, "input_length": 1, "output_length": 1},
                                  {"t_s": "x", "input_length": 1, "output_length": 1}])
    cfg = write_config(tmp_path / "ep.json", [
        {"label": "A", "base_url": "http://127.0.0.1:9/v1", "model": "m"}],
        load={"mode": "trace", "trace_file": "t.jsonl"})
    result = run_campaign(["--endpoints-file", str(cfg), "--results-dir", str(tmp_path / "res")],
                          timeout=60)
    assert result.returncode == 2, result.stdout + result.stderr
    assert f"{tmp_path / 't.jsonl'}:2: t_s = \"x\" is not a number" in result.stderr
    assert not (tmp_path / "res").exists() or not any((tmp_path / "res").iterdir())


# ---- replays against the stub ----

def _short_trace(path: Path, arrivals: int = 40, span_s: float = 6.0) -> list[dict]:
    """Bursty arrival times over span_s, lengths spread wide (seeded)."""
    rng = random.Random(7)
    times = sorted(rng.uniform(0, span_s) ** 1.5 / span_s ** 0.5 for _ in range(arrivals - 2))
    lines = [{"timestamp": round(t * 1000), "input_length": rng.randint(8, 400),
              "output_length": rng.randint(1, 24), "hash_ids": [rng.randint(0, 9)]}
             for t in [0.0, *times, span_s]]
    _write(path, lines)
    return lines


@pytest.mark.slow
@pytest.mark.parametrize("scale, workers", [(1.0, 0), (2.0, 2)])
def test_a_trace_is_replayed_on_schedule_once_per_arm(stub, tmp_path, scale, workers):
    lines = _short_trace(tmp_path / "trace.jsonl")
    ramp_s = 1.0
    cfg = write_config(tmp_path / "ep.json", [
        {"label": "A", "base_url": stub(ttft_ms=5, itl_ms=1), "model": "stub-model"},
        {"label": "B", "base_url": stub(ttft_ms=20, itl_ms=3), "model": "stub-model"}],
        load={"mode": "trace", "trace_file": "trace.jsonl", "trace_time_scale": scale,
              "ramp_s": ramp_s, "warmup_s": 0.5, "drain_s": 0.5},
        request={"max_tokens": 16})     # some arrivals ask for more: sent as the trace says
    result = run_campaign(["--endpoints-file", str(cfg), "--results-dir", str(tmp_path / "res"),
                           "--workers", str(workers), "--no-preflight", "--stop-timeout", "5",
                           "--llm-metrics-port", "0", "--no-report"])
    assert result.returncode == 0, result.stdout + result.stderr
    assert "trace: 40 arrivals" in result.stdout and "more output than" in result.stdout
    (campaign,) = (tmp_path / "res").iterdir()
    by_line = {n: line for n, line in enumerate(lines, 1)}
    arms = {}
    for arm in ("A", "B"):
        run_dir = campaign / "runs" / f"r01-{arm}"
        records = pd.read_csv(run_dir / "records.csv").set_index("dataset_item").sort_index()
        stage = pd.read_csv(run_dir / "stages.csv").iloc[0]
        # every line sent exactly once, under its key
        assert list(records.index) == list(by_line), arm
        assert list(records["request_key"]) == [f"0/trace/{n}" for n in by_line]
        assert records["ok"].all()
        if workers:
            assert records["worker"].nunique() == 2     # both generators sent their share
        # due at the stage's start + ramp_s + timestamp / scale (to the ms)
        due = np.array([stage["ramp_unix"] + ramp_s + by_line[n]["timestamp"] / 1000 / scale
                        for n in records.index])
        assert np.abs(records["scheduled_unix"].to_numpy() - due).max() < 1e-3
        # never early; late by far less than the shape's 1 s tick (a schedule kept per tick or
        # per batch would be off by that much), whatever else the generator was doing
        lag = records["send_lag_s"].to_numpy()
        assert lag.min() >= 0 and np.quantile(lag, 0.99) < 0.1, np.sort(lag)[-5:]
        requested = records["requested_tokens"].to_numpy()
        assert list(requested) == [by_line[n]["output_length"] for n in records.index]
        inputs = np.array([by_line[n]["input_length"] for n in records.index])
        ratio = records["prompt_tokens"].to_numpy() / inputs
        assert pd.Series(inputs).corr(records["prompt_tokens"].reset_index(drop=True),
                                      method="spearman") > 0.95
        assert 0.5 < np.median(ratio) < 2.5, np.median(ratio)   # "about input_length tokens"
        arms[arm] = records
    a, b = arms["A"], arms["B"]
    assert (a["request_key"] == b["request_key"]).all()
    assert (a["prompt_tokens"] == b["prompt_tokens"]).all()
    assert (a["scheduled_unix"] - a["scheduled_unix"].iloc[0]
            - (b["scheduled_unix"] - b["scheduled_unix"].iloc[0])).abs().max() < 1e-3
    # the analysis reads it as open loop: one level in req/s (the trace's mean rate)
    result = analyse([str(campaign / "runs")], Options(n_boot=100))
    assert result.level_name == "req/s"
    assert result.levels == [float(f"{40 / (6.0 / scale):.3g}")]   # 3 significant digits
    assert result.paired.counts and not result.paired.reason
