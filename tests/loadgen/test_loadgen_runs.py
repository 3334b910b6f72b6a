"""Real Locust runs (local and master + 2 workers) against stub servers on loopback."""

from __future__ import annotations

import json
import signal
import subprocess
from pathlib import Path

import pandas as pd
import pytest

from support import free_port, records_written, run_campaign, start_locust, wait_until, write_config
from core.records import RECORD_FIELDS

pytestmark = pytest.mark.slow

SECRET = "sk-test-secret-0123456789"


def read_records(run_dir: Path) -> pd.DataFrame:
    return pd.read_csv(run_dir / "records.csv", keep_default_na=False,
                       na_values=["nan", ""])


def locust_chat_count(run_dir: Path) -> int:
    stats = pd.read_csv(run_dir / "locust_stats.csv")
    return int(stats[(stats["Type"] == "CHAT")]["Request Count"].sum())


def assert_phase_tags_match_timeline(records: pd.DataFrame, stages: pd.DataFrame) -> None:
    """Each record's tags agree with the stage timeline at its start (1.5 s slack: tags are
    broadcast on the shape's 1 s tick)."""
    slack = 1.5
    for rec in records.itertuples():
        row = stages[stages["stage"] == rec.stage]
        assert len(row) == 1, f"record tagged with unknown stage {rec.stage}"
        row = row.iloc[0]
        bounds = {"ramp": (row.ramp_unix, row.warmup_unix), "warmup": (row.warmup_unix, row.steady_unix),
                  "steady": (row.steady_unix, row.drain_unix), "drain": (row.drain_unix, row.end_unix)}
        lo, hi = bounds[rec.phase]
        assert lo - slack <= rec.start_unix <= hi + slack, (rec.phase, rec.start_unix, lo, hi)
        assert rec.stage_users == row.users


@pytest.mark.parametrize("workers", [0, 2])
def test_campaign_writes_complete_run_directories(stub, tmp_path, workers):
    url_a = stub(ttft_ms=15, itl_ms=3, api_key=SECRET)
    url_b = stub(ttft_ms=25, itl_ms=2, api_key=SECRET)
    cfg = write_config(tmp_path / "ep.json", [
        {"label": "A", "base_url": url_a, "model": "stub-model", "api_key_env": "STUB_KEY",
         "extra_body": {"chat_template_kwargs": {"enable_thinking": True}}},
        {"label": "B", "base_url": url_b, "model": "stub-model", "api_key_env": "STUB_KEY",
         "extra_body": {"chat_template_kwargs": {"enable_thinking": False}}},
    ], load={"repetitions": 2 if workers == 0 else 1})
    result = run_campaign(["--endpoints-file", str(cfg), "--results-dir", str(tmp_path / "res"),
                           "--workers", str(workers), "--stop-timeout", "5", "--no-report"],
                          env={"STUB_KEY": SECRET})
    assert result.returncode == 0, result.stdout + result.stderr
    assert "preflight" in result.stdout and "reasoning: yes" in result.stdout
    campaign = next((tmp_path / "res").iterdir())
    summary = json.loads((campaign / "campaign.json").read_text())
    order = [(e["endpoint"], e["repetition"]) for e in summary["order"]]
    expected = [("A", 1), ("B", 1), ("A", 2), ("B", 2)] if workers == 0 else [("A", 1), ("B", 1)]
    assert order == expected
    for entry in summary["order"]:
        run_dir = campaign / entry["run_dir"]
        for name in ("manifest.json", "records.csv", "stages.csv", "locust_stats.csv",
                     "locust_stats_history.csv", "locust_failures.csv", "locust.json"):
            assert (run_dir / name).is_file(), name
        manifest = json.loads((run_dir / "manifest.json").read_text())
        records = read_records(run_dir)
        assert list(records.columns) == list(RECORD_FIELDS)
        assert manifest["status"] == "complete"
        assert len(records) == manifest["records_written"] == manifest["locust_requests"]
        assert len(records) == locust_chat_count(run_dir) > 20
        assert records["ok"].all(), records[~records["ok"]]["error_message"].tolist()
        assert (records["ttft_s"] > 0).all() and (records["output_tokens"] == 16).all()
        assert records["repetition"].eq(entry["repetition"]).all()
        assert set(records["phase"]) >= {"warmup", "steady"}
        stages = pd.read_csv(run_dir / "stages.csv")
        assert list(stages["users"]) == [1, 3]
        assert_phase_tags_match_timeline(records, stages)
        if entry["endpoint"] == "A":
            assert (records["reasoning_tokens"] > 0).all()
        else:
            assert (records["reasoning_tokens"] == 0).all()
        if workers:
            assert records["worker"].nunique() == 2
            assert len(manifest["load_generator"]["processes"]) == 3  # 2 workers + master
        assert "saturated" in manifest["load_generator"]
    # the key never reaches a file
    for path in campaign.rglob("*"):
        if path.is_file():
            assert SECRET not in path.read_text(errors="replace"), path


