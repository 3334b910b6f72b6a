"""From streamed chat-completion events to one RequestRecord: the timing logic, in one place.

Both HTTP clients (the fast one and the openai SDK) feed decoded events into a
``StreamRecorder``; it keeps the clock readings and fills the record's fields as defined in
``core.records``.
"""

from __future__ import annotations

import html
import re
from typing import Any

import orjson

from core.records import NAN, ErrorCategory, RequestRecord, gap_summary

MAX_MESSAGE_CHARS = 500
EXCERPT_CHARS = 200
EVENT_STREAM = "text/event-stream"
NOT_SSE_BODY = 512   # body bytes kept to describe an HTTP 200 that is not an event stream
# Where a chat delta carries reasoning text: vLLM's reasoning parsers ("reasoning"), and the
# older name other servers still send ("reasoning_content")
REASONING_FIELDS = ("reasoning", "reasoning_content")
_REASONING, _REASONING_OLD = REASONING_FIELDS

_MARKUP = re.compile(r"<(script|style)\b.*?</\1\s*>|<!--.*?-->|<[^>]*>", re.S | re.I)
_SPACE = re.compile(r"\s+")


class StreamFailure(Exception):
    """A request failed in a known way: ``category`` is an ErrorCategory (its plain string value
    is kept, the form records and Locust's messages carry; an unknown one is a ValueError)."""

    def __init__(self, category: ErrorCategory | str, message: str, http_status: int = 0):
        category = ErrorCategory(category).value
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


def body_excerpt(body: bytes | bytearray | str | None, limit: int = EXCERPT_CHARS) -> str:
    """The start of a response body, fit for one line of a message.

    HTML/XML (a proxy's error page) loses its tags, scripts, styles and comments, and its
    entities are decoded; whitespace runs become one space; at most ``limit`` characters.
    """
    if body is None:
        return "(no body)"
    text = bytes(body).decode("utf-8", "replace") if not isinstance(body, str) else body
    if text.lstrip().startswith("<"):
        text = html.unescape(_MARKUP.sub(" ", text))
    text = _SPACE.sub(" ", text).strip()
    if len(text) > limit:
        text = text[:max(0, limit - 3)].rstrip() + "..."
    return text or "(empty body)"


def reasoning_of(delta: Any) -> Any:
    """The reasoning text of a chat delta (a decoded event's dict, or an SDK object); None or
    empty when it has none."""
    if type(delta) is dict:
        return delta.get(_REASONING) or delta.get(_REASONING_OLD)
    return getattr(delta, _REASONING, None) or getattr(delta, _REASONING_OLD, None)


def error_text(body: bytes | str | None) -> str:
    """The message of an error body: an OpenAI-style JSON error's message, else a short excerpt
    of the text (an HTML error page loses its tags)."""
    if body is None or body == b"" or body == "":
        return "(empty body)"
    try:
        return error_message(orjson.loads(body))
    except orjson.JSONDecodeError:
        return body_excerpt(body, 300)



def is_event_stream(content_type: str | list[str] | None) -> bool:
    """Whether a Content-Type header names a server-sent event stream."""
    if isinstance(content_type, list):  # the header came more than once
        content_type = content_type[0] if content_type else None
    return bool(content_type) and (
        content_type.split(";", 1)[0].strip().lower() == EVENT_STREAM)  # type: ignore[union-attr]


def not_event_stream(content_type: str | list[str] | None, body: bytes | str | None,
                     http_status: int = 200) -> StreamFailure:
    """The failure of an HTTP 200 that is not an event stream (the same text for every client)."""
    if isinstance(content_type, list):
        content_type = ", ".join(content_type)
    shown = content_type.strip() if content_type and content_type.strip() else "(none)"
    return StreamFailure(
        ErrorCategory.NOT_EVENT_STREAM,
        f"HTTP {http_status} with Content-Type {shown}, not {EVENT_STREAM}: the server ignored "
        f"stream=true or a proxy buffered it; body: {body_excerpt(body, 160)}", http_status)


def expects_tokens(body: dict[str, Any]) -> bool:
    """False only when the request asked for no token at all (max_tokens 0)."""
    limit = body.get("max_completion_tokens", body.get("max_tokens"))
    return not (limit == 0 and not isinstance(limit, bool))


