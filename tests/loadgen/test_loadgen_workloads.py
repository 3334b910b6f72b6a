"""Workloads: datasets (OpenAI messages, ShareGPT), output-length distributions, prefix sharing.

Readers and the request stream are checked directly; one short campaign against two stub arms
checks what reaches the records (dataset_item, shared_prefix, requested_tokens paired by key).
"""

from __future__ import annotations

import importlib.util
import json
import math
import statistics
from pathlib import Path

import pandas as pd
import pytest

from core.config import LoadSettings
from locustfiles import armcheck
from locustfiles.datasets import answer_tokens, load_dataset
from locustfiles.prompts import (ConfigPromptError, RequestStream, check_prompts,
                                 load_prompts_file, prompt_words_for, request_key,
                                 shared_prefix_text)
from support import ROOT, run_campaign, write_config

SHAREGPT_SAMPLE = ROOT / "datasets" / "sharegpt-sample.json"
OPENAI_SAMPLE = ROOT / "datasets" / "openai-sample.jsonl"


def _jsonl(path: Path, *items: object) -> Path:
    path.write_text("".join((json.dumps(i) if not isinstance(i, str) else i) + "\n"
                            for i in items))
    return path


def _keys(n: int) -> list[str]:
    return [request_key(n // 500, "0-1", i) for i in range(1, n + 1)]


# --- readers -----------------------------------------------------------------------------------

def test_openai_items_keep_their_line_length_and_metadata(tmp_path):
    path = _jsonl(tmp_path / "p.jsonl",
                  {"prompt": "hi", "max_tokens": 7},
                  "",
                  {"messages": [{"role": "system", "content": "be brief"},
                                {"role": "user", "content": "yo"}],
                   "output_tokens": 9, "metadata": {"topic": "greeting"}},
                  {"prompt": "plain"})
    data = load_dataset(path)
    assert data.format == "openai" and not data.skipped
    assert [i.line for i in data.items] == [1, 3, 4]          # blank lines keep the numbering
    assert [i.first_output_tokens for i in data.items] == [7, 9, None]
    assert data.items[1].metadata == {"topic": "greeting"}
    assert data.items[1].turns == ([{"role": "system", "content": "be brief"},
                                    {"role": "user", "content": "yo"}],)
    assert load_prompts_file(path)[0] == [{"role": "user", "content": "hi"}]
    # the same items as a JSON array: an item's place is its position
    array = tmp_path / "p.json"
    array.write_text(json.dumps([{"prompt": "a"}, {"prompt": "b", "max_tokens": 3}]))
    assert [(i.line, i.first_output_tokens) for i in load_dataset(array, "openai").items] == [
        (1, None), (2, 3)]


@pytest.mark.parametrize("bad, expect", [
    ({"prompt": "x", "max_tokens": 0}, r"p\.jsonl:2: max_tokens = 0: give a whole number"),
    ({"prompt": "x", "max_tokens": "12"}, r":2: max_tokens = \"12\""),
    ({"prompt": "x", "max_tokens": 4, "output_tokens": 4}, r":2: give the output length once"),
    ({"prompt": "x", "metadata": ["a"]}, r":2: metadata must be a JSON object"),
    ({"nope": 1}, r':2: expected \{"prompt"'),
    ("{not json", r":2: not JSON .*JSONL"),
])
def test_openai_errors_name_the_file_line_and_fix(tmp_path, bad, expect):
    path = _jsonl(tmp_path / "p.jsonl", {"prompt": "fine"}, bad)
    with pytest.raises(ConfigPromptError, match=expect):
        load_dataset(path, "openai")


def test_sharegpt_conversations_map_roles_turns_and_answer_lengths(tmp_path):
    answer = " ".join(["word"] * 30)                       # 30 words: 40 tokens estimated
    conversations = [
        {"id": "a", "conversations": [
            {"from": "system", "value": "You are terse."},
            {"from": "human", "value": "first question"},
            {"from": "gpt", "value": answer},
            {"from": "user", "value": "second"},
            {"from": "human", "value": "and a follow-up"},   # two in a row: one turn
            {"from": "chatgpt", "value": "ok " * 6},
            {"from": "human", "value": "third"}]},          # no answer: no length
        {"id": 7, "conversations": [
            {"from": "gpt", "value": "an answer before any question is left out"},
            {"from": "human", "value": "only"},
            {"from": "bard", "value": "fine"}]},
    ]
    path = tmp_path / "sg.json"
    path.write_text(json.dumps(conversations))
    first, second = load_dataset(path, "sharegpt").items
    assert first.turns == (
        [{"role": "system", "content": "You are terse."},
         {"role": "user", "content": "first question"}],
        [{"role": "user", "content": "second"}, {"role": "user", "content": "and a follow-up"}],
        [{"role": "user", "content": "third"}])
    assert first.output_tokens == (40, answer_tokens("ok " * 6), None) == (40, 8, None)
    assert first.metadata == {"id": "a"} and first.line == 1
    assert second.turns == ([{"role": "user", "content": "only"}],) and second.line == 2
    # the same conversations as JSONL, told apart by auto
    lines = _jsonl(tmp_path / "sg.jsonl", *conversations)
    data = load_dataset(lines)
    assert data.format == "sharegpt" and data.items[1].turns == second.turns


def test_unusable_conversations_are_skipped_and_counted_never_silently(tmp_path):
    good = {"conversations": [{"from": "human", "value": "q"}, {"from": "gpt", "value": "a"}]}
    path = _jsonl(tmp_path / "sg.jsonl",
                  good,
                  {"conversations": [{"from": "gpt", "value": "no question"}]},
                  {"conversations": [{"from": "narrator", "value": "x"},
                                     {"from": "human", "value": "q"}]},
                  {"conversations": "not a list"},
                  {"conversations": [{"from": "human", "value": "   "}]},  # empty: no human turn
                  good)
    data = load_dataset(path)
    assert [i.line for i in data.items] == [1, 6]
    assert data.skipped_count == 4
    assert data.skipped == {"without a human turn": 2, "with an unknown role": 1,
                            "without a conversations list": 1}
    assert data.first_skipped["without a human turn"] == 2
    summary = check_prompts(str(path)).summary()
    assert summary.startswith(f"2 from {path} (sharegpt; skipped 4 unusable: ")
    none = _jsonl(tmp_path / "none.jsonl",
                  {"conversations": [{"from": "gpt", "value": "no question"}]})
    with pytest.raises(ConfigPromptError, match=r"none\.jsonl: no usable ShareGPT conversation"):
        load_dataset(none)


def test_auto_decides_from_the_first_item_or_says_what_to_set(tmp_path):
    assert load_dataset(_jsonl(tmp_path / "o.jsonl", {"prompt": "x"})).format == "openai"
    # neither shape: read as OpenAI messages, whose error names the line and the other format
    path = _jsonl(tmp_path / "u.jsonl", {"text": "x"})
    with pytest.raises(ConfigPromptError, match=r'u\.jsonl:1: expected \{"prompt".*'
                                                r'prompts_format = "sharegpt"'):
        load_dataset(path)
    # a ShareGPT file read as openai fails on its first item, naming the other format
    sg = _jsonl(tmp_path / "sg.jsonl", {"conversations": [{"from": "human", "value": "q"}]})
    with pytest.raises(ConfigPromptError, match=r'sg\.jsonl:1: .*prompts_format = "sharegpt"'):
        load_dataset(sg, "openai")
    broken = tmp_path / "b.json"
    broken.write_text('[{"prompt": "x"},\n  {"prompt": }]')
    with pytest.raises(ConfigPromptError, match=r"b\.json:2: not JSON"):
        load_dataset(broken)


def test_shipped_samples_equal_their_generator_and_read_as_documented():
    spec = importlib.util.spec_from_file_location("make_samples",
                                                  ROOT / "datasets" / "make_samples.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    for name, text in module.render().items():
        assert (ROOT / "datasets" / name).read_text(encoding="utf-8") == text, (
            f"datasets/{name} is stale: run python datasets/make_samples.py")
    sharegpt = load_dataset(SHAREGPT_SAMPLE)
    assert sharegpt.format == "sharegpt" and len(sharegpt.items) == 40
    assert sharegpt.skipped_count == 2                      # the two deliberately unusable ones
    assert any(len(i.turns) > 1 for i in sharegpt.items)
    assert any(i.turns[0][0]["role"] == "system" for i in sharegpt.items)
    openai = load_dataset(OPENAI_SAMPLE)
    assert openai.format == "openai" and len(openai.items) == 30
    assert any(i.metadata for i in openai.items) and any(i.output_tokens[0] for i in openai.items)


# --- output lengths ----------------------------------------------------------------------------

def test_lognormal_lengths_have_the_median_asked_and_stay_within_bounds():
    keys = _keys(4000)
    stream = RequestStream(seed=5, words=20, max_tokens=4096, output_dist="lognormal",
                           output_median_tokens=100, output_sigma=0.5)
    lengths = [stream.plan(k).output_tokens for k in keys]
    # the sample median's log has a standard error of sigma * sqrt(pi / 2n) = 0.0099 here:
    # +-5% is five standard errors
    assert statistics.median(lengths) == pytest.approx(100, rel=0.05)
    logs = [math.log(n) for n in lengths]
    assert statistics.stdev(logs) == pytest.approx(0.5, rel=0.1)   # the shape asked (+-10%)
    again = RequestStream(seed=5, words=20, max_tokens=4096, output_dist="lognormal",
                          output_median_tokens=100, output_sigma=0.5)
    assert lengths == [again.plan(k).output_tokens for k in keys]  # per key: every arm alike
    # clipped to [max(1, max_tokens_min), max_tokens]; median 0 = half of max_tokens
    clipped = RequestStream(seed=5, words=20, max_tokens=80, max_tokens_min=30,
                            output_dist="lognormal", output_sigma=1.0)
    values = [clipped.output_tokens(k) for k in keys]
    assert min(values) == 30 and max(values) == 80
    assert statistics.median(values) == pytest.approx(40, rel=0.1)


def test_dataset_lengths_come_from_each_item_clipped_and_the_request_rule_without(tmp_path):
    path = _jsonl(tmp_path / "p.jsonl", {"prompt": "short", "max_tokens": 5},
                  {"prompt": "long", "max_tokens": 5000}, {"prompt": "none"})
    stream = RequestStream(seed=1, words=10, max_tokens=64, max_tokens_min=10,
                           items=load_dataset(path).items, output_dist="dataset")
    seen = {}
    for key in _keys(300):
        planned = stream.plan(key)
        seen.setdefault(planned.dataset_item, set()).add(planned.output_tokens)
    assert seen[1] == {5} and seen[2] == {64}
    assert len(seen[3]) > 5 and all(10 <= n <= 64 for n in seen[3])  # the request rule


# --- datasets in the request stream ------------------------------------------------------------

def test_a_conversation_continues_in_its_own_words_then_with_other_items(tmp_path):
    path = tmp_path / "sg.json"
    path.write_text(json.dumps([{"conversations": [
        {"from": "human", "value": "q1"}, {"from": "gpt", "value": "a " * 15},
        {"from": "human", "value": "q2"}, {"from": "gpt", "value": "b " * 30}]}]))
    stream = RequestStream(seed=2, words=10, max_tokens=100, items=load_dataset(path).items,
                           output_dist="dataset")
    first, second, third = (stream.turn("0/0-1/1", k) for k in (1, 2, 3))
    assert first.messages == [{"role": "user", "content": "q1"}] and first.output_tokens == 20
    assert second.messages == [{"role": "user", "content": "q2"}] and second.output_tokens == 40
    assert (first.dataset_item, second.dataset_item) == (1, 1)
    # past its end: another item's first user message (here the only one), with its length
    assert third.messages == [{"role": "user", "content": "q1"}] and third.output_tokens == 20
    second.messages.append({"role": "assistant", "content": "x"})   # callers may extend ...
    assert stream.turn("0/0-1/1", 2).messages == [{"role": "user", "content": "q2"}]  # ... safely


# --- prefix sharing ----------------------------------------------------------------------------

def test_a_share_of_keys_begins_with_one_shared_prefix_the_same_everywhere(tmp_path):
    load = LoadSettings(prefix_share=0.3, prefix_tokens=200, input_tokens=64, prompt_seed=4)
    stream = RequestStream.from_settings(load, max_tokens=16)
    keys = _keys(2000)
    planned = [stream.plan(k) for k in keys]
    shared = [p for p in planned if p.shared_prefix]
    # a binomial share: standard deviation sqrt(0.3 * 0.7 / 2000) = 0.0102; +-0.05 is ~5 of them
    assert len(shared) / len(keys) == pytest.approx(0.3, abs=0.05)
    prefix = stream.shared_prefix
    assert len(prefix.split()) == prompt_words_for(200) == 150   # sized like synthetic prompts
    assert prefix == shared_prefix_text(4, 150)
    for p in shared:
        system, user = p.messages
        assert system == {"role": "system", "content": prefix}
        assert user["content"].startswith("Task ")            # the unique header after it
    assert all(p.messages[0]["role"] == "user" for p in planned if not p.shared_prefix)
    assert len({p.messages[1]["content"].split()[1] for p in shared}) == len(shared)
    # another process or arm: the same keys share, with the same text
    other = RequestStream.from_settings(load, max_tokens=16)
    assert [other.plan(k).shared_prefix for k in keys] == [p.shared_prefix for p in planned]
    assert other.shared_prefix == prefix
    # a later turn adds only its user message: the prefix is the conversation's, once
    assert not stream.turn(keys[0], 2).shared_prefix
    # a calibrated prompt_words (preflight) sizes the prefix with the same words per token
    calibrated = RequestStream.from_settings(
        LoadSettings(prefix_share=1.0, prefix_tokens=200, input_tokens=64, prompt_words=32),
        max_tokens=16)
    assert len(calibrated.shared_prefix.split()) == 100


def test_the_prefix_goes_before_a_dataset_items_own_system_prompt(tmp_path):
    path = _jsonl(tmp_path / "p.jsonl",
                  {"messages": [{"role": "system", "content": "own"},
                                {"role": "user", "content": "q"}]})
    stream = RequestStream(seed=1, words=10, max_tokens=16, items=load_dataset(path).items,
                           prefix_share=1.0, prefix_words=40)
    planned = stream.plan("0/0-1/1")
    assert planned.shared_prefix and planned.dataset_item == 1
    assert planned.messages == [{"role": "system", "content": f"{stream.shared_prefix}\n\nown"},
                                {"role": "user", "content": "q"}]


def test_the_preflight_cache_statement_names_a_shared_prefix():
    plain = LoadSettings()
    assert armcheck.cache_statement(plain) == armcheck.CACHE_STATEMENT
    assert armcheck.cache_prefix_kind(plain) == "fresh per request"
    shared = LoadSettings(prefix_share=0.5, prefix_tokens=300)
    assert "50% of requests" in armcheck.cache_statement(shared)
    assert "about 300 tokens" in armcheck.cache_statement(shared)
    assert armcheck.cache_prefix_kind(shared) == "fresh per request; shared prefix on 50%"


# --- a campaign against the stub ---------------------------------------------------------------

@pytest.mark.slow
def test_a_sharegpt_campaign_with_a_shared_prefix_and_lognormal_lengths(stub, tmp_path):
    fast, slow = stub(ttft_ms=5, itl_ms=1), stub(ttft_ms=20, itl_ms=2)
    load = {"stages": [2], "steady_s": 3.0, "prompts_file": str(SHAREGPT_SAMPLE),
            "prompts_format": "sharegpt", "prefix_share": 0.5, "prefix_tokens": 400,
            "output_dist": "lognormal", "output_median_tokens": 12, "output_sigma": 0.6}
    cfg = write_config(tmp_path / "ep.json",
                       [{"label": "A", "base_url": fast, "model": "stub-model"},
                        {"label": "B", "base_url": slow, "model": "stub-model"}],
                       load=load, request={"max_tokens": 32})
    proc = run_campaign(["--endpoints-file", str(cfg), "--results-dir", str(tmp_path / "res"),
                         "--no-preflight", "--no-report", "--llm-metrics-port", "0"])
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"prompts: 40 from {SHAREGPT_SAMPLE} (sharegpt; skipped 2 unusable" in proc.stdout
    (campaign_dir,) = (tmp_path / "res").iterdir()
    runs = {p.name: pd.read_csv(p / "records.csv") for p in (campaign_dir / "runs").iterdir()}
    a, b = runs["r01-A"], runs["r01-B"]
    for records in (a, b):
        assert records["ok"].all()
        assert records["dataset_item"].between(1, 42).all()    # places in the JSON array
        assert records["shared_prefix"].nunique() == 2          # some with, some without
        assert records["requested_tokens"].between(1, 32).all()
    both = a.merge(b, on="request_key", suffixes=("_a", "_b"))
    assert len(both) > 20
    for column in ("dataset_item", "shared_prefix", "requested_tokens", "prompt_tokens"):
        assert (both[f"{column}_a"] == both[f"{column}_b"]).all(), column
    # the same item with and without the prefix: the stub counts the prefix's characters / 4
    prefix = shared_prefix_text(0, prompt_words_for(400))
    tokens = pd.concat([a, b]).groupby(["dataset_item", "shared_prefix"])["prompt_tokens"].first()
    tokens = tokens.unstack().dropna()
    assert len(tokens) >= 3
    growth = tokens[True] - tokens[False]
    assert growth.between(len(prefix) / 4 - 2, len(prefix) / 4 + 3).all(), growth
