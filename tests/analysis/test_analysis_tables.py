"""Known inputs give exactly the expected figures: steady-window selection, percentiles, goodput,
req/s, CIs, metric-sample figures, gaps that stay gaps."""

from __future__ import annotations

import math

import numpy as np
import pytest

from support import synth
from analysis.build import Options, analyse
from analysis.report import write_report

T0 = synth.T0
GIB = 2 ** 30


def _rec(start, *, ok=True, ttft=0.1, e2e=1.0, tpot=0.01, tokens=100.0, stage=0, users=4,
         phase="steady", endpoint="A", cat="", msg="", **kw):
    row = {"run_id": "r", "endpoint": endpoint, "model": f"model-{endpoint}", "repetition": 1,
           "stage": stage, "stage_users": users, "phase": phase, "start_unix": T0 + start,
           "ttft_s": ttft if ok else math.nan, "ttfat_s": ttft if ok else math.nan,
           "e2e_s": e2e if ok else math.nan, "tpot_s": tpot if ok else math.nan,
           "output_tokens": tokens if ok else math.nan, "reasoning_tokens": 0.0 if ok else math.nan,
           "answer_tokens": tokens if ok else math.nan, "tokens_from_usage": True,
           "itl_mean_s": tpot if ok else math.nan, "itl_max_s": 2 * tpot if ok else math.nan,
           "http_status": 200, "ok": ok, "error_category": cat, "error_message": msg}
    row.update(kw)
    return row


def _known_records(extra_ok: int = 0):
    """Stage 0 (4 users, steady window [T0+3, T0+13)): 4 ok + 1 failed steady requests, plus
    warmup and drain requests with absurd TTFTs that must not count. Stage 1: no steady request."""
    rows = [
        _rec(2.0, phase="warmup", ttft=5.0),
        _rec(4.0, ttft=0.1, e2e=1.0, tpot=0.01),
        _rec(5.0, ttft=0.2, e2e=2.0, tpot=0.02),
        _rec(6.0, ttft=0.3, e2e=3.0, tpot=math.nan),
        _rec(7.0, ttft=0.4, e2e=4.0, tpot=0.04),
        _rec(8.0, ok=False, cat="stream_error", msg="engine failed", http_status=200),
        _rec(13.5, phase="drain", ttft=9.0),
        _rec(16.0, phase="warmup", stage=1, users=8, ttft=7.0),
    ]
    for i in range(extra_ok):
        rows.append(_rec(9.0 + i * 0.5, ttft=0.25, e2e=2.5, tpot=0.025))
    return rows


def _known_metrics():
    rows = []
    for k in range(28):
        ts = T0 + k + 0.5
        in_w0 = T0 + 3 <= ts < T0 + 13
        j = k - 3   # index inside stage 0's window (0..9)
        rows.append((ts, "exporter", "scrape_up", "", 1.0))
        util = (0.4 if j < 5 else 0.6) if in_w0 else 1.0
        for gpu, mem in (("0", 4 * GIB), ("1", 2 * GIB)):
            lab = f'gpu="{gpu}",UUID="GPU-{gpu}"'
            rows.append((ts, "exporter", "nvml_gpu_utilization_ratio", lab, util))
            rows.append((ts, "exporter", "nvml_gpu_memory_used_bytes", lab, float(mem)))
            rows.append((ts, "exporter", "nvml_gpu_memory_total_bytes", lab, 16.0 * GIB))
            rows.append((ts, "exporter", "nvml_gpu_energy_joules_total", lab, 1000.0 + 100.0 * k))
            rows.append((ts, "exporter", "nvml_gpu_power_watts", lab, 100.0))
        rows.append((ts, "server", "scrape_up", "", 1.0))
        rows.append((ts, "server", "vllm:kv_cache_usage_perc", 'model_name="m"', 0.25))
        rows.append((ts, "server", "vllm:num_requests_running", 'model_name="m"', 4.0))
        rows.append((ts, "server", "vllm:num_requests_waiting", 'model_name="m"',
                     2.0 if j == 0 else 0.0))
        # TTFT histogram: 10 earlier requests; inside the window 4 more arrive, linearly:
        # by the window's last sample +1 in le=0.1, +1 in (0.1, 0.25], +2 in (0.25, 0.5].
        f = min(max(j, 0), 9) / 9.0 if k >= 3 else 0.0
        if ts >= T0 + 13:
            f = 1.0
        cum = {"0.1": 10 + 1 * f, "0.25": 10 + 2 * f, "0.5": 10 + 4 * f, "+Inf": 10 + 4 * f}
        for le, v in cum.items():
            rows.append((ts, "server", "vllm:time_to_first_token_seconds_bucket",
                         f'model_name="m",le="{le}"', v))
        rows.append((ts, "server", "vllm:time_to_first_token_seconds_sum", 'model_name="m"',
                     5.0 + 1.0 * f))
        rows.append((ts, "server", "vllm:time_to_first_token_seconds_count", 'model_name="m"',
                     10 + 4 * f))
    return [{"ts_unix": t, "endpoint": "A", "source": s, "metric": m, "labels": lab, "value": v}
            for t, s, m, lab, v in rows]


