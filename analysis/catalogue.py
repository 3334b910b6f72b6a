"""The metric catalogue: every computed figure, defined once, drives computing, comparing and showing.

A ``MetricDef`` says what a figure is (label, unit, definition: the report's Definitions and
docs/report.md print them), where it comes from (``source``: the run's records, its metrics.csv
series, or derived from other figures), which statistic it is (``stat``), how two endpoints are
compared on it (``compare``: per request, per run, or not at all; ``lower_is_better``) and where it
is shown (``show``: view name -> position). Adding a figure is one ``_d(...)`` here plus, for a
new kind of source value, its computation (analysis.compute).

Users of the catalogue:
    analysis.compute    SAMPLE_FIGURES: the figures computed per steady window from metrics.csv
    analysis.build      REQUEST_COMPARED / RUN_COMPARED: what is compared and how; combine()
                        combines every figure of METRICS
    analysis.paired     shown_in("paired"): the figures compared on the same requests
    analysis.report     shown_in(view): the rows of the At-N table, the columns of the by-level
                        tables, the verdicts, the per-run table
Per-run figures are computed per (run, endpoint, stage) over the stage's steady window
[steady_unix, drain_unix).
"""

from __future__ import annotations

from dataclasses import dataclass

from .outages import MIN_DOWN_S
from .stats import PERCENTILE_METHOD

# source
RECORDS = "records"          # from records.csv (per-request values and counts)
METRICS_CSV = "metrics.csv"  # from the metric samples (core.rundir.series), per steady window
DERIVED = "derived"          # from other figures (after both of the above)
# compare
REQUEST = "request"          # per request: Mann-Whitney U + hierarchical bootstrap of medians
RUN = "run"                  # per run: Welch t-test over per-repetition values


@dataclass(frozen=True)
class MetricDef:
    key: str
    label: str
    unit: str
    definition: str
    lower_is_better: bool | None = None   # None: neither (no "better"/"worse" in verdicts)
    decimals: int = 1
    source: str = RECORDS
    stat: str = ""                 # count, rate, share, mean, p50/p90/p95/p99, max, total, ratio
    compare: str | None = None     # REQUEST, RUN or None (not compared)
    column: str = ""               # the record column of a per-request figure
    show: tuple[tuple[str, int], ...] = ()   # (view, position): where the report shows it
    at_label: str = ""             # its row label in the At-N table (view "at")

    def position(self, view: str) -> int | None:
        return dict(self.show).get(view)


_M: list[MetricDef] = []


def _d(key, label, unit, definition, lower_is_better=None, decimals=1, *, src=RECORDS, stat="",
       compare=None, column="", show="", at_label=""):
    """show: "view:position ..." (e.g. "at:1 latency:2")."""
    views = tuple((v, int(p)) for v, p in (item.split(":") for item in show.split()))
    _M.append(MetricDef(key, label, unit, definition, lower_is_better, decimals, src, stat,
                        compare, column, views, at_label))


_STEADY = "requests with phase == steady (started inside the steady window)"
_OK = "completed (ok) " + _STEADY

_d("requests", "steady requests", "", f"Number of {_STEADY}, ok or failed.", None, 0,
   src=RECORDS, stat="count", show="throughput:6 per_run:1")
_d("completed", "completed requests", "", f"Number of {_OK}.", None, 0,
   src=RECORDS, stat="count", show="per_run:2")
_d("req_per_s", "throughput", "req/s", f"Completed req/s: number of {_OK} / steady-window "
   "duration (drain_unix - steady_unix).", False, 2,
   src=RECORDS, stat="rate", compare=RUN, show="at:1 throughput:1 per_run:3 headline:1 terminal:3 compare:11", at_label="throughput (req/s)")
_d("goodput_per_s", "goodput", "req/s", f"{_OK.capitalize()} that met every SLO given with --slo "
   "(a missing value, e.g. TPOT of a 1-token reply, does not meet it) / steady-window duration; "
   "equals throughput when no SLO is set.", False, 2,
   src=RECORDS, stat="rate", compare=RUN, show="throughput:2 compare:13")
_d("goodput_pct", "goodput share", "%", "goodput / throughput x 100.", False, 1,
   src=RECORDS, stat="share", show="throughput:3")
