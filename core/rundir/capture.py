"""Metric capture during a run: scrape /metrics endpoints every ~1 s into metrics.csv.

Used inside the Locust master (gevent monkey-patched), so it is plain blocking stdlib code:
``urllib.request`` with a short timeout in a ``threading.Thread`` loop (a greenlet under gevent).
It imports nothing heavy (no pandas, numpy or pyarrow).

    capture = MetricsCapture([ScrapeTarget("A", series.EXPORTER, "http://127.0.0.1:9411/metrics"),
                              ScrapeTarget("A", series.SERVER, "http://127.0.0.1:8101/metrics")],
                             run_dir / core.rundir.METRICS)
    capture.start(); ...; capture.stop()

Rows follow ``core.rundir.METRIC_FIELDS``. Every scrape attempt writes one ``scrape_up`` row
(1 ok, 0 failed with ``error="..."`` in labels). A failed scrape writes nothing else: a target
that goes away leaves a gap, never zeros. Only allowlisted series are kept
(``core.rundir.series.keep_metric``).
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

from .layout import METRIC_FIELDS
from .series import ERROR_LABEL, SCRAPE_UP, keep_metric
from .writers import CsvAppender

@dataclass(frozen=True)
class ScrapeTarget:
    endpoint: str   # the endpoint label the series belong to
    source: str     # series.EXPORTER or series.SERVER
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


def metric_row(ts: float, endpoint: str, source: str, metric: str, labels: str,
               value: float) -> dict:
    """One metrics.csv row (METRIC_FIELDS)."""
    return dict(zip(METRIC_FIELDS, (ts, endpoint, source, metric, labels, value)))


def scrape_up_row(ts: float, target: "ScrapeTarget", error: str | None = None) -> dict:
    """The scrape's own row: 1, or 0 with the error in its labels."""
    if error is None:
        return metric_row(ts, target.endpoint, target.source, SCRAPE_UP, "", 1)
    return metric_row(ts, target.endpoint, target.source, SCRAPE_UP,
                      format_labels([(ERROR_LABEL, error)]), 0)


def samples_to_rows(text: str, ts: float, endpoint: str, source: str) -> list[dict]:
    """Allowlisted, non-NaN samples of one scrape as metrics.csv rows."""
    rows = []
    for name, labels, value in parse_prometheus_text(text):
        if not keep_metric(name) or math.isnan(value):
            continue
        rows.append(metric_row(ts, endpoint, source, name, format_labels(labels), value))
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
        self._latest: dict[tuple[str, str], list[dict]] = {}

    def latest(self) -> dict[tuple[str, str], list[dict]]:
        """The rows of each target's last successful scrape, by (endpoint, source): what the
        live view shows."""
        with self._lock:
            return dict(self._latest)

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
            return [scrape_up_row(time.time(), target, _short_error(exc))]
        ts = time.time()
        rows = samples_to_rows(body, ts, target.endpoint, target.source)
        rows.append(scrape_up_row(ts, target))
        return rows

    def _loop(self, target: ScrapeTarget) -> None:
        next_at = time.monotonic()
        while not self._stop.is_set():
            try:
                rows = self.scrape_once(target)
            except Exception as exc:  # noqa: BLE001 - a bug in parsing must not end the loop
                rows = [scrape_up_row(time.time(), target, _short_error(exc))]
            ok = rows[-1]["value"] == 1
            with self._lock:
                self.scrapes += 1
                self.failures += 0 if ok else 1
                if ok:
                    self._latest[(target.endpoint, target.source)] = rows
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
