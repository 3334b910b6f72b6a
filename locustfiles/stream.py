"""From streamed chat-completion events to one RequestRecord: the timing logic, in one place.

Both HTTP clients (the fast one and the openai SDK) feed decoded events into a
``StreamRecorder``; it keeps the clock readings and fills the record's fields as defined in
``core.records``.
"""

from __future__ import annotations

from typing import Any

import orjson

from core.records import NAN, RequestRecord, gap_summary

MAX_MESSAGE_CHARS = 500


class StreamFailure(Exception):
    """A request failed in a known way; ``category`` is one of core.records.ERROR_CATEGORIES."""

    def __init__(self, category: str, message: str, http_status: int = 0):
        super().__init__(f"{category}: {message}")
        self.category = category
        self.message = message
        self.http_status = http_status


def error_message(error: Any) -> str:
    """The human message of an OpenAI-style error object or body."""
    if isinstance(error, dict):
        inner = error.get("error", error)
        if isinstance(inner, dict):
            return str(inner.get("message") or inner.get("detail") or inner)
        return str(inner)
    return str(error)


class StreamRecorder:
    """Collects clock readings for one streamed request and writes them into its record.

    ``start`` and every ``now`` are ``time.perf_counter()`` readings taken by the client.
    """

    __slots__ = ("record", "start", "first", "first_answer", "last", "gaps", "reasoning_chunks",
                 "answer_chunks", "chunks", "usage", "done", "done_at")

    def __init__(self, record: RequestRecord, start: float):
        self.record = record
        self.start = start
        self.first: float | None = None
        self.first_answer: float | None = None
        self.last: float | None = None
        self.gaps: list[float] = []
        self.chunks = 0
        self.reasoning_chunks = 0
        self.answer_chunks = 0
        self.usage: dict[str, Any] | None = None
        self.done = False
        self.done_at: float | None = None

    def on_payload(self, payload: bytes, now: float) -> bool:
        """Handle one SSE data payload; True once ``[DONE]`` arrived."""
        if payload == b"[DONE]":
            self.done = True
            self.done_at = now
            return True
        try:
            chunk = orjson.loads(payload)
        except orjson.JSONDecodeError:
            raise StreamFailure("malformed_chunk", f"event is not JSON: {payload[:120]!r}") from None
        if type(chunk) is not dict:
            raise StreamFailure("malformed_chunk", f"event is not a JSON object: {payload[:120]!r}")
        self.on_chunk(chunk, now)
        return False

    def on_chunk(self, chunk: dict[str, Any], now: float) -> None:
        """Handle one decoded chunk (a dict shaped like OpenAI's ChatCompletionChunk)."""
        error = chunk.get("error")
        if error is not None:
            raise StreamFailure("stream_error", error_message(error), 200)
        choices = chunk.get("choices")
        if choices:
            delta = choices[0].get("delta") or {}
            content = delta.get("content")
            reasoning = delta.get("reasoning") or delta.get("reasoning_content")
            if content or reasoning:
                last = self.last
                if last is None:
                    self.first = now
                else:
                    self.gaps.append(now - last)
                self.last = now
                self.chunks += 1
                if reasoning:
                    self.reasoning_chunks += 1
                if content:
                    self.answer_chunks += 1
                    if self.first_answer is None:
                        self.first_answer = now
        elif choices is None and "usage" not in chunk:
            raise StreamFailure("malformed_chunk",
                                f"event has no choices, usage or error: {str(chunk)[:120]}")
        usage = chunk.get("usage")
        if usage:
            self.usage = usage

    def finish(self, end: float, failure: StreamFailure | None = None,
               http_status: int = 200) -> RequestRecord:
        """Fill the record from what was seen; ``failure`` None means the stream ended well.

        ``end`` is when the client finished; a stream that delivered ``[DONE]`` ends when
        ``[DONE]`` arrived instead, so E2E does not include the reader's own delay.
        """
        if self.done_at is not None and failure is None:
            end = self.done_at
        rec = self.record
        start = self.start
        rec.e2e_s = end - start
        if self.first is not None:
            rec.ttft_s = self.first - start
        if self.first_answer is not None:
            rec.ttfat_s = self.first_answer - start
        rec.chunks = self.chunks
        rec.reasoning_chunks = self.reasoning_chunks
        rec.answer_chunks = self.answer_chunks
        rec.itl_mean_s, rec.itl_p50_s, rec.itl_p99_s, rec.itl_max_s = gap_summary(self.gaps)
        self._fill_tokens(rec)
        if rec.output_tokens >= 2 and self.first is not None:
            rec.tpot_s = (end - self.first) / (rec.output_tokens - 1)
        rec.http_status = failure.http_status if failure is not None else http_status
        if failure is None and not self.done:
            failure = StreamFailure("stream_truncated", "the stream ended without data: [DONE]",
                                    http_status)
        if failure is None:
            rec.ok = True
        else:
            rec.ok = False
            rec.error_category = failure.category
            rec.error_message = failure.message[:MAX_MESSAGE_CHARS]
        return rec

    def _fill_tokens(self, rec: RequestRecord) -> None:
        usage = self.usage
        if usage and usage.get("completion_tokens") is not None:
            rec.tokens_from_usage = True
            rec.output_tokens = float(usage["completion_tokens"])
            if usage.get("prompt_tokens") is not None:
                rec.prompt_tokens = float(usage["prompt_tokens"])
            details = usage.get("completion_tokens_details") or {}
            reasoning = details.get("reasoning_tokens") if isinstance(details, dict) else None
            rec.reasoning_tokens = float(reasoning if reasoning is not None
                                         else self.reasoning_chunks)
        else:
            rec.tokens_from_usage = False
            rec.output_tokens = float(self.chunks)
            rec.reasoning_tokens = float(self.reasoning_chunks)
        rec.answer_tokens = rec.output_tokens - rec.reasoning_tokens
        if rec.output_tokens == 0 and self.chunks == 0 and not self.done:
            rec.output_tokens = rec.reasoning_tokens = rec.answer_tokens = NAN
