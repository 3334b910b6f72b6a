"""The record sender: the worker side of the record pipeline, in every process that runs users.

Users take a new record (tagged with the stage tags current at send time), fill it, and add it
here; about once a second the buffer goes home as one ``RecordBatch`` (``llm_records``), with
this process's CPU figures and event-loop lag samples. The master's ``llm_flush`` and the test's
stop send the last batch (``final``).
"""

from __future__ import annotations

import logging
import os
import socket
from typing import Any

import gevent

from core.records import RECORD_FIELDS, RequestRecord
from locustfiles.messages import MSG_RECORDS, RecordBatch, StageTags
from locustfiles.probes import CpuTracker, LoopLagProbe

log = logging.getLogger("llm.runtime")

FLUSH_INTERVAL_S = 1.0


def worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


class RecordSender:
    """Buffers this process's records and sends them to the run writer in batches."""

    def __init__(self, runner: Any, worker: str | None = None):
        self.runner = runner
        self.worker = worker or worker_id()
        self.tags = StageTags()
        self.buffer: list[list[Any]] = []
        # request ids: unique across processes and hosts without coordination
        self._id_prefix = f"{os.getpid():x}{os.urandom(4).hex()}"
        self._requests = 0
        self.in_flight: dict[str, int] = {}   # endpoint -> streams between new_record and add
        self.cpu = CpuTracker()
        self.loop_lag = LoopLagProbe()

    def on_stage(self, tags: StageTags) -> None:
        """The master's current tags (``llm_stage``): every record from now on carries them."""
        self.tags = tags

    def new_record(self, endpoint_label: str, model: str, client: str) -> RequestRecord:
        tags = self.tags
        self._requests += 1
        self.in_flight[endpoint_label] = self.in_flight.get(endpoint_label, 0) + 1
        return RequestRecord(run_id=tags.run_id, endpoint=endpoint_label, model=model,
                             repetition=tags.repetition, stage=tags.stage,
                             stage_users=tags.users, phase=tags.phase, worker=self.worker,
                             client=client, request_id=f"{self._id_prefix}-{self._requests:x}")

    def add(self, record: RequestRecord) -> None:
        self.in_flight[record.endpoint] = max(0, self.in_flight.get(record.endpoint, 1) - 1)
        self.buffer.append([getattr(record, name) for name in RECORD_FIELDS])

    def flush(self, final: bool = False) -> None:
        rows, self.buffer = self.buffer, []
        batch = RecordBatch(worker=self.worker, rows=rows, cpu=self.cpu.summary(),
                            loop_lag=self.loop_lag.take(),
                            loop_lag_worst_s=self.loop_lag.take_worst(),
                            in_flight=dict(self.in_flight), final=final)
        try:
            self.runner.send_message(MSG_RECORDS, batch.to_payload())
        except Exception:
            self.buffer = rows + self.buffer  # kept for the next batch
            raise

    def flusher(self) -> None:
        """Send a batch about once a second, sampling this process's CPU as it goes."""
        while True:
            gevent.sleep(FLUSH_INTERVAL_S)
            self.cpu.sample(FLUSH_INTERVAL_S)
            try:
                self.flush()
            except Exception:  # a lost batch must not stop the next ones
                log.exception("could not send a batch of records")

    def start(self) -> None:
        """The background greenlets: the periodic flusher and the event-loop lag probe."""
        gevent.spawn(self.flusher)
        gevent.spawn(self.loop_lag.run, lambda: self.tags)
