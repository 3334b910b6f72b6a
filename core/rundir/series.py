"""Metric series names shared by the exporter, the capture (metrics.csv) and the analysis.

The exporter (``exporters.metrics``) builds its families on these names; the capture keeps the
series the report uses (``keep_metric``); the analysis and the Prometheus reader look them up
here. A name is spelled once, in this module. Prometheus naming: base units, ``_total`` for
counters; dcgm-exporter's label spelling (``gpu``, ``UUID``).
"""

from __future__ import annotations

# ---- metrics.csv: where a row came from, and the scrape's own row ----
EXPORTER = "exporter"     # the GPU/process exporter beside the server (exporter_url)
SERVER = "server"         # the model server's own /metrics (metrics_url)
SOURCES = (EXPORTER, SERVER)
SCRAPE_UP = "scrape_up"   # one row per scrape attempt: 1 ok, 0 failed (error="..." in labels)
ERROR_LABEL = "error"     # the label of a failed scrape_up row

# ---- the exporter (exporters/) ----
NVML_UP = "nvml_up"
GPU_UP = "nvml_gpu_up"
GPU_INFO = "nvml_gpu_info"
GPU_UTILIZATION = "nvml_gpu_utilization_ratio"
GPU_MEMORY_UTILIZATION = "nvml_gpu_memory_utilization_ratio"
GPU_MEMORY_USED = "nvml_gpu_memory_used_bytes"
GPU_MEMORY_FREE = "nvml_gpu_memory_free_bytes"
GPU_MEMORY_RESERVED = "nvml_gpu_memory_reserved_bytes"
GPU_MEMORY_TOTAL = "nvml_gpu_memory_total_bytes"
GPU_POWER = "nvml_gpu_power_watts"
GPU_POWER_LIMIT = "nvml_gpu_power_limit_watts"
GPU_ENERGY = "nvml_gpu_energy_joules_total"
GPU_TEMPERATURE = "nvml_gpu_temperature_celsius"
GPU_SM_CLOCK = "nvml_gpu_sm_clock_hertz"
GPU_MEMORY_CLOCK = "nvml_gpu_memory_clock_hertz"
GPU_SM_ACTIVE = "nvml_gpu_sm_active_ratio"
GPU_SM_OCCUPANCY = "nvml_gpu_sm_occupancy_ratio"
GPU_TENSOR_ACTIVE = "nvml_gpu_tensor_active_ratio"
GPU_DRAM_ACTIVE = "nvml_gpu_dram_active_ratio"
GPU_PCIE_TX = "nvml_gpu_pcie_tx_bytes_per_second"
GPU_PCIE_RX = "nvml_gpu_pcie_rx_bytes_per_second"
GPU_PROCESS_MEMORY = "nvml_gpu_process_memory_used_bytes"
EXPORTER_SCRAPE_DURATION = "exporter_scrape_duration_seconds"
EXPORTER_NVML_ERRORS = "exporter_nvml_errors_total"
PROCESS_CPU = "server_process_cpu_seconds_total"
PROCESS_RSS = "server_process_resident_memory_bytes"
PROCESS_COUNT = "server_processes"
GPU_LABELS = ("gpu", "UUID")   # dcgm-exporter's spelling, so dashboards join

# ---- vLLM's /metrics ----
VLLM_RUNNING = "vllm:num_requests_running"
VLLM_WAITING = "vllm:num_requests_waiting"
VLLM_KV_CACHE_USAGE = "vllm:kv_cache_usage_perc"       # 0-1
VLLM_GPU_CACHE_USAGE = "vllm:gpu_cache_usage_perc"     # older vLLM name of kv_cache_usage_perc
VLLM_CPU_CACHE_USAGE = "vllm:cpu_cache_usage_perc"
VLLM_GENERATION_TOKENS = "vllm:generation_tokens_total"
VLLM_PROMPT_TOKENS = "vllm:prompt_tokens_total"
VLLM_PREEMPTIONS = "vllm:num_preemptions_total"
VLLM_TTFT = "vllm:time_to_first_token_seconds"
VLLM_ITL = "vllm:inter_token_latency_seconds"
VLLM_TPOT = "vllm:time_per_output_token_seconds"       # older vLLM name of inter_token_latency
VLLM_E2E = "vllm:e2e_request_latency_seconds"
VLLM_QUEUE_TIME = "vllm:request_queue_time_seconds"
VLLM_PREFIX = "vllm:"
HISTOGRAM_SUFFIXES = ("_bucket", "_sum", "_count")

