"""The per-request record: one row per request, the one place its fields are defined.

Every field has a written definition (``FIELD_DEFINITIONS``); the README and the report print
them from here. Times are in seconds (base units); wall-clock instants are Unix seconds.
A value that was not reached (no first token, no usage) is NaN, never 0 or -1.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

NAN = float("nan")

# Stable failure categories. They appear in Locust's failure stats ("<category>: <short>"),
# in the records' ``error_category`` and in the report. Never rename one: reports compare runs.
ERROR_CATEGORIES: dict[str, str] = {
    "connection_refused": "TCP connect refused: nothing listens at the endpoint's host:port.",
    "connection_reset": "The connection was reset or closed by the server before a response.",
    "connect_failed": "No TCP connection for another reason (name not resolved, host unreachable).",
    "connect_timeout": "No TCP connection within the connect timeout.",
    "read_timeout": "No bytes from the server within the read timeout (before or during the stream).",
    "http_4xx": "The server answered with HTTP 4xx; the body's message is kept.",
    "http_5xx": "The server answered with HTTP 5xx; the body's message is kept.",
    "not_event_stream": "HTTP 200 but the response was not a server-sent event stream (Content-Type "
    "not text/event-stream): the server ignored stream=true or a proxy buffered it. The message "
    "keeps the Content-Type and the start of the body.",
    "stream_error": "HTTP 200, then the stream carried an error event (vLLM: data: {\"error\": ...}).",
    "malformed_chunk": "A data: event that is not valid JSON or not a chat-completion chunk.",
    "stream_truncated": "The stream ended (connection closed) before data: [DONE].",
    "empty_answer": "The stream finished (data: [DONE]) without a single token: no content or "
    "reasoning delta, and usage.completion_tokens 0 or absent (unless max_tokens was 0).",
    "interrupted": "The request was still streaming when its stage or the run was stopped.",
    "client_error": "An unexpected error inside the load generator itself (a bug: please report).",
}

PHASES = ("ramp", "warmup", "steady", "drain", "manual")


@dataclass(slots=True)
class RequestRecord:
    """One streamed chat completion, as the load generator saw it."""

    run_id: str = ""
    endpoint: str = ""
    model: str = ""
    repetition: int = 0
    stage: int = -1
    stage_users: int = 0
    phase: str = "manual"
    worker: str = ""
    client: str = ""
    request_id: str = ""
    start_unix: float = NAN
    send_stamp: str = "client"
    presend_s: float = NAN
    scheduled_unix: float = NAN
    send_lag_s: float = NAN
    requested_tokens: int = 0
    ttft_s: float = NAN
    ttfat_s: float = NAN
    e2e_s: float = NAN
    tpot_s: float = NAN
    chunks: int = 0
    reasoning_chunks: int = 0
    answer_chunks: int = 0
    prompt_tokens: float = NAN
    output_tokens: float = NAN
    reasoning_tokens: float = NAN
    answer_tokens: float = NAN
    tokens_from_usage: bool = False
    itl_mean_s: float = NAN
    itl_p50_s: float = NAN
    itl_p99_s: float = NAN
    itl_max_s: float = NAN
    http_status: int = 0
    ok: bool = False
    error_category: str = ""
    error_message: str = ""

    def to_row(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}


RECORD_FIELDS: tuple[str, ...] = tuple(f.name for f in dataclasses.fields(RequestRecord))

FIELD_DEFINITIONS: dict[str, str] = {
    "run_id": "The run directory's name: one Locust run against one or more endpoints.",
    "endpoint": "The endpoint's label from the endpoints config (e.g. A, B).",
    "model": "The model name sent in the request.",
    "repetition": "Repetition number of the sweep (1-based; 0 when run by hand in the web UI).",
    "stage": "Index of the load stage (0-based) at request start; -1 outside a load shape.",
    "stage_users": "The stage's target concurrency (closed loop) or the user count (manual).",
    "phase": "Phase of the stage at request start: ramp, warmup, steady, drain (or manual). "
    "Only steady requests enter the results.",
    "worker": "Which load-generator process sent the request (host:pid).",
    "client": "The HTTP client used: fast (geventhttpclient) or openai (the SDK).",
    "request_id": "Unique id of the request, sent as its X-Request-Id header: joins the record to "
    "server logs and to a packet capture.",
    "start_unix": "Wall-clock time the request left the host (Unix seconds): the kernel's transmit "
    "stamp when send_stamp is kernel, else the client's clock just before sending. Every interval "
    "below (TTFT, TTFAT, E2E) starts here.",
    "send_stamp": "Where start_unix came from: kernel (the transmit stamp of the request's first "
    "write; fast client on Linux) or client (the load generator's clock).",
    "presend_s": "Pre-send delay: from the client starting the request (connection from the pool, "
    "HTTP framing) to its bytes leaving the host; NaN without a kernel stamp.",
    "scheduled_unix": "When the request was due. Open loop: its Poisson arrival time. Closed loop: "
    "when the user's previous stream ended (or its start spread elapsed, for its first request).",
    "send_lag_s": "start_unix - scheduled_unix: how late the load generator sent the request. "
    "Grows when the generator falls behind.",
    "requested_tokens": "max_tokens sent with the request (drawn per request from "
    "[max_tokens_min, max_tokens] when [request] max_tokens_min is set).",
    "ttft_s": "TTFT: request sent -> first streamed token of any kind (reasoning or answer). "
    "Role-only and empty chunks do not count. Chunk times are when the bytes reached the host "
    "(the kernel's receive stamp, fast client on Linux), not when the client read them.",
    "ttfat_s": "TTFAT: request sent -> first answer token (delta.content), after any reasoning.",
    "e2e_s": "E2E: request sent -> stream finished (data: [DONE], or the last byte).",
    "tpot_s": "TPOT: (E2E - TTFT) / (output_tokens - 1); NaN with fewer than 2 output tokens.",
    "chunks": "Streamed chunks that carried reasoning or answer text.",
    "reasoning_chunks": "Chunks that carried reasoning text (delta.reasoning / reasoning_content).",
    "answer_chunks": "Chunks that carried answer text (delta.content).",
    "prompt_tokens": "Prompt tokens from the server's usage.",
    "output_tokens": "Output tokens: usage.completion_tokens, or the chunk count when the server "
    "sent no usage (see tokens_from_usage).",
    "reasoning_tokens": "usage.completion_tokens_details.reasoning_tokens; chunk count as fallback.",
    "answer_tokens": "output_tokens - reasoning_tokens.",
    "tokens_from_usage": "True when token counts came from the server's usage; False when they were "
    "counted from chunks (one chunk can carry several tokens).",
    "itl_mean_s": "Mean gap between successive content chunks (inter-token latency).",
    "itl_p50_s": "Median gap between successive content chunks.",
    "itl_p99_s": "99th percentile gap between successive content chunks.",
    "itl_max_s": "Longest gap between successive content chunks.",
    "http_status": "HTTP status of the response; 0 when none arrived. Failures after the headers keep it (200 for stream failures).",
    "ok": "True when the stream finished with data: [DONE], carried at least one token (or max_tokens was 0), and no error.",
    "error_category": "Stable failure category (see ERROR_CATEGORIES); empty on success.",
    "error_message": "The failure's message (server body text kept, secrets removed, <= 500 chars).",
}

assert set(FIELD_DEFINITIONS) == set(RECORD_FIELDS), "every record field needs a definition"

# Types used when reading records back (CSV loses them).
INT_FIELDS = ("repetition", "stage", "stage_users", "requested_tokens", "chunks",
              "reasoning_chunks", "answer_chunks", "http_status")
BOOL_FIELDS = ("tokens_from_usage", "ok")
STR_FIELDS = ("run_id", "endpoint", "model", "phase", "worker", "client", "request_id",
              "send_stamp", "error_category", "error_message")


def gap_summary(gaps: list[float]) -> tuple[float, float, float, float]:
    """Mean, p50, p99 and max of inter-chunk gaps (nearest-rank percentiles); NaNs when empty."""
    if not gaps:
        return NAN, NAN, NAN, NAN
    ordered = sorted(gaps)
    n = len(ordered)

    def rank(q: float) -> float:
        return ordered[max(0, math.ceil(q * n) - 1)]

    return sum(ordered) / n, rank(0.50), rank(0.99), ordered[-1]


def markdown_tables() -> str:
    """The record fields and failure categories as Markdown (pasted into the README)."""
    lines = ["| field | definition |", "| --- | --- |"]
    lines += [f"| `{name}` | {FIELD_DEFINITIONS[name]} |" for name in RECORD_FIELDS]
    lines += ["", "| category | meaning |", "| --- | --- |"]
    lines += [f"| `{name}` | {text} |" for name, text in ERROR_CATEGORIES.items()]
    return "\n".join(lines)


if __name__ == "__main__":
    print(markdown_tables())
