"""The run writer: the master/local side of the record pipeline, writing the run directory.

It appends each ``RecordBatch`` to ``records.csv`` as it arrives, writes the stage rows the
shape closes, keeps every process's CPU figures and loop-lag samples, runs the metric capture,
and writes the manifest (first as ``running``, then finalized). The file formats are the
contract in ``core.rundir``.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import platform
import socket
import sys
import time
from pathlib import Path
from typing import Any

import gevent
import psutil
from gevent.threadpool import ThreadPool

from core import rundir
from core.config import SuiteConfig
from core.rundir import series
from core.rundir.capture import MetricsCapture, ScrapeTarget
from core.rundir.manifest import (Host, LoadGeneratorSummary, LoopLag, Manifest, ProcessCpu,
                                  RunStatus, Versions, WorkerProcess, suite_version)
from locustfiles.messages import RecordBatch
from locustfiles.plan import total_duration_s
from locustfiles.probes import CPU_SATURATED_SECONDS, CpuTracker, lag_summary

FINAL_FLUSH_TIMEOUT_S = 20.0   # how long the end of a run waits for every process's last batch

log = logging.getLogger("llm.runtime")

CPU_SAMPLE_INTERVAL_S = 1.0
CAPTURE_INTERVAL_S = 1.0


class RunWriter:
    """Master/local side: writes the run directory as data arrives."""

    def __init__(self, run_dir: Path, manifest: Manifest):
        self.run_dir = run_dir
        run_dir.mkdir(parents=True, exist_ok=True)
        self.records = rundir.record_appender(run_dir)
        self.stages = rundir.stage_appender(run_dir)
        self.manifest = manifest
        self.cpu_by_process: dict[str, dict[str, float]] = {}
        self.loop_lag: dict[str, list[float]] = {}   # stage -> samples from every process
        self.final_acks: set[str] = set()
        self.capture: MetricsCapture | None = None
        # File writes and fsync go to one OS thread, so a slow disk never stalls the event loop
        # (in a local run the same loop timestamps the streams).
        self._io = ThreadPool(1)
        rundir.write_manifest(run_dir, manifest)

    def on_batch(self, batch: RecordBatch) -> None:
        """Append one process's batch (the message handler decodes the payload)."""
        rows = batch.rows
        if self.records.closed:
            if rows:  # an empty batch is a late "nothing more": no loss
                log.error("a batch of %d records arrived after the run was finalized; they are "
                          "not in records.csv", len(rows))
            return
        if rows:
            text = self.records.encode_values(rows)  # lists in RECORD_FIELDS order
            self._io.apply(self.records.append_encoded, (text, len(rows)))
        if batch.cpu:
            self.note_cpu(batch.worker, batch.cpu)
        for stage, samples in batch.loop_lag.items():
            self.loop_lag.setdefault(stage, []).extend(samples)
        if batch.final:
            self.final_acks.add(batch.worker)

    @property
    def final_batches(self) -> int:
        """How many processes have sent their final batch."""
        return len(self.final_acks)

    def wait_for_final_batches(self, expected: int, timeout_s: float) -> bool:
        """Wait (yielding to the event loop) until ``expected`` processes sent their final batch."""
        deadline = time.time() + timeout_s
        while self.final_batches < expected and time.time() < deadline:
            gevent.sleep(0.1)
        return self.final_batches >= expected

    def note_cpu(self, process: str, summary: dict[str, float]) -> None:
        """A process's latest CPU figures (CpuTracker.summary())."""
        self.cpu_by_process[process] = summary

    def track_own_cpu(self, process: str) -> gevent.Greenlet:
        """Sample this process's own CPU (a master, which runs no users) about once a second;
        its cpu_seconds count from now (the master's whole run)."""
        tracker = CpuTracker()
        tracker.mark_start()

        def sample() -> None:
            while True:
                gevent.sleep(CPU_SAMPLE_INTERVAL_S)
                tracker.sample(CPU_SAMPLE_INTERVAL_S)
                self.note_cpu(process, tracker.summary())

        return gevent.spawn(sample)

    def start_capture(self, targets: list[ScrapeTarget]) -> None:
        """Scrape these targets into metrics.csv until the run is finalized (none: no file)."""
        if not targets:
            return
        self.capture = MetricsCapture(targets, self.run_dir / rundir.METRICS,
                                      interval_s=CAPTURE_INTERVAL_S)
        self.capture.start()

    def write_stage(self, row: dict[str, Any]) -> None:
        self.stages.write([row])

    def load_generator_summary(self) -> LoadGeneratorSummary:
        processes = self.cpu_by_process
        max_cpu = max((p["max_cpu_percent"] for p in processes.values()), default=0.0)
        above = max((p["seconds_above_90"] for p in processes.values()), default=0.0)
        return LoadGeneratorSummary(
            processes={worker: ProcessCpu.from_json(cpu) for worker, cpu in processes.items()},
            max_cpu_percent=max_cpu, seconds_above_90=above,
            saturated=above >= CPU_SATURATED_SECONDS,
            loop_lag_by_stage={stage: LoopLag.from_json(lag_summary(samples))
                               for stage, samples in sorted(self.loop_lag.items()) if samples})

    def finalize(self, status: str, locust_requests: int, *, interrupted_unix: float | None = None,
                 failure_reason: str | None = None,
                 workers: list[WorkerProcess] | None = None) -> None:
        """Close every file and write the manifest's end: status, counts, and (when they apply)
        when the run was interrupted or why it failed."""
        if self.capture is not None:
            self.capture.stop()
            self.capture = None
        self._io.apply(self.records.close)  # after any write still queued in the I/O thread
        self._io.kill()
        self.stages.close()
        self.manifest.finish(status, end_unix=time.time(),
                             records_written=self.records.rows_written,
                             locust_requests=locust_requests,
                             load_generator=self.load_generator_summary(),
                             interrupted_unix=interrupted_unix, failure_reason=failure_reason,
                             workers=workers)
        rundir.write_manifest(self.run_dir, self.manifest)


