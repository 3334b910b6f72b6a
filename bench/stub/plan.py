"""What the stub does with one chat request: the server options and the per-request plan.

``StubConfig`` holds the server-wide options (the CLI flags). ``plan_request`` reads one request
body against them, once, and returns a ``RequestPlan``: every decision about how that request is
answered (timings, lengths, reasoning, fault, usage). Whatever writes the answer only reads the plan.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, fields
from typing import Any

from bench.stub.protocol import HttpError

FAULTS = (
    "http_500",
    "http_429",
    "stream_error",
    "malformed",
    "truncate",
    "reset",
    "stall",
    "no_usage",
    "multi_token_chunks",
    "split_writes",
    "json_answer",      # stream=true answered as one application/json chat.completion (no SSE)
    "empty_stream",     # a normal SSE stream with no token: role chunk, finish chunk, usage 0, [DONE]
    "http_503_html",    # HTTP 503 with an HTML body, as a proxy or load balancer sends it
)


@dataclass
class StubConfig:
    host: str = "127.0.0.1"
    port: int = 0
    ttft_ms: float = 50.0
    itl_ms: float = 20.0
    tokens: int = 128
    reasoning_tokens: int = 0
    model: str = "stub-model"
    api_key: str | None = None
    processes: int = 1
    reasoning_field: str = "reasoning"   # vLLM >= 0.11 says "reasoning"; older "reasoning_content"
    fault: str | None = None             # server-wide default fault for requests naming none
    fault_rate: float = 1.0              # fraction of requests given --fault (evenly spread)
    stall_s: float = 30.0                # default stall length for the "stall" fault
    fault_after: int = 3                 # tokens sent before a mid-stream fault
    prompt_token_factor: float = 1.0     # reported prompt_tokens x this (another tokenizer)
    # a queueing server: at most this many chat answers generate at once (per process); the
    # rest wait first in, first out, and their whole answer (headers and role chunk included)
    # starts when a slot frees, so their TTFT grows by the wait. 0: no limit (no queue)
    slots: int = 0


def make_config(options: dict[str, Any]) -> StubConfig:
    """A ``StubConfig`` from keyword options, refusing names it does not have."""
    names = {f.name for f in fields(StubConfig)}
    unknown = set(options) - names
    if unknown:
        raise TypeError(f"unknown stub option(s): {', '.join(sorted(unknown))}")
    return StubConfig(**options)


@dataclass(frozen=True, slots=True)
class RequestPlan:
    """How one chat request is answered. Built once by ``plan_request``; read, never changed."""

    stream: bool              # "stream": true was asked (json_answer still answers with JSON)
    include_usage: bool       # stream_options.include_usage: a usage chunk before [DONE]
    fault: str | None         # one of FAULTS, or None
    ttft_s: float             # request arrival -> first token (stub_ttft_ms, else --ttft-ms)
    itl_s: float              # token i is due at ttft_s + stall_s + i * itl_s (stub_itl_ms)
    stall_s: float            # extra wait before the first token: the "stall" fault's, else 0.0
    fault_after: int          # token chunks sent before a mid-stream fault (stub_fault_after)
    tokens: int               # completion tokens, reasoning included (0 for empty_stream)
    reasoning_tokens: int     # of which reasoning, sent first
    finish_reason: str        # "length" or "stop"
    prompt_tokens: int        # reported prompt length: characters of the messages' text // 4 + 1,
                              # times --prompt-token-factor (rounded) when that is not 1

    @property
    def streamed(self) -> bool:
        """Answered as an SSE stream (else one JSON body after the whole generation time)."""
        return self.stream and self.fault != "json_answer"

    def usage(self) -> dict[str, Any]:
        """The OpenAI ``usage`` object of the answer, as vLLM writes it."""
        n = self.tokens
        return {"prompt_tokens": self.prompt_tokens, "total_tokens": self.prompt_tokens + n,
                "completion_tokens": n, "prompt_tokens_details": None,
                "completion_tokens_details": {"reasoning_tokens": self.reasoning_tokens}}


class FaultSchedule:
    """The server-wide fault (--fault) for a --fault-rate share of the requests naming none,
    evenly spread (every second request at 0.5)."""

    __slots__ = ("fault", "rate", "_acc")

    def __init__(self, fault: str | None, rate: float) -> None:
        if fault is not None and fault not in FAULTS:
            raise ValueError(f"unknown fault {fault!r}; choose from {', '.join(FAULTS)}")
        self.fault = fault
        self.rate = rate
        self._acc = 0.0

    def next(self) -> str | None:
        if self.fault is None:
            return None
        self._acc += self.rate
        if self._acc >= 1.0 - 1e-9:
            self._acc -= 1.0
            return self.fault
        return None


def _num(body: dict, key: str, default: float, lo: float = 0.0) -> float:
    v = body.get(key)
    if v is None:
        return default
    if isinstance(v, bool) or not isinstance(v, (int, float)) or v < lo:
        raise HttpError(400, f"{key} must be a number >= {lo}")
    return float(v)


def _text_of_messages(messages: list) -> str:
    parts: list[str] = []
    for m in messages:
        if not isinstance(m, dict):
            continue
        c = m.get("content")
        if isinstance(c, str):
            parts.append(c)
        elif isinstance(c, list):
            for p in c:
                if isinstance(p, dict) and isinstance(p.get("text"), str):
                    parts.append(p["text"])
    return "".join(parts)


def _pick_fault(body: dict, schedule: FaultSchedule) -> str | None:
    f = body.get("stub_fault")
    if f is not None:
        if f not in FAULTS:
            raise HttpError(400, f"unknown stub_fault {f!r}; choose from {', '.join(FAULTS)}")
        return f
    return schedule.next()


def plan_request(cfg: StubConfig, raw: bytes, schedule: FaultSchedule) -> RequestPlan:
    """Read a chat-completions request body: the plan of its answer, or ``HttpError`` (400/404).

    Body fields beyond OpenAI's: ``stub_ttft_ms``, ``stub_itl_ms``, ``stub_fault`` (one of
    ``FAULTS``; else ``schedule`` may give the server's), ``stub_stall_s``, ``stub_fault_after``,
    ``stub_reasoning_tokens``. Lengths follow vLLM: max_tokens (or max_completion_tokens) with
    ignore_eos, else --tokens; reasoning from chat_template_kwargs.enable_thinking and the options.
    """
    try:
        body = json.loads(raw)
    except ValueError as e:
        raise HttpError(400, f"request body is not valid JSON: {e}")
    if not isinstance(body, dict):
        raise HttpError(400, "request body must be a JSON object")
    model = body.get("model")
    if model is not None and model != cfg.model:
        raise HttpError(404, f"The model `{model}` does not exist.", "NotFoundError")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise HttpError(400, "messages must be a non-empty list")
    fault = _pick_fault(body, schedule)
    ttft = _num(body, "stub_ttft_ms", cfg.ttft_ms) / 1e3
    itl = _num(body, "stub_itl_ms", cfg.itl_ms) / 1e3
    stall_s = _num(body, "stub_stall_s", cfg.stall_s)
    fault_after = int(_num(body, "stub_fault_after", cfg.fault_after))

    mt = body.get("max_completion_tokens", body.get("max_tokens"))
    if mt is not None and (isinstance(mt, bool) or not isinstance(mt, int) or mt < 1):
        raise HttpError(400, "max_tokens must be an integer >= 1")
    ignore_eos = body.get("ignore_eos")
    if mt is None:
        n = cfg.tokens
        finish = "length" if ignore_eos else "stop"
    elif ignore_eos is None or ignore_eos:
        n = mt
        finish = "length"
    else:
        n = min(mt, cfg.tokens)
        finish = "length" if mt <= cfg.tokens else "stop"
    n = max(1, n)

    ctk = body.get("chat_template_kwargs")
    thinking = ctk.get("enable_thinking") if isinstance(ctk, dict) else None
    req_r = body.get("stub_reasoning_tokens")
    if thinking is False:
        r = 0
    elif req_r is not None:
        r = int(_num(body, "stub_reasoning_tokens", 0))
    elif cfg.reasoning_tokens > 0:
        r = cfg.reasoning_tokens
    elif thinking is True:
        r = max(1, n // 4)
    else:
        r = 0
    r = min(r, n)
    if fault == "empty_stream":  # the model answered nothing (e.g. EOS at once)
        n = r = 0
        finish = "stop"

    so = body.get("stream_options")
    return RequestPlan(
        stream=bool(body.get("stream")),
        include_usage=isinstance(so, dict) and bool(so.get("include_usage")),
        fault=fault,
        ttft_s=ttft,
        itl_s=itl,
        stall_s=stall_s if fault == "stall" else 0.0,
        fault_after=fault_after,
        tokens=n,
        reasoning_tokens=r,
        finish_reason=finish,
        prompt_tokens=_prompt_tokens(cfg, messages),
    )


def _prompt_tokens(cfg: StubConfig, messages: list) -> int:
    """The reported prompt length: a tokenizer of 4 characters a token, scaled by
    --prompt-token-factor (another tokenizer or chat template; 1: unchanged)."""
    n = len(_text_of_messages(messages)) // 4 + 1
    if cfg.prompt_token_factor == 1.0:
        return n
    return max(1, round(n * cfg.prompt_token_factor))
