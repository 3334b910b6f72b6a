"""The seeded request stream: within a repetition, every arm gets the same request for a key.

Two stub endpoints of different speed, one campaign, closed loop then open loop. For every key
both arms sent: the same requested output length and the same prompt (its token count, from the
stub's usage), and in open loop the same gaps between a stream's arrivals.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from support import run_campaign, write_config

pytestmark = pytest.mark.slow


def _runs(campaign_root) -> dict[str, pd.DataFrame]:
    (campaign_dir,) = campaign_root.iterdir()
    return {p.name: pd.read_csv(p / "records.csv") for p in (campaign_dir / "runs").iterdir()}


@pytest.mark.parametrize("mode", ["closed", "open"])
def test_both_arms_get_the_same_request_for_each_key(stub, tmp_path, mode):
    fast, slow = stub(ttft_ms=5, itl_ms=1), stub(ttft_ms=30, itl_ms=4)
    cfg = write_config(tmp_path / "ep.json",
                       [{"label": "A", "base_url": fast, "model": "stub-model"},
                        {"label": "B", "base_url": slow, "model": "stub-model"}],
                       load={"mode": mode, "stages": [1, 3], "rates": [4.0, 8.0],
                             "steady_s": 3.0},
                       request={"max_tokens": 24, "max_tokens_min": 4})
    proc = run_campaign(["--endpoints-file", str(cfg), "--results-dir", str(tmp_path / "res"),
                         "--no-preflight", "--no-report", "--llm-metrics-port", "0"])
    assert proc.returncode == 0, proc.stdout + proc.stderr
    runs = _runs(tmp_path / "res")
    a, b = runs["r01-A"], runs["r01-B"]
    for records in (a, b):
        assert records["request_key"].notna().all() and records["request_key"].is_unique
    both = a.merge(b, on="request_key", suffixes=("_a", "_b"))
    assert len(both) > 20
    assert (both["requested_tokens_a"] == both["requested_tokens_b"]).all()
    assert both["requested_tokens_a"].nunique() > 5          # drawn per key, yet paired
    assert (both["prompt_tokens_a"] == both["prompt_tokens_b"]).all()
    assert (both["stage_a"] == both["stage_b"]).all()         # the key carries the stage
    if mode == "closed":
        # the faster arm sends more: every key the slow arm sent in a stage, the fast one sent
        # too unless its stage ended first; most pair
        assert len(both) >= 0.8 * min(len(a), len(b))
    else:
        # the same arrival gaps, key by key, within each stream and stage
        def gaps(records):
            parts = records["request_key"].str.split("/", expand=True)
            frame = records.assign(stream=parts[0] + "/" + parts[1], n=parts[2].astype(int))
            frame = frame.sort_values(["stream", "n"])
            frame["gap"] = frame.groupby("stream")["scheduled_unix"].diff()
            return frame.set_index("request_key")["gap"].dropna()

        ga, gb = gaps(a), gaps(b)
        common = ga.index.intersection(gb.index)
        assert len(common) > 10
        assert np.allclose(ga[common], gb[common], atol=1e-6)
