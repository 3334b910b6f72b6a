"""Arm equivalence in preflight: the same probes to every endpoint, their differences named.

Unit tests of ``locustfiles.armcheck`` (no server), then the campaign against stub servers:
alike arms pass quietly, a differently tokenizing or early-stopping arm is warned about (and
recorded in campaign.json), ``--strict-arms`` makes it a preflight failure (exit 3), and
``--warm-cache N`` sends every arm N requests before the load.
"""

from __future__ import annotations

import json
import urllib.request
from pathlib import Path

import pytest

from core.config import Endpoint, RequestSettings
from locustfiles import armcheck
from locustfiles.armcheck import ArmProbe, compare_arms, compare_settings, tolerance
from support import StubProcesses, run_campaign, write_config

NAMES = ("p1", "p2")


def probe(label: str, tokens: tuple[int | None, ...] = (100, 1000), output: int | None = 24,
          **kw) -> ArmProbe:
    return ArmProbe(label, prompt_tokens=dict(zip(NAMES, tokens)), output_tokens=output, **kw)


# ---- compare_arms: no server -----------------------------------------------------------------
def test_tolerance_is_8_tokens_or_5_percent_whichever_is_larger():
    assert tolerance(20) == 8 and tolerance(160) == 8 and tolerance(1000) == 50


def test_alike_arms_have_no_difference():
    assert compare_arms([probe("A"), probe("B")]) == []


@pytest.mark.parametrize("tokens, named", [
    ((108, 1050), []),                  # at the edges: 8 tokens at 100, 5% (50) at 1000
    ((92, 950), []),
    ((109, 1000), ["p1"]),              # just past 8 tokens
    ((100, 1051), ["p2"]),              # just past 5%
    ((91, 949), ["p1", "p2"]),
])
def test_tokenization_tolerance_edges(tokens, named):
    diffs = compare_arms([probe("A"), probe("B", tokens)])
    assert [d.prompt for d in diffs] == named
    for d in diffs:
        assert d.kind == "tokenization" and d.endpoint == "B" and d.reference == "A"
        assert f"prompt {d.prompt!r} counts {d.value} prompt tokens, A {d.expected}" in d.message


def test_each_arm_is_compared_with_the_first_that_reports_usage():
    diffs = compare_arms([probe("A", (None, None)), probe("B"), probe("C", (100, 1200))])
    assert [(d.kind, d.endpoint) for d in diffs] == [("tokenization_unknown", "A"),
                                                     ("tokenization", "C")]
    assert "A: no usage in its answers: tokenization cannot be compared" in diffs[0].message
    assert diffs[1].reference == "B" and diffs[1].value == 1200


def test_a_single_endpoint_without_usage_is_not_an_arm_difference():
    assert compare_arms([probe("A", (None, None))]) == []


def test_early_stop_is_named_with_its_figure():
    diffs = compare_arms([probe("A"), probe("B", output=10, finish_reason="stop",
                                            ignore_eos=True)])
    assert [(d.kind, d.endpoint, d.value, d.expected) for d in diffs] == [
        ("output_length", "B", 10, 24)]
    assert "B: generated 10 of the 24 output tokens asked" in diffs[0].message
    assert "finish_reason stop" in diffs[0].message and "stops early" in diffs[0].message
    text = "\n".join(armcheck.warning_lines(diffs))
    assert "different amounts of work" in text and "unequal requests" in text


def test_early_stop_counted_from_chunks_says_so():
    diffs = compare_arms([probe("A"), probe("B", (None, None), output=20,
                                            output_counted="chunks")])
    kinds = {d.kind: d for d in diffs}
    assert set(kinds) == {"tokenization_unknown", "output_length"}
    assert "counted chunks" in kinds["output_length"].message
    assert "ignore_eos NOT sent" in kinds["output_length"].message


