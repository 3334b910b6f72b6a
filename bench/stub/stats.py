"""The stub's own counters (``/stub/stats``) and its vLLM-like Prometheus text (``/metrics``)."""
from __future__ import annotations

import bisect
import json
import os
from typing import Any

# vLLM's bucket edges for time_to_first_token_seconds.
TTFT_BUCKETS = (0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0,
                7.5, 10.0, 20.0, 40.0, 80.0, 160.0, 640.0, 2560.0)


class Stats:
    """Counters kept by one server (one process). Read through ``snapshot()``."""

    def __init__(self) -> None:
        self.connections = 0
        self.requests = 0             # every HTTP request read, any route
        self.chat_requests = 0
        self.streams_started = 0
        self.streams_completed = 0    # whole planned script delivered (fault scripts included)
        self.nonstream_completed = 0
        self.client_disconnects = 0   # stream or wait cut short by the client going away
        self.faults_served = 0
        self.faults: dict[str, int] = {}
        self.status: dict[int, int] = {}
        self.running = 0
        self.prompt_tokens = 0
        self.generation_tokens = 0
        self.writes = 0
        self.events_sent = 0
        self.late_sum = 0.0
        self.late_max = 0.0
        self.late_over_1ms = 0
        self.late_over_5ms = 0
        self.first_late_sum = 0.0
        self.first_late_max = 0.0
        self.first_late_n = 0
        self.first_late_samples: list[float] = []   # seconds, in order (bounded)
        self.ttft_bucket_counts = [0] * len(TTFT_BUCKETS)
        self.ttft_count = 0
        self.ttft_sum = 0.0

    def observe_ttft(self, seconds: float) -> None:
        self.ttft_count += 1
        self.ttft_sum += seconds
        i = bisect.bisect_left(TTFT_BUCKETS, seconds)
        if i < len(TTFT_BUCKETS):
            self.ttft_bucket_counts[i] += 1

    def fault(self, name: str) -> None:
        self.faults_served += 1
        self.faults[name] = self.faults.get(name, 0) + 1

    def snapshot(self) -> dict[str, Any]:
        w = self.writes
        return {
            "pid": os.getpid(),
            "connections": self.connections,
            "requests": self.requests,
            "chat_requests": self.chat_requests,
            "streams_started": self.streams_started,
            "streams_completed": self.streams_completed,
            "nonstream_completed": self.nonstream_completed,
            "client_disconnects": self.client_disconnects,
            "faults_served": self.faults_served,
            "faults": dict(self.faults),
            "status": dict(self.status),
            "running": self.running,
            "prompt_tokens": self.prompt_tokens,
            "generation_tokens": self.generation_tokens,
            "writes": w,
            "events_sent": self.events_sent,
            "lateness_ms": {
                "mean": (self.late_sum / w * 1e3) if w else 0.0,
                "max": self.late_max * 1e3,
                "over_1ms": self.late_over_1ms,
                "over_5ms": self.late_over_5ms,
            },
            "first_token_lateness_ms": {
                "n": self.first_late_n,
                "mean": (self.first_late_sum / self.first_late_n * 1e3) if self.first_late_n else 0.0,
                "max": self.first_late_max * 1e3,
            },
        }


def metrics_text(st: Stats, model: str) -> str:
    """The counters as vLLM names them, in the Prometheus text format."""
    lbl = 'engine="0",model_name=%s' % json.dumps(model)
    out = [
        "# HELP vllm:num_requests_running Number of requests in model execution batches.",
        "# TYPE vllm:num_requests_running gauge",
        f"vllm:num_requests_running{{{lbl}}} {float(st.running)}",
        "# HELP vllm:num_requests_waiting Number of requests waiting to be processed.",
        "# TYPE vllm:num_requests_waiting gauge",
        f"vllm:num_requests_waiting{{{lbl}}} 0.0",
        "# HELP vllm:kv_cache_usage_perc KV-cache usage. 1 means 100 percent usage.",
        "# TYPE vllm:kv_cache_usage_perc gauge",
        f"vllm:kv_cache_usage_perc{{{lbl}}} {min(1.0, st.running / 256.0)}",
        "# HELP vllm:prompt_tokens_total Number of prefill tokens processed.",
        "# TYPE vllm:prompt_tokens_total counter",
        f"vllm:prompt_tokens_total{{{lbl}}} {float(st.prompt_tokens)}",
        "# HELP vllm:generation_tokens_total Number of generation tokens processed.",
        "# TYPE vllm:generation_tokens_total counter",
        f"vllm:generation_tokens_total{{{lbl}}} {float(st.generation_tokens)}",
        "# HELP vllm:time_to_first_token_seconds Histogram of time to first token in seconds.",
        "# TYPE vllm:time_to_first_token_seconds histogram",
    ]
    cum = 0
    for edge, c in zip(TTFT_BUCKETS, st.ttft_bucket_counts):
        cum += c
        out.append(f'vllm:time_to_first_token_seconds_bucket{{{lbl},le="{edge}"}} {float(cum)}')
    out.append(f'vllm:time_to_first_token_seconds_bucket{{{lbl},le="+Inf"}} {float(st.ttft_count)}')
    out.append(f"vllm:time_to_first_token_seconds_count{{{lbl}}} {float(st.ttft_count)}")
    out.append(f"vllm:time_to_first_token_seconds_sum{{{lbl}}} {st.ttft_sum}")
    return "\n".join(out) + "\n"
