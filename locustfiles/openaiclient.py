"""The openai SDK's streaming client, kept for compatibility checks (about 10x the CPU per chunk),
and the helpers preflight shares with it for SDK responses and errors."""

from __future__ import annotations

import time
from time import perf_counter
from typing import Any

from gevent import GreenletExit

from core import secrets
from core.config import Endpoint
from core.records import ErrorCategory, RequestRecord
from locustfiles.stream import (NOT_SSE_BODY, StreamFailure, error_message, error_text,
                                expects_tokens, is_event_stream, make_recorder,
                                not_event_stream, reasoning_of)


def _cause_chain(exc: BaseException) -> list[BaseException]:
    chain: list[BaseException] = []
    while exc is not None and exc not in chain:
        chain.append(exc)
        exc = exc.__cause__ or exc.__context__  # type: ignore[assignment]
    return chain


class OpenAIClient:
    """The openai SDK's streaming client, for compatibility (about 10x the CPU per chunk).

    The SDK swallows ``data: [DONE]`` and ends the iteration the same way whether it came or
    not, so a stream cut cleanly at an event boundary is only detected by the fast client.
    """

    name = "openai"

    def __init__(self, endpoint: Endpoint):
        import openai

        self._openai = openai
        settings = endpoint.request
        self.endpoint = endpoint
        key = endpoint.api_key()
        self._secrets = [key] if key else []
        self.client = openai.OpenAI(
            base_url=endpoint.base_url, api_key=key or "EMPTY", max_retries=0,
            timeout=openai.Timeout(settings.read_timeout_s, connect=settings.connect_timeout_s))

    def close(self) -> None:
        self.client.close()

    def stream_chat(self, body: dict[str, Any], record: RequestRecord,
                    answer: list[str] | None = None) -> RequestRecord:
        """Stream one chat completion into ``record``; with ``answer`` (a list), the answer's
        content text is appended to it in pieces (a conversation's history needs it)."""
        known = ("model", "messages", "stream", "stream_options", "max_tokens", "temperature")
        kwargs = {k: body[k] for k in known if k in body}
        kwargs["extra_body"] = {k: v for k, v in body.items() if k not in known}
        kwargs["extra_headers"] = {"X-Request-Id": record.request_id}
        record.start_unix = time.time()
        start = perf_counter()
        recorder = make_recorder(record, start, answer)
        recorder.expect_tokens = expects_tokens(body)
        status = 0
        try:
            stream = self.client.chat.completions.create(**kwargs)
            response = stream.response
            status = response.status_code
            content_type = response.headers.get("content-type")
            if not is_event_stream(content_type):
                raise not_event_stream(content_type, sdk_body_start(response), status)
            for chunk in stream:
                recorder.on_chunk(_chunk_dict(chunk), perf_counter())
            recorder.done = True
        except StreamFailure as failure:
            recorder.finish(perf_counter(), failure, status)
        except GreenletExit:
            recorder.finish(perf_counter(),
                            StreamFailure(ErrorCategory.INTERRUPTED,
                                          "stopped while streaming", status), status)
            raise
        except Exception as exc:
            recorder.finish(perf_counter(), self._classify(exc, status), status)
        else:
            recorder.finish(perf_counter(), None, status)
        record.error_message = secrets.scrub(record.error_message, self._secrets)
        return record

    def _classify(self, exc: Exception, status: int = 0) -> StreamFailure:
        """``status`` is the status of the response whose stream was being read (0: none)."""
        openai = self._openai
        if isinstance(exc, openai.APIStatusError):
            status = exc.status_code
            return StreamFailure(ErrorCategory.for_http_status(status),
                                 f"HTTP {status}: {sdk_error_text(exc)}",
                                 status)
        chain = _cause_chain(exc)
        names = " ".join(type(e).__name__ for e in chain)
        if any(isinstance(e, ConnectionRefusedError) for e in chain):
            return StreamFailure(ErrorCategory.CONNECTION_REFUSED, "connection refused")
        if "ConnectTimeout" in names:
            return StreamFailure(ErrorCategory.CONNECT_TIMEOUT,
                                 "no connection within the connect timeout")
        if isinstance(exc, openai.APITimeoutError) or "ReadTimeout" in names:
            return StreamFailure(ErrorCategory.READ_TIMEOUT,
                                 "no data within the read timeout", status)
        if "RemoteProtocolError" in names or "IncompleteRead" in names:
            if not status:  # closed before a response: what the fast client calls it too
                return StreamFailure(ErrorCategory.CONNECTION_RESET,
                                     f"connection closed before a response "
                                     f"({type(chain[-1]).__name__}: {chain[-1]})")
            return StreamFailure(ErrorCategory.STREAM_TRUNCATED, f"stream cut: {exc}", status)
        if isinstance(exc, openai.APIConnectionError):
            return StreamFailure(ErrorCategory.CONNECTION_RESET,
                                 f"{type(chain[-1]).__name__}: {chain[-1]}",
                                 status)
        if isinstance(exc, openai.APIError):
            return StreamFailure(ErrorCategory.STREAM_ERROR, str(exc.message), status or 200)
        if "JSONDecodeError" in names:
            return StreamFailure(ErrorCategory.MALFORMED_CHUNK,
                                 f"event is not JSON: {exc}", status or 200)
        return StreamFailure(ErrorCategory.CLIENT_ERROR, f"{type(exc).__name__}: {exc}", status)


def sdk_error_text(exc: Any) -> str:
    """The server's message of an SDK status error: the JSON error's message, or an excerpt of
    a body that is not JSON (the SDK's own message then holds only "Error code: 503")."""
    body = getattr(exc, "body", None)
    if isinstance(body, dict):
        return error_message(body)
    if isinstance(body, str):
        return error_text(body)
    return str(exc.message)


def sdk_body_start(response: Any) -> bytes:
    """The first bytes of an SDK (httpx) response's body; closes the response."""
    data = b""
    try:
        for part in response.iter_bytes():
            data += part
            if len(data) >= NOT_SSE_BODY:
                break
    except Exception:  # the Content-Type is the failure; the body only illustrates it
        pass
    finally:
        response.close()
    return data[:NOT_SSE_BODY]


def _chunk_dict(chunk: Any) -> dict[str, Any]:
    """The parts of an SDK ChatCompletionChunk the recorder reads, as plain data."""
    out: dict[str, Any] = {"choices": []}
    if chunk.choices:
        delta = chunk.choices[0].delta
        out["choices"] = [{"delta": {
            "content": delta.content,
            "reasoning": reasoning_of(delta),
        }}]
    if chunk.usage is not None:
        out["usage"] = chunk.usage.model_dump()
    return out
