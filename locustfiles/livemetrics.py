"""The live view's figures: the load generator's own metrics, served by the master for Prometheus.

Data flows one way. The master's ``llm_records`` handler gives every ``RecordBatch`` to
``LiveFigures.add_batch`` (the same batches the run writer appends to records.csv, so workers'
figures arrive with their records and one scrape of the master is the whole test).
``LiveFigures`` keeps plain running totals (histogram buckets, counters) and a short window of
recent requests (the web UI's LLM tab, ``webtab.py``). ``LiveCollector`` turns them, with the
run's current state (``LiveStatus``: users, stage, phase), into fresh metric families on each
scrape; ``serve`` answers /metrics from the master's event loop.

Names are in ``core.rundir.series`` (``CLIENT_*``); docs/live-view.md lists them.
"""

from __future__ import annotations

import bisect
import logging
import math
import time
from collections import Counter, deque
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

from prometheus_client.core import (CounterMetricFamily, GaugeMetricFamily,
                                    HistogramMetricFamily, Metric)
from prometheus_client.registry import CollectorRegistry

from core.rundir import series
from core.rundir.records import RECORD_FIELDS
from locustfiles.messages import RecordBatch
from core.config import is_open_loop

log = logging.getLogger("llm.live")

# Bucket bounds (seconds). Latencies of a whole answer or its first token: 5 ms to 2 min, dense
# where SLOs are usually set (100 ms - 2 s), like vLLM's own TTFT buckets, so the client's and the
# server's quantiles compare. Gaps between tokens: 1 ms to 5 s, dense around 10-100 ms.
LATENCY_BUCKETS_S = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0,
                     1.5, 2.0, 3.0, 5.0, 7.5, 10.0, 20.0, 30.0, 60.0, 120.0)
TOKEN_GAP_BUCKETS_S = (0.001, 0.0025, 0.005, 0.01, 0.015, 0.02, 0.025, 0.03, 0.04, 0.05, 0.075,
                       0.1, 0.15, 0.2, 0.3, 0.5, 0.75, 1.0, 2.5, 5.0)

# histogram -> (record column, bucket bounds)
HISTOGRAM_SOURCES = {
    series.CLIENT_TTFT: ("ttft_s", LATENCY_BUCKETS_S),
    series.CLIENT_TTFAT: ("ttfat_s", LATENCY_BUCKETS_S),
    series.CLIENT_ITL: ("itl_mean_s", TOKEN_GAP_BUCKETS_S),
    series.CLIENT_TPOT: ("tpot_s", TOKEN_GAP_BUCKETS_S),
    series.CLIENT_E2E: ("e2e_s", LATENCY_BUCKETS_S),
}
HELP = {
    series.CLIENT_TTFT: "Time to first token (reasoning or answer), seconds, per request",
    series.CLIENT_TTFAT: "Time to first answer token, seconds, per request",
    series.CLIENT_ITL: ("Gaps between successive content chunks, seconds: each request adds its "
                        "gaps, counted at its mean gap (the records keep per-request summaries)"),
    series.CLIENT_TPOT: "Time per output token after the first, seconds, per request",
    series.CLIENT_E2E: "Whole request, send to last byte, seconds",
    series.CLIENT_REQUESTS: "Requests ended, by outcome and error category",
    series.CLIENT_PROMPT_TOKENS: "Prompt tokens (server usage)",
    series.CLIENT_OUTPUT_TOKENS: "Output tokens (server usage, or counted chunks)",
    series.CLIENT_REASONING_TOKENS: "Reasoning tokens among the output tokens",
    series.CLIENT_USERS: "Users running now (all workers)",
    series.CLIENT_STAGE: "The plan's stage number now (-1: users set by hand)",
    series.CLIENT_STAGE_USERS: "The stage's planned users (closed loop) or generators (open loop)",
    series.CLIENT_PHASE: "1 for the phase the stage is in now, 0 for the others",
    series.CLIENT_IN_FLIGHT: "Streams open now, per endpoint (all workers, as of their last batch)",
    series.CLIENT_TARGET_RATE: "Open loop: the arrival rate the plan asks for now, requests/s",
    series.CLIENT_LOOP_LAG: "Worst event-loop lateness per worker in the last {window:g} s",
    series.CLIENT_SEND_LAG: "Worst send lag (left after due) in the last {window:g} s",
    series.CLIENT_RECORDS_BEHIND: "Seconds since each worker's last record batch (about 1 normally)",
    series.CLIENT_RUN_INFO: "The run this process writes (always 1)",
}
PHASES = ("ramp", "warmup", "steady", "drain", "manual")
HEALTH_WINDOW_S = 5.0     # the health gauges show the worst of this window (scrapes every 1-5 s)
RECENT_WINDOW_S = 60.0    # the LLM tab's window of recent requests

