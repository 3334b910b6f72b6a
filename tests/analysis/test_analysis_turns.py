"""Multi-turn conversations in the analysis (analysis.turns) and the report's section, on
synthetic records with known first- and later-turn figures."""

from __future__ import annotations

import json
import math

import pandas as pd
import pytest

from analysis.build import Options, analyse
from analysis.report import write_report
from analysis.turns import analyse_turns, turn_requests
from support import synth

WINDOWS = pd.DataFrame({"stage": [0, 1], "level": [1.0, 4.0]})


def _turns(n_conversations: int, *, stage: int = 0, phase: str = "steady", endpoint="A",
           first_ttft=0.1, later_ttft=0.3) -> list[dict]:
    """Conversations of 3 turns: TTFT first_ttft at turn 1 and later_ttft after; prompt tokens
    100, 300, 500."""
    rows = []
    for c in range(n_conversations):
        session = f"{stage}/0-1/{3 * c + 1}"
        for turn in (1, 2, 3):
            rows.append({"endpoint": endpoint, "stage": stage, "phase": phase, "ok": True,
                         "session": session, "turn": turn,
                         "request_key": f"{stage}/0-1/{3 * c + turn}",
                         "ttft_s": first_ttft if turn == 1 else later_ttft,
                         "prompt_tokens": 100.0 + 200.0 * (turn - 1)})
    return rows


def test_first_and_later_turns_per_endpoint_and_level():
    failed = {"endpoint": "A", "stage": 0, "phase": "steady", "ok": False, "session": "0/0-2/1",
              "turn": 2, "request_key": "0/0-2/2", "ttft_s": math.nan,
              "prompt_tokens": math.nan}
    records = pd.DataFrame(
        _turns(10) + _turns(4, phase="warmup", first_ttft=9.0, later_ttft=9.0)   # not steady
        + _turns(5, stage=1, first_ttft=0.2, later_ttft=0.2) + [failed]
        + [{"endpoint": "A", "stage": 0, "phase": "steady", "ok": True, "session": "",
            "turn": 0, "request_key": "0/0-3/1", "ttft_s": 5.0, "prompt_tokens": 7.0}])
    part = turn_requests(records, WINDOWS)
    assert len(part) == 30 + 15 + 1                      # steady turns only, the failure too
    result = analyse_turns([part, turn_requests(records.iloc[:0], WINDOWS)], ["A"])
    s = result.summary.set_index("level")
    assert list(s.index) == [1.0, 4.0]
    one = s.loc[1.0]
    assert (one.requests_first, one.requests_later) == (10, 20)
    assert (one.failed_first, one.failed_later) == (0, 1)
    assert one.ttft_p50_first_ms == pytest.approx(100.0)
    assert one.ttft_p50_later_ms == pytest.approx(300.0)
    assert one.ttft_p50_ratio == pytest.approx(3.0)
    assert one.ttft_p99_ratio == pytest.approx(3.0)
    assert one.prompt_tokens_first == pytest.approx(100.0)
    assert one.prompt_tokens_later == pytest.approx(400.0)
    assert s.loc[4.0].ttft_p50_ratio == pytest.approx(1.0)
    by_turn = result.by_turn[result.by_turn["level"] == 1.0].set_index("turn")
    assert list(by_turn["requests"]) == [10, 10, 10]
    assert list(by_turn["failed"]) == [0, 1, 0]
    assert list(by_turn["prompt_tokens_mean"]) == [100.0, 300.0, 500.0]


def test_single_requests_give_no_turns():
    records = pd.DataFrame([{"endpoint": "A", "stage": 0, "phase": "steady", "ok": True,
                             "session": "", "turn": 0, "ttft_s": 0.1, "prompt_tokens": 9.0}])
    assert analyse_turns([turn_requests(records, WINDOWS)]).empty
    assert analyse_turns([]).empty


def _write_runs(base, turns: bool) -> None:
    config = synth.make_config(["A", "B"], stages=(1, 4))
    for j, arm in enumerate(("A", "B")):
        start = synth.T0 + 400 * j
        stages = synth.stage_rows((1, 4), start=start, ramp_s=1, warmup_s=2, steady_s=10,
                                  drain_s=1)
        rows = []
        for st in stages:
            conv = _turns(8, stage=st["stage"], endpoint=arm, first_ttft=0.05 + 0.01 * j,
                          later_ttft=0.08 + 0.01 * j)
            for i, row in enumerate(conv):
                row.update(model=f"model-{arm}", stage_users=st["users"], repetition=1,
                           start_unix=st["steady_unix"] + 0.3 * i, e2e_s=0.5, tpot_s=0.01,
                           output_tokens=32.0, answer_tokens=32.0, reasoning_tokens=0.0,
                           tokens_from_usage=True, http_status=200)
                if not turns:
                    row.update(session="", turn=0)
            rows += conv
        manifest = synth.make_manifest(f"r01-{arm}", config, endpoints=[arm], start_unix=start,
                                       end_unix=stages[-1]["end_unix"], campaign="turns")
        synth.write_run(base / f"r01-{arm}", manifest=manifest, records=rows, stages=stages)


@pytest.mark.parametrize("turns", [True, False])
def test_the_report_shows_the_section_only_for_conversations(tmp_path, turns):
    _write_runs(tmp_path / "runs", turns)
    result = analyse([tmp_path / "runs"], Options(seed=0, n_boot=50))
    paths = write_report(result, tmp_path / "report")
    markdown = (tmp_path / "report" / "report.md").read_text()
    summary = json.loads((tmp_path / "report" / "summary.json").read_text())
    title = "Multi-turn: first vs later turns"
    if not turns:
        assert title not in markdown
        assert summary["turns"] == {"summary": [], "by_turn": []}
        return
    assert title in markdown and "Multi-turn: turn by turn" in markdown
    rows = {(r["endpoint"], r["level"]): r for r in summary["turns"]["summary"]}
    assert set(rows) == {("A", 1.0), ("A", 4.0), ("B", 1.0), ("B", 4.0)}
    assert rows[("B", 4.0)]["ttft_p50_first_ms"] == pytest.approx(60.0)
    assert rows[("B", 4.0)]["ttft_p50_ratio"] == pytest.approx(90.0 / 60.0)
    assert rows[("A", 1.0)]["requests_first"] == 8
    assert len(summary["turns"]["by_turn"]) == 4 * 3
    assert any(str(p).endswith("turns.csv") for p in paths["tables"])
    # the paired section says what differs between arms in a conversation's later turns
    assert "each endpoint's own earlier answers" in markdown
