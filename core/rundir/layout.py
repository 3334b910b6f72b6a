"""The run directory's layout: its file names and the columns of its small CSV files.

A run directory holds everything one Locust run produced. It is written by the Locust master
(or the single local process) and read by ``analysis``:

    manifest.json            the run's facts (core.rundir.manifest.Manifest): config without
                             secrets, versions, host, start/end, status, load-generator CPU
    records.csv              one row per request (core.rundir.records.RequestRecord), appended ~1/s
    stages.csv               stage timeline: when each stage's phases began (STAGE_FIELDS)
    metrics.csv              samples scraped during the run (METRIC_FIELDS), long format
    locust_stats.csv, locust_stats_history.csv, locust_failures.csv, locust_exceptions.csv
    locust.json              Locust's final stats (--json-file)
    locust.log               Locust's log
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable

MANIFEST = "manifest.json"
RECORDS = "records.csv"
STAGES = "stages.csv"
METRICS = "metrics.csv"
LOCUST_CSV_PREFIX = "locust"          # -> locust_stats.csv, locust_stats_history.csv, ...
LOCUST_JSON = "locust"                # --json-file appends .json
LOCUST_LOG = "locust.log"
LOCUST_STATS_CSV = f"{LOCUST_CSV_PREFIX}_stats.csv"
LOCUST_JSON_FILE = f"{LOCUST_JSON}.json"

# Stage timeline: one row per stage, Unix seconds for each phase start; end_unix closes it.
# A stage the run never finished (interrupted) leaves the phases it never reached blank.
STAGE_FIELDS = ("stage", "users", "rate", "ramp_unix", "warmup_unix", "steady_unix", "drain_unix",
                "end_unix")
STAGE_PHASES = ("ramp", "warmup", "steady", "drain")   # the phases with a *_unix column, in order

# Metric samples, long format: one row per series per scrape.
# source: "exporter" (GPU/process exporter) or "server" (the model server's /metrics); see
# core.rundir.series. A scrape attempt always writes one row with metric "scrape_up" (1 ok,
# 0 failed; the error text in labels), so gaps are visible as gaps, never as zeros.
METRIC_FIELDS = ("ts_unix", "endpoint", "source", "metric", "labels", "value")


def phase_column(phase: str) -> str:
    """The stages.csv column that holds when a phase began: "steady" -> "steady_unix"."""
    return f"{phase}_unix"


def find_run_dirs(paths: Iterable[str | os.PathLike[str]]) -> list[Path]:
    """Run directories at or below each path (a run dir is any folder with a manifest.json)."""
    found: list[Path] = []
    for p in paths:
        p = Path(p)
        if (p / MANIFEST).is_file():
            found.append(p)
        elif p.is_dir():
            found.extend(sorted(m.parent for m in p.rglob(MANIFEST)))
        else:
            raise FileNotFoundError(f"{p}: no such run directory")
    return found
