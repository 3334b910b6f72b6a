"""The run directory: file names, the manifest, and append-as-you-go writers.

A run directory holds everything one Locust run produced. It is written by the Locust master
(or the single local process) and read by ``analysis``. Layout:

    manifest.json            config (no secrets), versions, host, start/end, load-generator CPU
    records.csv              one row per request (core.records.RequestRecord), appended ~1/s
    stages.csv               stage timeline: when each stage's phases began (core.rundir.STAGE_FIELDS)
    metrics.csv              samples scraped during the run (core.rundir.METRIC_FIELDS), long format
    locust_stats.csv, locust_stats_history.csv, locust_failures.csv, locust_exceptions.csv
    locust.json              Locust's final stats (--json-file)
    locust.log               Locust's log
"""

from __future__ import annotations

import csv
import io
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Iterable

from core import secrets
from core.records import RECORD_FIELDS

SCHEMA_VERSION = 1

MANIFEST = "manifest.json"
RECORDS = "records.csv"
STAGES = "stages.csv"
METRICS = "metrics.csv"
LOCUST_CSV_PREFIX = "locust"          # -> locust_stats.csv, locust_stats_history.csv, ...
LOCUST_JSON = "locust"                # --json-file appends .json
LOCUST_LOG = "locust.log"

# Stage timeline: one row per stage, Unix seconds for each phase start; end_unix closes it.
STAGE_FIELDS = ("stage", "users", "rate", "ramp_unix", "warmup_unix", "steady_unix", "drain_unix",
                "end_unix")

# Metric samples, long format: one row per series per scrape.
# source: "exporter" (GPU/process exporter) or "server" (the model server's /metrics).
# A scrape attempt always writes one row with metric "scrape_up" (1 ok, 0 failed; the error
# text in labels), so gaps are visible as gaps, never as zeros.
METRIC_FIELDS = ("ts_unix", "endpoint", "source", "metric", "labels", "value")


class CsvAppender:
    """Appends rows to a CSV file, writing the header once and flushing every batch.

    Flushing per batch is what makes a crash lose at most the rows not yet received. Writing is
    split in two so a caller can format rows where it likes and leave the slow part (the file
    write and fsync, which release the GIL) to another thread: see ``encode`` and
    ``append_encoded``.
    """

    def __init__(self, path: Path, fields: Iterable[str]):
        self.path = Path(path)
        self.fields = tuple(fields)
        new = not self.path.exists() or self.path.stat().st_size == 0
        self._file = open(self.path, "a", newline="", encoding="utf-8")
        if new:
            self._file.write(self.encode([dict(zip(self.fields, self.fields))]))
            self._file.flush()
        self.rows_written = 0

    def encode(self, rows: Iterable[dict[str, Any]]) -> str:
        """The rows as CSV text (no I/O)."""
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=self.fields, extrasaction="ignore")
        writer.writerows(rows)
        return buffer.getvalue()

    def encode_values(self, rows: Iterable[Iterable[Any]]) -> str:
        """Rows given as values in field order, as CSV text (faster than dicts)."""
        buffer = io.StringIO()
        csv.writer(buffer).writerows(rows)
        return buffer.getvalue()

    def append_encoded(self, text: str, count: int) -> int:
        """Append text made by ``encode`` (``count`` rows), flush and fsync."""
        self._file.write(text)
        self._file.flush()
        os.fsync(self._file.fileno())
        self.rows_written += count
        return count

    def write(self, rows: Iterable[dict[str, Any]]) -> int:
        rows = list(rows)
        return self.append_encoded(self.encode(rows), len(rows))

    @property
    def closed(self) -> bool:
        return self._file.closed

    def close(self) -> None:
        if not self._file.closed:
            self._file.close()


def record_appender(run_dir: Path) -> CsvAppender:
    return CsvAppender(Path(run_dir) / RECORDS, RECORD_FIELDS)


def write_json_atomic(path: Path, data: Any) -> None:
    """Write JSON through a temporary file and rename, so readers never see half a file.
    The text is scrubbed of anything shaped like a credential (core.secrets)."""
    path = Path(path)
    text = secrets.scrub(json.dumps(data, indent=2, sort_keys=True, default=str))
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(text + "\n")
    os.replace(tmp, path)


def read_manifest(run_dir: Path) -> dict[str, Any]:
    path = Path(run_dir) / MANIFEST
    if not path.is_file():
        raise FileNotFoundError(f"{run_dir} is not a run directory: {MANIFEST} is missing "
                                "(pass a directory written by make loadtest)")
    with open(path, encoding="utf-8") as fh:
        return json.load(fh)


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