_d("output_tok_per_s", "output tokens/s", "tok/s", f"Sum of output_tokens of {_OK} / "
   "steady-window duration.", False, 1,
   src=RECORDS, stat="rate", compare=RUN, show="at:5 throughput:4 tokens:1 per_run:4 headline:5 compare:12", at_label="output tokens/s")
_d("output_tokens_mean", "output tokens per request", "tok", f"Mean output_tokens of {_OK}.",
   None, 1,
   src=RECORDS, stat="mean", show="tokens:2")
_d("reasoning_tokens_mean", "reasoning tokens per request", "tok",
   f"Mean reasoning_tokens of {_OK} (NaN where the server reports none).", None, 1,
   src=RECORDS, stat="mean", show="tokens:3")
_d("answer_tokens_mean", "answer tokens per request", "tok", f"Mean answer_tokens of {_OK}.",
   None, 1,
   src=RECORDS, stat="mean", show="tokens:4")
_d("error_rate", "error rate", "%", f"Failed / all {_STEADY} x 100; by category in the errors "
   "table (core.records.ERROR_CATEGORIES).", True, 2,
   src=RECORDS, stat="share", compare=RUN, show="at:7 throughput:5 per_run:7 compare:17", at_label="error rate (%)")
_d("failures_per_s", "failures per second", "req/s", f"Failed {_STEADY} / steady-window "
   "duration: the failures of the error rate per second of the window. Clients retrying a down "
   "endpoint fail fast and often, so a short outage gives a high error rate; this, with down "
   "share, reads it as time.", True, 2,
   src=RECORDS, stat="rate", show="per_run:8")
_d("down_s", "endpoint down", "s", "Seconds of the steady window covered by the endpoint's down "
   f"windows (failing every request for at least {MIN_DOWN_S:g} s; see down window).", True, 1,
   src=RECORDS, stat="total")
_d("down_share", "endpoint down share", "%", "endpoint down / steady-window duration x 100: the "
   "share of the steady window during which the endpoint failed every request.", True, 1,
   src=RECORDS, stat="share", show="per_run:9")
_d("tokens_from_chunks", "requests with chunk-counted tokens", "", f"{_OK.capitalize()} whose "
   "token counts came from counting chunks (tokens_from_usage False).", None, 0,
   src=RECORDS, stat="count")
# Latency families from the records: the mean and three percentiles of one record column each.
# (family, name, record column, what each figure is compared by and shown in)
_LATENCY_SHOW = {
    "ttft_mean": dict(compare=RUN, show="at:2 latency:1 server:1 compare:14",
                      at_label="time to first token, mean (ms)"),
    "ttft_p50": dict(compare=REQUEST, show="at:3 latency:2 server:3 per_run:5 headline:2 "
                     "terminal:1 compare:1 paired:1", at_label="time to first token, p50 (ms)"),
    "ttft_p90": dict(show="latency:3"),
    "ttft_p99": dict(show="latency:4"),
    "ttfat_p50": dict(show="tokens:10 paired:2"),
    "ttfat_p99": dict(show="tokens:11"),
    "e2e_mean": dict(compare=RUN, show="at:4 latency:5 per_run:6 compare:15",
                     at_label="mean response time (ms)"),
    "e2e_p50": dict(compare=REQUEST, show="latency:6 headline:3 terminal:2 compare:2 paired:4"),
    "e2e_p90": dict(show="latency:7"),
    "e2e_p99": dict(show="latency:8"),
    "tpot_mean": dict(compare=RUN, show="compare:16"),
    "tpot_p50": dict(compare=REQUEST, show="at:6 tokens:5 headline:4 compare:3 paired:3",
                     at_label="TPOT p50 (ms)"),
    "tpot_p99": dict(show="tokens:6"),
    "itl_p50": dict(show="tokens:7"),
    "itl_p99": dict(show="tokens:8"),
}
for _f, _name, _col in (("ttft", "TTFT", "ttft_s"), ("ttfat", "TTFAT", "ttfat_s"),
                        ("e2e", "E2E", "e2e_s"), ("tpot", "TPOT", "tpot_s"),
                        ("itl", "ITL", "itl_mean_s")):
    _src = _col if _f != "itl" else f"{_col} (each request's mean gap between content chunks)"
    _d(f"{_f}_mean", f"{_name} mean", "ms", f"Mean of {_src} over {_OK}, in ms.", True, 1,
       src=RECORDS, stat="mean", column=_col, **_LATENCY_SHOW.get(f"{_f}_mean", {}))
    for _q in (50, 90, 99):
        _d(f"{_f}_p{_q}", f"{_name} p{_q}", "ms", f"{_q}th percentile of {_src} over {_OK}, in "
           f"ms ({PERCENTILE_METHOD}).", True, 1, src=RECORDS, stat=f"p{_q}", column=_col,
           **_LATENCY_SHOW.get(f"{_f}_p{_q}", {}))