class StreamRecorder:
    """Collects clock readings for one streamed request and writes them into its record.

    ``start`` and every ``now`` are ``time.perf_counter()`` readings taken by the client.
    ``expect_tokens`` is False when the request asked for none (max_tokens 0): only then is a
    finished stream without a token a success.
    """

    __slots__ = ("record", "start", "first", "first_answer", "last", "gaps", "reasoning_chunks",
                 "answer_chunks", "chunks", "usage", "done", "done_at", "expect_tokens")

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
        self.expect_tokens = True

    def on_payload(self, payload: bytes, now: float) -> bool:
        """Handle one SSE data payload; True once ``[DONE]`` arrived."""
        if payload == b"[DONE]":
            self.done = True
            self.done_at = now
            return True
        try:
            chunk = orjson.loads(payload)
        except orjson.JSONDecodeError:
            raise StreamFailure(ErrorCategory.MALFORMED_CHUNK,
                                f"event is not JSON: {payload[:120]!r}") from None
        if type(chunk) is not dict:
            raise StreamFailure(ErrorCategory.MALFORMED_CHUNK,
                                f"event is not a JSON object: {payload[:120]!r}")
        self.on_chunk(chunk, now)
        return False

    def on_chunk(self, chunk: dict[str, Any], now: float) -> None:
        """Handle one decoded chunk (a dict shaped like OpenAI's ChatCompletionChunk)."""
        error = chunk.get("error")
        if error is not None:
            raise StreamFailure(ErrorCategory.STREAM_ERROR, error_message(error), 200)
        choices = chunk.get("choices")
        if choices:
            delta = choices[0].get("delta") or {}
            content = delta.get("content")
            reasoning = reasoning_of(delta)
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
            raise StreamFailure(ErrorCategory.MALFORMED_CHUNK,
                                f"event has no choices, usage or error: {str(chunk)[:120]}")
        usage = chunk.get("usage")
        if usage:
            self.usage = usage

    def finish(self, end: float, failure: StreamFailure | None = None,
               http_status: int | None = None) -> RequestRecord:
        """Fill the record from what was seen; ``failure`` None means the stream ended well.

        ``end`` is when the client finished; a stream that delivered ``[DONE]`` ends when
        ``[DONE]`` arrived instead, so E2E does not include the reader's own delay.
        ``http_status`` is the status the client received (0: none); a failure raised without
        one (a malformed chunk, found by the recorder) takes it, so every failure after the
        response headers carries the status that came with them.
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
        if failure is not None:
            rec.http_status = failure.http_status or http_status or 0
        else:
            rec.http_status = 200 if http_status is None else http_status
        if failure is None and not self.done:
            failure = StreamFailure(ErrorCategory.STREAM_TRUNCATED,
                                    "the stream ended without data: [DONE]", rec.http_status)
        if failure is None and self.chunks == 0 and self.expect_tokens and not (
                rec.output_tokens > 0):
            failure = StreamFailure(
                ErrorCategory.EMPTY_ANSWER, "the stream finished without a token: no content or "
                "reasoning delta, " + ("usage.completion_tokens 0" if rec.tokens_from_usage
                                       else "no usage"), rec.http_status)
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


class AnswerRecorder(StreamRecorder):
    """A ``StreamRecorder`` that also keeps the answer's content text (not its reasoning), in
    pieces appended to ``answer``: what a chat client sends back as the assistant's message in
    the next turn of a conversation. Only conversations use it, so a single request's chunk
    costs no more than before."""

    __slots__ = ("answer",)

    def __init__(self, record: RequestRecord, start: float, answer: list[str]):
        super().__init__(record, start)
        self.answer = answer

    def on_chunk(self, chunk: dict[str, Any], now: float) -> None:
        StreamRecorder.on_chunk(self, chunk, now)
        choices = chunk.get("choices")
        if choices:
            content = (choices[0].get("delta") or {}).get("content")
            if content:
                self.answer.append(content)


def make_recorder(record: RequestRecord, start: float,
                  answer: list[str] | None = None) -> StreamRecorder:
    """The recorder of one request: one that keeps the answer's text in ``answer`` when a list
    is given (a conversation's turn), else the plain one."""
    if answer is None:
        return StreamRecorder(record, start)
    return AnswerRecorder(record, start, answer)
