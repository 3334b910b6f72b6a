import json

import pytest

from core.config import LoadSettings
from locustfiles.plan import build_plan, locate, total_duration_s
from locustfiles.prompts import (ConfigPromptError, load_prompts_file, prompt_words_for,
                                 synthetic_prompts)


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


def test_synthetic_prompts_are_seeded_varied_and_sized():
    a = synthetic_prompts(seed=1, stream="0-1", words=40)
    b = synthetic_prompts(seed=1, stream="0-1", words=40)
    first = [next(a)[0]["content"] for _ in range(50)]
    assert first == [next(b)[0]["content"] for _ in range(50)]        # reproducible
    assert len({p.split()[1] for p in first}) == 50                   # unique headers
    assert all(len(p.split()) == 40 for p in first)
    other = next(synthetic_prompts(seed=2, stream="0-1", words=40))[0]["content"]
    assert other != first[0]
    assert prompt_words_for(64) == 48


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