def _known_run(tmp_path, name="run1", *, extra_ok=0, repetition=1, metrics=True, **manifest_kw):
    config = synth.make_config(["A"], stages=(4, 8))
    manifest = synth.make_manifest(name, config, repetition=repetition, end_unix=T0 + 28,
                                   **manifest_kw)
    return synth.write_run(tmp_path / name, manifest=manifest,
                           records=_known_records(extra_ok),
                           stages=synth.stage_rows((4, 8), start=T0),
                           metrics=_known_metrics() if metrics else None)


def _row(result, level):
    pr = result.per_run
    return pr[(pr["endpoint"] == "A") & (pr["level"] == level)].iloc[0]


def test_steady_window_percentiles_and_rates(tmp_path):
    _known_run(tmp_path)
    res = analyse([tmp_path], Options(n_boot=200))
    r = _row(res, 4.0)
    assert r["duration"] == 10.0
    assert r["requests"] == 5 and r["completed"] == 4
    assert r["req_per_s"] == pytest.approx(0.4)
    assert r["goodput_per_s"] == pytest.approx(0.4)          # no SLO: goodput = completed
    assert r["output_tok_per_s"] == pytest.approx(40.0)
    assert r["error_rate"] == pytest.approx(20.0)
    # Linear-interpolation percentiles over 100, 200, 300, 400 ms; warmup/drain excluded.
    assert r["ttft_mean"] == pytest.approx(250.0)
    assert r["ttft_p50"] == pytest.approx(250.0)
    assert r["ttft_p90"] == pytest.approx(370.0)
    assert r["ttft_p99"] == pytest.approx(397.0)
    assert r["e2e_mean"] == pytest.approx(2500.0)
    assert r["tpot_p50"] == pytest.approx(20.0)               # NaN TPOT left out
    assert r["itl_max"] == pytest.approx(80.0)
    err = res.errors
    assert err["error_category"].tolist() == ["stream_error"] and err["count"].tolist() == [1]
    assert err["example"].tolist() == ["engine failed"]


def test_goodput_under_slos(tmp_path):
    _known_run(tmp_path)
    r = _row(analyse([tmp_path], Options(slos={"ttft_ms": 250}, n_boot=200)), 4.0)
    assert r["goodput_per_s"] == pytest.approx(0.2) and r["goodput_pct"] == pytest.approx(50.0)
    r = _row(analyse([tmp_path], Options(slos={"ttft_ms": 350}, n_boot=200)), 4.0)
    assert r["goodput_per_s"] == pytest.approx(0.3)
    # A missing TPOT does not meet a TPOT SLO.
    r = _row(analyse([tmp_path], Options(slos={"ttft_ms": 350, "tpot_ms": 50}, n_boot=200)), 4.0)
    assert r["goodput_per_s"] == pytest.approx(0.2)


def test_metric_samples_in_window(tmp_path):
    _known_run(tmp_path)
    r = _row(analyse([tmp_path], Options(n_boot=200)), 4.0)
    assert r["gpu_util_mean"] == pytest.approx(50.0)          # samples outside read 100%
    assert r["gpu_util_p95"] == pytest.approx(60.0)
    assert r["gpu_mem_used_mean"] == pytest.approx(6.0)       # summed over 2 GPUs, GiB
    assert r["gpu_mem_total"] == pytest.approx(32.0)
    assert r["power_mean"] == pytest.approx(200.0)
    # Energy counter: 100 J/s per GPU = 200 W; 40 output tokens/s -> 5 J per token.
    assert r["energy_per_token"] == pytest.approx(5.0)
    assert r["kv_cache_mean"] == pytest.approx(25.0)
    assert r["running_mean"] == pytest.approx(4.0)
    assert r["waiting_max"] == pytest.approx(2.0) and r["waiting_mean"] == pytest.approx(0.2)
    # vLLM TTFT from histogram increases over the window: 4 requests, sum 1.0 s.
    assert r["vllm_ttft_mean"] == pytest.approx(250.0)
    assert r["vllm_ttft_p50"] == pytest.approx(250.0)


def test_empty_stage_is_na_with_warning(tmp_path):
    _known_run(tmp_path)
    res = analyse([tmp_path], Options(n_boot=200))
    r = _row(res, 8.0)
    assert r["requests"] == 0
    assert math.isnan(r["req_per_s"]) and math.isnan(r["ttft_p50"])
    codes = [w.code for w in res.warnings]
    assert "empty_stage" in codes
    out = write_report(res, tmp_path / "report")
    md = out["md"].read_text()
    assert "| A (model-A) | 8 | n/a |" in md