def endpoint_labels(environment: Any) -> set[str]:
    """The endpoints this run's user classes load."""
    return {cls.endpoint_label for cls in environment.user_classes
            if getattr(cls, "endpoint_label", None)}


def build_manifest(ctx: Any, environment: Any, run_dir: Path) -> Manifest:
    """The manifest as first written (status running). ``ctx`` has the run's campaign,
    repetition, config and plan (a RunContext)."""
    import locust

    return Manifest(
        run_id=run_dir.name,
        campaign=ctx.campaign,
        repetition=ctx.repetition,
        endpoints=sorted(endpoint_labels(environment)),
        user_classes=[cls.__name__ for cls in environment.user_classes],
        status=RunStatus.RUNNING,
        start_unix=time.time(),
        config=ctx.config.to_public_dict(),
        plan=[dataclasses.asdict(s) for s in ctx.plan],
        planned_duration_s=total_duration_s(ctx.plan),
        mode="shape" if environment.shape_class is not None else "manual",
        versions=Versions(suite=suite_version(), locust=locust.__version__,
                          python=platform.python_version()),
        host=Host(hostname=socket.gethostname(), platform=platform.platform(),
                  cpu_count=os.cpu_count(), memory_bytes=psutil.virtual_memory().total),
        command=list(sys.argv),
    )


def default_run_dir(environment: Any) -> Path:
    names = "-".join(sorted(getattr(c, "endpoint_label", c.__name__)
                            for c in environment.user_classes)) or "run"
    return Path("results") / f"{time.strftime('%Y%m%d-%H%M%S')}-{names}"


def capture_targets(config: SuiteConfig, labels: set[str]) -> list[ScrapeTarget]:
    """The exporter and server metrics of the endpoints this run loads."""
    targets = []
    for ep in config.endpoints:
        if ep.label not in labels:
            continue
        if ep.exporter_url:
            targets.append(ScrapeTarget(ep.label, series.EXPORTER, ep.exporter_url))
        if ep.metrics_url:
            targets.append(ScrapeTarget(ep.label, series.SERVER, ep.metrics_url))
    return targets


def locust_chat_requests(environment: Any) -> int:
    """Requests Locust counted for the CHAT event (failures included)."""
    return sum(entry.num_requests for (name, method), entry in environment.stats.entries.items()
               if method == "CHAT")
