"""manifest.json through core.rundir.manifest: the dataclasses, their JSON, and the one reader."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from core import rundir
from core.rundir import (SCHEMA_VERSION, Host, LoadGeneratorSummary, LoopLag, Manifest,
                         ManifestError, ManifestMissingError, ManifestUnreadableError,
                         NotASuiteManifestError, ProcessCpu, RunStatus, SchemaVersionError,
                         Versions, read_manifest, write_manifest)

# A manifest as the load generator writes it at the end of an interrupted run.
FULL = {
    "schema_version": SCHEMA_VERSION, "run_id": "r01-A", "campaign": "20260101-000000-compare",
    "repetition": 1, "endpoints": ["A"], "user_classes": ["Chat_A"], "status": "interrupted",
    "start_unix": 1760000000.25, "end_unix": 1760000100.5,
    "config": {"endpoints": [{"label": "A", "model": "m", "request": {"max_tokens": 16}}],
               "load": {"mode": "closed", "stages": [1, 4]}, "source": "endpoints.toml"},
    "plan": [{"index": 0, "users": 1, "rate": 0.0, "start_s": 0.0, "ramp_s": 1.0,
              "warmup_s": 1.0, "steady_s": 5.0, "drain_s": 1.0}],
    "planned_duration_s": 8.0, "mode": "shape",
    "versions": {"suite": "0.1.0", "locust": "2.47.0", "python": "3.11.7"},
    "host": {"hostname": "h", "platform": "Linux", "cpu_count": 2, "memory_bytes": 8 << 30},
    "command": ["locust", "-f", "users.py"], "records_written": 12, "locust_requests": 12,
    "load_generator": {
        "processes": {"h:1 (master)": {"max_cpu_percent": 3.0, "seconds_above_90": 0.0},
                      "h:2": {"max_cpu_percent": 50.5, "seconds_above_90": 0.0,
                              "cpu_seconds": 1.25}},
        "max_cpu_percent": 50.5, "seconds_above_90": 0.0, "saturated": False,
        "loop_lag_by_stage": {"0": {"n": 3, "p50_ms": 0.5, "p99_ms": 2.0, "max_ms": 2.0}}},
    "interrupted_unix": 1760000099.0,
}


def test_round_trip_is_exact():
    m = Manifest.from_json(FULL)
    assert m.to_json() == FULL
    assert json.loads(json.dumps(m.to_json())) == FULL
    assert m.status == RunStatus.INTERRUPTED and m.interrupted_unix == 1760000099.0
    assert isinstance(m.load_generator, LoadGeneratorSummary)
    assert m.load_generator.processes["h:2"] == ProcessCpu(50.5, 0.0, 1.25)
    assert m.load_generator.loop_lag_by_stage["0"] == LoopLag(3, 0.5, 2.0, 2.0)
    assert m.host.memory_bytes == 8 << 30 and m.versions.locust == "2.47.0"
    assert m.load == {"mode": "closed", "stages": [1, 4]}
    assert m.endpoint_config("A")["model"] == "m" and m.endpoint_config("Z") == {}


def test_a_running_manifest_has_no_end_fields():
    m = Manifest(run_id="r", status=RunStatus.RUNNING, start_unix=1.0,
                 versions=Versions(suite="1", locust="2", python="3"),
                 host=Host(hostname="h", platform="p", cpu_count=1, memory_bytes=2))
    out = m.to_json()
    assert out["status"] == "running" and type(out["status"]) is str
    assert out["end_unix"] is None and out["records_written"] == 0
    for key in ("load_generator", "interrupted_unix", "failure_reason"):
        assert key not in out
    assert Manifest.from_json(out).to_json() == out


def test_finish_sets_the_end_of_the_run():
    m = Manifest(run_id="r", status=RunStatus.RUNNING)
    m.finish("failed", end_unix=2.0, records_written=0, locust_requests=0,
             load_generator=LoadGeneratorSummary(saturated=False), failure_reason="nothing")
    out = m.to_json()
    assert out["status"] == "failed" and out["failure_reason"] == "nothing"
    assert "interrupted_unix" not in out and out["load_generator"]["saturated"] is False
    with pytest.raises(ValueError):
        m.finish("finished", end_unix=2.0, records_written=0, locust_requests=0,
                 load_generator=LoadGeneratorSummary())


def test_reading_is_lenient_and_keeps_unknown_keys():
    data = {"schema_version": SCHEMA_VERSION, "run_id": "r", "status": "complete",
            "records_written": "12", "repetition": True, "start_unix": "soon",
            "endpoints": ["A", 3, "B"], "host": {"hostname": "h", "gpu": "H100"},
            "load_generator": {"saturated": "yes", "processes": {"p": {"max_cpu_percent": 9}}},
            "a_newer_key": {"x": 1}}
    m = Manifest.from_json(data)
    assert m.records_written is None and m.repetition is None and m.start_unix is None
    assert m.endpoints == ["A", "B"]
    assert m.load_generator.saturated is None
    assert m.load_generator.processes["p"].max_cpu_percent == 9      # an int stays an int
    assert m.extra == {"a_newer_key": {"x": 1}} and m.host.extra == {"gpu": "H100"}
    out = m.to_json()
    assert out["a_newer_key"] == {"x": 1} and out["host"] == {"hostname": "h", "gpu": "H100"}
    # a manifest that lacks keys reads as defaults, never as invented facts
    bare = Manifest.from_json({"schema_version": SCHEMA_VERSION, "run_id": "r"})
    assert bare.status is None and bare.mode is None and bare.load_generator is None
    assert bare.config == {} and bare.load == {}


def _write(run_dir: Path, text: str) -> Path:
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "manifest.json").write_text(text, encoding="utf-8")
    return run_dir


def test_write_then_read(tmp_path):
    write_manifest(tmp_path, Manifest.from_json(FULL))
    text = (tmp_path / "manifest.json").read_text()
    assert text == json.dumps(FULL, indent=2, sort_keys=True) + "\n"
    assert read_manifest(tmp_path).to_json() == FULL
    assert rundir.find_run_dirs([tmp_path]) == [tmp_path]


def test_the_written_manifest_is_scrubbed(tmp_path):
    key = "sk-abcdefghijklmnopqrstuvwxyz012345"
    m = Manifest.from_json(FULL)
    m.failure_reason = f"the server said: Authorization: Bearer {key}"
    write_manifest(tmp_path, m)
    text = (tmp_path / "manifest.json").read_text()
    assert key not in text and "***" in text


@pytest.mark.parametrize("text, error, words", [
    (None, ManifestMissingError, ["manifest.json is missing", "make loadtest"]),
    ("{not json", ManifestUnreadableError, ["not readable JSON", "leave this run out"]),
    ("[1, 2]", ManifestUnreadableError, ["not a JSON object"]),
    ('{"name": "x"}', NotASuiteManifestError,
     ["not a run directory of this suite", "schema_version and no run_id"]),
    (json.dumps({"schema_version": SCHEMA_VERSION + 1, "run_id": "r"}), SchemaVersionError,
     [f"schema_version {SCHEMA_VERSION + 1}", "update the suite"]),
    (json.dumps({"schema_version": 0, "run_id": "r"}), SchemaVersionError,
     ["schema_version 0", "rebuild its report with the suite version that wrote it"]),
])
def test_the_reader_says_what_is_wrong(tmp_path, text, error, words):
    run_dir = tmp_path / "run"
    if text is None:
        run_dir.mkdir()
    else:
        _write(run_dir, text)
    with pytest.raises(error) as caught:
        read_manifest(run_dir)
    assert isinstance(caught.value, ManifestError) and isinstance(caught.value, ValueError)
    assert caught.value.run_dir == run_dir
    for w in words:
        assert w in str(caught.value)
    assert "None" not in str(caught.value)


def test_schema_version_error_says_newer_or_older(tmp_path):
    _write(tmp_path, json.dumps({"schema_version": SCHEMA_VERSION + 1, "run_id": "r"}))
    with pytest.raises(SchemaVersionError) as caught:
        read_manifest(tmp_path)
    assert caught.value.newer and caught.value.version == SCHEMA_VERSION + 1
    assert read_manifest(tmp_path, check_version=False).schema_version == SCHEMA_VERSION + 1


def test_the_suite_version_is_the_package_version():
    from importlib import metadata

    assert rundir.suite_version() == metadata.version("llm-loadsuite")


def test_the_manifest_keys_are_spelled_only_in_core_rundir():
    """No module outside core/rundir reads a manifest key with .get("...") or ["..."]."""
    from dataclasses import fields

    keys = {f.name for f in fields(Manifest)} - {"extra", "config", "plan", "mode"}
    keys |= {f.name for f in fields(LoadGeneratorSummary)} - {"extra"}
    root = Path(__file__).resolve().parents[2]
    offenders = []
    for folder in ("analysis", "locustfiles"):
        for path in (root / folder).rglob("*.py"):
            text = path.read_text(encoding="utf-8")
            for key in keys:
                for pattern in (f'manifest.get("{key}"', f'manifest["{key}"]',
                                f'm.get("{key}"', f'm["{key}"]', f'lg.get("{key}"'):
                    if pattern in text:
                        offenders.append(f"{path.relative_to(root)}: {pattern}")
    assert not offenders, offenders
