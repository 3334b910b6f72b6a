"""Which runs a report is built from, and what it says about each: runs stopped early, endpoints
that went down, runs named alike in two campaigns, directories that are not runs, runs without
records."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pandas as pd
import pytest

from support import synth
from analysis.__main__ import main
from analysis.build import Options, analyse
from analysis.report import write_report

T0 = synth.T0


def _spec(rep=1, **kw):
    # stage 0 (1 user): ramp [0, 1), warmup [1, 2), steady [2, 8), drain [8, 9), end 9;
    # stage 1 (4 users): ramp [9, 10), warmup [10, 11), steady [11, 17), drain [17, 18).
    return synth.SynthSpec(stages=(1, 4), ramp_s=1.0, warmup_s=1.0, steady_s=6.0, drain_s=1.0,
                           repetition=rep, seed=rep, **kw)


def _cli(capsys, *args):
    rc = main([str(a) for a in args])
    cap = capsys.readouterr()
    return rc, cap.out, cap.err


def _messages(res, code):
    return [w.message for w in res.warnings if w.code == code]


# ---------------------------------------------------------------------------------------------
# 1. Runs stopped early (Ctrl-C / SIGTERM): status "interrupted", a partial last stage

def test_interrupted_in_warmup_says_when_and_the_partial_stage_has_no_window(tmp_path):
    synth.synth_run(tmp_path / "run", _spec())
    synth.interrupt_run(tmp_path / "run", T0 + 10.5)            # stage 1's warmup
    stages = (tmp_path / "run" / "stages.csv").read_text().splitlines()
    assert stages[-1].startswith("1,4,,") and ",,," in stages[-1]   # blank phases in the CSV
    res = analyse([tmp_path / "run"], Options(n_boot=200))
    texts = _messages(res, "incomplete_run")
    assert any("run run" in t and "'interrupted'" in t and "10.5 s into the run" in t
               and "stage 1" in t and "warmup" in t for t in texts), texts
    # the partial stage never reached steady: no window, no figures, nothing invented
    assert sorted(res.per_run["level"].unique()) == [1.0]
    codes = [w.code for w in res.warnings]
    assert "missing_stage_timeline" not in codes and "empty_stage" not in codes
    assert res.runs[0].status == "interrupted"
    write_report(res, tmp_path / "report")


def test_a_stage_row_that_never_reached_steady_gets_no_window_from_records(tmp_path):
    # A few records of the partial stage tagged steady (a worker a moment ahead of the shape)
    # must not make a window: the stage's row says it ended (end_unix) before steady_unix.
    synth.synth_run(tmp_path / "run", _spec())
    synth.interrupt_run(tmp_path / "run", T0 + 10.5)
    rec = pd.read_csv(tmp_path / "run" / "records.csv", keep_default_na=False)
    late = rec.index[(rec["stage"] == 1)][-3:]
    rec.loc[late, "phase"] = "steady"
    rec.to_csv(tmp_path / "run" / "records.csv", index=False)
    res = analyse([tmp_path / "run"], Options(n_boot=200))
    assert sorted(res.per_run["level"].unique()) == [1.0]
    assert "missing_stage_timeline" not in [w.code for w in res.warnings]


def test_interrupted_in_steady_uses_steady_to_end(tmp_path):
    synth.synth_run(tmp_path / "run", _spec())
    synth.interrupt_run(tmp_path / "run", T0 + 14.0)            # 3 s into stage 1's steady state
    last = (tmp_path / "run" / "stages.csv").read_text().splitlines()[-1].split(",")
    assert last[6] == "" and float(last[7]) == T0 + 14.0       # drain blank, end = interrupt
    res = analyse([tmp_path / "run"], Options(n_boot=200))
    pr = res.per_run
    r4 = pr[(pr["endpoint"] == "A") & (pr["level"] == 4.0)].iloc[0]
    assert r4["duration"] == pytest.approx(3.0)                 # steady_unix .. end_unix
    assert r4["req_per_s"] == pytest.approx(r4["completed"] / 3.0)
    r1 = pr[(pr["endpoint"] == "A") & (pr["level"] == 1.0)].iloc[0]
    assert r1["duration"] == pytest.approx(6.0)                 # the complete stage is untouched
    texts = " ".join(_messages(res, "incomplete_run"))
    assert "14.0 s into the run" in texts and "steady" in texts


def test_incomplete_run_code_mentions_interrupted():
    from analysis.errors import WARNING_CODES
    assert "interrupted" in WARNING_CODES["incomplete_run"]


# ---------------------------------------------------------------------------------------------
# 2. Failure storms: errors per time and down windows, beside the per-request error rate

def test_down_windows_rule():
    from analysis.outages import MIN_DOWN_S, down_windows
    assert MIN_DOWN_S == 1.0
    #            ok   fail fail fail  ok   fail  ok    fail (interrupted: ignored)
    start = np.array([0.0, 1.0, 1.5, 2.3, 2.4, 3.0, 3.2, 3.3, 9.0])
    e2e = np.array([0.1, 0.0, 0.0, np.nan, 0.1, 0.0, 0.1, 5.0, 0.5])
    ok = np.array([True, False, False, False, True, False, True, False, False])
    cat = np.array(["", "http_5xx", "connection_refused", "connection_refused", "", "http_5xx",
                    "", "interrupted", "read_timeout"])
    w = down_windows(start, e2e, ok, cat)
    # 1.0 .. 2.3 s: three failures ended and none succeeded, 1.3 s >= 1 s; the lone failure at
    # 3.0 s is an error, not an outage; interrupted requests say nothing about the endpoint.
    assert len(w) == 1
    row = w.iloc[0]
    assert row["start_unix"] == pytest.approx(1.0) and row["duration_s"] == pytest.approx(1.3)
    assert row["failures"] == 3 and row["error_category"] == "connection_refused"
    # Requests that fail slowly end later: ordered by when they ended, a success that ended in
    # between breaks the span.
    start = np.array([0.0, 0.5, 1.0, 1.1])
    e2e = np.array([3.0, 0.1, 0.5, 0.0])        # ends 3.0 (fail), 0.6 (ok), 1.5 (fail), 1.1 (fail)
    ok = np.array([False, True, False, False])
    w = down_windows(start, e2e, ok, np.array(["read_timeout", "", "http_5xx", "http_5xx"]))
    assert len(w) == 1 and w.iloc[0]["start_unix"] == pytest.approx(1.1)
    assert w.iloc[0]["duration_s"] == pytest.approx(1.9) and w.iloc[0]["failures"] == 3
    assert len(down_windows(np.array([]), np.array([]), np.array([], bool), np.array([]))) == 0


def _storm_run(tmp_path, name="run"):
    """Endpoint A, one stage, steady window [3, 11) s: successes every 0.25 s, except during
    [5, 9) s, when A refused every request and the clients retried every 2 ms."""
    config = synth.make_config(["A"], stages=(4,), steady_s=8.0, metrics=False)
    manifest = synth.make_manifest(name, config, end_unix=T0 + 12)
    rows = synth.storm_records(t_from=5.0, t_to=9.0, every_s=0.002, ok_from=3.0, ok_to=11.0,
                               ok_every_s=0.25)
    return synth.write_run(tmp_path / name, manifest=manifest, records=rows,
                           stages=synth.stage_rows((4,), steady_s=8.0))


def test_failure_storm_reads_as_duration(tmp_path):
    _storm_run(tmp_path)
    res = analyse([tmp_path / "run"], Options(n_boot=200))
    r = res.per_run.iloc[0]
    assert r["requests"] == 2000 + 16 and r["completed"] == 16
    assert r["error_rate"] > 99.0                                # per request: ~99.2%
    assert r["failures_per_s"] == pytest.approx(2000 / 8.0)      # per second of the window
    assert r["down_s"] == pytest.approx(4.0, abs=0.01)           # A was down 4 s of 8
    assert r["down_share"] == pytest.approx(50.0, abs=0.2)
    dw = res.down_windows
    assert len(dw) == 1
    w = dw.iloc[0]
    assert w["endpoint"] == "A" and w["run"] == "run" and w["failures"] == 2000
    assert w["start_s"] == pytest.approx(5.0, abs=0.01)
    assert w["duration_s"] == pytest.approx(4.0, abs=0.01)
    assert w["error_category"] == "connection_refused"
    texts = _messages(res, "endpoint_down")
    assert len(texts) == 1 and "run run: endpoint A" in texts[0] and "4.0 s" in texts[0]

    paths = write_report(res, tmp_path / "report")
    md = paths["md"].read_text()
    assert "### Endpoint down: run run" in md
    table = md.split("### Endpoint down: run run")[1].split("\n\n")[1].splitlines()
    assert table[0] == ("| endpoint | start (s into the run) | duration (s) | failures | "
                        "dominant error category |")
    assert table[2] == "| A (model-A) | 5.0 | 4.0 | 2,000 | connection_refused |"
    errors = md.split("### Errors by category")[1].split("\n\n")[1].splitlines()
    assert "failures per second (req/s)" in errors[0] and "endpoint down share (%)" in errors[0]
    assert "| 250.00 |" in errors[2] and "| 50.0 |" in errors[2]
    html = paths["html"].read_text()
    assert "Endpoint down: run run" in html and 'id="table-endpoint_down' in html
    summary = json.loads(paths["summary"].read_text())
    assert summary["down_windows"][0]["failures"] == 2000
    assert summary["down_windows"][0]["error_category"] == "connection_refused"
    assert "down_share" in summary["definitions"] and "down window" in summary["definitions"]
    assert (tmp_path / "report" / "tables" / "endpoint_down.csv").is_file()


def test_scattered_failures_are_not_an_outage(tmp_path):
    config = synth.make_config(["A"], stages=(4,), steady_s=8.0, metrics=False)
    manifest = synth.make_manifest("run", config, end_unix=T0 + 12)
    rows = synth.storm_records(t_from=5.0, t_to=5.5, every_s=0.002, ok_from=3.0, ok_to=11.0,
                               ok_every_s=0.25)           # a 0.5 s burst: an error, not an outage
    synth.write_run(tmp_path / "run", manifest=manifest, records=rows,
                    stages=synth.stage_rows((4,), steady_s=8.0))
    res = analyse([tmp_path / "run"], Options(n_boot=200))
    assert "endpoint_down" not in [w.code for w in res.warnings]
    r = res.per_run.iloc[0]
    assert r["down_s"] == 0.0 and r["down_share"] == 0.0 and r["failures_per_s"] > 0
    assert not len(res.down_windows)


def test_new_figures_and_codes_are_defined():
    from analysis.definitions import METRICS, OTHER_DEFINITIONS
    from analysis.errors import WARNING_CODES
    for key in ("failures_per_s", "down_s", "down_share"):
        assert METRICS[key].definition
    assert "down window" in OTHER_DEFINITIONS and "1 s" in OTHER_DEFINITIONS["down window"]
    assert "endpoint_down" in WARNING_CODES and "1 s" in WARNING_CODES["endpoint_down"]


# ---------------------------------------------------------------------------------------------
# 3. A run is (campaign, run_id)

def test_runs_named_alike_in_two_campaigns_are_two_runs(tmp_path):
    for i, camp in enumerate(("campA", "campB"), 1):
        synth.synth_run(tmp_path / camp / "runs" / "r01-vllm",
                        _spec(1, campaign=camp, start_unix=T0 + 1000 * i))
    res = analyse([tmp_path / "campA" / "runs", tmp_path / "campB" / "runs"], Options(n_boot=200))
    codes = [w.code for w in res.warnings]
    assert "single_run" not in codes                       # two runs per endpoint, not one
    assert [r.name for r in res.runs] == ["campA/r01-vllm", "campB/r01-vllm"]
    assert sorted(res.per_run["run"].unique()) == ["campA/r01-vllm", "campB/r01-vllm"]
    paths = write_report(res, tmp_path / "report")
    md = paths["md"].read_text()
    assert "(runs: A 2, B 2)" in md
    summary = json.loads(paths["summary"].read_text())
    assert [(r["campaign"], r["run_id"]) for r in summary["runs"]] == [
        ("campA", "r01-vllm"), ("campB", "r01-vllm")]
    assert summary["setup"]["runs"] == 2
    # a warning about one of them names it with its campaign and says which it is
    m = json.loads((tmp_path / "campB" / "runs" / "r01-vllm" / "manifest.json").read_text())
    m["status"] = "failed"
    (tmp_path / "campB" / "runs" / "r01-vllm" / "manifest.json").write_text(json.dumps(m))
    res = analyse([tmp_path / "campA", tmp_path / "campB"], Options(n_boot=200))
    inc = [w for w in res.warnings if w.code == "incomplete_run"]
    assert len(inc) == 1 and inc[0].message.startswith("run campB/r01-vllm:")
    assert (inc[0].campaign, inc[0].run_id) == ("campB", "r01-vllm")


def test_one_campaign_keeps_plain_run_ids_and_a_copied_run_counts_once(tmp_path):
    synth.synth_run(tmp_path / "camp" / "r01-vllm", _spec(1, campaign="camp"))
    res = analyse([tmp_path / "camp"], Options(n_boot=200))
    assert [r.name for r in res.runs] == ["r01-vllm"]
    shutil.copytree(tmp_path / "camp" / "r01-vllm", tmp_path / "copy" / "r01-vllm")
    res = analyse([tmp_path / "camp", tmp_path / "copy"], Options(n_boot=200))
    assert len(res.runs) == 1
    skipped = _messages(res, "skipped_run")
    assert len(skipped) == 1 and "same run" in skipped[0] and "r01-vllm" in skipped[0]
    assert "single_run" in [w.code for w in res.warnings]


# ---------------------------------------------------------------------------------------------
# 4. A folder another tool wrote, with a manifest.json of its own

def test_another_tools_manifest_is_not_a_run_directory(tmp_path, capsys):
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "manifest.json").write_text(json.dumps({"name": "x"}))
    rc, out, err = _cli(capsys, tmp_path / "other", "--quiet")
    assert rc == 2 and err.count("\n") == 1
    assert "not a run directory of this suite" in err and "schema_version" in err
    assert "run_id" in err and "rebuild" not in err and "None" not in err
    synth.synth_run(tmp_path / "good", _spec())
    res = analyse([tmp_path], Options(n_boot=200))
    skipped = _messages(res, "skipped_run")
    assert len(res.runs) == 1 and len(skipped) == 1
    assert "not a run directory of this suite" in skipped[0]


# ---------------------------------------------------------------------------------------------
# 5. No records: a header-only records.csv and a 0-byte one mean the same

@pytest.mark.parametrize("content", ["header", "empty"])
def test_a_run_without_records_is_skipped_and_alone_exits_2(tmp_path, capsys, content):
    synth.synth_run(tmp_path / "norec", _spec())
    path = tmp_path / "norec" / "records.csv"
    path.write_text(path.read_text().splitlines()[0] + "\n" if content == "header" else "")
    rc, out, err = _cli(capsys, tmp_path / "norec", "--quiet", "--out", tmp_path / "rep")
    assert rc == 2 and err.count("\n") == 1
    assert "no records" in err and str(tmp_path / "norec" / "locust.log") in err
    assert not (tmp_path / "rep" / "report.html").exists()
    synth.synth_run(tmp_path / "good", _spec(2))
    res = analyse([tmp_path], Options(n_boot=200))
    skipped = _messages(res, "skipped_run")
    assert len(res.runs) == 1 and len(skipped) == 1 and "no records" in skipped[0]


def test_several_runs_without_records_exit_2(tmp_path, capsys):
    for name in ("r1", "r2"):
        synth.synth_run(tmp_path / name, _spec())
        path = tmp_path / name / "records.csv"
        path.write_text(path.read_text().splitlines()[0] + "\n")
    rc, out, err = _cli(capsys, tmp_path, "--quiet", "--out", tmp_path / "rep")
    assert rc == 2 and "2 run(s)" in err and "no records" in err and "locust.log" in err


def test_records_but_no_steady_request_is_not_a_report(tmp_path, capsys):
    synth.synth_run(tmp_path / "run", _spec())
    rec = pd.read_csv(tmp_path / "run" / "records.csv", keep_default_na=False)
    rec = rec[rec["phase"].isin(["ramp", "warmup"])]
    rec.to_csv(tmp_path / "run" / "records.csv", index=False)
    rc, out, err = _cli(capsys, tmp_path / "run", "--quiet", "--out", tmp_path / "rep")
    assert rc == 2 and "steady" in err
