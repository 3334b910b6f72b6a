"""manifest.json: the run's facts as dataclasses, its schema version, and the one reader.

The manifest's keys are spelled here and nowhere else: they are the field names of
``Manifest`` and of the dataclasses it holds. ``to_json()`` gives the dict that is written
(``write_manifest``: sorted keys, scrubbed of credentials); ``from_json()`` reads one back,
leniently, because a run directory may come from a crashed run or an older suite: a key that is
missing takes its default, a value of the wrong type reads as None (or the default), and keys
this suite does not know are kept in ``extra`` and written back unchanged.

``read_manifest(run_dir)`` is the only reader. It raises a ``ManifestError`` (a ValueError) whose
message says what is wrong and what to do: the file is missing, is not JSON, is another tool's
file (no ``schema_version`` or ``run_id``), or was written with another ``SCHEMA_VERSION``.

Life of a manifest (locustfiles.runtime): written when the run starts (``status`` running,
``end_unix`` null, no ``load_generator``), rewritten when it ends (``status`` complete,
interrupted or failed, with ``end_unix``, the counts, ``load_generator`` and, when they apply,
``interrupted_unix`` and ``failure_reason``).
"""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from dataclasses import dataclass, field
from enum import Enum, StrEnum
from importlib import metadata
from pathlib import Path
from typing import Any, ClassVar

from .layout import MANIFEST
from .writers import write_json_atomic

SCHEMA_VERSION = 1
DISTRIBUTION = "llm-loadsuite"   # pyproject.toml's [project] name: the suite's version is its


def suite_version() -> str:
    """The installed suite's version (package metadata, i.e. pyproject.toml's version)."""
    try:
        return metadata.version(DISTRIBUTION)
    except metadata.PackageNotFoundError:
        return "unknown"


class RunStatus(StrEnum):
    """A run's ``status``. Anything but complete makes the report warn ``incomplete_run``."""

    RUNNING = "running"          # still running, or the process died before it finalized
    COMPLETE = "complete"        # the plan ran to its end and at least one request was recorded
    INTERRUPTED = "interrupted"  # stopped early (Ctrl-C/SIGTERM): see interrupted_unix
    FAILED = "failed"            # see failure_reason


# ---------------------------------------------------------------------------------------------
# A small JSON <-> dataclass mapping: field names are the keys.

def _omit_none(f: dataclasses.Field) -> bool:
    return bool(f.metadata.get("omit_none"))


def optional(default: Any = None) -> Any:
    """A field that is left out of the JSON while it is None."""
    return field(default=default, metadata={"omit_none": True})


class JsonRecord:
    """Base of the manifest's dataclasses: ``to_json`` / ``from_json`` by field name.

    ``extra`` (a field of every subclass) keeps the keys this suite does not know. A subclass
    may set ``_OMIT_NONE = True`` to leave out every None value (nested objects whose keys
    older manifests lack), or mark single fields with ``optional()``."""

    _OMIT_NONE: ClassVar[bool] = False

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):  # type: ignore[arg-type]
            if f.name == "extra":
                continue
            value = getattr(self, f.name)
            if value is None and (self._OMIT_NONE or _omit_none(f)):
                continue
            out[f.name] = _dump(value)
        for key, value in getattr(self, "extra", {}).items():
            out.setdefault(key, value)
        return out

    @classmethod
    def from_json(cls, data: Any) -> "JsonRecord":
        """Leniently: see the module's docstring. A non-object reads as all defaults."""
        data = data if isinstance(data, dict) else {}
        hints = typing.get_type_hints(cls)
        kwargs: dict[str, Any] = {}
        names = set()
        for f in dataclasses.fields(cls):  # type: ignore[arg-type]
            names.add(f.name)
            if f.name == "extra" or f.name not in data:
                continue
            value = _load(hints[f.name], data[f.name])
            if value is not None or _is_optional(hints[f.name]):
                kwargs[f.name] = value
        if "extra" in names:
            kwargs["extra"] = {k: v for k, v in data.items() if k not in names}
        return cls(**kwargs)


