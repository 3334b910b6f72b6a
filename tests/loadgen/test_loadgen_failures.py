"""What a demanding user tries: keys where they do not belong, prompts files that cannot work,
runs that do nothing, stops from outside, servers that fail every request, odd folders."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import psutil
import pytest

from support import (ROOT, free_port, records_written, run_campaign, start_locust, wait_until,
                     write_config)
from locustfiles import campaign

pytestmark = pytest.mark.slow

KEY = "sk-proj-Zq0123456789abcdefKEY"


def _read(run_dir: Path) -> pd.DataFrame:
    return pd.read_csv(run_dir / "records.csv", keep_default_na=False, na_values=["nan", ""])


# ---- 1. a key planted in every field a user can set ----

def _config_with(field: str) -> dict:
    ep = {"label": "A", "base_url": "http://127.0.0.1:9/v1", "model": "m"}
    load: dict = {}
    request: dict = {}
    if field == "label":
        ep["label"] = KEY[:30]
    elif field == "base_url userinfo":
        ep["base_url"] = f"http://user:{KEY}@127.0.0.1:9/v1"
    elif field == "base_url query":
        ep["base_url"] = f"http://127.0.0.1:9/v1?api_key={KEY}"
    elif field in ("model", "metrics_url", "exporter_url", "api_key_env"):
        ep[field] = KEY if field in ("model", "api_key_env") else f"http://127.0.0.1:9/m?token={KEY}"
    elif field == "extra_body name":
        ep["extra_body"] = {"auth": {"api_key": KEY}}
    elif field == "extra_body value":
        ep["extra_body"] = {"metadata": {"notes": [KEY]}}
    elif field == "api_key":
        ep["api_key"] = KEY
    elif field == "request":
        request["authorization"] = f"Bearer {KEY}"
    elif field == "prompts_file":
        load["prompts_file"] = f"{KEY}.jsonl"
    return {"ep": ep, "load": load, "request": request}


CONFIG_FIELDS = ["label", "base_url userinfo", "base_url query", "model", "metrics_url",
                 "exporter_url", "api_key_env", "extra_body name", "extra_body value", "api_key",
                 "request", "prompts_file"]
FLAGS = {"--url": ["--url", f"A=http://u:{KEY}@127.0.0.1:9/v1"],
         "--a-url": ["--a-url", f"http://127.0.0.1:9/v1?key={KEY}"],
         "--model": ["--model", f"A={KEY}"], "--a-model": ["--a-model", KEY],
         "--note": ["--note", f"run with {KEY}"], "--label": ["--label", KEY],
         "--report-args": ["--report-args", f"--note {KEY}"],
         "--endpoint": ["--endpoint", KEY], "--prompts-file": ["--prompts-file", f"/x/{KEY}"]}


@pytest.mark.parametrize("where", CONFIG_FIELDS + list(FLAGS))
def test_a_key_anywhere_is_refused_and_never_printed_or_written(tmp_path, where):
    spec = _config_with(where) if where in CONFIG_FIELDS else _config_with("")
    cfg = write_config(tmp_path / "ep.json", [spec["ep"]], load=spec["load"],
                       request=spec["request"])
    results = tmp_path / "res"
    result = run_campaign(["--endpoints-file", str(cfg), "--results-dir", str(results),
                           "--no-preflight", *FLAGS.get(where, [])], timeout=60)
    terminal = result.stdout + result.stderr
    assert result.returncode == 2, terminal
    assert "error:" in result.stderr
    for part in (KEY, KEY[3:], KEY[8:]):
        assert part not in terminal, terminal
    assert not results.exists()  # refused before anything was written


def test_keys_that_slip_through_are_scrubbed_from_files_logs_and_terminal(tmp_path):
    """The second line: a server that echoes what it got (here a key-shaped string inside the
    prompt) into an error body; records, logs, manifests and the terminal show *** instead."""
    import io
    import logging

    from core import rundir, secrets

    text = f"denied for Authorization: Bearer {KEY[3:]} at http://me:pw@host/v1 and {KEY}"
    clean = secrets.scrub(text)
    assert KEY not in clean and KEY[3:] not in clean and "me:pw" not in clean
    rundir.write_json_atomic(tmp_path / "m.json", {"error": text})
    assert KEY[3:] not in (tmp_path / "m.json").read_text()
    assert json.loads((tmp_path / "m.json").read_text())["error"].count("***") == 3
    sink = io.StringIO()
    handler = logging.StreamHandler(sink)
    handler.addFilter(secrets.ScrubLogFilter())
    logger = logging.getLogger("test.scrub")
    logger.addHandler(handler)
    try:
        logger.error("got %s", text)
        try:
            raise RuntimeError(text)
        except RuntimeError:
            logger.exception("boom")
    finally:
        logger.removeHandler(handler)
    assert KEY[3:] not in sink.getvalue() and "***" in sink.getvalue()
    out = io.StringIO()
    secrets.ScrubbingStream(out).write(text)
    assert KEY[3:] not in out.getvalue()


# ---- 2. prompts files checked before any load; a run that did nothing fails ----

@pytest.mark.parametrize("case, expect", [
    ("missing", "not found"),
    ("empty", "no prompts in the file"),
    ("malformed", ":2: not JSON"),
    ("shape", ':1: expected {"prompt"'),
    ("messages", ':1: expected {"prompt"'),
])
def test_a_prompts_file_that_cannot_work_stops_before_any_load(stub, tmp_path, case, expect):
    url = stub()
    folder = tmp_path / "cfg"
    folder.mkdir()
    prompts = folder / "p.jsonl"
    content = {"empty": "\n\n", "malformed": '{"prompt": "a"}\n{"prompt": \n',
               "shape": '["a list"]\n', "messages": '{"messages": [{"text": "no role"}]}\n'}
    if case != "missing":
        prompts.write_text(content[case])
    cfg = write_config(folder / "ep.json", [{"label": "A", "base_url": url, "model": "stub-model"}],
                       load={"prompts_file": "p.jsonl"})
    result = run_campaign(["--endpoints-file", str(cfg), "--results-dir", str(tmp_path / "res")],
                          timeout=60)
    assert result.returncode == 2, result.stdout + result.stderr
    assert str(prompts) in result.stderr and expect in result.stderr, result.stderr
    assert "preflight" not in result.stdout and not (tmp_path / "res").exists()
    # Locust on its own (make ui) refuses the same file at start-up
    locust = start_locust(cfg, tmp_path / "run", "--headless", "-u", "1", "-t", "3",
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    output, _ = locust.communicate(timeout=60)
    assert locust.returncode == 2 and expect in output.decode(), output.decode()[-2000:]


def test_a_relative_prompts_file_is_read_from_the_config_folder(stub, tmp_path):
    url = stub(ttft_ms=5, itl_ms=1)
    folder = tmp_path / "cfg"
    folder.mkdir()
    (folder / "p.jsonl").write_text('{"prompt": "hello"}\n{"messages": [{"role": "user", '
                                    '"content": "hi"}]}\n')
    cfg = write_config(folder / "ep.json", [{"label": "A", "base_url": url, "model": "stub-model"}],
                       load={"prompts_file": "p.jsonl", "stages": [1], "warmup_s": 0.2,
                             "steady_s": 1.0, "drain_s": 0.2, "ramp_s": 0.2})
    result = run_campaign(["--endpoints-file", str(cfg), "--results-dir", str(tmp_path / "res"),
                           "--no-report", "--stop-timeout", "2"])
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"prompts: 2 from {folder / 'p.jsonl'}" in result.stdout
    run_dir = next((tmp_path / "res").iterdir()) / "runs" / "r01-A"
    assert len(_read(run_dir)) > 3


def test_a_run_with_no_records_fails_with_the_reason(stub, tmp_path):
    cfg = write_config(tmp_path / "ep.json", [{"label": "A", "base_url": stub(),
                                               "model": "stub-model"}])
    run_dir = tmp_path / "run"
    locust = start_locust(cfg, run_dir, "--headless", "-u", "0", "-t", "2",
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    output, _ = locust.communicate(timeout=60)
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert locust.returncode == 1, output.decode()[-2000:]
    assert manifest["status"] == "failed" and "no request was recorded" in manifest["failure_reason"]
    # and the campaign calls such a run failed, whatever Locust's exit code
    outcome = campaign.run_outcome(run_dir, 0, "run 1/1")
    assert outcome["status"] == "failed" and "no request was recorded" in outcome["reason"]


# ---- 3 and 4. interrupted runs say so; SIGINT and SIGTERM stop everything cleanly ----

@pytest.mark.parametrize("how", ["SIGINT", "SIGTERM", "SIGINT to a background job"])
def test_a_stopped_campaign_finalizes_every_result_as_interrupted(stub, tmp_path, how):
    url = stub(ttft_ms=10, itl_ms=20)
    cfg = write_config(tmp_path / "ep.json", [{"label": "A", "base_url": url, "model": "stub-model"},
                                              {"label": "B", "base_url": url, "model": "stub-model"}],
                       load={"stages": [2, 4], "ramp_s": 0.5, "warmup_s": 0.5, "steady_s": 30.0,
                             "drain_s": 0.5})
    results = tmp_path / "res"
    ignore_sigint = how.endswith("background job")
    proc = subprocess.Popen(
        [sys.executable, "-m", "locustfiles.campaign", "--endpoints-file", str(cfg),
         "--results-dir", str(results), "--no-preflight", "--stop-timeout", "5"],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        preexec_fn=(lambda: signal.signal(signal.SIGINT, signal.SIG_IGN)) if ignore_sigint else None)
    try:
        run_dir = wait_until(lambda: next(iter(results.glob("*/runs/r01-A")), None), 60, "run dir")
        wait_until(lambda: records_written(run_dir) > 10, 60, "records")
        children = psutil.Process(proc.pid).children(recursive=True)
        assert children, "no Locust process"
        stop_at = time.time()
        proc.send_signal(signal.SIGTERM if how == "SIGTERM" else signal.SIGINT)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == (143 if how == "SIGTERM" else 130), out + err
    assert "interrupted" in out + err
    time.sleep(0.5)
    assert not [c.pid for c in children if c.is_running() and c.status() != psutil.STATUS_ZOMBIE]
    campaign_dir = run_dir.parent.parent
    summary = json.loads((campaign_dir / "campaign.json").read_text())
    assert summary["status"] == "interrupted"
    assert [e["status"] for e in summary["order"]] == ["interrupted"]  # B never started
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["status"] == "interrupted"
    assert stop_at - 1 <= manifest["interrupted_unix"] <= stop_at + 30
    records = _read(run_dir)
    assert len(records) == manifest["records_written"] == manifest["locust_requests"] > 10
    # the stage that was running is in the timeline, cut where the stop came
    stages = pd.read_csv(run_dir / "stages.csv")
    last = stages.iloc[-1]
    assert abs(last["end_unix"] - manifest["interrupted_unix"]) < 1.0
    assert pd.isna(last["drain_unix"])
    # the report names it
    report = subprocess.run([sys.executable, "-m", "analysis", str(campaign_dir / "runs"),
                             "--out", str(tmp_path / "report")], cwd=ROOT, capture_output=True,
                            text=True, timeout=120)
    warnings = json.loads((tmp_path / "report" / "summary.json").read_text())["warnings"]
    assert any(w["code"] == "incomplete_run" and "interrupted" in w["message"] for w in warnings), \
        report.stdout + report.stderr


# ---- 5. failure storms: a failed request is retried after a back-off ----

def test_failures_back_off_instead_of_storming(tmp_path):
    dead = f"http://127.0.0.1:{free_port()}/v1"   # nothing listens: connection refused
    cfg = write_config(tmp_path / "ep.json", [{"label": "A", "base_url": dead, "model": "m"}],
                       load={"stages": [2], "ramp_s": 0.0, "warmup_s": 0.0, "steady_s": 4.0,
                             "drain_s": 0.0, "failure_backoff_s": 0.2,
                             "failure_backoff_max_s": 0.8, "start_spread_s": 0.0})
    result = run_campaign(["--endpoints-file", str(cfg), "--results-dir", str(tmp_path / "res"),
                           "--no-preflight", "--no-report", "--stop-timeout", "1"])
    run_dir = next((tmp_path / "res").iterdir()) / "runs" / "r01-A"
    records = _read(run_dir)
    assert set(records["error_category"]) == {"connection_refused"}, result.stderr
    # without the back-off, 2 users retry a refused connection thousands of times a second;
    # with it each user waits 0.1-0.2, 0.2-0.4, 0.4-0.8, then 0.4-0.8 s between tries
    assert 4 <= len(records) <= 2 * (1 + 4.5 / 0.4), len(records)
    starts = records.sort_values("start_unix")["start_unix"]
    assert (starts.diff().dropna() >= 0).all()


def test_the_back_off_is_configurable_and_zero_turns_it_off(tmp_path):
    dead = f"http://127.0.0.1:{free_port()}/v1"
    cfg = write_config(tmp_path / "ep.json", [{"label": "A", "base_url": dead, "model": "m"}],
                       load={"stages": [1], "ramp_s": 0.0, "warmup_s": 0.0, "steady_s": 1.5,
                             "drain_s": 0.0, "start_spread_s": 0.0})
    result = run_campaign(["--endpoints-file", str(cfg), "--results-dir", str(tmp_path / "res"),
                           "--no-preflight", "--no-report", "--stop-timeout", "1",
                           "--failure-backoff-s", "0"])
    records = _read(next((tmp_path / "res").iterdir()) / "runs" / "r01-A")
    assert len(records) > 100, result.stderr   # the old storm: retried at once


# ---- 8 and 9. the campaign's own flags; relative folders from anywhere ----

@pytest.mark.parametrize("args, expect", [
    (["--stop-timeout", "-4"], "--stop-timeout -4: give seconds >= 0"),
    (["--workers", "-1"], "--workers -1"),
    (["--stages", "a"], "--stages: expected numbers"),
    (["--stages", "1.5"], "--stages: expected numbers"),
    (["--steady-s", "-1"], "steady_s = -1.0: must be a number > 0"),
    (["--label", "../x"], "--label '../x'"),
])
def test_bad_flags_exit_2_with_one_line(tmp_path, args, expect):
    cfg = write_config(tmp_path / "ep.json", [{"label": "A", "base_url": "http://127.0.0.1:9/v1",
                                               "model": "m"}])
    result = run_campaign(["--endpoints-file", str(cfg), "--results-dir", str(tmp_path / "res"),
                           *args], timeout=60)
    assert result.returncode == 2 and expect in result.stderr, result.stderr
    assert "Traceback" not in result.stderr


def test_relative_folders_work_from_any_folder(stub, tmp_path):
    url = stub(ttft_ms=5, itl_ms=1)
    work = tmp_path / "somewhere"
    work.mkdir()
    write_config(work / "ep.json", [{"label": "A", "base_url": url, "model": "stub-model"}],
                 load={"stages": [1], "ramp_s": 0.2, "warmup_s": 0.2, "steady_s": 1.0,
                       "drain_s": 0.2})
    result = subprocess.run(
        [sys.executable, "-m", "locustfiles.campaign", "--endpoints-file", "ep.json",
         "--results-dir", "res", "--no-report", "--no-preflight", "--stop-timeout", "2"],
        cwd=work, capture_output=True, text=True, timeout=120,
        env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert result.returncode == 0, result.stdout + result.stderr
    run_dir = next((work / "res").iterdir()) / "runs" / "r01-A"
    assert len(_read(run_dir)) > 3
    # the banner gives the planned time, not the planned time plus the stop timeout
    assert "1 runs of about 2s each" in result.stdout, result.stdout
    assert "after the run was finalized" not in (run_dir / "locust.log").read_text()


def test_a_run_by_hand_stopped_mid_stream_keeps_every_request(stub, tmp_path):
    """Without a load shape the run ends when the user stops it. Streams still in flight then
    must be in records.csv as Locust counts them (they once finished after the files closed)."""
    url = stub(ttft_ms=10, itl_ms=100)      # 16 tokens: 1.6 s per stream, always some in flight
    cfg = write_config(tmp_path / "ep.json", [{"label": "A", "base_url": url,
                                               "model": "stub-model"}])
    run_dir = tmp_path / "run"
    locust = start_locust(cfg, run_dir, "--headless", "-u", "4", "-r", "4", "--stop-timeout", "0",
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        wait_until(lambda: records_written(run_dir) > 5 or locust.poll() is not None, 60,
                   "records written")
        locust.send_signal(signal.SIGINT)
        output, _ = locust.communicate(timeout=60)
    finally:
        if locust.poll() is None:
            locust.kill()
            locust.wait()
    manifest = json.loads((run_dir / "manifest.json").read_text())
    records = _read(run_dir)
    assert manifest["status"] == "complete", output.decode(errors="replace")[-2000:]
    assert len(records) == manifest["records_written"] == manifest["locust_requests"]
    assert (records["error_category"] == "interrupted").sum() >= 1