_COL = {name: i for i, name in enumerate(RECORD_FIELDS)}


def _number(value: Any) -> float:
    """A record cell as a float; NaN when blank or missing."""
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


@dataclass
class HistogramState:
    """One histogram series' buckets (not cumulative), sum and count."""

    bounds: tuple[float, ...]
    counts: list[int] = field(default_factory=list)
    total: float = 0.0
    count: int = 0

    def __post_init__(self) -> None:
        self.counts = self.counts or [0] * (len(self.bounds) + 1)   # the last: +Inf

    def observe(self, value: float, times: int = 1) -> None:
        self.counts[bisect.bisect_left(self.bounds, value)] += times
        self.total += value * times
        self.count += times

    def cumulative(self) -> list[tuple[str, float]]:
        """(le, cumulative count) pairs, +Inf last, as prometheus_client takes them."""
        out, running = [], 0
        for bound, n in zip((*map(str, self.bounds), "+Inf"), self.counts):
            running += n
            out.append((bound, running))
        return out


@dataclass(frozen=True)
class RecentRequest:
    """What the LLM tab needs of one recent request."""

    end_unix: float
    endpoint: str
    stage: int
    stage_users: int
    ttft_s: float
    ttfat_s: float
    tpot_s: float
    e2e_s: float
    output_tokens: float
    reasoning_tokens: float
    ok: bool
    error_category: str


@dataclass
class GeneratorState:
    """One process that runs users, as its batches describe it."""

    last_batch_unix: float
    in_flight: dict[str, int] = field(default_factory=dict)
    worst_lag: deque = field(default_factory=deque)   # (unix, worst lag in that batch)


@dataclass(frozen=True)
class LiveStatus:
    """The run's state now, as the master knows it (built on each scrape)."""

    run_id: str
    repetition: int
    campaign: str
    mode: str                 # shape | manual
    load_mode: str            # closed | open
    users: int
    stage: int
    stage_users: int
    phase: str
    target_rate: float        # open loop: requests/s per endpoint now; 0 otherwise
    endpoints: tuple[str, ...]