_d("itl_max", "ITL max", "ms", f"Longest gap between content chunks (max of itl_max_s) over {_OK}.",
   True, 1,
   src=RECORDS, stat="max", column="itl_max_s", show="tokens:9")
_d("send_lag_p99", "send lag p99", "ms", "Open loop and trace replay: 99th percentile of send_lag_s over "
   f"{_STEADY}; large values mean the generator fell behind its schedule.", True, 1,
   src=RECORDS, stat="p99", show="throughput:7")
_d("gpu_util_mean", "GPU utilization", "%", "NVML utilization (nvml_gpu_utilization_ratio: share "
   "of time any kernel ran), averaged over the endpoint's GPUs at each sample, then over the "
   "samples in the steady window. Near 100% even at batch size 1; see SM activity.", None, 1,
   src=METRICS_CSV, stat="mean", compare=RUN, show="at:8 per_run:10 compare:18", at_label="GPU utilization (%)")
_d("gpu_util_p95", "GPU utilization p95", "%", "95th percentile over the window's samples of the "
   "GPU utilization above.", None, 1,
   src=METRICS_CSV, stat="p95", show="server:16")
_d("sm_active_mean", "SM activity", "%", "nvml_gpu_sm_active_ratio (share of SM cycles with work; "
   "where the GPU offers it), mean over the window's samples.", None, 1,
   src=METRICS_CSV, stat="mean", compare=RUN, show="compare:19")
_d("sm_active_p95", "SM activity p95", "%", "95th percentile of SM activity over the window.",
   None, 1,
   src=METRICS_CSV, stat="p95", show="server:15")
_d("tensor_active_mean", "tensor activity", "%", "nvml_gpu_tensor_active_ratio, mean.", None, 1,
   src=METRICS_CSV, stat="mean")
_d("dram_active_mean", "memory bandwidth activity", "%", "nvml_gpu_dram_active_ratio, mean.",
   None, 1,
   src=METRICS_CSV, stat="mean")
_d("gpu_mem_used_mean", "GPU memory used", "GiB", "nvml_gpu_memory_used_bytes summed over the "
   "endpoint's GPUs, mean over the window (vLLM pre-allocates most memory for its KV cache: this "
   "measures --gpu-memory-utilization as much as the model).", True, 2,
   src=METRICS_CSV, stat="mean", compare=RUN, show="gpu_memory:1 compare:20")
_d("gpu_mem_used_max", "GPU memory used max", "GiB", "Maximum of the summed memory used over the "
   "window.", True, 2,
   src=METRICS_CSV, stat="max", show="gpu_memory:2")
_d("gpu_mem_total", "GPU memory total", "GiB", "nvml_gpu_memory_total_bytes summed over GPUs.",
   None, 2,
   src=METRICS_CSV, stat="total", show="gpu_memory:3")
_d("power_mean", "GPU power", "W", "nvml_gpu_power_watts summed over GPUs, mean over the window.",
   True, 1,
   src=METRICS_CSV, stat="mean", compare=RUN, show="server:14 compare:21")
_d("energy_per_token", "energy per output token", "J/tok", "Increase of "
   "nvml_gpu_energy_joules_total over the window / the window's time span (= mean power from "
   "the energy counter), divided by output tokens/s; where the counter is absent, mean power / "
   "output tokens/s.", True, 3,
   src=DERIVED, stat="ratio", compare=RUN, show="tokens:12 compare:22")
_d("cpu_cores_mean", "server process CPU", "cores", "Rate of server_process_cpu_seconds_total "
   "over the window (CPU seconds per second), summed over the selected processes: for "
   "CPU-served models.", None, 2,
   src=METRICS_CSV, stat="rate", compare=RUN, show="at:9 per_run:11 compare:23", at_label="server process CPU (cores)")