def test_failures_are_categorised_and_the_run_goes_on(stub, tmp_path, monkeypatch):
    url = stub(ttft_ms=10, itl_ms=2, api_key=SECRET)
    cfg = write_config(tmp_path / "ep.json", [
        {"label": "bad", "base_url": url, "model": "stub-model", "api_key_env": "STUB_KEY",
         "extra_body": {"stub_fault": "stream_error"}},
        {"label": "wrongkey", "base_url": url, "model": "stub-model",
         "api_key_env": "WRONG_KEY"},
    ], load={"stages": [2], "warmup_s": 0.5, "steady_s": 1.5, "drain_s": 0.5})
    result = run_campaign(["--endpoints-file", str(cfg), "--results-dir", str(tmp_path / "res"),
                           "--no-preflight", "--stop-timeout", "2"],
                          env={"STUB_KEY": SECRET, "WRONG_KEY": SECRET + "-wrong"})
    assert result.returncode == 0, result.stdout + result.stderr
    assert SECRET not in result.stdout + result.stderr
    campaign = next((tmp_path / "res").iterdir())
    bad = read_records(campaign / "runs" / "r01-bad")
    # every request fails, so each of the 2 users backs off (0.25-0.5 s, then doubling)
    assert len(bad) >= 6 and set(bad["error_category"]) == {"stream_error"}
    assert (bad["http_status"] == 200).all()
    failures = pd.read_csv(campaign / "runs" / "r01-bad" / "locust_failures.csv")
    assert failures["Error"].str.contains("stream_error").all()
    wrong = read_records(campaign / "runs" / "r01-wrongkey")
    assert set(wrong["error_category"]) == {"http_4xx"} and (wrong["http_status"] == 401).all()
    assert wrong["error_message"].str.contains(r"\*\*\*").all()
    assert (campaign / "report" / "report.html").is_file()  # the report's files are searched too
    for path in campaign.rglob("*"):
        if path.is_file():
            text = path.read_text(errors="replace")
            assert SECRET not in text, path


def test_streams_in_flight_at_the_end_are_recorded(stub, tmp_path):
    url = stub(ttft_ms=10, itl_ms=100)  # 16 tokens: 1.6 s per stream
    cfg = write_config(tmp_path / "ep.json", [
        {"label": "slow", "base_url": url, "model": "stub-model"}],
        load={"stages": [4], "ramp_s": 0.2, "warmup_s": 0.5, "steady_s": 2.0, "drain_s": 0.2})
    result = run_campaign(["--endpoints-file", str(cfg), "--results-dir", str(tmp_path / "res"),
                           "--no-preflight", "--no-report", "--stop-timeout", "0"])
    assert result.returncode == 0, result.stdout + result.stderr
    run_dir = next((tmp_path / "res").iterdir()) / "runs" / "r01-slow"
    records = read_records(run_dir)
    interrupted = records[records["error_category"] == "interrupted"]
    assert len(interrupted) == 4          # one stream per user was cut
    # The stop lands mid-way through each user's second 1.6 s stream, but a user slowed enough on a
    # loaded machine may have just begun its next stream and be cut before its first chunk.
    assert (interrupted["chunks"] > 0).sum() >= 3
    # Locust starts the 4 users at once; their first requests are spread over start_spread_s
    firsts = records.sort_values("start_unix")["start_unix"].head(4)
    assert firsts.max() - firsts.min() > 0.05
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert len(records) == manifest["locust_requests"] == locust_chat_count(run_dir)


