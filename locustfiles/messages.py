"""The messages between Locust processes, typed: names, payloads, and their wire form.

Locust carries a message's ``data`` as plain msgpack-able values, so each message here is a
dataclass with ``to_payload()`` (what is sent) and ``from_payload()`` (what the handler reads).

- ``llm_stage`` (master/local -> every process that runs users): ``StageTags``, the tags every
  request is stamped with at send time; sent on every shape tick (a late worker catches up).
- ``llm_records`` (every process that runs users -> master/local): ``RecordBatch``, about once a
  second; a LocalRunner delivers it to itself, so local and distributed runs take one path.
- ``llm_flush`` (master/local -> every process that runs users): no payload; "send your last
  batch now" (it comes back with ``final`` set).
- ``llm_clock`` (master -> one worker, on connect, a few times): ``ClockProbe``; the worker
  answers at once with ``llm_clock_reply`` (``ClockReply``): its wall clock and its config's
  digest. The master estimates the worker's clock offset from the round trip
  (``locustfiles.workers``) and refuses a worker whose config differs from its own.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, TypeVar

MSG_STAGE = "llm_stage"
MSG_RECORDS = "llm_records"
MSG_FLUSH = "llm_flush"
MSG_CLOCK = "llm_clock"
MSG_CLOCK_REPLY = "llm_clock_reply"

_P = TypeVar("_P", bound="PlainPayload")


class PlainPayload:
    """A message whose payload is its dataclass's fields, as they are."""

    def to_payload(self) -> dict[str, Any]:
        return dataclasses.asdict(self)  # type: ignore[call-overload]

    @classmethod
    def from_payload(cls: type[_P], data: dict[str, Any]) -> _P:
        return cls(**data)


@dataclass
class StageTags(PlainPayload):
    """What a request is tagged with at send time (sent by the master with every tick)."""

    stage: int = -1
    users: int = 0
    phase: str = "manual"
    rate_per_user: float = 0.0
    run_id: str = ""
    repetition: int = 0
    stage_start_unix: float = 0.0   # the stage's ramp_unix: where a trace replay's schedule starts


@dataclass
class RecordBatch:
    """One process's records since its last batch, with its CPU figures and loop-lag samples.

    ``rows`` are lists in ``core.records.RECORD_FIELDS`` order; ``cpu`` is
    ``probes.CpuTracker.summary()``; ``loop_lag`` maps a stage (as a string) to lag samples in
    seconds (steady phases); ``loop_lag_worst_s`` is the worst event-loop lateness since the last
    batch in any phase and ``in_flight`` the streams open per endpoint when it left (the live
    view, ``livemetrics.py``); ``final`` marks the process's last batch of the run (an answer to
    ``llm_flush``, or its test stop).
    """

    worker: str
    rows: list[list[Any]] = field(default_factory=list)
    cpu: dict[str, float] = field(default_factory=dict)
    loop_lag: dict[str, list[float]] = field(default_factory=dict)
    loop_lag_worst_s: float = 0.0
    in_flight: dict[str, int] = field(default_factory=dict)
    final: bool = False

    def to_payload(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_payload(cls, data: dict[str, Any]) -> RecordBatch:
        """The batch a message carried (a missing or empty part reads as none)."""
        return cls(worker=data["worker"], rows=data.get("rows") or [],
                   cpu=data.get("cpu") or {}, loop_lag=data.get("loop_lag") or {},
                   loop_lag_worst_s=float(data.get("loop_lag_worst_s") or 0.0),
                   in_flight=data.get("in_flight") or {}, final=bool(data.get("final")))


@dataclass
class ClockProbe(PlainPayload):
    """The master's wall clock when it sent the probe."""

    sent_unix: float


@dataclass
class ClockReply(PlainPayload):
    """A worker's answer to a ClockProbe: the probe's time back, the worker's wall clock when it
    answered, who it is, and the digest of its config (``SuiteConfig.digest``)."""

    probe_sent_unix: float
    worker_unix: float
    worker: str
    host: str
    config_digest: str
