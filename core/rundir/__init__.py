"""The run directory: the contract between the load generator and the analysis.

One package states every fact about a run directory, each in one module:

- ``layout``    file names (MANIFEST, RECORDS, STAGES, METRICS, LOCUST_*), the stages.csv and
                metrics.csv columns (STAGE_FIELDS, METRIC_FIELDS), ``find_run_dirs``;
- ``records``   the record column table (``RequestRecord``: name, type, default, definition;
                RECORD_FIELDS, RECORD_DEFAULTS, RECORD_COLUMNS, the Arrow types) and the
                failure categories (``ErrorCategory``, ERROR_CATEGORIES);
- ``manifest``  manifest.json as dataclasses (``Manifest`` and the objects it holds) with
                ``to_json``/``from_json``, SCHEMA_VERSION, ``RunStatus``, ``write_manifest`` and
                the one reader ``read_manifest`` (``ManifestError`` when it cannot be used);
- ``writers``   ``CsvAppender``, ``record_appender``, ``stage_appender``, ``write_json_atomic``
                (scrubbed of credentials);
- ``series``    the metric series names the exporter, the capture and the analysis share;
- ``capture``   ``MetricsCapture``/``ScrapeTarget``: metrics.csv written during a run;
- ``read``      the generic CSV readers (pandas/pyarrow; import ``core.rundir.read`` explicitly:
                this package itself imports only the standard library, so the Locust master and
                the exporter stay light).

The names most callers need are importable from ``core.rundir`` itself.
"""

from __future__ import annotations

from .layout import (LOCUST_CSV_PREFIX, LOCUST_JSON, LOCUST_JSON_FILE, LOCUST_LOG,
                     LOCUST_STATS_CSV, MANIFEST, METRIC_FIELDS, METRICS, RECORDS, STAGE_FIELDS,
                     STAGE_PHASES, STAGES, find_run_dirs, phase_column)
from .manifest import (SCHEMA_VERSION, Host, LoadGeneratorSummary, LoopLag, Manifest,
                       ManifestError, ManifestMissingError, ManifestUnreadableError,
                       NotASuiteManifestError, ProcessCpu, RunStatus, SchemaVersionError,
                       Versions, read_manifest, suite_version, write_manifest)
from .records import (ERROR_CATEGORIES, FIELD_DEFINITIONS, RECORD_COLUMNS, RECORD_DEFAULTS,
                      RECORD_FIELDS, ErrorCategory, RequestRecord, record_values)
from .writers import CsvAppender, record_appender, stage_appender, write_json_atomic
from . import series  # noqa: E402  (names only; capture and read are imported explicitly)

__all__ = [
    "LOCUST_CSV_PREFIX", "LOCUST_JSON", "LOCUST_JSON_FILE", "LOCUST_LOG", "LOCUST_STATS_CSV",
    "MANIFEST", "METRIC_FIELDS", "METRICS", "RECORDS", "STAGE_FIELDS", "STAGE_PHASES", "STAGES",
    "find_run_dirs", "phase_column",
    "SCHEMA_VERSION", "Host", "LoadGeneratorSummary", "LoopLag", "Manifest", "ManifestError",
    "ManifestMissingError", "ManifestUnreadableError", "NotASuiteManifestError", "ProcessCpu",
    "RunStatus", "SchemaVersionError", "Versions", "read_manifest", "suite_version",
    "write_manifest",
    "ERROR_CATEGORIES", "FIELD_DEFINITIONS", "RECORD_COLUMNS", "RECORD_DEFAULTS",
    "RECORD_FIELDS", "ErrorCategory", "RequestRecord", "record_values",
    "CsvAppender", "record_appender", "stage_appender", "write_json_atomic", "series",
]
