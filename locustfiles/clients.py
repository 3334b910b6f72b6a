"""HTTP clients that stream one chat completion and fill its RequestRecord.

``FastClient`` (``fastclient.py``: geventhttpclient + orjson, reading whole socket blocks) is the
default: it costs 1/10 to 1/60 of the openai SDK's CPU per chunk, and a saturated client
inflates every latency it reports. ``OpenAIClient`` (``openaiclient.py``: the openai SDK) is
kept for compatibility checks. Both feed the same ``StreamRecorder``, so a record means the
same whatever the client. This module holds what they share: the request body, the protocol,
and ``make_client``.
"""

from __future__ import annotations

from typing import Any, Protocol

from core.config import Endpoint
from core.records import RequestRecord
from locustfiles.fastclient import FastClient
from locustfiles.openaiclient import OpenAIClient

__all__ = ["ChatClient", "FastClient", "OpenAIClient", "chat_body", "make_client"]


def chat_body(endpoint: Endpoint, messages: list[dict[str, Any]],
              max_tokens: int | None = None) -> dict[str, Any]:
    """The JSON body of a streamed chat completion for this endpoint."""
    settings = endpoint.request
    body: dict[str, Any] = {
        "model": endpoint.model,
        "messages": messages,
        "stream": True,
        "stream_options": {"include_usage": True},
        "max_tokens": settings.max_tokens if max_tokens is None else max_tokens,
        "temperature": settings.temperature,
    }
    if settings.ignore_eos:
        body["ignore_eos"] = True
    body.update(endpoint.extra_body)
    return body


class ChatClient(Protocol):
    name: str

    def stream_chat(self, body: dict[str, Any], record: RequestRecord,
                    answer: list[str] | None = None) -> RequestRecord:
        """Stream one chat completion into ``record``; with ``answer``, also append the
        answer's content text to it (not its reasoning): a conversation's next turn sends it."""
        ...

    def close(self) -> None: ...


def make_client(kind: str, endpoint: Endpoint) -> ChatClient:
    if kind == "fast":
        return FastClient(endpoint)
    if kind == "openai":
        return OpenAIClient(endpoint)
    raise ValueError(f"unknown client {kind!r}: use 'fast' or 'openai'")
