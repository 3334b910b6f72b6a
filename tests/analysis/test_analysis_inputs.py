"""Bad input: a clear error (exit 2, one line) or a named warning; never a traceback."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from support import synth
from analysis.__main__ import main
from analysis.build import Options, analyse

REPO = Path(__file__).resolve().parents[2]


def _small(rep=1, **kw):
    return synth.SynthSpec(stages=(1, 4), ramp_s=1.0, warmup_s=1.0, steady_s=6.0, drain_s=1.0,
                           repetition=rep, seed=rep, start_unix=synth.T0 + 100 * rep, **kw)


def _codes(res):
    return [w.code for w in res.warnings]


def _cli(capsys, *args):
    rc = main([str(a) for a in args])
    cap = capsys.readouterr()
    return rc, cap.out, cap.err


def test_not_a_run_dir_exits_2_with_one_line(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    rc, out, err = _cli(capsys, tmp_path / "empty", "--quiet")
    assert rc == 2
    assert err.count("\n") == 1 and err.startswith("llm-report: error: no run directory")
    assert "make loadtest" in err and "Traceback" not in err
    rc, out, err = _cli(capsys, tmp_path / "missing", "--quiet")
    assert rc == 2 and "no such file or directory" in err
    (tmp_path / "file.txt").write_text("x")
    rc, out, err = _cli(capsys, tmp_path / "file.txt", "--quiet")
    assert rc == 2 and "not a directory" in err


def test_cli_subprocess_never_prints_a_traceback(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "analysis", str(tmp_path)], cwd=REPO,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines()[-1].startswith("llm-report: error:")


def test_help(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    for opt in ("--out", "--at", "--slo", "--baseline", "--prometheus"):
        assert opt in out


def test_cli_writes_report_to_common_parent(tmp_path, capsys):
    synth.synth_run(tmp_path / "camp" / "r1", _small(1))
    synth.synth_run(tmp_path / "camp" / "r2", _small(2))
    rc, out, err = _cli(capsys, tmp_path / "camp" / "r1", tmp_path / "camp" / "r2", "--at", "3",
                        "--slo", "ttft_ms=200", "--bootstrap", "200")
    assert rc == 0, err
    assert (tmp_path / "camp" / "report" / "report.html").is_file()
    assert "At 4 users" in out                       # nearest level to --at 3
    assert "reading" in err                          # progress lines on stderr


@pytest.mark.parametrize("args, text", [
    (["--slo", "ttft=200"], "unknown SLO"),
    (["--slo", "ttft_ms"], "KEY=VALUE"),
    (["--slo", "ttft_ms=abc"], "must be a number"),
    (["--baseline", "Z"], "no such endpoint"),
])
def test_bad_options_exit_2(tmp_path, capsys, args, text):
    synth.synth_run(tmp_path / "r1", _small(1))
    rc, out, err = _cli(capsys, tmp_path / "r1", "--quiet", "--bootstrap", "200", *args)
    assert rc == 2 and text in err and err.count("\n") == 1


def test_schema_version(tmp_path, capsys):
    synth.synth_run(tmp_path / "new", _small(1))
    m = json.loads((tmp_path / "new" / "manifest.json").read_text())
    m["schema_version"] = 2
    (tmp_path / "new" / "manifest.json").write_text(json.dumps(m))
    rc, out, err = _cli(capsys, tmp_path / "new", "--quiet")
    assert rc == 2 and "schema_version 2" in err and "update the suite" in err
    # Beside a good run it is left out with a named warning.
    synth.synth_run(tmp_path / "good", _small(2))
    res = analyse([tmp_path], Options(n_boot=200))
    assert "skipped_run" in _codes(res) and len(res.runs) == 1


def test_broken_manifest_and_missing_records(tmp_path, capsys):
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "manifest.json").write_text("{not json")
    rc, out, err = _cli(capsys, tmp_path / "bad", "--quiet")
    assert rc == 2 and "not readable JSON" in err
    synth.synth_run(tmp_path / "norec", _small(1))
    (tmp_path / "norec" / "records.csv").unlink()
    rc, out, err = _cli(capsys, tmp_path / "norec", "--quiet")
    assert rc == 2 and "records.csv is missing" in err
    (tmp_path / "norec" / "records.csv").write_text("")
    rc, out, err = _cli(capsys, tmp_path / "norec", "--quiet")
    assert rc == 2 and "empty" in err


def test_truncated_crashed_run(tmp_path):
    info = synth.synth_run(tmp_path / "run", _small(1))
    path = tmp_path / "run" / "records.csv"
    data = path.read_bytes()
    path.write_bytes(data[: len(data) - 40])       # the writer died mid-line
    m = json.loads((tmp_path / "run" / "manifest.json").read_text())
    m["status"] = "running"
    m["end_unix"] = None
    (tmp_path / "run" / "manifest.json").write_text(json.dumps(m))
    stages = pd.read_csv(tmp_path / "run" / "stages.csv")
    stages.loc[stages.index[-1], ["drain_unix", "end_unix"]] = math.nan
    stages.to_csv(tmp_path / "run" / "stages.csv", index=False)
    res = analyse([tmp_path / "run"], Options(n_boot=200))
    codes = _codes(res)
    assert "truncated_file" in codes and "incomplete_run" in codes
    assert "record_count_mismatch" in codes           # manifest and Locust counted the lost row
    assert res.runs[0].records == info["records"] - 1
    last = res.per_run[res.per_run["level"] == 4.0]
    assert (last["duration"] > 0).all() and (last["duration"] <= 6.0).all()


def test_nan_written_as_text(tmp_path):
    config = synth.make_config(["A"], stages=(2,), metrics=False)
    manifest = synth.make_manifest("r", config, end_unix=synth.T0 + 14)
    rows = [{"endpoint": "A", "stage": 0, "stage_users": 2, "phase": "steady",
             "start_unix": synth.T0 + 4 + i, "ttft_s": 0.1 * (i + 1), "e2e_s": 1.0,
             "tpot_s": float("nan"), "output_tokens": 10.0, "ok": True} for i in range(3)]
    synth.write_run(tmp_path / "r", manifest=manifest, records=rows,
                    stages=synth.stage_rows((2,)), nan_as="nan")
    res = analyse([tmp_path / "r"], Options(n_boot=200))
    r = res.per_run.iloc[0]
    assert r["ttft_p50"] == pytest.approx(200.0) and math.isnan(r["tpot_p50"])
    assert "no_metrics" not in _codes(res)           # no URL configured: no warning


def test_mismatched_configs_warn(tmp_path):
    synth.synth_run(tmp_path / "r1", _small(1))
    spec = _small(2)
    spec.profiles["A"].model = "another-model"
    synth.synth_run(tmp_path / "r2", spec)
    m = json.loads((tmp_path / "r2" / "manifest.json").read_text())
    m["config"]["load"]["steady_s"] = 99.0
    for ep in m["config"]["endpoints"]:
        if ep["label"] == "B":
            ep["request"]["max_tokens"] = 256
    (tmp_path / "r2" / "manifest.json").write_text(json.dumps(m))
    res = analyse([tmp_path], Options(n_boot=200))
    texts = [w.message for w in res.warnings if w.code == "config_mismatch"]
    assert any("steady_s" in t for t in texts)
    assert any("endpoint A: its runs differ in model" in t for t in texts)
    assert any("max_tokens" in t for t in texts)


def test_saturation_chunk_tokens_and_counts(tmp_path):
    synth.synth_run(tmp_path / "r", _small(1, saturated=True))
    rec = pd.read_csv(tmp_path / "r" / "records.csv", keep_default_na=False)
    rec.loc[rec.index[::3], "tokens_from_usage"] = False
    rec.to_csv(tmp_path / "r" / "records.csv", index=False)
    stats = pd.read_csv(tmp_path / "r" / "locust_stats.csv")
    stats.loc[0, "Request Count"] += 5
    stats.to_csv(tmp_path / "r" / "locust_stats.csv", index=False)
    res = analyse([tmp_path / "r"], Options(n_boot=200))
    codes = _codes(res)
    assert "saturated_load_generator" in codes and "tokens_from_chunks" in codes
    mism = [w.message for w in res.warnings if w.code == "record_count_mismatch"]
    assert any("Locust counted" in t for t in mism)
    assert "single_run" in codes


def test_configured_metrics_missing_warns_once_per_source(tmp_path):
    for rep in (1, 2):
        synth.synth_run(tmp_path / f"r{rep}", _small(rep))
        (tmp_path / f"r{rep}" / "metrics.csv").unlink()
    res = analyse([tmp_path], Options(n_boot=200))
    texts = [w.message for w in res.warnings if w.code == "no_metrics"]
    assert len(texts) == 4                                 # 2 endpoints x 2 sources
    assert any("endpoint A: no exporter samples in 2 run(s) (r1, r2)" in t for t in texts)
    assert res.per_run["gpu_util_mean"].isna().all()
