"""Multi-turn conversations against the stub: each turn sends the history with this arm's answers.

The stub reports usage.prompt_tokens = characters of the messages' text // 4 + 1 and streams a
known answer (its vocabulary from the start, reasoning first), so every turn's prompt length is
predicted exactly from the request stream's messages and the arm's own earlier answers: a
history that lacked an answer, held its reasoning, or had another user message would not match.
"""

from __future__ import annotations

import json
import time

import pandas as pd
import pytest

from bench.stub.sse import VOCAB
from core.config import load_config
from core.records import RequestRecord
from locustfiles.context import RunContext
from locustfiles.conversation import conversation_place, last_of_conversation
from locustfiles.stream import AnswerRecorder, StreamRecorder, make_recorder
from support import run_campaign, write_config

TURNS = 3
THINK_S = 0.3


def _runs(results) -> dict[str, pd.DataFrame]:
    (campaign_dir,) = results.iterdir()
    return {p.name: pd.read_csv(p / "records.csv", dtype={"session": str})
            for p in (campaign_dir / "runs").iterdir()}


def _chars(messages) -> int:
    return sum(len(m["content"]) for m in messages)


def _answer_chars(output_tokens: int, reasoning_tokens: int) -> int:
    """The stub's answer content: its vocabulary's words from the first after the reasoning."""
    return sum(len(VOCAB[i % len(VOCAB)]) for i in range(reasoning_tokens, output_tokens))


def _place(key: str) -> tuple[int, str, int]:
    stage, stream, n = key.split("/")
    return int(stage), stream, int(n)


def test_a_key_is_one_turn_of_one_conversation():
    places = [conversation_place(2, "0-1", n, 3) for n in range(1, 8)]
    assert places == [("2/0-1/1", 1), ("2/0-1/1", 2), ("2/0-1/1", 3), ("2/0-1/4", 1),
                      ("2/0-1/4", 2), ("2/0-1/4", 3), ("2/0-1/7", 1)]
    assert [last_of_conversation(n, 3) for n in range(1, 8)] == [3, 3, 3, 6, 6, 6, 9]


def test_the_answer_text_is_kept_only_when_asked_and_without_reasoning():
    assert type(make_recorder(RequestRecord(), 0.0)) is StreamRecorder
    answer: list[str] = []
    rec = make_recorder(RequestRecord(), 0.0, answer)
    assert isinstance(rec, AnswerRecorder)
    for i, payload in enumerate([
            b'{"choices":[{"delta":{"role":"assistant","content":""}}]}',
            b'{"choices":[{"delta":{"reasoning":"let me think"}}]}',
            b'{"choices":[{"delta":{"content":"Hello"}}]}',
            b'{"choices":[{"delta":{"content":", world"}}]}',
            b'{"choices":[],"usage":{"prompt_tokens":5,"completion_tokens":3}}', b"[DONE]"]):
        rec.on_payload(payload, 0.1 * (i + 1))
    assert "".join(answer) == "Hello, world"
    assert rec.finish(1.0).ok and rec.record.answer_chunks == 2


