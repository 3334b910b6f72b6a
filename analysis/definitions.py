"""Definitions of every computed figure: one place each; the report and docs print them.

Record fields are defined in ``core.records.FIELD_DEFINITIONS``; this module defines what the
analysis computes from them and from metric samples. Per-run figures are computed per
(run, endpoint, stage) over the stage's steady window [steady_unix, drain_unix).
"""

from __future__ import annotations

from dataclasses import dataclass

from .outages import DOWN_WINDOW_DEFINITION, MIN_DOWN_S
from .stats import PERCENTILE_METHOD


@dataclass(frozen=True)
class MetricDef:
    key: str
    label: str
    unit: str
    definition: str
    lower_is_better: bool | None = None
    decimals: int = 1


_M: list[MetricDef] = []


def _d(key, label, unit, definition, lower_is_better=None, decimals=1):
    _M.append(MetricDef(key, label, unit, definition, lower_is_better, decimals))


_STEADY = "requests with phase == steady (started inside the steady window)"
_OK = "completed (ok) " + _STEADY

_d("requests", "steady requests", "", f"Number of {_STEADY}, ok or failed.", None, 0)
_d("completed", "completed requests", "", f"Number of {_OK}.", None, 0)
_d("req_per_s", "throughput", "req/s", f"Completed req/s: number of {_OK} / steady-window "
   "duration (drain_unix - steady_unix).", False, 2)
_d("goodput_per_s", "goodput", "req/s", f"{_OK.capitalize()} that met every SLO given with --slo "
   "(a missing value, e.g. TPOT of a 1-token reply, does not meet it) / steady-window duration; "
   "equals throughput when no SLO is set.", False, 2)
_d("goodput_pct", "goodput share", "%", "goodput / throughput x 100.", False, 1)
_d("output_tok_per_s", "output tokens/s", "tok/s", f"Sum of output_tokens of {_OK} / "
   "steady-window duration.", False, 1)
_d("output_tokens_mean", "output tokens per request", "tok", f"Mean output_tokens of {_OK}.",
   None, 1)
_d("reasoning_tokens_mean", "reasoning tokens per request", "tok",
   f"Mean reasoning_tokens of {_OK} (NaN where the server reports none).", None, 1)
_d("answer_tokens_mean", "answer tokens per request", "tok", f"Mean answer_tokens of {_OK}.",
   None, 1)
_d("error_rate", "error rate", "%", f"Failed / all {_STEADY} x 100; by category in the errors "
   "table (core.records.ERROR_CATEGORIES).", True, 2)
_d("failures_per_s", "failures per second", "req/s", f"Failed {_STEADY} / steady-window "
   "duration: the failures of the error rate per second of the window. Clients retrying a down "
   "endpoint fail fast and often, so a short outage gives a high error rate; this, with down "
   "share, reads it as time.", True, 2)
_d("down_s", "endpoint down", "s", "Seconds of the steady window covered by the endpoint's down "
   f"windows (failing every request for at least {MIN_DOWN_S:g} s; see down window).", True, 1)
_d("down_share", "endpoint down share", "%", "endpoint down / steady-window duration x 100: the "
   "share of the steady window during which the endpoint failed every request.", True, 1)
_d("tokens_from_chunks", "requests with chunk-counted tokens", "", f"{_OK.capitalize()} whose "
   "token counts came from counting chunks (tokens_from_usage False).", None, 0)
for _f, _name, _lib in (("ttft", "TTFT", True), ("ttfat", "TTFAT", True), ("e2e", "E2E", True),
                        ("tpot", "TPOT", True), ("itl", "ITL", True)):
    _src = {"ttft": "ttft_s", "ttfat": "ttfat_s", "e2e": "e2e_s", "tpot": "tpot_s",
            "itl": "itl_mean_s (each request's mean gap between content chunks)"}[_f]
    _d(f"{_f}_mean", f"{_name} mean", "ms", f"Mean of {_src} over {_OK}, in ms.", _lib, 1)
    for _q in (50, 90, 99):
        _d(f"{_f}_p{_q}", f"{_name} p{_q}", "ms", f"{_q}th percentile of {_src} over {_OK}, in "
           f"ms ({PERCENTILE_METHOD}).", _lib, 1)
_d("itl_max", "ITL max", "ms", f"Longest gap between content chunks (max of itl_max_s) over {_OK}.",
   True, 1)
