"""The load generator's health per stage: the rules behind generator_late and lockstep."""

import numpy as np
import pandas as pd

from analysis.errors import WarningList
from analysis.health import lockstep_share, stage_health, health_warnings
from core.rundir import Manifest


def _records(start_unix, send_lag_s, ttft_s=0.050, stage=0, endpoint="A"):
    n = len(start_unix)
    return pd.DataFrame({
        "endpoint": pd.Categorical([endpoint] * n), "stage": [stage] * n,
        "phase": pd.Categorical(["steady"] * n), "ok": [True] * n,
        "start_unix": np.asarray(start_unix, dtype=float),
        "send_lag_s": np.asarray(send_lag_s, dtype=float),
        "presend_s": np.full(n, 0.0002), "ttft_s": np.full(n, ttft_s)})


def _codes(records, manifest=None):
    warnings = WarningList()
    health_warnings("r1", stage_health(records, Manifest.from_json(manifest or {})), warnings)
    return [w.code for w in warnings]


def test_a_punctual_spread_out_stage_is_healthy():
    rng = np.random.default_rng(0)
    starts = np.cumsum(rng.exponential(0.025, 400))   # Poisson, 40 req/s
    assert _codes(_records(starts, rng.uniform(0, 0.0005, 400))) == []


def test_late_sends_mark_the_stage():
    starts = np.arange(200) * 0.02
    lag = np.full(200, 0.0003)
    lag[:5] = 0.350                                   # 2.5% of sends 350 ms late: p99 is late
    assert _codes(_records(starts, lag)) == ["generator_late"]
    # the limit grows with the stage's TTFT: 1% of a 1 s p50 is 10 ms
    lag[:5] = 0.008
    assert _codes(_records(starts, lag, ttft_s=1.0)) == []
    assert _codes(_records(starts, lag, ttft_s=0.05)) == ["generator_late"]


def test_event_loop_lag_alone_marks_the_stage():
    starts = np.arange(200) * 0.02
    manifest = {"load_generator": {"loop_lag_by_stage": {"0": {"p99_ms": 12.0, "max_ms": 300.0}}}}
    assert _codes(_records(starts, np.zeros(200)), manifest) == ["generator_late"]
    manifest["load_generator"]["loop_lag_by_stage"]["0"]["p99_ms"] = 0.5
    assert _codes(_records(starts, np.zeros(200)), manifest) == []


def test_bursts_of_simultaneous_sends_are_lockstep():
    bursts = np.repeat(np.arange(20) * 0.4, 8) + np.tile(np.arange(8) * 0.0001, 20)
    assert lockstep_share(bursts) == 1.0
    assert _codes(_records(bursts, np.zeros(len(bursts)))) == ["lockstep"]
    pairs = np.repeat(np.arange(50) * 0.1, 2)          # pairs are not lockstep (needs 3)
    assert lockstep_share(pairs) == 0.0
