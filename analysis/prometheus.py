"""Metric samples for a run's time window from a Prometheus server (instead of metrics.csv).

``--prometheus URL`` makes the report query ``URL/api/v1/query_range`` (step 1 s) for the series
the report uses (the capture allowlist: ``nvml_*``, ``server_process_*`` and the vLLM families)
plus ``up``, over [start_unix, end_unix] of each run, and turns them into the same long-format
rows as metrics.csv (``up`` becomes ``scrape_up``).

Which endpoint a series belongs to, first match wins:
1. ``--prom-endpoint-label LABEL=INSTANCE`` (repeatable): series whose ``instance`` label is
   INSTANCE (e.g. ``10.0.0.5:9411``) belong to endpoint LABEL;
2. an ``endpoint`` label on the series (add one with relabel_configs in prometheus.yml);
3. the host:port of the endpoint's ``metrics_url`` / ``exporter_url`` in the run's manifest
   (what Prometheus puts in ``instance`` by default).
The source is "server" for vllm:* series and "exporter" otherwise; for ``up`` it is the source
of the other series of the same instance. Unmapped series are ignored with a warning.
"""

from __future__ import annotations

import json
import math
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

import numpy as np
import pandas as pd

from core.rundir import METRIC_FIELDS
from core.rundir.capture import format_labels
from core.rundir.read import normalise_metrics
from core.rundir.series import EXPORTER, KEEP_NAMES, KEEP_PREFIXES, SCRAPE_UP, SERVER, source_of

from .errors import AnalysisError, WarningList
from .rundata import RunData

MAX_POINTS = 10_000        # Prometheus refuses more than 11,000 points per series
DROP_LABELS = ("__name__", "instance", "job", "endpoint")


def series_selector() -> str:
    """A PromQL selector for the allowlisted series (the names hold no regex metacharacters)."""
    regex = "|".join([f"{p}.+" for p in KEEP_PREFIXES] + sorted(KEEP_NAMES))
    return '{__name__=~"' + regex + '"}'


def query_range(base_url: str, query: str, start: float, end: float, step: float = 1.0,
                timeout: float = 30.0) -> list[dict[str, Any]]:
    """The matrix result of one query_range call, chunked to stay under the points limit."""
    out: list[dict[str, Any]] = []
    t = start
    while t <= end:
        t_end = min(end, t + step * (MAX_POINTS - 1))
        params = urllib.parse.urlencode({"query": query, "start": f"{t:.3f}", "end": f"{t_end:.3f}",
                                         "step": f"{step:g}"})
        url = base_url.rstrip("/") + "/api/v1/query_range?" + params
        try:
            with urllib.request.urlopen(url, timeout=timeout) as resp:
                data = json.loads(resp.read().decode("utf-8"))
        except urllib.error.HTTPError as exc:
            detail = ""
            try:
                detail = json.loads(exc.read().decode("utf-8")).get("error", "")
            except Exception:  # noqa: BLE001
                pass
            raise AnalysisError(f"--prometheus {base_url}: HTTP {exc.code} {detail}".strip()
                                + "; check the URL (the server's root, e.g. http://host:9090)") from None
        except (urllib.error.URLError, OSError, ValueError) as exc:
            raise AnalysisError(f"--prometheus {base_url}: cannot query it ({exc}); check the URL "
                                "and that Prometheus is running") from None
        if data.get("status") != "success":
            raise AnalysisError(f"--prometheus {base_url}: query failed: {data.get('error')}")
        out.extend(data.get("data", {}).get("result", []))
        t = t_end + step
    return out


def _instance(url: str) -> str:
    p = urllib.parse.urlparse(url or "")
    if not p.hostname:
        return ""
    port = p.port or (443 if p.scheme == "https" else 80)
    return f"{p.hostname}:{port}"


def instance_map(run: RunData, explicit: dict[str, str]) -> dict[str, tuple[str, str | None]]:
    """instance -> (endpoint label, source or None)."""
    m: dict[str, tuple[str, str | None]] = {}
    for ep in run.endpoints:
        cfg = run.endpoint_config(ep)
        if cfg.get("metrics_url"):
            m[_instance(cfg["metrics_url"])] = (ep, SERVER)
        if cfg.get("exporter_url"):
            m[_instance(cfg["exporter_url"])] = (ep, EXPORTER)
    for inst, ep in explicit.items():
        m[inst] = (ep, None)
    return m


