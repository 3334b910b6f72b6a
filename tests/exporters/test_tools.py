"""The GPU check script fails cleanly without a GPU; the benchmark runs and reports."""

from __future__ import annotations

import subprocess

import pytest

from exporter_testlib import PYTHON, REPO, real_nvml_present



def test_gpu_check_without_gpu_fails_cleanly() -> None:
    if real_nvml_present():
        pytest.skip("an NVIDIA driver is present: run `python -m exporters.gpu_check` instead")
    out = subprocess.run([PYTHON, "-m", "exporters.gpu_check"], cwd=REPO, capture_output=True,
                         text=True, timeout=30)
    assert out.returncode == 2
    assert "no NVIDIA GPU/driver found" in out.stderr
    assert "Traceback" not in out.stderr


def test_gpu_check_imports_and_has_help() -> None:
    out = subprocess.run([PYTHON, "-m", "exporters.gpu_check", "--help"], cwd=REPO,
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == 0 and "--alloc-gib" in out.stdout


def test_bench_prints_its_figures(capsys) -> None:
    from bench.bench_exporter import main
    assert main(["--gpus", "2", "--scrapes", "20"]) == 0
    out = capsys.readouterr().out
    for row in ("scrape latency, median", "scrape latency, p99", "exporter CPU per scrape"):
        assert row in out
