"""Metric capture during a run: scrape /metrics endpoints every ~1 s into metrics.csv.

Used inside the Locust master (gevent monkey-patched), so it is plain blocking stdlib code:
``urllib.request`` with a short timeout in a ``threading.Thread`` loop (a greenlet under gevent).

    capture = MetricsCapture([ScrapeTarget("A", "exporter", "http://127.0.0.1:9411/metrics"),
                              ScrapeTarget("A", "server", "http://127.0.0.1:8101/metrics")],
                             run_dir / core.rundir.METRICS)
    capture.start(); ...; capture.stop()

Rows follow ``core.rundir.METRIC_FIELDS``. Every scrape attempt writes one ``scrape_up`` row
(1 ok, 0 failed with ``error="..."`` in labels). A failed scrape writes nothing else: a target
that goes away leaves a gap, never zeros. Only allowlisted series are kept (``keep_metric``).
"""

from __future__ import annotations

import math
import re
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator

from core.rundir import METRIC_FIELDS, CsvAppender

# Series the report uses. Exporter series (nvml_*, server_process_*) are all kept: the exporter
# is ours and small. From the model server only these families (histograms: all their series).
VLLM_GAUGES = (
    "vllm:num_requests_running",
    "vllm:num_requests_waiting",
    "vllm:kv_cache_usage_perc",
    "vllm:gpu_cache_usage_perc",       # older vLLM name of kv_cache_usage_perc
    "vllm:cpu_cache_usage_perc",
)
VLLM_COUNTERS = (
    "vllm:generation_tokens_total",
    "vllm:prompt_tokens_total",
    "vllm:num_preemptions_total",
)
VLLM_HISTOGRAMS = (
    "vllm:time_to_first_token_seconds",
    "vllm:inter_token_latency_seconds",
    "vllm:time_per_output_token_seconds",  # older vLLM name of inter_token_latency_seconds
    "vllm:e2e_request_latency_seconds",
    "vllm:request_queue_time_seconds",
)
KEEP_PREFIXES = ("nvml_", "server_process_")
KEEP_NAMES = frozenset(
    VLLM_GAUGES + VLLM_COUNTERS
    + tuple(f"{h}{s}" for h in VLLM_HISTOGRAMS for s in ("_bucket", "_sum", "_count"))
)
SCRAPE_UP = "scrape_up"


def keep_metric(name: str) -> bool:
    """True for the series the report uses (the allowlist)."""
    return name in KEEP_NAMES or name.startswith(KEEP_PREFIXES)


@dataclass(frozen=True)
class ScrapeTarget:
    endpoint: str   # the endpoint label the series belong to
    source: str     # "exporter" or "server"
    url: str        # the /metrics URL


# ---------------------------------------------------------------------------------------------
# Prometheus text exposition format (0.0.4), the parts a /metrics page uses.

_NAME_RE = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")
_LABEL_RE = re.compile(r'\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*=\s*"((?:[^"\\]|\\.)*)"\s*(,)?')
_UNESCAPE = {"\\\\": "\\", '\\"': '"', "\\n": "\n"}


def _unescape(value: str) -> str:
    if "\\" not in value:
        return value
    return re.sub(r'\\[\\"n]', lambda m: _UNESCAPE[m.group(0)], value)