def to_rows(results: list[dict[str, Any]], imap: dict[str, tuple[str, str | None]],
            up: list[dict[str, Any]]) -> tuple[pd.DataFrame, int]:
    """Long-format rows from matrix results; also the number of unmapped series."""
    cols: dict[str, list] = {c: [] for c in METRIC_FIELDS}
    unmapped = 0
    instance_source: dict[str, str] = {}

    def emit(ep, src, name, labels, values):
        arr = np.array(values, dtype=object)
        ts = arr[:, 0].astype(float)
        vals = np.array([_f(v) for v in arr[:, 1]], dtype=float)
        keep = ~np.isnan(vals)
        n = int(keep.sum())
        cols["ts_unix"].append(ts[keep])
        cols["value"].append(vals[keep])
        for c, v in (("endpoint", ep), ("source", src), ("metric", name), ("labels", labels)):
            cols[c].append(np.full(n, v, dtype=object))

    for series in results:
        metric = series.get("metric", {})
        name = metric.get("__name__", "")
        values = series.get("values") or []
        if not name or not values:
            continue
        inst = metric.get("instance", "")
        ep, src = _endpoint_of(metric, imap)
        if ep is None:
            unmapped += 1
            continue
        src = src or source_of(name)
        instance_source.setdefault(inst, src)
        labels = format_labels((k, v) for k, v in metric.items() if k not in DROP_LABELS)
        emit(ep, src, name, labels, values)
    for series in up:
        metric = series.get("metric", {})
        values = series.get("values") or []
        inst = metric.get("instance", "")
        ep, src = _endpoint_of(metric, imap)
        if ep is None or not values:
            continue
        src = src or instance_source.get(inst)
        if src is None:
            continue
        emit(ep, src, SCRAPE_UP, "", values)
    if not cols["ts_unix"]:
        return pd.DataFrame({c: pd.Series(dtype=float if c in ("ts_unix", "value") else object)
                             for c in METRIC_FIELDS}), unmapped
    df = pd.DataFrame({c: np.concatenate(v) for c, v in cols.items()})
    return df, unmapped


def _endpoint_of(metric: dict[str, str], imap) -> tuple[str | None, str | None]:
    inst = metric.get("instance", "")
    if inst in imap and imap[inst][1] is None:
        return imap[inst]
    if metric.get("endpoint"):
        return metric["endpoint"], None
    if inst in imap:
        return imap[inst]
    return None, None


def _f(v: Any) -> float:
    try:
        return float(v)
    except (TypeError, ValueError):
        return math.nan


def fetch_run_metrics(base_url: str, run: RunData, explicit: dict[str, str],
                      warnings: WarningList) -> pd.DataFrame | None:
    start, end = run.manifest.start_unix, run.manifest.end_unix
    if not isinstance(start, (int, float)):
        raise AnalysisError(f"run {run.name}: the manifest has no start_unix; cannot query "
                            "Prometheus for its window")
    if not isinstance(end, (int, float)) or end <= start:
        ends = [run.stages[c].max() for c in ("end_unix", "drain_unix") if len(run.stages)]
        ends = [e for e in ends if isinstance(e, float) and not math.isnan(e)]
        end = max(ends) if ends else (float(run.records["start_unix"].max())
                                      if len(run.records) else start + 3600)
    results = query_range(base_url, series_selector(), float(start) - 2, float(end) + 2)
    up = query_range(base_url, "up", float(start) - 2, float(end) + 2)
    df, unmapped = to_rows(results, instance_map(run, explicit), up)
    if unmapped:
        warnings.add("unmapped_series", f"run {run.name}: {unmapped} Prometheus series matched "
                     "no endpoint and were ignored; map them with --prom-endpoint-label "
                     "LABEL=INSTANCE", run.ref)
    if not len(df):
        return None
    df = normalise_metrics(df)
    df.attrs["source"] = "prometheus"
    return df