def test_a_graceful_stop_cuts_no_stream(stub, tmp_path):
    # Back-to-back short streams: at any moment many users are between two requests, the state
    # in which Locust kills a user at once (and the kill landed inside its next request).
    url = stub(ttft_ms=0, itl_ms=0)
    users = 64
    cfg = write_config(tmp_path / "ep.json", [{"label": "A", "base_url": url,
                                               "model": "stub-model"}],
                       load={"stages": [users], "ramp_s": 0.2, "warmup_s": 0.5, "steady_s": 2.0,
                             "drain_s": 0.2, "start_spread_s": 0.0},
                       request={"max_tokens": 128})
    result = run_campaign(["--endpoints-file", str(cfg), "--results-dir", str(tmp_path / "res"),
                           "--no-preflight", "--no-report", "--stop-timeout", "10"])
    assert result.returncode == 0, result.stdout + result.stderr
    records = read_records(next((tmp_path / "res").iterdir()) / "runs" / "r01-A")
    # Every user finished a request and started another, so the stop found users between two
    # requests (and most inside one).
    assert len(records) >= 2 * users
    assert records["ok"].all(), records.loc[~records["ok"], "error_category"].value_counts()


def test_sigint_stops_locust_started_with_sigint_ignored(stub, tmp_path):
    # A shell starts background jobs with SIGINT ignored (`make ui &`, CI scripts) and Python
    # keeps that; Ctrl-C, and the campaign runner's stop, must still end the run cleanly.
    url = stub(ttft_ms=10, itl_ms=3)
    cfg = write_config(tmp_path / "ep.json", [{"label": "A", "base_url": url,
                                               "model": "stub-model"}])
    run_dir = tmp_path / "run"
    locust = start_locust(cfg, run_dir, "--headless", "-u", "2", "-r", "2",
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN))
    try:
        wait_until(lambda: records_written(run_dir) > 10 or locust.poll() is not None, 30,
                   "records written")
        assert locust.poll() is None, "Locust ended by itself"
        locust.send_signal(signal.SIGINT)
        output, _ = locust.communicate(timeout=20)
    finally:
        if locust.poll() is None:
            locust.kill()
            locust.wait()
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["status"] == "complete", output.decode(errors="replace")[-2000:]
    assert len(read_records(run_dir)) == manifest["records_written"] == manifest["locust_requests"]


def test_open_loop_keeps_the_arrival_rate_and_records_send_lag(stub, tmp_path):
    url = stub(ttft_ms=10, itl_ms=2)
    rate = 20.0
    cfg = write_config(tmp_path / "ep.json", [
        {"label": "A", "base_url": url, "model": "stub-model"}],
        load={"mode": "open", "rates": [rate], "ramp_s": 0.0, "warmup_s": 0.5,
              "steady_s": 4.0, "drain_s": 0.5})
    result = run_campaign(["--endpoints-file", str(cfg), "--results-dir", str(tmp_path / "res"),
                           "--no-preflight", "--no-report", "--stop-timeout", "3"])
    assert result.returncode == 0, result.stdout + result.stderr
    run_dir = next((tmp_path / "res").iterdir()) / "runs" / "r01-A"
    records = read_records(run_dir)
    steady = records[records["phase"] == "steady"]
    assert 40 <= len(steady) <= 130          # Poisson, 20/s over ~4 s
    assert steady["scheduled_unix"].notna().all()
    lag = steady["send_lag_s"].median()
    assert lag < 0.5 / rate, lag              # sent well within the mean inter-arrival gap
    assert records["ok"].all()


@pytest.mark.parametrize("case", ["refused", "model", "key"])
def test_preflight_stops_with_a_clear_message(stub, tmp_path, case):
    if case == "refused":
        ep = {"label": "X", "base_url": f"http://127.0.0.1:{free_port()}/v1", "model": "m"}
        expect = "connection refused"
    elif case == "model":
        ep = {"label": "X", "base_url": stub(), "model": "not-there"}
        expect = "is not served there; it serves: stub-model"
    else:
        ep = {"label": "X", "base_url": stub(api_key=SECRET), "model": "stub-model",
              "api_key_env": "UNSET_KEY_VAR"}
        expect = "$UNSET_KEY_VAR is not set"
    cfg = write_config(tmp_path / "ep.json", [ep])
    result = run_campaign(["--endpoints-file", str(cfg), "--results-dir", str(tmp_path / "res")],
                          timeout=60)
    assert result.returncode == 3
    assert "endpoint 'X'" in result.stderr and expect in result.stderr, result.stderr
    assert not (tmp_path / "res").exists()


def test_bad_config_exits_2_with_the_reason(tmp_path):
    cfg = tmp_path / "ep.toml"
    cfg.write_text('[[endpoints]]\nlabel = "A"\nbase_url = "localhost:8000"\nmodel = "m"\n')
    result = run_campaign(["--endpoints-file", str(cfg)], timeout=30)
    assert result.returncode == 2 and "not an http(s) URL" in result.stderr