_d("rss_mean", "server process RSS", "GiB", "server_process_resident_memory_bytes summed over "
   "the selected processes, mean over the window.", True, 2,
   src=METRICS_CSV, stat="mean", compare=RUN, show="gpu_memory:5 compare:24")
_d("rss_max", "server process RSS max", "GiB", "Maximum of the summed RSS over the window.",
   True, 2,
   src=METRICS_CSV, stat="max", show="gpu_memory:6")
_d("kv_cache_mean", "vLLM KV-cache usage", "%", "vllm:kv_cache_usage_perc (0-1, shown in %), "
   "mean over the window.", None, 1,
   src=METRICS_CSV, stat="mean", compare=RUN, show="server:12 gpu_memory:4 compare:25")
_d("kv_cache_max", "vLLM KV-cache usage max", "%", "Maximum KV-cache usage in the window.", None, 1,
   src=METRICS_CSV, stat="max", show="server:13")
_d("running_mean", "vLLM running", "req", "vllm:num_requests_running, mean over the window.",
   None, 1,
   src=METRICS_CSV, stat="mean", show="server:8")
_d("running_max", "vLLM running max", "req", "vllm:num_requests_running, max in the window.",
   None, 0,
   src=METRICS_CSV, stat="max", show="server:9")
_d("waiting_mean", "vLLM waiting", "req", "vllm:num_requests_waiting (queued in the server), "
   "mean over the window.", True, 1,
   src=METRICS_CSV, stat="mean", show="server:10")
_d("waiting_max", "vLLM waiting max", "req", "vllm:num_requests_waiting, max in the window.",
   True, 0,
   src=METRICS_CSV, stat="max", show="server:11")
_d("server_gen_tok_per_s", "vLLM generation tokens/s", "tok/s", "Rate of "
   "vllm:generation_tokens_total over the window (the server's own count).", False, 1,
   src=METRICS_CSV, stat="rate", show="server:7")
_d("vllm_ttft_mean", "vLLM TTFT mean", "ms", "From vllm:time_to_first_token_seconds: increase "
   "of _sum / increase of _count over the window (server-side: arrival to first token; no "
   "network, no client).", True, 1,
   src=METRICS_CSV, stat="mean", show="server:2")
_d("vllm_ttft_p50", "vLLM TTFT p50", "ms", "Median from the increase of the histogram's buckets "
   "over the window, linear interpolation inside the bucket (like histogram_quantile).", True, 1,
   src=METRICS_CSV, stat="p50", show="server:4")
_d("vllm_itl_mean", "vLLM ITL mean", "ms", "vllm:inter_token_latency_seconds _sum/_count "
   "increase over the window.", True, 1,
   src=METRICS_CSV, stat="mean", show="server:5")
_d("vllm_e2e_mean", "vLLM E2E mean", "ms", "vllm:e2e_request_latency_seconds _sum/_count "
   "increase over the window.", True, 1,
   src=METRICS_CSV, stat="mean", show="server:6")


METRICS: dict[str, MetricDef] = {m.key: m for m in _M}


def shown_in(view: str) -> list[str]:
    """The keys shown in a view, in the view's order.

    Views: at (the At-N table's rows), latency / throughput / tokens / server / gpu_memory (the
    by-level tables' columns), per_run (the per-run table's figures), headline (the Summary
    section's verdicts), terminal (the terminal summary's verdicts), compare (comparison order),
    paired (the latency figures compared request by request on the same requests: analysis.paired).
    """
    keyed = [(m.position(view), m.key) for m in _M if m.position(view) is not None]
    return [k for _, k in sorted(keyed)]


# What is compared, in order: per request (metric key -> record column), then per run.
REQUEST_COMPARED: dict[str, str] = {k: METRICS[k].column for k in shown_in("compare")
                                    if METRICS[k].compare == REQUEST}
RUN_COMPARED: tuple[str, ...] = tuple(k for k in shown_in("compare") if METRICS[k].compare == RUN)
# The figures computed per steady window from metric samples (derived ones are placed among
# them, as NaN, and filled in once both sources are known).
SAMPLE_FIGURES: list[str] = [k for k, m in METRICS.items() if m.source in (METRICS_CSV, DERIVED)]
