import json

import pytest

from core.config import LoadSettings
from locustfiles.plan import build_plan, locate, total_duration_s
from locustfiles.prompts import (ConfigPromptError, DatasetItem, RequestStream, arrival_rng,
                                 load_prompts_file, prompt_words_for, request_key)


def test_closed_plan_stages_and_phases():
    load = LoadSettings(stages=(1, 4), ramp_s=1, warmup_s=2, steady_s=3, drain_s=1)
    plan = build_plan(load)
    assert [(s.index, s.users, s.start_s) for s in plan] == [(0, 1, 0.0), (1, 4, 7.0)]
    assert total_duration_s(plan) == 14.0
    phases = [locate(plan, t)[1] for t in (0.5, 1.5, 3.0, 5.9, 6.5)]
    assert phases == ["ramp", "warmup", "steady", "steady", "drain"]
    stage, phase = locate(plan, 7.2)
    assert (stage.index, phase) == (1, "ramp")
    assert locate(plan, 14.0) is None


def test_open_plan_uses_rates():
    plan = build_plan(LoadSettings(mode="open", rates=(2.0, 5.0)))
    assert [(s.users, s.rate) for s in plan] == [(0, 2.0), (0, 5.0)]


def test_zero_length_phases_are_skipped():
    plan = build_plan(LoadSettings(stages=(2,), ramp_s=0, warmup_s=0, steady_s=5, drain_s=0))
    assert locate(plan, 0.0)[1] == "steady"


def test_the_request_stream_gives_a_key_the_same_request_in_every_arm():
    stream = RequestStream(seed=1, words=40, max_tokens=64, max_tokens_min=8)
    again = RequestStream(seed=1, words=40, max_tokens=64, max_tokens_min=8)
    keys = [request_key(stage, "0-1", n) for stage in (0, 1) for n in range(1, 26)]
    first = [stream.messages(k)[0]["content"] for k in keys]
    assert first == [again.messages(k)[0]["content"] for k in keys]    # reproducible per key
    assert [stream.output_tokens(k) for k in keys] == [again.output_tokens(k) for k in keys]
    assert len({p.split()[1] for p in first}) == 50                   # unique headers
    assert all(len(p.split()) == 40 for p in first)
    assert len({stream.output_tokens(k) for k in keys}) > 10          # lengths drawn per key
    assert all(8 <= stream.output_tokens(k) <= 64 for k in keys)
    other = RequestStream(seed=2, words=40, max_tokens=64).messages(keys[0])[0]["content"]
    assert other != first[0]
    assert RequestStream(seed=1, words=40, max_tokens=64).output_tokens(keys[0]) == 64
    assert prompt_words_for(64) == 48


def test_file_prompts_are_chosen_by_key():
    prompts = tuple(DatasetItem(i + 1, ([{"role": "user", "content": f"p{i}"}],), (None,))
                    for i in range(5))
    stream = RequestStream(seed=3, words=10, max_tokens=16, items=prompts)
    picks = [stream.messages(request_key(0, "0-1", n)) for n in range(1, 200)]
    assert picks == [RequestStream(seed=3, words=10, max_tokens=16, items=prompts)
                     .messages(request_key(0, "0-1", n)) for n in range(1, 200)]
    assert {p[0]["content"] for p in picks} == {f"p{i}" for i in range(5)}


def test_open_loop_arrivals_are_seeded_per_stage_and_stream():
    a = [arrival_rng(1, 0, "0-1").expovariate(2.0) for _ in range(1)]
    assert a == [arrival_rng(1, 0, "0-1").expovariate(2.0)]
    assert arrival_rng(1, 1, "0-1").random() != arrival_rng(1, 0, "0-1").random()


def test_prompts_file(tmp_path):
    path = tmp_path / "p.jsonl"
    path.write_text(json.dumps({"prompt": "hi"}) + "\n\n" +
                    json.dumps({"messages": [{"role": "user", "content": "yo"}]}) + "\n")
    assert load_prompts_file(path) == [[{"role": "user", "content": "hi"}],
                                       [{"role": "user", "content": "yo"}]]
    path.write_text('{"prompt": "ok"}\n{"nope": 1}\n')
    with pytest.raises(ConfigPromptError, match=":2:"):
        load_prompts_file(path)
    with pytest.raises(ConfigPromptError, match="not found"):
        load_prompts_file(tmp_path / "missing.jsonl")
