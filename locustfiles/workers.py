"""The master's view of its worker processes: who they are, how their clocks compare, what they
sent, and which of them stopped sending (a distributed run only: a MasterRunner).

Clocks. Records from several hosts share one timeline: a request's ``start_unix`` decides which
stage window it falls in. Durations (TTFT, E2E, ...) are measured on one host's clock and are
not affected by an offset. When a worker connects, the master sends it ``CLOCK_PROBES`` probes
(``llm_clock``); the worker answers each at once with its wall clock (``llm_clock_reply``). For
each round trip, offset = worker clock - (sent + received) / 2, within +-(received - sent) / 2;
the probe with the shortest round trip is kept (NTP's rule). An offset beyond
``CLOCK_WARN_S`` is logged with its figure; beyond the run's ``--max-clock-offset-s`` the run is
refused. The same reply carries the worker's config digest: a worker loading a different config
(other endpoints, other load settings) is refused too, because its requests would not be the
run's.

Loss. Every batch names its worker. A worker whose final batch never came (its host died, its
network went) is ``lost`` in the manifest, with when its last batch arrived: the records it sent
until then are in records.csv, what it did after is missing.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Callable

import gevent

from core.rundir.manifest import CLOCK_WARN_S, WorkerProcess
from locustfiles.messages import MSG_CLOCK, MSG_CLOCK_REPLY, ClockProbe, ClockReply, RecordBatch

log = logging.getLogger("llm.workers")

CLOCK_PROBES = 5
CLOCK_PROBE_GAP_S = 0.05
DEFAULT_MAX_CLOCK_OFFSET_S = 1.0


@dataclass
class SeenWorker:
    """What the master knows about one worker process."""

    worker: str
    host: str = ""
    connected_unix: float | None = None
    clock_offset_s: float | None = None
    clock_error_s: float | None = None
    records: int = 0
    last_batch_unix: float | None = None
    final_batch: bool = False
    warned: bool = field(default=False, repr=False)

    def to_manifest(self) -> WorkerProcess:
        return WorkerProcess(
            worker=self.worker, host=self.host or None, clock_offset_s=self.clock_offset_s,
            clock_error_s=self.clock_error_s, connected_unix=self.connected_unix,
            last_batch_unix=self.last_batch_unix, records=self.records,
            final_batch=self.final_batch, lost=not self.final_batch)


class WorkerRoster:
    """The master's workers. ``refuse(reason)`` is called (once per problem) for a worker whose
    config differs or whose clock is off by more than ``max_clock_offset_s``."""

    def __init__(self, send: Callable[..., None], config_digest: str,
                 max_clock_offset_s: float, refuse: Callable[[str], None],
                 clock: Callable[[], float] = time.time) -> None:
        self._send = send            # runner.send_message
        self.config_digest = config_digest
        self.max_clock_offset_s = max_clock_offset_s
        self._refuse = refuse
        self._clock = clock
        self.workers: dict[str, SeenWorker] = {}

    def _seen(self, worker: str) -> SeenWorker:
        return self.workers.setdefault(worker, SeenWorker(worker))

    def on_connect(self, client_id: str) -> gevent.Greenlet:
        """A worker connected (Locust's worker_connect): probe its clock."""
        def probe() -> None:
            for _ in range(CLOCK_PROBES):
                self._send(MSG_CLOCK, ClockProbe(self._clock()).to_payload(), client_id=client_id)
                gevent.sleep(CLOCK_PROBE_GAP_S)

        return gevent.spawn(probe)

    def on_clock_reply(self, reply: ClockReply) -> None:
        received = self._clock()
        seen = self._seen(reply.worker)
        seen.host = reply.host
        if seen.connected_unix is None:
            seen.connected_unix = reply.probe_sent_unix
        error = max(0.0, received - reply.probe_sent_unix) / 2
        if seen.clock_error_s is None or error < seen.clock_error_s:
            seen.clock_error_s = round(error, 6)
            seen.clock_offset_s = round(
                reply.worker_unix - (reply.probe_sent_unix + received) / 2, 6)
        if reply.config_digest != self.config_digest:
            self._refuse(f"worker {reply.worker} ({reply.host}) loads a different config "
                         f"(digest {reply.config_digest}, the master's {self.config_digest}): "
                         "start every worker with the same endpoints file and load flags as "
                         "the master")
            return
        offset = abs(seen.clock_offset_s or 0.0)
        if offset > self.max_clock_offset_s:
            self._refuse(f"worker {reply.worker} ({reply.host}): its clock is "
                         f"{seen.clock_offset_s * 1e3:+.1f} ms off the master's (more than "
                         f"--max-clock-offset-s {self.max_clock_offset_s:g}); records from "
                         "several hosts share one timeline. Synchronise the clocks (chrony, "
                         "NTP) and start again")
        elif offset > CLOCK_WARN_S and not seen.warned:
            seen.warned = True
            log.warning("worker %s (%s): clock %+.1f ms off the master's (+-%.1f ms): its "
                        "requests' start times are shifted by that much against the stage "
                        "windows; durations are not affected", reply.worker, reply.host,
                        seen.clock_offset_s * 1e3, (seen.clock_error_s or 0) * 1e3)

    def on_batch(self, batch: RecordBatch) -> None:
        seen = self._seen(batch.worker)
        seen.records += len(batch.rows)
        seen.last_batch_unix = self._clock()
        seen.final_batch = seen.final_batch or batch.final

    def summary(self) -> list[WorkerProcess]:
        """Every worker seen, for the manifest; a worker without its final batch is lost."""
        for seen in self.workers.values():
            if not seen.final_batch:
                when = (time.strftime("%H:%M:%S", time.localtime(seen.last_batch_unix))
                        if seen.last_batch_unix else "never")
                log.error("worker %s (%s) stopped sending records before the end (last batch: "
                          "%s, %d records): what it did after that is missing", seen.worker,
                          seen.host or "?", when, seen.records)
        return [s.to_manifest() for s in sorted(self.workers.values(), key=lambda s: s.worker)]

    def clock_lines(self) -> list[str]:
        """One line per worker: its clock offset and the bound."""
        return [f"{s.worker} ({s.host}): clock {s.clock_offset_s * 1e3:+.2f} ms "
                f"+-{(s.clock_error_s or 0) * 1e3:.2f} ms"
                for s in self.workers.values() if s.clock_offset_s is not None]


def reply_to_probe(send: Callable[..., None], probe: ClockProbe, worker: str, host: str,
                   config_digest: str) -> None:
    """The worker's side: answer at once with this host's wall clock."""
    send(MSG_CLOCK_REPLY, ClockReply(probe.sent_unix, time.time(), worker, host,
                                          config_digest).to_payload())

