"""The "LLM" tab of Locust's web UI: exact per-endpoint figures while a user ramps by hand.

Locust's web UI (2.x) shows extra tabs from ``template_args["extendedTabs"]`` with tables from
``template_args["extendedTables"]``; their rows come with each ``/stats/requests`` poll (about
every 2 s) under ``extended_stats``, which is how the tab refreshes by itself. ``tab_rows`` is a
pure function of the recent requests (``LiveFigures``) and the metric capture's latest scrape;
``install`` wires it into the web UI. ``/llm/live`` serves the same rows as JSON.

Which requests: per endpoint, those of its newest request's stage (the plan's stage, or the user
count set by hand) within the last ``RECENT_WINDOW_S`` seconds before that request ended. The
window is anchored on the newest request, so the figures hold still once the load stops.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from typing import Any, Callable, Iterable

import numpy as np

from core.rundir import series
from locustfiles.livemetrics import RECENT_WINDOW_S, RecentRequest

TAB_KEY = "llm"
STATS_ROUTE = "/stats/requests"
JSON_ROUTE = "/llm/live"

# (row key, column title); the UI turns snake_case keys into its own spelling on both sides
COLUMNS = (
    ("endpoint", "Endpoint"), ("window", "Window"), ("requests", "Requests"),
    ("ttft_p50_ms", "TTFT p50 ms"), ("ttft_p99_ms", "TTFT p99 ms"),
    ("ttfat_p50_ms", "TTFAT p50 ms"), ("ttfat_p99_ms", "TTFAT p99 ms"),
    ("tpot_p50_ms", "TPOT p50 ms"), ("tpot_p99_ms", "TPOT p99 ms"),
    ("e2e_p50_s", "E2E p50 s"), ("e2e_p99_s", "E2E p99 s"),
    ("output_tokens_per_s", "Output tok/s"), ("reasoning_share", "Reasoning %"),
    ("errors", "Errors"),
    ("vllm_running", "vLLM running"), ("vllm_waiting", "vLLM waiting"),
    ("kv_cache_percent", "KV cache %"), ("gpu_util_percent", "GPU util %"),
    ("gpu_memory_gib", "GPU mem GiB"),
)
NOT_AVAILABLE = ""   # a figure the run cannot give (no successful request yet, no capture)


def _quantiles(values: Iterable[float], scale: float, digits: int) -> tuple[Any, Any]:
    """p50 and p99 (linear interpolation, as numpy's default) of the non-NaN values, scaled."""
    kept = [v for v in values if not math.isnan(v)]
    if not kept:
        return NOT_AVAILABLE, NOT_AVAILABLE
    p50, p99 = np.percentile(kept, [50, 99])
    return round(float(p50) * scale, digits), round(float(p99) * scale, digits)


def _window_of(requests: list[RecentRequest]) -> tuple[str, list[RecentRequest]]:
    newest = max(requests, key=lambda r: r.end_unix)
    since = newest.end_unix - RECENT_WINDOW_S
    if newest.stage >= 0:
        chosen = [r for r in requests if r.stage == newest.stage and r.end_unix >= since]
        label = f"stage {newest.stage + 1}"
    else:
        chosen = [r for r in requests if r.stage < 0 and r.stage_users == newest.stage_users
                  and r.end_unix >= since]
        label = f"{newest.stage_users} users (by hand)"
    return f"{label}, last {RECENT_WINDOW_S:g} s", chosen


def _capture_figures(rows: list[dict]) -> dict[str, Any]:
    """vLLM and GPU figures from one endpoint's latest scrapes (metrics.csv rows)."""
    values: dict[str, list[float]] = {}
    for row in rows:
        values.setdefault(row["metric"], []).append(float(row["value"]))
    kv = values.get(series.VLLM_KV_CACHE_USAGE) or values.get(series.VLLM_GPU_CACHE_USAGE)
    util = values.get(series.GPU_UTILIZATION)
    memory = values.get(series.GPU_MEMORY_USED)
    out = {
        "vllm_running": sum(values[series.VLLM_RUNNING]) if series.VLLM_RUNNING in values
        else NOT_AVAILABLE,
        "vllm_waiting": sum(values[series.VLLM_WAITING]) if series.VLLM_WAITING in values
        else NOT_AVAILABLE,
        "kv_cache_percent": round(max(kv) * 100, 1) if kv else NOT_AVAILABLE,
        "gpu_util_percent": round(sum(util) / len(util) * 100, 1) if util else NOT_AVAILABLE,
        "gpu_memory_gib": round(sum(memory) / 2**30, 2) if memory else NOT_AVAILABLE,
    }
    return out


def tab_rows(recent: list[RecentRequest], latest_scrapes: dict[tuple[str, str], list[dict]],
             endpoints: Iterable[str]) -> list[dict[str, Any]]:
    """One row per endpoint (the COLUMNS' keys)."""
    out = []
    for endpoint in sorted(endpoints):
        mine = [r for r in recent if r.endpoint == endpoint]
        row: dict[str, Any] = {key: NOT_AVAILABLE for key, _ in COLUMNS}
        row.update(endpoint=endpoint, window="no request yet", requests=0)
        if mine:
            window, chosen = _window_of(mine)
            ok = [r for r in chosen if r.ok]
            row.update(window=window, requests=len(chosen))
            for key, attr, scale, digits in (("ttft", "ttft_s", 1e3, 1),
                                             ("ttfat", "ttfat_s", 1e3, 1),
                                             ("tpot", "tpot_s", 1e3, 2)):
                row[f"{key}_p50_ms"], row[f"{key}_p99_ms"] = _quantiles(
                    (getattr(r, attr) for r in ok), scale, digits)
            row["e2e_p50_s"], row["e2e_p99_s"] = _quantiles((r.e2e_s for r in ok), 1.0, 3)
            span = max(r.end_unix for r in chosen) - min(r.end_unix for r in chosen)
            output = sum(r.output_tokens for r in chosen if not math.isnan(r.output_tokens))
            if span >= 1.0:
                row["output_tokens_per_s"] = round(output / span, 1)
            reasoning = sum(r.reasoning_tokens for r in chosen
                            if not math.isnan(r.reasoning_tokens))
            if output > 0:
                row["reasoning_share"] = round(100 * reasoning / output, 1)
            errors = Counter(r.error_category for r in chosen if not r.ok)
            row["errors"] = ", ".join(f"{c}: {n}" for c, n in sorted(errors.items())) or "none"
        scraped = [r for (ep, _source), rows in latest_scrapes.items() if ep == endpoint
                   for r in rows]
        row.update(_capture_figures(scraped))
        out.append(row)
    return out


def install(web_ui: Any, rows: Callable[[], list[dict[str, Any]]]) -> None:
    """Add the LLM tab to Locust's web UI, fed by ``rows()`` on each stats poll."""
    from flask import Response, request

    web_ui.template_args["extendedTabs"] = [{"title": "LLM", "key": TAB_KEY}]
    web_ui.template_args["extendedTables"] = [
        {"key": TAB_KEY, "structure": [{"key": key, "title": title} for key, title in COLUMNS]}]

    @web_ui.app.after_request
    def add_llm_rows(response: Any) -> Any:
        if request.path != STATS_ROUTE or response.status_code != 200:
            return response
        data = response.get_json(silent=True)
        if isinstance(data, dict):
            data["extended_stats"] = [{"key": TAB_KEY, "data": rows()}]
            response.set_data(json.dumps(data))
        return response

    @web_ui.app.route(JSON_ROUTE)
    @web_ui.auth_required_if_enabled
    def llm_live() -> Any:
        return Response(json.dumps({"rows": rows()}), mimetype="application/json")