class LiveFigures:
    """Running totals and recent requests from the record batches (master/local only)."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self.clock = clock
        self.histograms: dict[str, dict[tuple[str, str, int], HistogramState]] = {
            name: {} for name in HISTOGRAM_SOURCES}
        self.requests: Counter[tuple[str, str, int, str, str]] = Counter()
        self.tokens: dict[str, Counter[tuple[str, str]]] = {
            series.CLIENT_PROMPT_TOKENS: Counter(), series.CLIENT_OUTPUT_TOKENS: Counter(),
            series.CLIENT_REASONING_TOKENS: Counter()}
        self.send_lag: deque = deque()       # (unix, endpoint, model, send lag)
        self.recent: deque[RecentRequest] = deque()
        self.generators: dict[str, GeneratorState] = {}
        self.models: dict[str, str] = {}
        self.newest_end_unix = 0.0   # the newest request's end: the recent window's anchor

    def add_batch(self, batch: RecordBatch) -> None:
        """Count one batch's records and note its process's health figures."""
        now = self.clock()
        for row in batch.rows:
            self._add_row(row, now)
        state = self.generators.setdefault(batch.worker, GeneratorState(now))
        state.last_batch_unix = now
        state.in_flight = dict(batch.in_flight)
        state.worst_lag.append((now, float(batch.loop_lag_worst_s)))
        self._forget(now)

    def _add_row(self, row: list[Any], now: float) -> None:
        endpoint, model = str(row[_COL["endpoint"]]), str(row[_COL["model"]])
        stage = int(row[_COL["stage"]])
        self.models[endpoint] = model
        ok = bool(row[_COL["ok"]])
        category = "" if ok else str(row[_COL["error_category"]] or "unknown")
        self.requests[(endpoint, model, stage, "ok" if ok else "failed", category)] += 1
        values = {name: _number(row[_COL[name]]) for name in (
            "ttft_s", "ttfat_s", "tpot_s", "e2e_s", "itl_mean_s", "start_unix", "send_lag_s",
            "prompt_tokens", "output_tokens", "reasoning_tokens")}
        for metric, (column, bounds) in HISTOGRAM_SOURCES.items():
            value = values[column]
            if math.isnan(value):
                continue
            # ITL: every gap of the request counts, at its mean gap, so sum/count is the exact
            # mean gap over all tokens (as vLLM's own inter-token histogram)
            times = max(0, int(row[_COL["answer_chunks"]]) + int(row[_COL["reasoning_chunks"]]) - 1
                        ) if column == "itl_mean_s" else 1
            if times:
                self.histograms[metric].setdefault(
                    (endpoint, model, stage), HistogramState(bounds)).observe(value, times)
        for metric, column in ((series.CLIENT_PROMPT_TOKENS, "prompt_tokens"),
                               (series.CLIENT_OUTPUT_TOKENS, "output_tokens"),
                               (series.CLIENT_REASONING_TOKENS, "reasoning_tokens")):
            if not math.isnan(values[column]):
                self.tokens[metric][(endpoint, model)] += values[column]
        if not math.isnan(values["send_lag_s"]):
            self.send_lag.append((now, endpoint, model, values["send_lag_s"]))
        end = values["start_unix"] + values["e2e_s"]
        end = end if not math.isnan(end) else now
        self.newest_end_unix = max(self.newest_end_unix, end)
        self.recent.append(RecentRequest(
            end_unix=end, endpoint=endpoint, stage=stage,
            stage_users=int(row[_COL["stage_users"]]), ttft_s=values["ttft_s"],
            ttfat_s=values["ttfat_s"], tpot_s=values["tpot_s"], e2e_s=values["e2e_s"],
            output_tokens=values["output_tokens"], reasoning_tokens=values["reasoning_tokens"],
            ok=ok, error_category=category))

    def _forget(self, now: float) -> None:
        while self.send_lag and self.send_lag[0][0] < now - HEALTH_WINDOW_S:
            self.send_lag.popleft()
        for state in self.generators.values():
            while state.worst_lag and state.worst_lag[0][0] < now - HEALTH_WINDOW_S:
                state.worst_lag.popleft()
        # the window is anchored on the newest request, so it stays still once the load stops
        while self.recent and self.recent[0].end_unix < self.newest_end_unix - RECENT_WINDOW_S:
            self.recent.popleft()

    def recent_requests(self) -> list[RecentRequest]:
        return list(self.recent)


class LiveCollector:
    """A prometheus_client collector: fresh families from the figures and the status on each
    scrape. A failure is logged and the scrape answers what it could (never a 500 mid-test)."""

    def __init__(self, figures: LiveFigures, status: Callable[[], LiveStatus]) -> None:
        self._figures = figures
        self._status = status

    def collect(self) -> Iterator[Metric]:
        try:
            status = self._status()
            families = list(self._families(status))
        except Exception:  # noqa: BLE001 - a scrape never takes the load generator down
            log.exception("could not render the live metrics")
            return
        yield from families

    def _families(self, st: LiveStatus) -> Iterator[Metric]:
        figures, now = self._figures, self._figures.clock()
        run = [st.run_id, str(st.repetition)]
        run_labels = ["run", "repetition"]
        series_labels = ["endpoint", "model", *run_labels]
        info = GaugeMetricFamily(series.CLIENT_RUN_INFO, HELP[series.CLIENT_RUN_INFO],
                                 labels=["run", "campaign", "mode"])
        info.add_metric([st.run_id, st.campaign, st.mode], 1.0)
        yield info
        for name, value in ((series.CLIENT_USERS, st.users), (series.CLIENT_STAGE, st.stage),
                            (series.CLIENT_STAGE_USERS, st.stage_users)):
            family = GaugeMetricFamily(name, HELP[name], labels=run_labels)
            family.add_metric(run, float(value))
            yield family
        phase = GaugeMetricFamily(series.CLIENT_PHASE, HELP[series.CLIENT_PHASE],
                                  labels=[*run_labels, "phase"])
        for name in PHASES:
            phase.add_metric([*run, name], 1.0 if name == st.phase else 0.0)
        yield phase
        if is_open_loop(st.load_mode):
            rate = GaugeMetricFamily(series.CLIENT_TARGET_RATE, HELP[series.CLIENT_TARGET_RATE],
                                     labels=["endpoint", *run_labels])
            for endpoint in st.endpoints:
                rate.add_metric([endpoint, *run], st.target_rate)
            yield rate
        in_flight = GaugeMetricFamily(series.CLIENT_IN_FLIGHT, HELP[series.CLIENT_IN_FLIGHT],
                                      labels=series_labels)
        for endpoint in st.endpoints:
            open_streams = sum(g.in_flight.get(endpoint, 0) for g in figures.generators.values())
            in_flight.add_metric([endpoint, figures.models.get(endpoint, ""), *run],
                                 float(open_streams))
        yield in_flight
        yield from self._health(st, run, run_labels, now)
        for name, by_key in figures.histograms.items():
            family = HistogramMetricFamily(name, HELP[name], labels=[*series_labels, "stage"])
            for (endpoint, model, stage), hist in sorted(by_key.items()):
                family.add_metric([endpoint, model, *run, str(stage)], hist.cumulative(),
                                  sum_value=hist.total)
            yield family
        requests = CounterMetricFamily(series.CLIENT_REQUESTS, HELP[series.CLIENT_REQUESTS],
                                       labels=[*series_labels, "stage", "outcome",
                                               "error_category"])
        for (endpoint, model, stage, outcome, category), n in sorted(figures.requests.items()):
            requests.add_metric([endpoint, model, *run, str(stage), outcome, category], float(n))
        yield requests
        for name, totals in figures.tokens.items():
            family = CounterMetricFamily(name, HELP[name], labels=series_labels)
            for (endpoint, model), n in sorted(totals.items()):
                family.add_metric([endpoint, model, *run], float(n))
            yield family

    def _health(self, st: LiveStatus, run: list[str], run_labels: list[str],
                now: float) -> Iterator[Metric]:
        figures = self._figures
        window = {"window": HEALTH_WINDOW_S}
        lag = GaugeMetricFamily(series.CLIENT_LOOP_LAG, HELP[series.CLIENT_LOOP_LAG].format(
            **window), labels=[*run_labels, "worker"])
        age = GaugeMetricFamily(series.CLIENT_RECORDS_BEHIND, HELP[series.CLIENT_RECORDS_BEHIND],
                                labels=[*run_labels, "worker"])
        for worker, state in sorted(figures.generators.items()):
            recent = [w for t, w in state.worst_lag if t >= now - HEALTH_WINDOW_S]
            lag.add_metric([*run, worker], max(recent, default=0.0))
            age.add_metric([*run, worker], max(0.0, now - state.last_batch_unix))
        yield lag
        yield age
        send = GaugeMetricFamily(series.CLIENT_SEND_LAG, HELP[series.CLIENT_SEND_LAG].format(
            **window), labels=["endpoint", "model", *run_labels])
        worst: dict[tuple[str, str], float] = {}
        for t, endpoint, model, value in figures.send_lag:
            if t >= now - HEALTH_WINDOW_S:
                worst[(endpoint, model)] = max(worst.get((endpoint, model), 0.0), value)
        for endpoint in st.endpoints:
            model = figures.models.get(endpoint, "")
            send.add_metric([endpoint, model, *run], worst.get((endpoint, model), 0.0))
        yield send


def registry_for(collector: LiveCollector) -> CollectorRegistry:
    """A registry with only the live collector (no process/GC metrics of the Locust process)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(collector)
    return registry