def _dump(value: Any) -> Any:
    if isinstance(value, JsonRecord):
        return value.to_json()
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, dict):
        return {str(k): _dump(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_dump(v) for v in value]
    return value


def _is_optional(tp: Any) -> bool:
    return (typing.get_origin(tp) in (typing.Union, types.UnionType)
            and type(None) in typing.get_args(tp))


def _load(tp: Any, value: Any) -> Any:
    """value as type tp, or None when it is not one (bool is never a number here)."""
    if tp is Any:
        return value
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        if value is None:
            return None
        for arg in typing.get_args(tp):
            if arg is not type(None):
                loaded = _load(arg, value)
                if loaded is not None:
                    return loaded
        return None
    if isinstance(tp, type) and issubclass(tp, JsonRecord):
        return tp.from_json(value) if isinstance(value, dict) else None
    if origin is dict:
        if not isinstance(value, dict):
            return None
        _, item = typing.get_args(tp)
        return {str(k): v for k, v in ((k, _load(item, v)) for k, v in value.items())
                if v is not None or item is Any}
    if origin is list:
        if not isinstance(value, list):
            return None
        (item,) = typing.get_args(tp)
        return [v for v in (_load(item, x) for x in value) if v is not None or item is Any]
    if tp is bool:
        return value if isinstance(value, bool) else None
    if tp is int:
        return value if isinstance(value, int) and not isinstance(value, bool) else None
    if tp is float:   # an int stays an int: what was read is written back unchanged
        return value if isinstance(value, (int, float)) and not isinstance(value, bool) else None
    if tp is str:
        return value if isinstance(value, str) else None
    raise TypeError(f"no JSON mapping for {tp!r}")


# ---------------------------------------------------------------------------------------------
# The manifest

@dataclass
class Versions(JsonRecord):
    _OMIT_NONE: ClassVar[bool] = True
    suite: str | None = None
    locust: str | None = None
    python: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class Host(JsonRecord):
    """The host the Locust master (or local process) ran on."""

    _OMIT_NONE: ClassVar[bool] = True
    hostname: str | None = None
    platform: str | None = None
    cpu_count: int | None = None
    memory_bytes: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class ProcessCpu(JsonRecord):
    """One load-generator process's own CPU (``cpu_seconds``: over the test, once started)."""

    _OMIT_NONE: ClassVar[bool] = True
    max_cpu_percent: float | None = None
    seconds_above_90: float | None = None
    cpu_seconds: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class LoopLag(JsonRecord):
    """The event loop's lateness in one stage's steady phase, every process's samples together."""

    _OMIT_NONE: ClassVar[bool] = True
    n: int | None = None
    p50_ms: float | None = None
    p99_ms: float | None = None
    max_ms: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class LoadGeneratorSummary(JsonRecord):
    """Whether the load generator itself was the bottleneck (written when the run ends)."""

    _OMIT_NONE: ClassVar[bool] = True
    processes: dict[str, ProcessCpu] = field(default_factory=dict)   # "host:pid" -> its CPU
    max_cpu_percent: float | None = None
    seconds_above_90: float | None = None
    saturated: bool | None = None
    loop_lag_by_stage: dict[str, LoopLag] = field(default_factory=dict)   # "0" -> ...
    extra: dict[str, Any] = field(default_factory=dict)


# A worker clock further than this from the master's is reported (the master's log, the campaign,
# the report's worker_clock warning): it moves requests across stage-window edges.
CLOCK_WARN_S = 0.010


@dataclass
class WorkerProcess(JsonRecord):
    """A worker process of a distributed run, as the master saw it (``locustfiles.workers``)."""

    _OMIT_NONE: ClassVar[bool] = True

    worker: str = ""                        # "host:pid", as the records' worker column
    host: str | None = None
    clock_offset_s: float | None = None     # its wall clock minus the master's
    clock_error_s: float | None = None      # the estimate's bound: half its best round trip
    connected_unix: float | None = None
    last_batch_unix: float | None = None    # when its last record batch arrived
    records: int | None = 0
    final_batch: bool | None = False        # its last batch arrived: nothing of it is missing
    lost: bool | None = False               # it stopped sending before its final batch
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class Manifest(JsonRecord):
    """manifest.json. ``config`` is the endpoints/load config without secrets
    (core.config.SuiteConfig.to_public_dict); ``plan`` the stages (locustfiles.plan.Stage)."""

    schema_version: int | None = SCHEMA_VERSION
    run_id: str = ""                     # the run directory's name
    campaign: str = ""                   # the campaign it belongs to (its folder's name)
    repetition: int | None = 0
    endpoints: list[str] = field(default_factory=list)
    user_classes: list[str] = field(default_factory=list)
    status: str | None = None          # a RunStatus; None when a manifest lacks it
    start_unix: float | None = None
    end_unix: float | None = None
    config: dict[str, Any] = field(default_factory=dict)
    plan: list[dict[str, Any]] = field(default_factory=list)
    planned_duration_s: float | None = None
    mode: str | None = None              # "shape" (a load shape) or "manual" (web UI)
    versions: Versions = field(default_factory=Versions)
    host: Host = field(default_factory=Host)
    command: list[str] = field(default_factory=list)
    records_written: int | None = 0
    locust_requests: int | None = 0
    load_generator: LoadGeneratorSummary | None = optional()
    interrupted_unix: float | None = optional()   # status interrupted: when it was stopped
    failure_reason: str | None = optional()       # status failed: why
    workers: list[WorkerProcess] | None = optional()   # distributed runs: each worker process
    extra: dict[str, Any] = field(default_factory=dict)

    # ---- the config, read leniently (analysis) ----

    @property
    def load(self) -> dict[str, Any]:
        load = self.config.get("load")
        return load if isinstance(load, dict) else {}

    def endpoint_config(self, label: str) -> dict[str, Any]:
        """The endpoint's entry of the config ({} when there is none)."""
        for ep in self.config.get("endpoints") or []:
            if isinstance(ep, dict) and ep.get("label") == label:
                return ep
        return {}

    def finish(self, status: str, *, end_unix: float, records_written: int,
               locust_requests: int, load_generator: LoadGeneratorSummary,
               interrupted_unix: float | None = None, failure_reason: str | None = None,
               workers: list[WorkerProcess] | None = None) -> None:
        """The end of the run: its status, counts and load-generator summary (and, in a
        distributed run, its workers)."""
        self.status = RunStatus(status)
        self.end_unix = end_unix
        self.records_written = records_written
        self.locust_requests = locust_requests
        self.load_generator = load_generator
        if interrupted_unix is not None:
            self.interrupted_unix = interrupted_unix
        if failure_reason is not None:
            self.failure_reason = failure_reason
        if workers is not None:
            self.workers = workers

    @classmethod
    def from_json(cls, data: Any) -> "Manifest":
        return typing.cast(Manifest, super().from_json(data))


def write_manifest(run_dir: Path, manifest: Manifest) -> None:
    """manifest.json, atomically and scrubbed of credentials (core.rundir.writers)."""
    write_json_atomic(Path(run_dir) / MANIFEST, manifest.to_json())


# ---------------------------------------------------------------------------------------------
# The one reader

class ManifestError(ValueError):
    """A run directory's manifest cannot be used; the message says why and what to do."""

    def __init__(self, run_dir: Path | str, message: str):
        super().__init__(message)
        self.run_dir = Path(run_dir)


class ManifestMissingError(ManifestError):
    """No manifest.json: not a run directory."""


class ManifestUnreadableError(ManifestError):
    """manifest.json is not a JSON object (a crash while writing it?)."""


class NotASuiteManifestError(ManifestError):
    """Another tool's manifest.json: it lacks schema_version or run_id."""


class SchemaVersionError(ManifestError):
    """Written with another run-directory schema version."""

    def __init__(self, run_dir: Path | str, message: str, version: Any):
        super().__init__(run_dir, message)
        self.version = version

    @property
    def newer(self) -> bool:
        """Written by a newer suite (update this one to read it)."""
        return _is_newer(self.version)


def _is_newer(version: Any) -> bool:
    return isinstance(version, int) and not isinstance(version, bool) and version > SCHEMA_VERSION


def read_manifest(run_dir: Path | str, *, check_version: bool = True) -> Manifest:
    """The run directory's manifest, or a ManifestError saying what is wrong with it."""
    run_dir = Path(run_dir)
    path = run_dir / MANIFEST
    if not path.is_file():
        raise ManifestMissingError(
            run_dir, f"{run_dir}: {MANIFEST} is missing; pass a run directory written by make "
            "loadtest (or a folder holding such directories)")
    try:
        with open(path, encoding="utf-8") as fh:
            data = json.load(fh)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ManifestUnreadableError(
            run_dir, f"{run_dir}: {MANIFEST} is not readable JSON ({exc}); the run may have "
            "crashed while writing it: leave this run out") from None
    if not isinstance(data, dict):
        raise ManifestUnreadableError(run_dir, f"{run_dir}: {MANIFEST} is not a JSON object; "
                                      "leave this run out")
    # Another tool's manifest.json (find_run_dirs takes any folder holding one): say so, rather
    # than calling it an old run.
    lacking = [k for k in ("schema_version", "run_id") if data.get(k) in (None, "")]
    if lacking:
        raise NotASuiteManifestError(
            run_dir, f"{run_dir}: not a run directory of this suite: its {MANIFEST} has no "
            f"{' and no '.join(lacking)} (another tool's file?); pass the run directories "
            "make loadtest wrote (results/<campaign>/runs/...), or leave this folder out")
    version = data.get("schema_version")
    if check_version and version != SCHEMA_VERSION:
        newer = _is_newer(version)
        raise SchemaVersionError(
            run_dir, f"{run_dir}: written with run-directory schema_version {version!r}, this "
            f"suite reads version {SCHEMA_VERSION}; "
            + ("update the suite to read it" if newer else
               "rebuild its report with the suite version that wrote it, or leave it out"),
            version)
    return Manifest.from_json(data)