def test_repetitions_combine_with_t_interval(tmp_path):
    _known_run(tmp_path, "run1", repetition=1)
    _known_run(tmp_path, "run2", repetition=2, extra_ok=2, start_unix=T0 + 1)
    res = analyse([tmp_path], Options(n_boot=200))
    c = res.combined
    row = c[(c["endpoint"] == "A") & (c["level"] == 4.0) & (c["metric"] == "req_per_s")].iloc[0]
    assert row["n"] == 2 and row["mean"] == pytest.approx(0.5)
    assert row["std"] == pytest.approx(math.sqrt(0.02))
    half = 12.706204736174707 * math.sqrt(0.02) / math.sqrt(2)   # t(0.975, 1)
    assert row["ci_low"] == pytest.approx(0.5 - half)
    assert row["ci_high"] == pytest.approx(0.5 + half)


def test_gaps_stay_gaps(tmp_path):
    spec = synth.SynthSpec(stages=(1, 4), steady_s=10.0, ramp_s=1.0, warmup_s=2.0, drain_s=1.0)
    # Stage 0 steady window: [3, 13) s; stage 1: [17, 27) s from the start.
    spec.metric_gaps = [("A", "exporter", 5.0, 8.0),       # 3 failed scrapes inside stage 0
                        ("A", "exporter", 16.0, 28.0),     # the whole of stage 1's window
                        ("B", "server", 0.0, 40.0)]        # B's server never answers
    synth.synth_run(tmp_path / "run", spec)
    res = analyse([tmp_path], Options(n_boot=200))
    pr = res.per_run
    a0 = pr[(pr["endpoint"] == "A") & (pr["level"] == 1.0)].iloc[0]
    a1 = pr[(pr["endpoint"] == "A") & (pr["level"] == 4.0)].iloc[0]
    b0 = pr[(pr["endpoint"] == "B") & (pr["level"] == 1.0)].iloc[0]
    assert not math.isnan(a0["gpu_util_mean"])     # a gap: the samples present still count
    assert math.isnan(a1["gpu_util_mean"])         # no sample at all: NaN, never 0
    assert math.isnan(a1["gpu_mem_used_mean"])
    assert math.isnan(b0["kv_cache_mean"]) and math.isnan(b0["vllm_ttft_mean"])
    assert not math.isnan(b0["gpu_util_mean"])
    gap_text = " ".join(w.message for w in res.warnings if w.code == "metrics_gap")
    assert "endpoint A: exporter metrics have gaps in 2 steady window(s)" in gap_text
    assert "connection refused" in gap_text
    assert "endpoint B: server metrics" in gap_text
    out = write_report(res, tmp_path / "report")
    md = out["md"].read_text()
    gpu = md.split("### GPU utilization by concurrency (%)")[1].split("\n\n")[1]
    line4 = [ln for ln in gpu.splitlines() if ln.startswith("| 4 |")][0]
    assert line4.split("|")[2].strip() == "n/a"
    # The time series breaks its line at the gap: NaNs inserted, no zeros.
    ts = res.timeseries["A"]
    assert np.isnan(ts.metric_v).any()
    assert not (ts.metric_v == 0).any()


def test_cpu_served_process_metrics(tmp_path):
    spec = synth.SynthSpec(stages=(1, 4), steady_s=10.0, ramp_s=1.0, warmup_s=2.0, drain_s=1.0)
    for p in spec.profiles.values():
        p.gpu = False
    synth.synth_run(tmp_path / "run", spec)
    res = analyse([tmp_path], Options(n_boot=200))
    pr = res.per_run
    r1 = pr[(pr["endpoint"] == "A") & (pr["level"] == 1.0)].iloc[0]
    r4 = pr[(pr["endpoint"] == "A") & (pr["level"] == 4.0)].iloc[0]
    assert r1["cpu_cores_mean"] == pytest.approx(0.9)
    assert r4["cpu_cores_mean"] == pytest.approx(1.8)
    assert r1["rss_mean"] == pytest.approx(8.0)
    assert math.isnan(r1["gpu_util_mean"])
    md = write_report(res, tmp_path / "report")["md"].read_text()
    assert "Server process CPU by concurrency (cores)" in md
    assert "No GPU utilization samples" in md


def test_comparison_values_in_table_units(tmp_path):
    spec = synth.SynthSpec(stages=(1, 4), steady_s=10.0, ramp_s=1.0, warmup_s=2.0, drain_s=1.0)
    synth.synth_run(tmp_path / "run", spec)
    res = analyse([tmp_path], Options(n_boot=200))
    c = res.comparisons
    row = c[(c["metric"] == "ttft_p50") & (c["level"] == 1.0)].iloc[0]
    a = res.per_run[(res.per_run["endpoint"] == "A") & (res.per_run["level"] == 1.0)]
    assert row["value_baseline"] == pytest.approx(a["ttft_p50"].iloc[0])   # ms, one run
    assert row["change_pct"] == pytest.approx((row["value"] / row["value_baseline"] - 1) * 100)