_d("send_lag_p99", "send lag p99", "ms", "Open-loop mode: 99th percentile of send_lag_s over "
   f"{_STEADY}; large values mean the generator fell behind its schedule.", True, 1)
_d("gpu_util_mean", "GPU utilization", "%", "NVML utilization (nvml_gpu_utilization_ratio: share "
   "of time any kernel ran), averaged over the endpoint's GPUs at each sample, then over the "
   "samples in the steady window. Near 100% even at batch size 1; see SM activity.", None, 1)
_d("gpu_util_p95", "GPU utilization p95", "%", "95th percentile over the window's samples of the "
   "GPU utilization above.", None, 1)
_d("sm_active_mean", "SM activity", "%", "nvml_gpu_sm_active_ratio (share of SM cycles with work; "
   "where the GPU offers it), mean over the window's samples.", None, 1)
_d("sm_active_p95", "SM activity p95", "%", "95th percentile of SM activity over the window.",
   None, 1)
_d("tensor_active_mean", "tensor activity", "%", "nvml_gpu_tensor_active_ratio, mean.", None, 1)
_d("dram_active_mean", "memory bandwidth activity", "%", "nvml_gpu_dram_active_ratio, mean.",
   None, 1)
_d("gpu_mem_used_mean", "GPU memory used", "GiB", "nvml_gpu_memory_used_bytes summed over the "
   "endpoint's GPUs, mean over the window (vLLM pre-allocates most memory for its KV cache: this "
   "measures --gpu-memory-utilization as much as the model).", True, 2)
_d("gpu_mem_used_max", "GPU memory used max", "GiB", "Maximum of the summed memory used over the "
   "window.", True, 2)
_d("gpu_mem_total", "GPU memory total", "GiB", "nvml_gpu_memory_total_bytes summed over GPUs.",
   None, 2)
_d("power_mean", "GPU power", "W", "nvml_gpu_power_watts summed over GPUs, mean over the window.",
   True, 1)
_d("energy_per_token", "energy per output token", "J/tok", "Increase of "
   "nvml_gpu_energy_joules_total over the window / the window's time span (= mean power from "
   "the energy counter), divided by output tokens/s; where the counter is absent, mean power / "
   "output tokens/s.", True, 3)
_d("cpu_cores_mean", "server process CPU", "cores", "Rate of server_process_cpu_seconds_total "
   "over the window (CPU seconds per second), summed over the selected processes: for "
   "CPU-served models.", None, 2)
_d("rss_mean", "server process RSS", "GiB", "server_process_resident_memory_bytes summed over "
   "the selected processes, mean over the window.", True, 2)
_d("rss_max", "server process RSS max", "GiB", "Maximum of the summed RSS over the window.",
   True, 2)
_d("kv_cache_mean", "vLLM KV-cache usage", "%", "vllm:kv_cache_usage_perc (0-1, shown in %), "
   "mean over the window.", None, 1)
_d("kv_cache_max", "vLLM KV-cache usage max", "%", "Maximum KV-cache usage in the window.", None, 1)
_d("running_mean", "vLLM running", "req", "vllm:num_requests_running, mean over the window.",
   None, 1)
_d("running_max", "vLLM running max", "req", "vllm:num_requests_running, max in the window.",
   None, 0)
_d("waiting_mean", "vLLM waiting", "req", "vllm:num_requests_waiting (queued in the server), "
   "mean over the window.", True, 1)
_d("waiting_max", "vLLM waiting max", "req", "vllm:num_requests_waiting, max in the window.",
   True, 0)
_d("server_gen_tok_per_s", "vLLM generation tokens/s", "tok/s", "Rate of "
   "vllm:generation_tokens_total over the window (the server's own count).", False, 1)
_d("vllm_ttft_mean", "vLLM TTFT mean", "ms", "From vllm:time_to_first_token_seconds: increase "
   "of _sum / increase of _count over the window (server-side: arrival to first token; no "
   "network, no client).", True, 1)
_d("vllm_ttft_p50", "vLLM TTFT p50", "ms", "Median from the increase of the histogram's buckets "
   "over the window, linear interpolation inside the bucket (like histogram_quantile).", True, 1)
_d("vllm_itl_mean", "vLLM ITL mean", "ms", "vllm:inter_token_latency_seconds _sum/_count "
   "increase over the window.", True, 1)
_d("vllm_e2e_mean", "vLLM E2E mean", "ms", "vllm:e2e_request_latency_seconds _sum/_count "
   "increase over the window.", True, 1)