VLLM_GAUGES = (VLLM_RUNNING, VLLM_WAITING, VLLM_KV_CACHE_USAGE, VLLM_GPU_CACHE_USAGE,
               VLLM_CPU_CACHE_USAGE)
VLLM_COUNTERS = (VLLM_GENERATION_TOKENS, VLLM_PROMPT_TOKENS, VLLM_PREEMPTIONS)
VLLM_HISTOGRAMS = (VLLM_TTFT, VLLM_ITL, VLLM_TPOT, VLLM_E2E, VLLM_QUEUE_TIME)

# ---- the load generator's live metrics (the Locust master's /metrics, locustfiles.livemetrics) ----
# One scrape of the master is the whole test: workers' figures reach it with their records.
# Labels: endpoint, model, run, repetition (and stage on the histograms and request counter).
CLIENT_METRICS_PORT = 9410          # --llm-metrics-port; the exporters beside the servers use 9411+
CLIENT_PREFIX = "llm_client_"
CLIENT_TTFT = "llm_client_ttft_seconds"                    # histogram
CLIENT_TTFAT = "llm_client_ttfat_seconds"                  # histogram: time to first answer token
CLIENT_ITL = "llm_client_inter_token_latency_seconds"      # histogram: one observation per gap
CLIENT_TPOT = "llm_client_tpot_seconds"                    # histogram
CLIENT_E2E = "llm_client_e2e_seconds"                      # histogram: whole request
CLIENT_REQUESTS = "llm_client_requests_total"              # counter: outcome, error_category
CLIENT_PROMPT_TOKENS = "llm_client_prompt_tokens_total"
CLIENT_OUTPUT_TOKENS = "llm_client_output_tokens_total"
CLIENT_REASONING_TOKENS = "llm_client_reasoning_tokens_total"
CLIENT_USERS = "llm_client_users"                          # gauge: users running now
CLIENT_STAGE = "llm_client_stage"                          # gauge: the stage number (-1: by hand)
CLIENT_PHASE = "llm_client_phase"                          # gauge 1/0 per phase (an enum)
CLIENT_STAGE_USERS = "llm_client_stage_users"              # gauge: the stage's planned users
CLIENT_IN_FLIGHT = "llm_client_in_flight_streams"          # gauge: streams open now
CLIENT_TARGET_RATE = "llm_client_target_rate_per_second"   # gauge: open loop's arrival rate
CLIENT_LOOP_LAG = "llm_client_event_loop_lag_seconds"      # gauge per worker: worst of the last 5 s
CLIENT_SEND_LAG = "llm_client_send_lag_seconds"            # gauge: worst send lag of the last 5 s
CLIENT_RECORDS_BEHIND = "llm_client_last_batch_age_seconds"  # gauge per worker: since its last batch
CLIENT_RUN_INFO = "llm_client_run_info"                    # gauge 1: run, campaign, mode
CLIENT_HISTOGRAMS = (CLIENT_TTFT, CLIENT_TTFAT, CLIENT_ITL, CLIENT_TPOT, CLIENT_E2E)

# ---- what the capture keeps (and the Prometheus reader asks for) ----
# Exporter series are all kept: the exporter is ours and small. From the model server only
# these families (histograms: all their series).
KEEP_PREFIXES = ("nvml_", "server_process_")
KEEP_NAMES = frozenset(
    VLLM_GAUGES + VLLM_COUNTERS
    + tuple(f"{h}{s}" for h in VLLM_HISTOGRAMS for s in HISTOGRAM_SUFFIXES))


def keep_metric(name: str) -> bool:
    """True for the series the report uses (the allowlist)."""
    return name in KEEP_NAMES or name.startswith(KEEP_PREFIXES)


def source_of(name: str) -> str:
    """Which source a series comes from when nothing else says: the server for vllm:*."""
    return SERVER if name.startswith(VLLM_PREFIX) else EXPORTER