CONFIG_ROUTE = "/llm/config"   # the run's config as JSON, for remote workers (remote_worker.py)


def serve(registry: CollectorRegistry, host: str, port: int,
          config_json: Callable[[], bytes] | None = None) -> Any:
    """Answer /metrics on host:port from this process's event loop (a gevent WSGI server), and
    the run's config on ``CONFIG_ROUTE`` (no credentials: key variables' names only).
    Returns the server, or None when the port cannot be bound (logged: the run goes on without
    its live metrics; its run directory is complete either way)."""
    from gevent.pywsgi import WSGIServer
    from prometheus_client import make_wsgi_app

    metrics = make_wsgi_app(registry)

    def app(environ: dict, start_response: Callable) -> list[bytes]:
        if environ.get("PATH_INFO") == CONFIG_ROUTE and config_json is not None:
            body = config_json()
            start_response("200 OK", [("Content-Type", "application/json"),
                                      ("Content-Length", str(len(body)))])
            return [body]
        return metrics(environ, start_response)

    server = WSGIServer((host, port), app, log=None, error_log=log)
    try:
        server.start()
    except OSError as exc:
        log.warning("live metrics NOT served: cannot listen on %s:%d (%s). The run goes on; give "
                    "another port with --llm-metrics-port (0 turns them off)", host, port, exc)
        return None
    log.info("live metrics at http://%s:%d/metrics", host, server.server_port)
    return server
