"""Append-as-you-go writers of the run directory: CSV appenders and atomic, scrubbed JSON."""

from __future__ import annotations

import csv
import io
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Iterable

from core import secrets

from .layout import RECORDS, STAGE_FIELDS, STAGES
from .records import RECORD_FIELDS


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
    """records.csv: rows are lists in RECORD_FIELDS order (``encode_values``)."""
    return CsvAppender(Path(run_dir) / RECORDS, RECORD_FIELDS)


def stage_appender(run_dir: Path) -> CsvAppender:
    """stages.csv: one dict row per stage (STAGE_FIELDS; a phase never reached stays blank)."""
    return CsvAppender(Path(run_dir) / STAGES, STAGE_FIELDS)


def write_json_atomic(path: Path, data: Any) -> None:
    """Write JSON through a temporary file and rename, so readers never see half a file.
    The text is scrubbed of anything shaped like a credential (core.secrets)."""
    path = Path(path)
    text = secrets.scrub(json.dumps(data, indent=2, sort_keys=True, default=str))
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(text + "\n")
    os.replace(tmp, path)
