"""The metric series names: one spelling shared by the exporter, the capture and the analysis."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from core.rundir import series

ROOT = Path(__file__).resolve().parents[2]


def test_the_exporter_exports_the_shared_names():
    from exporters import metrics

    specs = [v for v in vars(metrics).values() if isinstance(v, metrics.MetricSpec)]
    names = {v for k, v in vars(series).items() if k.isupper() and isinstance(v, str)}
    assert specs and all(spec.name in names for spec in specs), \
        [s.name for s in specs if s.name not in names]
    assert metrics.UTILIZATION.name == series.GPU_UTILIZATION == "nvml_gpu_utilization_ratio"
    assert metrics.GPU_LABELS == ("gpu", "UUID")


def test_the_capture_keeps_every_series_the_analysis_reads():
    from analysis import compute

    read = [n for names, _, _ in compute.GAUGES.values() for n in names]
    read += list(compute.COUNTERS.values())
    read += [f"{h}{s}" for names in compute.HISTOGRAMS.values() for h in names
             for s in series.HISTOGRAM_SUFFIXES]
    assert read and all(series.keep_metric(n) for n in read), \
        [n for n in read if not series.keep_metric(n)]
    assert not series.keep_metric("go_gc_duration_seconds")
    assert not series.keep_metric(series.PROCESS_COUNT)      # server_processes: not used


def test_source_of_a_series():
    assert series.source_of(series.VLLM_RUNNING) == series.SERVER
    assert series.source_of(series.GPU_POWER) == series.EXPORTER
    assert series.source_of(series.PROCESS_CPU) == series.EXPORTER


def _loaded_after_importing(modules: str, watched: tuple[str, ...]) -> list[str]:
    """Which of ``watched`` a fresh interpreter has loaded after importing ``modules``."""
    code = (f"import json, sys, {modules}; "
            f"print(json.dumps([m for m in {list(watched)!r} if m in sys.modules]))")
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def test_the_load_generator_side_imports_nothing_heavy():
    assert _loaded_after_importing(
        "core.rundir, core.rundir.capture, core.rundir.series, core.records, exporters.metrics",
        ("pandas", "numpy", "pyarrow", "matplotlib", "scipy", "analysis")) == []


# Modules that run in the campaign's own process only, never in a Locust process: the capacity
# search reads each probe's run directory with the analysis (imported lazily by the campaign).
CAMPAIGN_SIDE = ("locustfiles/capacity.py",)


def test_the_load_generator_does_not_import_analysis():
    offenders = [f"{p.relative_to(ROOT)}:{i}" for p in sorted((ROOT / "locustfiles").rglob("*.py"))
                 if str(p.relative_to(ROOT)) not in CAMPAIGN_SIDE
                 for i, line in enumerate(p.read_text(encoding="utf-8").splitlines(), 1)
                 if "import analysis" in line or "from analysis" in line]
    assert not offenders, offenders


def test_locust_processes_and_a_plain_campaign_load_no_analysis():
    """What a Locust process (the locustfiles, a remote worker) and a sweep campaign import:
    never the analysis or its data stack (numpy comes with Locust itself)."""
    assert _loaded_after_importing(
        "locustfiles.users, locustfiles.sweep, locustfiles.campaign, locustfiles.remote_worker",
        ("pandas", "pyarrow", "matplotlib", "scipy", "analysis", "locustfiles.capacity")) == []