def test_failed_probes_and_settings_are_differences():
    diffs = compare_arms([probe("A"), probe("B", output=None, errors=["output length: HTTP 500"])])
    assert [(d.kind, d.endpoint) for d in diffs] == [("probe_failed", "B")]
    a = Endpoint("A", "http://a/v1", "m")
    b = Endpoint("B", "http://b/v1", "m", request=RequestSettings(ignore_eos=False))
    (d,) = compare_settings([a, b])
    assert d.kind == "request_settings" and "ignore_eos = False, A has True" in d.message


def test_record_is_plain_data():
    prompts = armcheck.probe_prompts([[{"role": "user", "content": "x"}]] * 3)
    assert [p.name for p in prompts] == ["synthetic 16 words", "synthetic 96 words",
                                         "synthetic 384 words", "prompts file #1",
                                         "prompts file #2"]
    assert prompts[0] == armcheck.probe_prompts()[0]      # fixed seed
    probes = [probe("A"), probe("B", output=3)]
    record = armcheck.arm_check_record(probes, prompts, compare_arms(probes))
    assert json.loads(json.dumps(record)) == record
    assert record["equivalent"] is False and record["output"]["tokens"] == {"A": 24, "B": 3}


def test_warm_prompts_are_the_same_for_every_arm_and_seeded():
    one = armcheck.warm_prompts(7, 20, 4)
    assert one == armcheck.warm_prompts(7, 20, 4) and len(one) == 4
    assert len({m[0]["content"] for m in one}) == 4
    assert one != armcheck.warm_prompts(8, 20, 4)
    file = [[{"role": "user", "content": "a"}], [{"role": "user", "content": "b"}]]
    assert [m[0]["content"] for m in armcheck.warm_prompts(0, 20, 3, file)] == ["a", "b", "a"]


# ---- against stub servers ---------------------------------------------------------------------
def chat_requests(url: str) -> int:
    with urllib.request.urlopen(url.removesuffix("/v1") + "/stub/stats", timeout=5) as r:
        return json.load(r)["chat_requests"]


def campaign(tmp_path: Path, a: str, b: str, *flags: str, b_extra: dict | None = None):
    tmp_path.mkdir(parents=True, exist_ok=True)
    cfg = write_config(tmp_path / "ep.json", [
        {"label": "A", "base_url": a, "model": "stub-model"},
        {"label": "B", "base_url": b, "model": "stub-model", "extra_body": b_extra or {}},
    ], load={"stages": [1], "ramp_s": 0.2, "warmup_s": 0.3, "steady_s": 1.0, "drain_s": 0.2})
    result = run_campaign(["--endpoints-file", str(cfg), "--results-dir", str(tmp_path / "res"),
                           "--no-report", "--stop-timeout", "1", "--llm-metrics-port", "0",
                           *flags], timeout=120)
    dirs = sorted((tmp_path / "res").glob("*")) if (tmp_path / "res").exists() else []
    summary = json.loads((dirs[0] / "campaign.json").read_text()) if dirs else None
    return result, summary, dirs[0] if dirs else None


def test_probe_arm_and_warm_cache_against_a_stub():
    from locustfiles.preflight import probe_arm, warm_cache

    with StubProcesses() as stub:
        url = stub(ttft_ms=1, itl_ms=0)
        ep = Endpoint("A", url, "stub-model")
        p = probe_arm(ep, armcheck.probe_prompts())
        assert not p.errors and p.output_tokens == 24 and p.ignore_eos is True
        assert p.prompt_tokens["synthetic 16 words"] > 10 and p.finish_reason == "length"
        before = chat_requests(url)
        assert warm_cache(ep, armcheck.warm_prompts(0, 10, 5)) == (5, "")
        assert chat_requests(url) - before == 5
        failing = Endpoint("B", url, "stub-model", extra_body={"stub_fault": "http_500"})
        p = probe_arm(failing, armcheck.probe_prompts()[:1])
        assert len(p.errors) == 2 and "HTTP 500" in p.errors[0], p.errors
        assert [d.kind for d in compare_arms([p])] == ["probe_failed", "probe_failed"]
        sent, failure = warm_cache(failing, armcheck.warm_prompts(0, 10, 3))
        assert sent == 0 and "HTTP 500" in failure