@pytest.mark.slow
def test_each_turn_sends_the_history_with_the_arms_own_answers(stub, tmp_path):
    plain = stub(ttft_ms=5, itl_ms=1)
    thinking = stub(ttft_ms=10, itl_ms=2, reasoning_tokens=3)   # a shorter answer's content
    failing = stub(ttft_ms=5, itl_ms=1, fault="http_500", fault_rate=0.2)
    cfg = write_config(tmp_path / "ep.json",
                       [{"label": "A", "base_url": plain, "model": "stub-model"},
                        {"label": "B", "base_url": thinking, "model": "stub-model"},
                        {"label": "C", "base_url": failing, "model": "stub-model"}],
                       load={"stages": [2], "steady_s": 3.0, "turns": TURNS,
                             "think_time_s": THINK_S, "failure_backoff_s": 0.05,
                             "failure_backoff_max_s": 0.05},
                       request={"max_tokens": 12, "max_tokens_min": 4})
    proc = run_campaign(["--endpoints-file", str(cfg), "--results-dir", str(tmp_path / "res"),
                         "--no-preflight", "--no-report", "--llm-metrics-port", "0"])
    assert proc.returncode == 0, proc.stdout + proc.stderr
    config = load_config(cfg)
    requests = RunContext(None, config, None).request_stream(config.endpoint("A"))
    runs = _runs(tmp_path / "res")
    gaps = []
    for name, records in runs.items():
        assert records["request_key"].is_unique
        for row in records.itertuples():
            stage, stream, n = _place(row.request_key)
            assert (row.session, row.turn) == conversation_place(stage, stream, n, TURNS), name
        sessions = records.sort_values("turn").groupby("session")
        assert sessions.ngroups >= 4, name
        for session, conv in sessions:
            turns = conv["turn"].tolist()
            assert turns == list(range(1, len(turns) + 1)), (name, session)
            # a failed turn ends its conversation: nothing after it
            assert not (~conv["ok"].astype(bool)).iloc[:-1].any(), (name, session)
            sent = 0
            previous = None
            for row in conv.itertuples():
                sent += _chars(requests.turn(session, row.turn).messages)
                if previous is not None:
                    sent += _answer_chars(int(previous.output_tokens),
                                          int(previous.reasoning_tokens))
                    gaps.append(row.start_unix - (previous.start_unix + previous.e2e_s))
                if row.ok:
                    assert row.prompt_tokens == sent // 4 + 1, (name, session, row.turn)
                    if previous is not None:
                        assert row.prompt_tokens > previous.prompt_tokens
                previous = row
    # the think time between turns: at least it, and not much more
    assert len(gaps) > 10
    assert min(gaps) >= THINK_S - 1e-3     # (times in records.csv are rounded)
    assert pd.Series(gaps).median() < 1.5 * THINK_S

    a, b, c = runs["r01-A"], runs["r01-B"], runs["r01-C"]
    # every conversation of A and B ran to its last turn (nothing failed)
    assert a["ok"].all() and b["ok"].all()
    # the same new user message for a key in both arms (the exact prompt lengths above used one
    # request stream for every arm), yet later turns carry each arm's own answers: B's answers
    # hold less content (the reasoning stays out of the history), so its later prompts are shorter
    both = a.merge(b, on="request_key", suffixes=("_a", "_b"))
    first, later = both[both["turn_a"] == 1], both[both["turn_a"] > 1]
    assert len(first) >= 4 and len(later) >= 4
    assert (first["prompt_tokens_a"] == first["prompt_tokens_b"]).all()
    assert (later["prompt_tokens_a"] > later["prompt_tokens_b"]).all()
    # C: a failed turn before the last skips its conversation's other turns; the stream's next
    # request starts the next conversation at its own first key
    failed_early = c[~c["ok"].astype(bool) & (c["turn"] < TURNS)]
    assert len(failed_early) >= 1, "no turn failed before the last: raise the fault rate"
    keys = set(c["request_key"])
    for row in failed_early.itertuples():
        stage, stream, n = _place(row.request_key)
        assert f"{stage}/{stream}/{n + 1}" not in keys
        after = last_of_conversation(n, TURNS) + 1
        later_in_stream = [k for k in keys if _place(k)[:2] == (stage, stream)
                           and _place(k)[2] > n]
        if later_in_stream:
            assert min(_place(k)[2] for k in later_in_stream) == after


@pytest.mark.slow
def test_a_stop_during_the_think_time_ends_the_run_at_once(stub, tmp_path):
    """Every user is in a long think time when the stages end: the run stops without waiting
    for it."""
    think_s = 60.0
    url = stub(ttft_ms=5, itl_ms=1)
    cfg = write_config(tmp_path / "ep.json", [{"label": "A", "base_url": url,
                                               "model": "stub-model"}],
                       load={"stages": [2], "turns": TURNS, "think_time_s": think_s,
                             "start_spread_s": 0.2})
    started = time.monotonic()
    proc = run_campaign(["--endpoints-file", str(cfg), "--results-dir", str(tmp_path / "res"),
                         "--no-preflight", "--no-report", "--llm-metrics-port", "0"])
    elapsed = time.monotonic() - started
    assert proc.returncode == 0, proc.stdout + proc.stderr
    (records,) = _runs(tmp_path / "res").values()
    assert len(records) == 2 and records["ok"].all()       # one first turn per user, then a wait
    assert (records["turn"] == 1).all()
    (run_dir,) = (next((tmp_path / "res").iterdir()) / "runs").iterdir()
    manifest = json.loads((run_dir / "manifest.json").read_text())
    planned_s = load_config(cfg).load.stage_duration_s
    assert manifest["end_unix"] - manifest["start_unix"] < planned_s + think_s / 4
    assert elapsed < think_s