METRICS: dict[str, MetricDef] = {m.key: m for m in _M}

OTHER_DEFINITIONS: dict[str, str] = {
    "steady window": "[steady_unix, drain_unix) of a stage in stages.csv; requests are chosen by "
    "their phase field (phase == steady), metric samples by their timestamp inside the window. "
    "A stage stopped during its steady state (an interrupted run: drain_unix blank) ends at its "
    "end_unix, the stop; a stage stopped before it (steady_unix blank) has no window.",
    "run": "One Locust run (a run directory), identified by (campaign, run_id) from its "
    "manifest: run_id is the directory's name, so two campaigns can both have r01-vllm. The "
    "report names a run campaign/run_id when its runs come from more than one campaign, else "
    "run_id; the same (campaign, run_id) found twice counts once.",
    "down window": DOWN_WINDOW_DEFINITION,
    "concurrency / level": "A stage's users (closed loop) or request rate (open loop).",
    "repetitions": "Runs of the same endpoint and stage combine into mean, sample standard "
    "deviation and a 95% Student-t interval over the per-run values (shown as mean +- half "
    "width); one run has no interval.",
    "change %": "(B / A - 1) x 100, B the endpoint compared, A the baseline (the first endpoint, "
    "or --baseline).",
    "real difference": "Per-request latencies (TTFT, E2E, TPOT p50): Mann-Whitney U p < 0.05 "
    "over the pooled steady requests and a 95% hierarchical-bootstrap CI of the ratio of medians "
    "(resampling runs, then up to 1000 requests per run, equal weight per run, 1000 resamples, "
    "seeded) that excludes 1. Per-run figures (throughput, means, utilization): Welch t-test "
    "p < 0.05 over per-repetition values, CI of the difference of means / the baseline mean; "
    "needs >= 2 runs per endpoint. Otherwise: not distinguishable from noise.",
    "percentiles": PERCENTILE_METHOD,
    "metric gaps": "A steady window has a gap when a scrape failed (scrape_up 0) or no sample "
    "arrived for longer than 2.5 scrape intervals; values use the samples present and a window "
    "with none shows n/a, never 0.",
}

SLO_FIELDS: dict[str, tuple[str, float]] = {
    # --slo key: (record column, factor from the record's seconds to the key's unit)
    "ttft_ms": ("ttft_s", 1000.0),
    "ttfat_ms": ("ttfat_s", 1000.0),
    "e2e_ms": ("e2e_s", 1000.0),
    "tpot_ms": ("tpot_s", 1000.0),
    "itl_ms": ("itl_mean_s", 1000.0),
}


def markdown_definitions() -> str:
    """The computed-figure and method definitions as Markdown (docs/report.md embeds this)."""
    lines = ["| figure | key | unit | definition |", "| --- | --- | --- | --- |"]
    for m in METRICS.values():
        lines.append(f"| {m.label} | `{m.key}` | {m.unit} | {m.definition} |")
    lines += ["", "| term | definition |", "| --- | --- |"]
    lines += [f"| {k} | {v} |" for k, v in OTHER_DEFINITIONS.items()]
    return "\n".join(lines) + "\n"


def markdown_warnings() -> str:
    """The warning codes as Markdown (docs/report.md embeds this)."""
    from .errors import WARNING_CODES
    lines = ["| warning | meaning |", "| --- | --- |"]
    lines += [f"| `{k}` | {v} |" for k, v in WARNING_CODES.items()]
    return "\n".join(lines) + "\n"


def sync_docs(path) -> bool:
    """Rewrite the generated blocks of a Markdown file (docs/report.md); True on any change."""
    from pathlib import Path
    path = Path(path)
    text = path.read_text(encoding="utf-8")
    new = text
    for name, body in (("definitions", markdown_definitions()), ("warnings", markdown_warnings())):
        begin, end = f"<!-- generated:{name}:begin -->", f"<!-- generated:{name}:end -->"
        if begin in new and end in new:
            head, rest = new.split(begin, 1)
            _, tail = rest.split(end, 1)
            new = f"{head}{begin}\n{body}{end}{tail}"
    if new != text:
        path.write_text(new, encoding="utf-8")
    return new != text


if __name__ == "__main__":
    import sys
    if len(sys.argv) > 1:   # python -m analysis.definitions docs/report.md
        print("updated" if sync_docs(sys.argv[1]) else "up to date")
    else:
        print(markdown_definitions(), end="")