def escape_label_value(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def format_labels(pairs: Iterable[tuple[str, str]]) -> str:
    """Label pairs as text, Prometheus style: gpu="0",UUID="GPU-..." (empty for none)."""
    return ",".join(f'{k}="{escape_label_value(v)}"' for k, v in pairs)


def parse_float(text: str) -> float:
    t = text.strip()
    if t in ("+Inf", "Inf", "inf", "+inf"):
        return math.inf
    if t in ("-Inf", "-inf"):
        return -math.inf
    return float(t)


def parse_prometheus_text(text: str) -> Iterator[tuple[str, list[tuple[str, str]], float]]:
    """Yield (metric name, label pairs, value) for each sample line; malformed lines are skipped."""
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        m = _NAME_RE.match(line)
        if not m:
            continue
        name = m.group(0)
        pos = m.end()
        labels: list[tuple[str, str]] = []
        if pos < len(line) and line[pos] == "{":
            pos += 1
            ok = False
            while pos < len(line):
                if line[pos] == "}":
                    pos += 1
                    ok = True
                    break
                lm = _LABEL_RE.match(line, pos)
                if not lm:
                    break
                labels.append((lm.group(1), _unescape(lm.group(2))))
                pos = lm.end()
                while pos < len(line) and line[pos] == " ":
                    pos += 1
            if not ok:
                continue
        rest = line[pos:].split()
        if not rest:
            continue
        try:
            value = parse_float(rest[0])
        except ValueError:
            continue
        yield name, labels, value


def samples_to_rows(text: str, ts: float, endpoint: str, source: str) -> list[dict]:
    """Allowlisted, non-NaN samples of one scrape as metrics.csv rows."""
    rows = []
    for name, labels, value in parse_prometheus_text(text):
        if not keep_metric(name) or math.isnan(value):
            continue
        rows.append({"ts_unix": ts, "endpoint": endpoint, "source": source, "metric": name,
                     "labels": format_labels(labels), "value": value})
    return rows


def _short_error(exc: BaseException) -> str:
    if isinstance(exc, urllib.error.HTTPError):
        return f"http {exc.code}"
    reason = getattr(exc, "reason", exc)
    if isinstance(reason, ConnectionRefusedError):
        return "connection refused"
    if isinstance(reason, ConnectionResetError):
        return "connection reset"
    if isinstance(reason, (TimeoutError,)) or "timed out" in str(reason):
        return "timeout"
    text = str(reason) or type(reason).__name__
    return " ".join(text.split())[:120]


class MetricsCapture:
    """Scrapes each target every ``interval_s`` and appends rows to ``out_path``.

    One loop per target, so a slow target does not delay the others. Timestamps are the wall
    clock when the response arrived. ``stop()`` returns within about ``timeout_s`` + 1 s.
    """

    def __init__(self, targets: list[ScrapeTarget], out_path: Path, interval_s: float = 1.0,
                 timeout_s: float | None = None):
        self.targets = list(targets)
        self.out_path = Path(out_path)
        self.interval_s = float(interval_s)
        # A model server busy on a few CPU cores can take over a second to render /metrics;
        # a slow answer is a late sample (the loop skips the ticks it missed), not a gap.
        self.timeout_s = float(timeout_s) if timeout_s else max(2.0, self.interval_s)
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._threads: list[threading.Thread] = []
        self._appender: CsvAppender | None = None
        self.scrapes = 0
        self.failures = 0

    def start(self) -> "MetricsCapture":
        if self._threads:
            return self
        self._appender = CsvAppender(self.out_path, METRIC_FIELDS)
        for target in self.targets:
            t = threading.Thread(target=self._loop, args=(target,), daemon=True,
                                 name=f"metrics-capture-{target.endpoint}-{target.source}")
            self._threads.append(t)
            t.start()
        return self

    def scrape_once(self, target: ScrapeTarget) -> list[dict]:
        """One attempt: the rows to write (metric rows plus one scrape_up row)."""
        try:
            req = urllib.request.Request(target.url, headers={"Accept": "text/plain"})
            with urllib.request.urlopen(req, timeout=self.timeout_s) as resp:
                body = resp.read().decode("utf-8", errors="replace")
        except Exception as exc:  # noqa: BLE001 - any failure is a gap, never a crash
            ts = time.time()
            return [{"ts_unix": ts, "endpoint": target.endpoint, "source": target.source,
                     "metric": SCRAPE_UP, "labels": format_labels([("error", _short_error(exc))]),
                     "value": 0}]
        ts = time.time()
        rows = samples_to_rows(body, ts, target.endpoint, target.source)
        rows.append({"ts_unix": ts, "endpoint": target.endpoint, "source": target.source,
                     "metric": SCRAPE_UP, "labels": "", "value": 1})
        return rows

    def _loop(self, target: ScrapeTarget) -> None:
        next_at = time.monotonic()
        while not self._stop.is_set():
            try:
                rows = self.scrape_once(target)
            except Exception as exc:  # noqa: BLE001 - a bug in parsing must not end the loop
                rows = [{"ts_unix": time.time(), "endpoint": target.endpoint,
                         "source": target.source, "metric": SCRAPE_UP,
                         "labels": format_labels([("error", _short_error(exc))]), "value": 0}]
            ok = rows[-1]["value"] == 1
            with self._lock:
                self.scrapes += 1
                self.failures += 0 if ok else 1
                if self._appender is not None:
                    try:
                        self._appender.write(rows)
                    except (OSError, ValueError):
                        pass
            next_at += self.interval_s
            now = time.monotonic()
            if next_at < now:  # fell behind (slow target): skip missed ticks, no burst
                next_at = now + self.interval_s - ((now - next_at) % self.interval_s)
            self._stop.wait(max(0.0, next_at - time.monotonic()))

    def stop(self) -> None:
        """Stop the loops (bounded wait) and close the file."""
        self._stop.set()
        deadline = time.monotonic() + self.timeout_s + 1.0
        for t in self._threads:
            t.join(max(0.0, deadline - time.monotonic()))
        with self._lock:
            if self._appender is not None:
                self._appender.close()
                self._appender = None
        self._threads = []

    def __enter__(self) -> "MetricsCapture":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
