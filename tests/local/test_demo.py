"""The demo's end: the paired verdicts of the report it just built (deploy/local/demo.py)."""

import json
import os
import time

from deploy.local import demo


def _campaign(results, name, summary, mtime=None):
    d = results / name
    (d / "report").mkdir(parents=True)
    (d / "report" / "summary.json").write_text(json.dumps(summary))
    if mtime is not None:
        os.utime(d, (mtime, mtime))
    return d


def test_the_demo_ends_with_the_paired_verdicts_of_its_own_report(tmp_path):
    since = time.time() - 5
    _campaign(tmp_path, "20260101-000000-demo",
              {"paired": {"headline": ["an old verdict"], "headline_level": 4.0}},
              mtime=since - 3600)
    _campaign(tmp_path, "20260101-000001-other", {"paired": {"headline": ["not the demo's"]}})
    made = _campaign(tmp_path, "20261203-150000-demo", {"paired": {
        "mode": "closed", "headline_level": 32.0, "reason": "",
        "headline": ["On the same 240 requests, qwen2's TTFT is 12% higher than qwen3's",
                     "On the same 240 requests, qwen2's E2E is 3% lower than qwen3's"]}})
    lines = demo.paired_epilogue(tmp_path, since)
    assert lines[1].startswith("Paired A/B at 32 users: the same requests sent to both models")
    assert str(made / "report") in lines[1]
    assert lines[2:] == ["  On the same 240 requests, qwen2's TTFT is 12% higher than qwen3's",
                         "  On the same 240 requests, qwen2's E2E is 3% lower than qwen3's"]


def test_no_report_no_verdict_and_a_reason_when_nothing_paired(tmp_path):
    since = time.time() - 5
    assert demo.paired_epilogue(tmp_path, since) == []
    d = tmp_path / "20261203-150000-demo"
    d.mkdir()   # the campaign failed before its report
    assert demo.paired_epilogue(tmp_path, since) == []
    (d / "report").mkdir()
    (d / "report" / "summary.json").write_text(json.dumps(
        {"paired": {"headline": [], "reason": "One endpoint only: nothing to pair."}}))
    assert demo.paired_epilogue(tmp_path, since) == ["Paired A/B: One endpoint only: nothing "
                                                     "to pair."]