@pytest.mark.slow
def test_alike_arms_pass_quietly(stub, tmp_path):
    result, summary, _ = campaign(tmp_path, stub(ttft_ms=2, itl_ms=1), stub(ttft_ms=2, itl_ms=1))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "the arms are equivalent" in result.stdout
    assert "every request is a fresh prefix" in result.stdout
    assert "WARNING" not in result.stderr
    arm = summary["preflight"]["arm_check"]
    assert arm["equivalent"] is True and arm["differences"] == []
    assert summary["preflight"]["cache"]["prefix"] == "fresh per request"


@pytest.mark.slow
def test_differing_arms_are_named_and_strict_arms_stops(stub, tmp_path):
    a = stub(ttft_ms=2, itl_ms=1)
    b = stub(ttft_ms=2, itl_ms=1, prompt_token_factor=1.5, tokens=10)
    result, summary, _ = campaign(tmp_path, a, b, b_extra={"ignore_eos": False})
    assert result.returncode == 0, result.stdout + result.stderr   # warned, not stopped
    err = result.stderr
    assert "WARNING: the arms are not equivalent" in err
    assert "B: prompt 'synthetic 96 words' counts" in err
    assert "B: generated 10 of the 24 output tokens asked" in err
    assert "different amounts of work" in err
    kinds = {(d["kind"], d["endpoint"]) for d in summary["preflight"]["arm_check"]["differences"]}
    assert kinds == {("tokenization", "B"), ("output_length", "B")}
    assert summary["preflight"]["arm_check"]["output"]["tokens"] == {"A": 24, "B": 10}

    strict, summary, _ = campaign(tmp_path / "strict", a, b, "--strict-arms",
                                  b_extra={"ignore_eos": False})
    assert strict.returncode == 3, strict.stdout + strict.stderr
    assert "--strict-arms" in strict.stderr and "no load was sent" in strict.stderr
    assert summary is None                                # no campaign started


@pytest.mark.slow
def test_warm_cache_sends_n_requests_per_arm_before_the_load(stub, tmp_path):
    a, b = stub(ttft_ms=2, itl_ms=1), stub(ttft_ms=2, itl_ms=1)
    result, summary, folder = campaign(tmp_path, a, b, "--warm-cache", "5")
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert out.index("warm-up: 5 requests") < out.index("run 1/2")
    assert summary["preflight"]["warm_cache"]["answered"] == {"A": 5, "B": 5}
    # preflight: 2 checks + 3 tokenization probes + 1 output probe; then 5 warm-up; then load
    for label, url in (("A", a), ("B", b)):
        records = len((folder / "runs" / f"r01-{label}" / "records.csv").read_text()
                      .splitlines()) - 1
        assert chat_requests(url) == 2 + 4 + 5 + records, label


def test_flags_are_checked():
    from core.config import ConfigError
    from locustfiles.campaign_args import build_parser, check_arguments

    for argv in (["--warm-cache", "-1"], ["--strict-arms", "--no-preflight"]):
        with pytest.raises(ConfigError):
            check_arguments(build_parser().parse_args(argv))
    args = build_parser().parse_args([])
    assert args.warm_cache == 0 and args.strict_arms is False


def test_the_stub_can_tokenize_differently_and_is_unchanged_without_the_option():
    from bench.stub.plan import FaultSchedule, StubConfig, plan_request

    raw = json.dumps({"messages": [{"role": "user", "content": "x" * 400}]}).encode()
    assert plan_request(StubConfig(), raw, FaultSchedule(None, 1)).prompt_tokens == 101
    assert plan_request(StubConfig(prompt_token_factor=1.5), raw,
                        FaultSchedule(None, 1)).prompt_tokens == 152
